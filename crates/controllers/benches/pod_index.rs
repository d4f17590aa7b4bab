//! What a ReplicaSet sync pays to find its pods among many: the scan of every cached pod it
//! did before the owner index (filter by namespace, controller and selector, copy each
//! candidate) against the index's lookup (its pods and its namespace's orphans, shared).
//! The cluster: PODS bare pods in one namespace plus one ReplicaSet's 1,000 pods in another
//! (and, for the orphan case, the same ReplicaSet in the bare pods' namespace).
//! Run: `cargo bench --workspace --bench pod_index [-- PODS]` (scripts/test: 30,000).

use std::sync::Arc;
use std::time::{Duration, Instant};

use capstan_controllers::cached_pod::Pod;
use capstan_controllers::owner_index::OwnerIndex;
use capstan_controllers::{owners, pods};
use capstan_scheduler::selectors::{labels_of, selector_matches};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::runtime::reflector::{self, Store};
use kube::runtime::watcher;
use serde_json::json;

const OWNED: usize = 1000;
const RS_UID: &str = "5b1d2c3e-0000-4000-8000-000000000001";
const ROUNDS: u32 = 50;

fn pod(ns: &str, name: &str, app: &str, owner: Option<&str>) -> Pod {
    let owners = owner.map(|uid| {
        json!([{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "web", "uid": uid, "controller": true}])
    });
    let mut p: Pod = serde_json::from_value(json!({
        "metadata": {"name": name, "namespace": ns, "labels": {"app": app, "pod-template-hash": "abc"},
                     "ownerReferences": owners, "uid": format!("uid-{ns}-{name}"),
                     "creationTimestamp": "2026-12-01T00:00:00Z"},
        "spec": {"nodeName": "sim-node-1", "containers": [{"name": "app", "image": "pause",
                 "resources": {"requests": {"cpu": "10m", "memory": "16Mi"}}}]},
        "status": {"phase": "Running", "podIP": "10.128.0.9",
                   "conditions": [{"type": "Ready", "status": "True", "lastTransitionTime": "2026-12-01T00:00:01Z"}],
                   "containerStatuses": [{"name": "app", "image": "pause", "imageID": "", "ready": true,
                                          "restartCount": 0, "started": true}]}
    }))
    .expect("pod");
    pods::trim_for_cache(&mut p);
    p
}

/// The ReplicaSet's candidates as the sync found them before the index.
fn by_scan(store: &Store<Pod>, ns: &str, selector: &LabelSelector) -> Vec<Pod> {
    store
        .state()
        .iter()
        .filter(|p| p.metadata.namespace.as_deref() == Some(ns) && pods::is_active(p))
        .filter(|p| match owners::controller_of(&p.metadata) {
            Some(r) => r.uid == RS_UID,
            None => selector_matches(selector, labels_of(&p.metadata)),
        })
        .map(|p| (**p).clone())
        .collect()
}

/// The same through the index (what `informers::Shared::controlled_by`/`orphans_in` do).
fn by_index(ix: &OwnerIndex<Pod>, ns: &str, selector: &LabelSelector) -> Vec<Arc<Pod>> {
    ix.controlled_by(ns, RS_UID)
        .into_iter()
        .chain(ix.orphans_in(ns, |p| selector_matches(selector, labels_of(&p.metadata))))
        .filter(|p| pods::is_active(p))
        .collect()
}

fn time<T>(mut f: impl FnMut() -> T) -> (Duration, T) {
    let mut out = f();
    let started = Instant::now();
    for _ in 0..ROUNDS {
        out = f();
    }
    (started.elapsed() / ROUNDS, out)
}

fn main() {
    let bare: usize = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(30_000);
    let (store, mut writer) = reflector::store::<Pod>();
    let mut ix = OwnerIndex::default();
    let mut apply = |p: Pod| {
        let ev = watcher::Event::Apply(p);
        ix.before(&ev, &store);
        writer.apply_watcher_event(&ev);
        ix.after(&ev, &store);
    };
    for i in 0..bare {
        apply(pod("bench", &format!("bare-{i}"), "bare", None));
    }
    for i in 0..OWNED {
        apply(pod("web", &format!("web-{i}"), "web", Some(RS_UID)));
    }
    let selector: LabelSelector =
        serde_json::from_value(json!({"matchLabels": {"app": "web"}})).expect("selector");
    println!(
        "pod_index: one ReplicaSet sync's candidates among {} cached pods ({bare} bare in one namespace, {OWNED} of the ReplicaSet in another); mean of {ROUNDS}",
        bare + OWNED
    );
    for (case, ns) in [
        ("its own namespace", "web"),
        ("the bare pods' namespace (all orphans checked)", "bench"),
    ] {
        let (scan, a) = time(|| by_scan(&store, ns, &selector));
        let (index, b) = time(|| by_index(&ix, ns, &selector));
        assert_eq!(a.len(), b.len(), "both find the same pods");
        println!(
            "  {case}: {} candidates; scan and copy {:>8.1} µs, index {:>8.1} µs ({:.1}x)",
            a.len(),
            scan.as_secs_f64() * 1e6,
            index.as_secs_f64() * 1e6,
            scan.as_secs_f64() / index.as_secs_f64().max(1e-9)
        );
    }
}

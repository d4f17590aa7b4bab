//! Scheduling cycles over the cache alone (no API): 1,000 nodes and pods shaped as
//! `capstan bench --scenario schedule` makes them (a third plain, a third spread over
//! hostnames, a third anti-affine in groups of 1,000). Prints the CPU time of a decision —
//! prefilter, filters, scores, pick, assume — per block of pods, so a cost that grows
//! with the pods already placed shows as a rising figure.
//! Run: `cargo bench --workspace --bench cycles [-- PODS]` (scripts/test: 9,000 pods).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use capstan_scheduler::cache::{Cache, PodInfo};
use capstan_scheduler::framework::{find_feasible, select_host, Cycle};
use k8s_openapi::api::core::v1::{Node, Pod};
use serde_json::json;

const NODES: usize = 1000;

fn node(i: usize) -> Arc<Node> {
    let name = format!("sim-node-{i}");
    Arc::new(
        serde_json::from_value(json!({
            "metadata": {"name": name, "labels": {
                "kubernetes.io/hostname": name, "kubernetes.io/os": "linux",
                "kubernetes.io/arch": "amd64", "topology.kubernetes.io/zone": format!("zone-{}", i % 3)}},
            "status": {"allocatable": {"cpu": "32", "memory": "256Gi", "pods": "110"},
                       "capacity": {"cpu": "32", "memory": "256Gi", "pods": "110"}}
        }))
        .expect("node"),
    )
}

fn pod(i: usize) -> Arc<Pod> {
    let mut labels = json!({"bench": "schedule"});
    let mut spec = json!({"containers": [{"name": "app", "image": "pause",
        "resources": {"requests": {"cpu": "10m", "memory": "16Mi"}}}]});
    match i % 3 {
        0 => labels["kind"] = json!("plain"),
        1 => {
            labels["kind"] = json!("spread");
            spec["topologySpreadConstraints"] = json!([{"maxSkew": 1,
                "topologyKey": "kubernetes.io/hostname", "whenUnsatisfiable": "DoNotSchedule",
                "labelSelector": {"matchLabels": {"kind": "spread"}}}]);
        }
        _ => {
            let group = format!("g{}", (i / 3) / NODES);
            labels["kind"] = json!("anti");
            labels["group"] = json!(group);
            spec["affinity"] = json!({"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
                {"topologyKey": "kubernetes.io/hostname", "labelSelector": {"matchLabels": {"group": group}}}]}});
        }
    }
    Arc::new(
        serde_json::from_value(json!({
            "metadata": {"name": format!("sched-{i:06}"), "namespace": "capstan-bench-1234-abcdef",
                         "uid": format!("uid-{i}"), "labels": labels},
            "spec": spec
        }))
        .expect("pod"),
    )
}

fn main() {
    let pods: usize = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(30_000);
    let mut cache = Cache::default();
    for i in 0..NODES {
        cache.upsert_node(node(i));
    }
    let block = (pods / 10).max(1);
    let none = HashMap::new();
    let mut start = 0;
    let (mut spent, mut total, mut unplaced) = (Duration::ZERO, Duration::ZERO, 0);
    println!("scheduling cycles over the cache: {NODES} nodes, {pods} pods (⅓ plain, ⅓ spread, ⅓ anti-affinity)");
    for i in 0..pods {
        let info = Arc::new(PodInfo::new(pod(i)));
        let t = Instant::now();
        let cycle = Cycle::new(info.clone(), &cache);
        let found = find_feasible(&cycle, &cache, start, &none);
        start = (start + found.processed) % NODES;
        let chosen = match found.feasible.len() {
            0 => None,
            1 => Some(found.feasible[0].name().to_string()),
            _ => {
                let scores = cycle.score(&cache, &found.feasible);
                Some(found.feasible[select_host(&scores)].name().to_string())
            }
        };
        drop(found);
        drop(cycle);
        match chosen {
            Some(n) => cache.assume(info, &n),
            None => unplaced += 1,
        }
        spent += t.elapsed();
        if (i + 1) % block == 0 {
            println!(
                "  pods {:>6}..{:<6} {:>8.1} µs/decision",
                i + 1 - block,
                i + 1,
                spent.as_secs_f64() * 1e6 / block as f64
            );
            total += spent;
            spent = Duration::ZERO;
        }
    }
    total += spent;
    println!(
        "all {pods}: {:.1} µs/decision on average, {:.0} decisions/s of one core, {unplaced} unplaced",
        total.as_secs_f64() * 1e6 / pods as f64,
        pods as f64 / total.as_secs_f64()
    );
}

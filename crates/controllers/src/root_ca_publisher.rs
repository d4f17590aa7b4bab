//! The root-CA publisher (upstream's root-ca-cert-publisher): every active namespace has the
//! `kube-root-ca.crt` ConfigMap holding the cluster CA as `ca.crt`, kept equal to it.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use capstan_slim::Action;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace};
use kube::api::{Api, ObjectMeta, PostParams};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;
use kube::ResourceExt;

use crate::backoff::Backoff;
use crate::context::Context;

pub const NAME: &str = "kube-root-ca.crt";
const DESCRIPTION_KEY: &str = "kubernetes.io/description";
const DESCRIPTION: &str = "Contains a CA bundle that can be used to verify the kube-apiserver when using internal endpoints such as the internal service IP or kubernetes.default.svc. No other usage is guaranteed across distributions of Kubernetes clusters.";

struct Loop {
    ctx: Arc<Context>,
    ca: String,
    backoff: Backoff,
}

pub async fn run(ctx: Arc<Context>) {
    let Some(ca) = ctx.opts.root_ca_pem.clone() else {
        tracing::warn!("root-ca-cert-publisher: no CA known (--root-ca-file, or one the kubeconfig trusts); nothing to publish");
        return;
    };
    let lp = Arc::new(Loop {
        ctx: ctx.clone(),
        ca,
        backoff: Backoff::new(Duration::from_millis(200), Duration::from_secs(60)),
    });
    // Watched (and read) with the controller-manager's client, as upstream's shared informers:
    // the loop's own role only creates and updates ConfigMaps.
    let maps: Api<ConfigMap> = Api::all(ctx.informer_client());
    capstan_slim::controller(
        Api::<Namespace>::all(ctx.informer_client()),
        watcher::Config::default(),
    )
    .watches_stream(
        capstan_slim::touched(
            maps,
            watcher::Config::default().fields(&format!("metadata.name={NAME}")),
        ),
        |cm: ConfigMap| cm.namespace().map(|ns| ObjectRef::<Namespace>::new(&ns)),
    )
    .run(reconcile, error_policy, lp)
    .await;
}

fn error_policy(ns: Arc<Namespace>, err: &kube::Error, lp: Arc<Loop>) -> Action {
    let (attempts, delay) = lp.backoff.failed(&ns.name_any());
    tracing::warn!(namespace = %ns.name_any(), attempts, error = %err, "could not publish the root CA; retrying");
    Action::requeue(delay)
}

async fn reconcile(ns: Arc<Namespace>, lp: Arc<Loop>) -> Result<Action, kube::Error> {
    let name = ns.name_any();
    if ns.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let api: Api<ConfigMap> = Api::namespaced(lp.ctx.client.clone(), &name);
    let data = BTreeMap::from([("ca.crt".to_string(), lp.ca.clone())]);
    let read: Api<ConfigMap> = Api::namespaced(lp.ctx.informer_client(), &name);
    let result = match read.get_opt(NAME).await? {
        None => {
            let cm = ConfigMap {
                metadata: ObjectMeta {
                    name: Some(NAME.into()),
                    annotations: Some(BTreeMap::from([(
                        DESCRIPTION_KEY.to_string(),
                        DESCRIPTION.to_string(),
                    )])),
                    ..Default::default()
                },
                data: Some(data),
                ..Default::default()
            };
            api.create(&PostParams::default(), &cm).await.map(|_| ())
        }
        Some(mut cm) if cm.data.as_ref() != Some(&data) => {
            // Someone changed it: the CA is ours to say (upstream overwrites the data too).
            cm.data = Some(data);
            cm.binary_data = None;
            cm.annotations_mut()
                .insert(DESCRIPTION_KEY.to_string(), DESCRIPTION.to_string());
            api.replace(NAME, &PostParams::default(), &cm)
                .await
                .map(|_| ())
        }
        Some(_) => Ok(()),
    };
    match result {
        Ok(()) => {}
        // A race with another writer or a namespace that began terminating: the next
        // change brings us back.
        Err(kube::Error::Api(s)) if s.code == 409 || s.code == 403 || s.code == 404 => {}
        Err(e) => return Err(e),
    }
    lp.backoff.reset(&name);
    Ok(Action::await_change())
}

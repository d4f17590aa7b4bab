//! The proof that users can write their own control loops against capstan: a type defined
//! with kube-rs' `#[derive(CustomResource)]`, its generated CRD installed through the API,
//! and a `kube::runtime::Controller` that converges `status` to what `spec` asks for.

use std::sync::Arc;
use std::time::Duration;

use capstan_e2e::kube_client as client;
use capstan_e2e::Server;
use futures::StreamExt;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Patch, PatchParams, PostParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::watcher;
use kube::{Api, CustomResource, CustomResourceExt, ResourceExt};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::json;

#[derive(CustomResource, Deserialize, Serialize, Clone, Debug, JsonSchema)]
#[kube(
    group = "demo.capstan.dev",
    version = "v1",
    kind = "Echo",
    namespaced,
    status = "EchoStatus",
    shortname = "ec",
    printcolumn = r#"{"name":"Message","type":"string","jsonPath":".spec.message"}"#
)]
pub struct EchoSpec {
    pub message: String,
    #[serde(default)]
    pub times: u32,
}

#[derive(Deserialize, Serialize, Clone, Debug, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct EchoStatus {
    pub echoed: String,
    pub observed_generation: Option<i64>,
}

#[derive(Debug)]
struct ReconcileError(String);
impl std::fmt::Display for ReconcileError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}
impl std::error::Error for ReconcileError {}

async fn reconcile(echo: Arc<Echo>, api: Arc<Api<Echo>>) -> Result<Action, ReconcileError> {
    let echoed = echo.spec.message.repeat(echo.spec.times.max(1) as usize);
    let status =
        json!({"status": {"echoed": echoed, "observedGeneration": echo.metadata.generation}});
    api.patch_status(
        &echo.name_any(),
        &PatchParams::default(),
        &Patch::Merge(&status),
    )
    .await
    .map_err(|e| ReconcileError(e.to_string()))?;
    Ok(Action::requeue(Duration::from_secs(300)))
}

fn error_policy(_: Arc<Echo>, _: &ReconcileError, _: Arc<Api<Echo>>) -> Action {
    Action::requeue(Duration::from_millis(200))
}

async fn eventually<T>(what: &str, mut f: impl AsyncFnMut() -> Option<T>) -> T {
    // 30 s: generous, since CI shares two cores among parallel tests.
    for _ in 0..300 {
        if let Some(v) = f().await {
            return v;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("timed out waiting for {what}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kube_rs_controller_converges_status() {
    let s = Server::start();
    let c = client(&s).await;

    // Install the CRD kube-rs generates for the type.
    let crds: Api<CustomResourceDefinition> = Api::all(c.clone());
    crds.create(&PostParams::default(), &Echo::crd())
        .await
        .expect("create CRD");
    eventually("Established", async || {
        let crd = crds.get(Echo::crd_name()).await.ok()?;
        let conds = crd.status?.conditions?;
        conds
            .iter()
            .any(|c| c.type_ == "Established" && c.status == "True")
            .then_some(())
    })
    .await;

    let echoes: Api<Echo> = Api::namespaced(c.clone(), "default");
    let ctx = Arc::new(echoes.clone());
    let controller = tokio::spawn(
        Controller::new(Api::<Echo>::all(c.clone()), watcher::Config::default())
            .run(reconcile, error_policy, ctx)
            .for_each(|_| async {}),
    );

    let mut hello = Echo::new(
        "hello",
        EchoSpec {
            message: "hi".into(),
            times: 2,
        },
    );
    hello = echoes
        .create(&PostParams::default(), &hello)
        .await
        .expect("create Echo");
    assert_eq!(hello.metadata.generation, Some(1));
    let status = eventually("status from the controller", async || {
        let e = echoes.get("hello").await.ok()?;
        e.status.filter(|s| s.echoed == "hihi")
    })
    .await;
    assert_eq!(status.observed_generation, Some(1));

    // A spec change bumps the generation; the controller catches up on its own.
    echoes
        .patch(
            "hello",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"message": "yo", "times": 3}})),
        )
        .await
        .expect("patch spec");
    let status = eventually("status for generation 2", async || {
        let e = echoes.get("hello").await.ok()?;
        e.status.filter(|s| s.observed_generation == Some(2))
    })
    .await;
    assert_eq!(status.echoed, "yoyoyo");
    // The controller only ever wrote status: spec is the user's.
    let e = echoes.get("hello").await.unwrap();
    assert_eq!(e.spec.message, "yo");
    assert_eq!(e.spec.times, 3);
    assert_eq!(e.metadata.generation, Some(2));

    // A status write through the main endpoint is ignored (status belongs to /status).
    echoes
        .patch(
            "hello",
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"echoed": "forged"}})),
        )
        .await
        .unwrap();
    assert_eq!(
        echoes.get("hello").await.unwrap().status.unwrap().echoed,
        "yoyoyo"
    );
    controller.abort();
}

/// Server-side apply from both sides: the user applies spec, the controller applies only
/// status through `/status`; neither conflicts with the other and each owns its own part.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn controller_applies_status_while_the_user_applies_spec() {
    let s = Server::start();
    let c = client(&s).await;
    let crds: Api<CustomResourceDefinition> = Api::all(c.clone());
    crds.create(&PostParams::default(), &Echo::crd())
        .await
        .expect("create CRD");
    eventually("Established", async || {
        let crd = crds.get(Echo::crd_name()).await.ok()?;
        crd.status?
            .conditions?
            .iter()
            .any(|c| c.type_ == "Established" && c.status == "True")
            .then_some(())
    })
    .await;
    let echoes: Api<Echo> = Api::namespaced(c.clone(), "default");
    let user = PatchParams::apply("user");
    let spec = json!({"apiVersion": "demo.capstan.dev/v1", "kind": "Echo", "metadata": {"name": "e"}, "spec": {"message": "hi", "times": 2}});
    let e = echoes
        .patch("e", &user, &Patch::Apply(&spec))
        .await
        .expect("apply spec (creates)");
    assert_eq!(e.spec.message, "hi");
    let controller = PatchParams::apply("echo-controller").force();
    let status = json!({"apiVersion": "demo.capstan.dev/v1", "kind": "Echo", "status": {"echoed": "hihi", "observedGeneration": 1}});
    let e = echoes
        .patch_status("e", &controller, &Patch::Apply(&status))
        .await
        .expect("apply status");
    assert_eq!(e.status.as_ref().unwrap().echoed, "hihi");
    assert_eq!(e.spec.message, "hi", "a status apply leaves spec alone");
    // The user changes spec: no conflict with the controller's fields.
    let spec2 = json!({"apiVersion": "demo.capstan.dev/v1", "kind": "Echo", "metadata": {"name": "e"}, "spec": {"message": "yo", "times": 2}});
    let e = echoes
        .patch("e", &user, &Patch::Apply(&spec2))
        .await
        .expect("re-apply spec");
    assert_eq!(e.status.as_ref().unwrap().echoed, "hihi");
    let mf = e.metadata.managed_fields.clone().unwrap_or_default();
    let find = |m: &str| {
        mf.iter()
            .find(|f| f.manager.as_deref() == Some(m))
            .cloned()
            .unwrap()
    };
    let u = find("user");
    assert_eq!(u.operation.as_deref(), Some("Apply"));
    assert_eq!(u.subresource, None);
    let uf = serde_json::to_value(&u.fields_v1).unwrap();
    assert!(
        uf.get("f:spec").is_some() && uf.get("f:status").is_none(),
        "{uf}"
    );
    let ctl = find("echo-controller");
    assert_eq!(ctl.subresource.as_deref(), Some("status"));
    let cf = serde_json::to_value(&ctl.fields_v1).unwrap();
    assert!(
        cf.get("f:status").is_some() && cf.get("f:spec").is_none(),
        "{cf}"
    );
    // The controller re-applies a new status without force: still no conflict.
    let status2 = json!({"apiVersion": "demo.capstan.dev/v1", "kind": "Echo", "status": {"echoed": "yoyo", "observedGeneration": 2}});
    let e = echoes
        .patch_status(
            "e",
            &PatchParams::apply("echo-controller"),
            &Patch::Apply(&status2),
        )
        .await
        .expect("re-apply status");
    assert_eq!(e.status.unwrap().echoed, "yoyo");
    assert_eq!(e.spec.message, "yo");
}

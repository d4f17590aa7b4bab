//! API tests with a kube-rs client over the in-process router (no socket, no TLS): the
//! transport the built-in controllers use.

use std::sync::Arc;

use capstan_apiserver::{namespace_lifecycle, router, AppState};
use capstan_store::{SqliteConfig, SqliteStore, Store};
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::api::{ListParams, PostParams};
use kube::{Api, Client};
use serde_json::json;

async fn client() -> (Client, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let mut config = SqliteConfig::new(dir.path().join("store.db"));
    config.compaction = None;
    let store = SqliteStore::open(config).unwrap();
    let state = AppState::new(store as Arc<dyn Store>, "token");
    namespace_lifecycle::ensure_system_namespaces(&state)
        .await
        .unwrap();
    // The in-process client sends no credentials; authenticate it as the admin.
    let svc = tower::ServiceBuilder::new()
        .map_request(|mut req: http::Request<kube::client::Body>| {
            req.headers_mut().insert(
                "authorization",
                http::HeaderValue::from_static("Bearer token"),
            );
            req
        })
        .service(router(state));
    (Client::new(svc, "default"), dir)
}

#[tokio::test]
async fn in_process_client_creates_lists_and_gets_422s() {
    let (c, _dir) = client().await;
    let cms: Api<ConfigMap> = Api::default_namespaced(c.clone());
    let created = cms
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": "a"}, "data": {"k": "v"}}))
                .unwrap(),
        )
        .await
        .unwrap();
    assert!(created.metadata.uid.is_some());
    assert_eq!(
        cms.list(&ListParams::default()).await.unwrap().items.len(),
        1
    );
    let secrets: Api<Secret> = Api::default_namespaced(c);
    let bad: Secret =
        serde_json::from_value(json!({"metadata": {"name": "tls"}, "type": "kubernetes.io/tls"}))
            .unwrap();
    match secrets.create(&PostParams::default(), &bad).await {
        Err(kube::Error::Api(s)) => {
            assert_eq!((s.code, s.reason.as_str()), (422, "Invalid"));
            assert!(
                s.message.contains("data[tls.crt]: Required value"),
                "{}",
                s.message
            );
        }
        other => panic!("expected 422, got {other:?}"),
    }
}

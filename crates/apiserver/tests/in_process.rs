//! API tests with a kube-rs client over the in-process router (no socket, no TLS): the
//! transport the built-in controllers use.

use std::sync::Arc;

use capstan_apiserver::housekeeping::namespaces as namespace_lifecycle;
use capstan_apiserver::{router, AppState};
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

/// A fresh state on its own SQLite file (no compaction), system namespaces in place.
async fn fresh_state(dir: &std::path::Path) -> AppState {
    let mut config = SqliteConfig::new(dir.join("store.db"));
    config.compaction = None;
    let state = AppState::new(
        SqliteStore::open(config).unwrap() as Arc<dyn Store>,
        "token",
    );
    namespace_lifecycle::ensure_system_namespaces(&state)
        .await
        .unwrap();
    state
}

/// One request through the router as the admin: the code and the JSON body (or `{}`).
async fn send(
    app: &axum::Router,
    method: &str,
    path: &str,
    ct: &str,
    body: &str,
) -> (u16, serde_json::Value) {
    use tower::ServiceExt;
    let req = http::Request::builder()
        .method(method)
        .uri(path)
        .header("authorization", "Bearer token")
        .header("content-type", ct)
        .body(axum::body::Body::from(body.to_string()))
        .unwrap();
    let resp = app.clone().oneshot(req).await.unwrap();
    let code = resp.status().as_u16();
    let bytes = axum::body::to_bytes(resp.into_body(), usize::MAX)
        .await
        .unwrap();
    (code, serde_json::from_slice(&bytes).unwrap_or(json!({})))
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

/// Malformed requests get a Status with the right code, never a 500 or silent repair.
#[tokio::test]
async fn malformed_requests_get_status_answers() {
    let dir = tempfile::tempdir().unwrap();
    let app = router(fresh_state(dir.path()).await);
    let cms = "/api/v1/namespaces/default/configmaps";
    let created = send(
        &app,
        "POST",
        cms,
        "application/json",
        r#"{"metadata":{"name":"a"},"data":{"k":"v"}}"#,
    )
    .await;
    assert_eq!(created.0, 201);
    let cases: Vec<(&str, String, &str, &str, u16, &str)> = vec![
        (
            "POST",
            cms.into(),
            "application/json",
            "[1,2]",
            400,
            "must be a JSON object",
        ),
        (
            "POST",
            cms.into(),
            "application/json",
            r#"{"metadata":"x"}"#,
            400,
            "metadata must be an object",
        ),
        (
            "PUT",
            format!("{cms}/a"),
            "application/json",
            r#"{"metadata":"x","data":{}}"#,
            400,
            "metadata must be an object",
        ),
        (
            "PATCH",
            format!("{cms}/a"),
            "application/merge-patch+json",
            r#"{"metadata":7}"#,
            400,
            "metadata must be an object",
        ),
        (
            "PATCH",
            format!("{cms}/a"),
            "text/plain",
            "x",
            415,
            "unknown format",
        ),
        (
            "PATCH",
            format!("{cms}/a"),
            "application/json-patch+json",
            r#"{"op":"x"}"#,
            400,
            "JSON patch is malformed",
        ),
        (
            "GET",
            format!("{cms}?limit=ten"),
            "",
            "",
            400,
            "strconv.ParseInt: parsing \"ten\": invalid syntax",
        ),
        (
            "GET",
            format!("{cms}?continue=garbage"),
            "",
            "",
            400,
            "continue",
        ),
        (
            "GET",
            format!("{cms}?labelSelector=a%20in%20b"),
            "",
            "",
            400,
            "unable to parse requirement: found 'b' expected: '('",
        ),
        (
            "GET",
            format!("{cms}?watch=true&resourceVersion=abc"),
            "",
            "",
            400,
            "resourceVersion",
        ),
        (
            "DELETE",
            format!("{cms}/a"),
            "application/json",
            "garbage",
            400,
            "DeleteOptions",
        ),
        (
            "POST",
            format!("{cms}/a"),
            "application/json",
            "{}",
            405,
            "does not allow",
        ),
        (
            "POST",
            cms.into(),
            "application/vnd.kubernetes.protobuf",
            "k8sxx",
            400,
            "protobuf",
        ),
        // A body whose shape cannot be the type (upstream's decode error), on every path.
        (
            "POST",
            "/apis/apps/v1/namespaces/default/deployments".into(),
            "application/json",
            r#"{"metadata":{"name":"d"},"spec":"x"}"#,
            400,
            "cannot unmarshal string into field spec of type object",
        ),
        (
            "POST",
            "/apis/apps/v1/namespaces/default/deployments".into(),
            "application/json",
            r#"{"metadata":{"name":"d"},"spec":{"strategy":"x"}}"#,
            400,
            "field spec.strategy of type object",
        ),
        // Scalars of the wrong type are decode errors too, never stored.
        (
            "POST",
            "/api/v1/namespaces/default/pods".into(),
            "application/json",
            r#"{"metadata":{"name":"p"},"spec":{"activeDeadlineSeconds":1.5,"containers":[{"name":"c","image":"i","tty":"yes","ports":[{"containerPort":3000000000}]}]}}"#,
            400,
            "cannot unmarshal number 1.5 into field spec.activeDeadlineSeconds of type int64, cannot unmarshal number 3000000000 into field spec.containers[0].ports[0].containerPort of type int32, cannot unmarshal string into field spec.containers[0].tty of type bool",
        ),
        (
            "POST",
            "/api/v1/namespaces/default/services".into(),
            "application/json",
            r#"{"metadata":{"name":"s"},"spec":{"ports":[{"port":80,"targetPort":80.5}]}}"#,
            400,
            "cannot unmarshal number 80.5 into field spec.ports[0].targetPort of type int32",
        ),
        (
            "POST",
            "/api/v1/namespaces/default/pods".into(),
            "application/json",
            r#"{"metadata":{"name":"p"},"spec":{"containers":[{"name":"c","image":"i","resources":{"limits":{"cpu":true}}}]}}"#,
            400,
            "spec.containers[0].resources.limits.cpu: quantities must match the regular expression",
        ),
        (
            "PATCH",
            format!("{cms}/a"),
            "application/merge-patch+json",
            r#"{"data":{"k":1}}"#,
            400,
            "cannot unmarshal number 1 into field data.k of type string",
        ),
        (
            "PATCH",
            "/apis/apps/v1/namespaces/default/deployments/d?fieldManager=m".into(),
            "application/apply-patch+yaml",
            "{apiVersion: apps/v1, kind: Deployment, metadata: {name: d}, spec: x}",
            400,
            "cannot unmarshal string into field spec",
        ),
        (
            "PATCH",
            format!("{cms}/a?fieldManager=m"),
            "application/apply-patch+yaml",
            "{apiVersion: v1, kind: ConfigMap, metadata: x}",
            400,
            "metadata must be an object",
        ),
        (
            "PATCH",
            format!("{cms}/a"),
            "application/apply-patch+yaml",
            "{apiVersion: v1, kind: ConfigMap}",
            400,
            "require a fieldManager",
        ),
        (
            "GET",
            "/api/v1/namespaces/default/widgets".into(),
            "",
            "",
            404,
            "could not find",
        ),
    ];
    for (method, path, ct, body, code, needle) in cases {
        let (got, status) = send(&app, method, &path, ct, body).await;
        assert_eq!(got, code, "{method} {path}: {status}");
        assert_eq!(status["kind"], "Status", "{method} {path}");
        assert!(
            status["message"].as_str().unwrap_or("").contains(needle),
            "{method} {path}: {status}"
        );
    }
    // The object the bad requests aimed at is untouched.
    let (_, obj) = send(&app, "GET", &format!("{cms}/a"), "", "").await;
    assert_eq!(obj["data"], json!({"k": "v"}));
}

/// A rule whose CRD-time cost estimate was too low (it joins the whole list once per item:
/// quadratic) is cut off at the runner's deadline with upstream's 422, a second one waits
/// for the only evaluation slot and gets a 429, and the server keeps answering meanwhile.
#[tokio::test]
async fn a_runaway_cel_rule_is_cut_off_not_waited_for() {
    use capstan_apiserver::types::cel_runner::CelRunner;
    use std::time::{Duration, Instant};
    let dir = tempfile::tempdir().unwrap();
    let state = fresh_state(dir.path())
        .await
        .with_cel_runner(CelRunner::new(1, Duration::from_millis(300)));
    let app = router(state);
    const JSON: &str = "application/json";
    let crd = json!({
        "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
        "metadata": {"name": "tags.example.com"},
        "spec": {"group": "example.com", "scope": "Namespaced",
            "names": {"plural": "tags", "kind": "Tag"},
            "versions": [{"name": "v1", "served": true, "storage": true, "schema": {"openAPIV3Schema": {
                "type": "object", "properties": {"spec": {"type": "object", "properties": {"names": {
                    // Bounded, so the estimate (which does not price what `join` builds)
                    // lets the rule in; its run time is quadratic all the same.
                    "type": "array", "maxItems": 50000, "items": {"type": "string", "maxLength": 7},
                    "x-kubernetes-validations": [{"rule": "self.all(x, self.join(',').contains(x))"}]
                }}}}}}}]}
    });
    let (code, body) = send(
        &app,
        "POST",
        "/apis/apiextensions.k8s.io/v1/customresourcedefinitions",
        JSON,
        &crd.to_string(),
    )
    .await;
    assert_eq!(code, 201, "{body}");
    let names: Vec<String> = (0..50_000).map(|i| format!("n{i:06}")).collect();
    let tag = |name: &str| {
        json!({"apiVersion": "example.com/v1", "kind": "Tag", "metadata": {"name": name},
               "spec": {"names": names}})
        .to_string()
    };
    let tags = "/apis/example.com/v1/namespaces/default/tags";
    let started = Instant::now();
    let (code, body) = send(&app, "POST", tags, JSON, &tag("big")).await;
    let took = started.elapsed();
    assert_eq!(code, 422, "{body}");
    assert!(
        body["message"]
            .as_str()
            .unwrap_or("")
            .contains("validation failed due to running out of cost budget"),
        "{body}"
    );
    assert!(took < Duration::from_secs(5), "answered after {took:?}");
    // The runaway still holds the only slot: the next evaluation is refused, not queued
    // for ever; requests without rules are unaffected.
    let (code, body) = send(&app, "POST", tags, JSON, &tag("next")).await;
    assert_eq!(code, 429, "{body}");
    let started = Instant::now();
    let (code, _) = send(&app, "GET", "/api/v1/namespaces/default/configmaps", "", "").await;
    assert_eq!(code, 200);
    assert!(started.elapsed() < Duration::from_secs(2));
    let (code, body) = send(&app, "GET", &format!("{tags}/big"), "", "").await;
    assert_eq!(code, 404, "nothing was stored: {body}");
}

/// `client_as` acts as its user under RBAC (upstream's roles), and a `User` extension without
/// the in-process marker is no credential at all.
#[tokio::test]
async fn client_as_acts_as_its_user_and_only_in_process() {
    use capstan_apiserver::serving::user_info::User;
    use k8s_openapi::api::core::v1::Node;
    let dir = tempfile::tempdir().unwrap();
    let state = fresh_state(dir.path()).await;
    capstan_apiserver::authz::bootstrap_policy::ensure_bootstrap_policy(&state)
        .await
        .unwrap();
    let scheduler = capstan_apiserver::in_process_client_as(
        state.clone(),
        User::named("system:kube-scheduler", "", &[]),
    );
    Api::<Node>::all(scheduler.clone())
        .list(&ListParams::default())
        .await
        .expect("the scheduler lists nodes");
    let err = Api::<Secret>::namespaced(scheduler, "default")
        .list(&ListParams::default())
        .await
        .unwrap_err();
    match err {
        kube::Error::Api(s) => {
            assert_eq!(s.code, 403);
            assert!(
                s.message
                    .contains("User \"system:kube-scheduler\" cannot list resource \"secrets\""),
                "{}",
                s.message
            );
        }
        e => panic!("{e}"),
    }
    // A request that carries a User but not the in-process marker is anonymous.
    use tower::ServiceExt;
    let mut req = http::Request::builder()
        .uri("/api/v1/namespaces/default/secrets")
        .body(axum::body::Body::empty())
        .unwrap();
    req.extensions_mut().insert(User::admin());
    let resp = router(state).oneshot(req).await.unwrap();
    assert_eq!(resp.status().as_u16(), 403, "anonymous, not the admin");
}

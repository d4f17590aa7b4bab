//! Answers that must be kube-apiserver 1.33's, byte for byte where a client reads them:
//! namespace deletion rules, bounded warnings, RBAC names, percent-encoded paths, list
//! query parameters, and the anonymous user. One server serves the whole file; requests go
//! through kubectl where a user would use it, else raw over TLS with a kube-rs client.

use std::time::Duration;

use capstan_e2e::{text, Server};
use futures::TryStreamExt;
use http::{HeaderMap, Method, Request};
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{ListParams, PostParams, WatchEvent, WatchParams};
use kube::config::{AuthInfo, KubeConfigOptions, Kubeconfig};
use kube::{Api, Client};
use serde_json::{json, Value};

/// A client with the server's CA and no credentials of its own: each request carries the
/// `Authorization` header the test chooses (or none).
async fn bare_client(s: &Server) -> Client {
    let kc = Kubeconfig::read_from(s.kubeconfig()).expect("read kubeconfig");
    let mut config = kube::Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
        .await
        .expect("kubeconfig");
    config.auth_info = AuthInfo::default();
    Client::try_from(config).expect("client")
}

async fn admin_client(s: &Server) -> Client {
    let kc = Kubeconfig::read_from(s.kubeconfig()).expect("read kubeconfig");
    let config = kube::Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
        .await
        .expect("kubeconfig");
    Client::try_from(config).expect("client")
}

struct Answer {
    code: u16,
    headers: HeaderMap,
    body: Value,
}

struct Raw {
    client: Client,
    token: String,
}

impl Raw {
    async fn new(s: &Server) -> Raw {
        let token = std::fs::read_to_string(s.data_dir.join("admin-token"))
            .expect("admin token")
            .trim()
            .to_string();
        Raw {
            client: bare_client(s).await,
            token,
        }
    }

    async fn send(
        &self,
        method: Method,
        path: &str,
        auth: Option<&str>,
        content_type: &str,
        body: Vec<u8>,
    ) -> Answer {
        let mut req = Request::builder().method(method).uri(path);
        if let Some(a) = auth {
            req = req.header("authorization", a);
        }
        if !content_type.is_empty() {
            req = req.header("content-type", content_type);
        }
        let req = req.body(kube::client::Body::from(body)).expect("request");
        let resp = self.client.send(req).await.expect("send");
        let code = resp.status().as_u16();
        let headers = resp.headers().clone();
        let bytes = resp.into_body().collect_bytes().await.expect("body");
        Answer {
            code,
            headers,
            body: serde_json::from_slice(&bytes)
                .unwrap_or_else(|_| json!(String::from_utf8_lossy(&bytes))),
        }
    }

    /// As the admin.
    async fn admin(&self, method: Method, path: &str) -> Answer {
        let auth = format!("Bearer {}", self.token);
        self.send(method, path, Some(&auth), "", Vec::new()).await
    }

    async fn admin_post(&self, path: &str, body: Vec<u8>) -> Answer {
        let auth = format!("Bearer {}", self.token);
        self.send(Method::POST, path, Some(&auth), "application/json", body)
            .await
    }
}

/// A client-go-shaped request: protobuf first in `Accept`; the body is kept as bytes.
async fn proto_request(
    raw: &Raw,
    method: Method,
    path: &str,
    accept: &str,
    body: Option<Vec<u8>>,
) -> (u16, String, Vec<u8>) {
    let mut req = Request::builder()
        .method(method)
        .uri(path)
        .header("authorization", format!("Bearer {}", raw.token))
        .header("accept", accept);
    if body.is_some() {
        req = req.header("content-type", "application/vnd.kubernetes.protobuf");
    }
    let req = req
        .body(kube::client::Body::from(body.unwrap_or_default()))
        .expect("request");
    let resp = raw.client.send(req).await.expect("send");
    let code = resp.status().as_u16();
    let ct = resp
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let bytes = resp.into_body().collect_bytes().await.expect("body");
    (code, ct, bytes.to_vec())
}

/// A core/v1 message in the `k8s\0` + `runtime.Unknown` envelope client-go sends.
fn envelope(kind: &str, raw: Vec<u8>) -> Vec<u8> {
    use prost::Message;
    let mut env = b"k8s\0".to_vec();
    env.extend(
        k8s_pb::apimachinery::pkg::runtime::Unknown {
            type_meta: Some(k8s_pb::apimachinery::pkg::runtime::TypeMeta {
                api_version: Some("v1".into()),
                kind: Some(kind.into()),
            }),
            raw: Some(raw),
            content_encoding: Some(String::new()),
            content_type: Some(String::new()),
        }
        .encode_to_vec(),
    );
    env
}

/// The `runtime.Unknown` inside a `k8s\0` envelope, read with k8s-pb's generated types.
fn unknown(bytes: &[u8]) -> k8s_pb::apimachinery::pkg::runtime::Unknown {
    use prost::Message;
    assert_eq!(
        &bytes[..4.min(bytes.len())],
        b"k8s\0",
        "{}",
        String::from_utf8_lossy(bytes)
    );
    k8s_pb::apimachinery::pkg::runtime::Unknown::decode(&bytes[4..]).expect("envelope")
}

/// A failure Status with this code, reason and message.
fn assert_status(a: &Answer, code: u16, reason: &str, message: &str) {
    assert_eq!(a.code, code, "{}", a.body);
    assert_eq!(a.body["kind"], "Status", "{}", a.body);
    assert_eq!(a.body["code"], code, "{}", a.body);
    assert_eq!(a.body["reason"], reason, "{}", a.body);
    assert_eq!(a.body["message"], message, "{}", a.body);
}

fn namespace_verbs(resources: &Value) -> Vec<String> {
    resources
        .as_array()
        .and_then(|rs| {
            rs.iter()
                .find(|r| r["name"] == "namespaces" || r["resource"] == "namespaces")
        })
        .and_then(|r| r["verbs"].as_array())
        .expect("namespaces in discovery")
        .iter()
        .filter_map(|v| v.as_str().map(String::from))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_answers() {
    let s = Server::start();
    let raw = Raw::new(&s).await;
    namespaces(&s, &raw).await;
    warnings(&raw).await;
    rbac_names(&s, &raw).await;
    percent_encoded_paths(&s, &raw).await;
    list_parameters(&s, &raw).await;
    authentication(&raw).await;
    protobuf_responses(&s, &raw).await;
}

async fn namespaces(s: &Server, raw: &Raw) {
    // No deletecollection for namespaces: the router's 405, and discovery does not offer it.
    let a = raw.admin(Method::DELETE, "/api/v1/namespaces").await;
    assert_status(
        &a,
        405,
        "MethodNotAllowed",
        "the server does not allow this method on the requested resource",
    );
    let legacy = raw.admin(Method::GET, "/api/v1").await;
    let verbs = namespace_verbs(&legacy.body["resources"]);
    assert_eq!(
        verbs,
        ["create", "delete", "get", "list", "patch", "update", "watch"]
    );
    let auth = format!("Bearer {}", raw.token);
    let req = Request::builder()
        .uri("/api")
        .header("authorization", &auth)
        .header(
            "accept",
            "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList",
        )
        .body(kube::client::Body::empty())
        .unwrap();
    let resp = raw.client.send(req).await.unwrap();
    let doc: Value =
        serde_json::from_slice(&resp.into_body().collect_bytes().await.unwrap()).unwrap();
    let verbs = namespace_verbs(&doc["items"][0]["versions"][0]["resources"]);
    assert!(!verbs.iter().any(|v| v == "deletecollection"), "{verbs:?}");
    // The kubectl a user runs still deletes namespaces one by one.
    assert!(verbs.iter().any(|v| v == "delete"), "{verbs:?}");

    // NamespaceLifecycle: default, kube-system and kube-public are immortal.
    let out = s.kubectl(&["delete", "namespace", "default"]);
    let (_, err) = text(&out);
    assert!(!out.status.success());
    assert!(
        err.contains(r#"namespaces "default" is forbidden: this namespace may not be deleted"#),
        "{err}"
    );
    for ns in ["kube-system", "kube-public"] {
        let a = raw
            .admin(Method::DELETE, &format!("/api/v1/namespaces/{ns}"))
            .await;
        assert_status(
            &a,
            403,
            "Forbidden",
            &format!("namespaces \"{ns}\" is forbidden: this namespace may not be deleted"),
        );
        assert_eq!(a.body["details"], json!({"name": ns, "kind": "namespaces"}));
    }
    assert!(s
        .kubectl_ok(&["get", "namespace", "default", "-o", "name"])
        .contains("namespace/default"));
    // kube-node-lease is not immortal upstream.
    s.kubectl_ok(&["delete", "namespace", "kube-node-lease", "--wait=false"]);
}

async fn warnings(raw: &Raw) {
    // 350k copies of one key: one warning, one header, and a prompt answer.
    let mut body = String::from(
        r#"{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"dups"},"data":{"a":"0""#,
    );
    for _ in 0..350_000 {
        body.push_str(r#","a":"1""#);
    }
    body.push_str("}}");
    let started = std::time::Instant::now();
    let a = raw
        .admin_post("/api/v1/namespaces/default/configmaps", body.into_bytes())
        .await;
    assert_eq!(a.code, 201, "{}", a.body);
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "350k duplicate keys took {:?}",
        started.elapsed()
    );
    let got: Vec<&str> = a
        .headers
        .get_all("warning")
        .iter()
        .map(|v| v.to_str().unwrap())
        .collect();
    assert_eq!(got, [r#"299 - "duplicate field \"data.a\"""#]);
    assert_eq!(a.body["data"], json!({"a": "1"}));

    // Many distinct duplicates: at most 100 reported (the strict decoder's cap), and the
    // headers stay within upstream's 4096-rune budget.
    let mut data = String::new();
    for i in 0..300 {
        data.push_str(&format!(
            r#""key-{i:03}-{}":"x","key-{i:03}-{}":"y","#,
            "k".repeat(40),
            "k".repeat(40)
        ));
    }
    let body = format!(
        r#"{{"apiVersion":"v1","kind":"ConfigMap","metadata":{{"name":"many-dups"}},"data":{{{data}"z":"z"}}}}"#
    );
    let a = raw
        .admin_post("/api/v1/namespaces/default/configmaps", body.into_bytes())
        .await;
    assert_eq!(a.code, 201, "{}", a.body);
    let got: Vec<String> = a
        .headers
        .get_all("warning")
        .iter()
        .map(|v| v.to_str().unwrap().to_string())
        .collect();
    assert!(
        !got.is_empty() && got.len() <= 100,
        "{} warnings",
        got.len()
    );
    let runes: usize = got
        .iter()
        .map(|h| h.trim_start_matches("299 - ").chars().count() - 2)
        .sum();
    assert!(runes <= 4096 + 300, "{runes} runes of warnings");
    let distinct: std::collections::HashSet<&String> = got.iter().collect();
    assert_eq!(distinct.len(), got.len(), "each warning once");
}

async fn rbac_names(s: &Server, raw: &Raw) {
    // Upstream holds RBAC names only to the path-segment rule.
    s.kubectl_ok(&[
        "create",
        "clusterrole",
        "system:controller:foo",
        "--verb=get",
        "--resource=pods",
    ]);
    s.kubectl_ok(&[
        "create",
        "clusterrolebinding",
        "system:controller:foo",
        "--clusterrole=system:controller:foo",
        "--user=alice",
    ]);
    s.kubectl_ok(&[
        "create",
        "role",
        "ns:reader",
        "-n",
        "default",
        "--verb=list",
        "--resource=configmaps",
    ]);
    s.kubectl_ok(&[
        "create",
        "rolebinding",
        "ns:reader",
        "-n",
        "default",
        "--role=ns:reader",
        "--user=bob",
    ]);
    let got = s.kubectl_ok(&["get", "clusterrole", "system:controller:foo", "-o", "name"]);
    assert_eq!(
        got.trim(),
        "clusterrole.rbac.authorization.k8s.io/system:controller:foo"
    );
    let got = s.kubectl_ok(&[
        "get",
        "rolebinding",
        "ns:reader",
        "-n",
        "default",
        "-o",
        "name",
    ]);
    assert_eq!(
        got.trim(),
        "rolebinding.rbac.authorization.k8s.io/ns:reader"
    );
    // What the path-segment rule still refuses.
    let body = json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole", "metadata": {"name": "50%"}});
    let a = raw
        .admin_post(
            "/apis/rbac.authorization.k8s.io/v1/clusterroles",
            body.to_string().into_bytes(),
        )
        .await;
    assert_status(
        &a,
        422,
        "Invalid",
        r#"ClusterRole.rbac.authorization.k8s.io "50%" is invalid: metadata.name: Invalid value: "50%": may not contain '%'"#,
    );
    // Other kinds keep their DNS rules: a ConfigMap may not have a colon.
    let out = s.kubectl(&["create", "configmap", "a:b"]);
    assert!(!out.status.success());
    assert!(
        text(&out).1.contains("RFC 1123 subdomain"),
        "{}",
        text(&out).1
    );
}

async fn percent_encoded_paths(s: &Server, raw: &Raw) {
    s.kubectl_ok(&["create", "configmap", "my-cm", "--from-literal=k=v"]);
    let a = raw
        .admin(Method::GET, "/api/v1/namespaces/default/configmaps/my%2Dcm")
        .await;
    assert_eq!(a.code, 200, "{}", a.body);
    assert_eq!(a.body["metadata"]["name"], "my-cm");
    let a = raw
        .admin(Method::GET, "/api/v1/namespaces/def%61ult/configmaps")
        .await;
    assert_eq!(a.code, 200, "{}", a.body);
}

async fn list_parameters(s: &Server, raw: &Raw) {
    let cms = "/api/v1/namespaces/default/configmaps";
    let a = raw.admin(Method::GET, &format!("{cms}?limit=-1")).await;
    assert_eq!(a.code, 200, "{}", a.body);
    assert!(a.body["metadata"].get("continue").is_none(), "{}", a.body);

    let a = raw
        .admin(Method::GET, &format!("{cms}?labelSelector=a%3D%3D%3Db"))
        .await;
    assert_status(
        &a,
        400,
        "BadRequest",
        "unable to parse requirement: found '=', expected: identifier",
    );

    for watch in ["", "&watch=true"] {
        let a = raw
            .admin(Method::GET, &format!("{cms}?timeoutSeconds=abc{watch}"))
            .await;
        assert_status(
            &a,
            400,
            "BadRequest",
            r#"strconv.ParseInt: parsing "abc": invalid syntax"#,
        );
    }

    let a = raw
        .admin(
            Method::GET,
            &format!("{cms}?resourceVersionMatch=NotOlderThan"),
        )
        .await;
    assert_status(
        &a,
        422,
        "Invalid",
        r#"ListOptions.meta.k8s.io "" is invalid: resourceVersionMatch: Forbidden: resourceVersionMatch is forbidden unless resourceVersion is provided"#,
    );
    assert_eq!(a.body["details"]["group"], "meta.k8s.io");
    assert_eq!(a.body["details"]["kind"], "ListOptions");
    assert_eq!(
        a.body["details"]["causes"],
        json!([{"reason": "FieldValueForbidden", "field": "resourceVersionMatch", "message": "Forbidden: resourceVersionMatch is forbidden unless resourceVersion is provided"}])
    );
    let a = raw
        .admin(
            Method::GET,
            &format!("{cms}?watch=true&resourceVersion=1&resourceVersionMatch=NotOlderThan"),
        )
        .await;
    assert_status(
        &a,
        422,
        "Invalid",
        r#"ListOptions.meta.k8s.io "" is invalid: resourceVersionMatch: Forbidden: resourceVersionMatch is forbidden for watch unless sendInitialEvents is provided"#,
    );

    // timeoutSeconds=0 is the server's default timeout, not "end now": the watch is still
    // open to see a write made after it started.
    let api: Api<ConfigMap> = Api::namespaced(admin_client(s).await, "default");
    let rv = api
        .list(&ListParams::default())
        .await
        .unwrap()
        .metadata
        .resource_version
        .unwrap();
    let stream = api
        .watch(&WatchParams::default().timeout(0), &rv)
        .await
        .unwrap();
    let mut stream = Box::pin(stream);
    let cm: ConfigMap =
        serde_json::from_value(json!({"metadata": {"name": "after-watch"}})).unwrap();
    api.create(&PostParams::default(), &cm).await.unwrap();
    let seen = tokio::time::timeout(Duration::from_secs(30), async {
        while let Some(ev) = stream.try_next().await.unwrap() {
            if let WatchEvent::Added(o) = ev {
                if o.metadata.name.as_deref() == Some("after-watch") {
                    return true;
                }
            }
        }
        false
    })
    .await
    .expect("the watch delivers the write");
    assert!(seen, "the watch ended before the write arrived");
}

async fn authentication(raw: &Raw) {
    // No credentials: the anonymous user, refused by the authorizer (403), not a 401.
    let a = raw
        .send(Method::GET, "/api/v1/namespaces", None, "", Vec::new())
        .await;
    assert_status(
        &a,
        403,
        "Forbidden",
        r#"namespaces is forbidden: User "system:anonymous" cannot list resource "namespaces" in API group "" at the cluster scope"#,
    );
    assert_eq!(a.body["details"], json!({"kind": "namespaces"}));
    let a = raw
        .send(
            Method::GET,
            "/apis/apps/v1/namespaces/default/deployments/web",
            None,
            "",
            Vec::new(),
        )
        .await;
    assert_status(
        &a,
        403,
        "Forbidden",
        r#"deployments.apps "web" is forbidden: User "system:anonymous" cannot get resource "deployments" in API group "apps" in the namespace "default""#,
    );
    let a = raw.send(Method::GET, "/apis", None, "", Vec::new()).await;
    assert_status(
        &a,
        403,
        "Forbidden",
        r#"forbidden: User "system:anonymous" cannot get path "/apis""#,
    );
    // The health endpoints and /version stay open.
    for path in ["/healthz", "/livez", "/readyz", "/version"] {
        let a = raw.send(Method::GET, path, None, "", Vec::new()).await;
        assert_eq!(a.code, 200, "{path}: {}", a.body);
    }
    // The scheme is case-insensitive.
    let lower = format!("bearer {}", raw.token);
    let a = raw
        .send(
            Method::GET,
            "/api/v1/namespaces",
            Some(&lower),
            "",
            Vec::new(),
        )
        .await;
    assert_eq!(a.code, 200, "{}", a.body);
    // A wrong token is never anonymous: 401.
    let a = raw
        .send(
            Method::GET,
            "/api/v1/namespaces",
            Some("Bearer not-the-token"),
            "",
            Vec::new(),
        )
        .await;
    assert_status(&a, 401, "Unauthorized", "Unauthorized");
}

const CLIENT_GO_ACCEPT: &str = "application/vnd.kubernetes.protobuf, application/json";
const PROTOBUF: &str = "application/vnd.kubernetes.protobuf";

/// client-go's protobuf: GET, LIST, DELETE, WATCH and errors of built-in kinds answer
/// protobuf, decoded here with k8s-pb's generated types; custom resources answer JSON.
async fn protobuf_responses(s: &Server, raw: &Raw) {
    use k8s_pb::api::core::v1 as core;
    use k8s_pb::apimachinery::pkg::apis::meta::v1 as meta;
    use prost::Message;
    s.kubectl_ok(&["create", "namespace", "pb"]);
    s.kubectl_ok(&[
        "create",
        "configmap",
        "pb-cm",
        "-n",
        "pb",
        "--from-literal=a=1",
        "--from-literal=b=two",
    ]);
    let base = "/api/v1/namespaces/pb/configmaps";

    let (code, ct, body) = proto_request(
        raw,
        Method::GET,
        &format!("{base}/pb-cm"),
        CLIENT_GO_ACCEPT,
        None,
    )
    .await;
    assert_eq!((code, ct.as_str()), (200, PROTOBUF));
    let u = unknown(&body);
    let tm = u.type_meta.clone().expect("typeMeta");
    assert_eq!((tm.api_version(), tm.kind()), ("v1", "ConfigMap"));
    let cm = core::ConfigMap::decode(u.raw()).expect("ConfigMap");
    let m = cm.metadata.expect("metadata");
    assert_eq!((m.name(), m.namespace()), ("pb-cm", "pb"));
    assert!(
        !m.uid().is_empty() && m.creation_timestamp.is_some(),
        "{m:?}"
    );
    assert_eq!(cm.data.get("a").map(String::as_str), Some("1"));
    assert_eq!(cm.data.get("b").map(String::as_str), Some("two"));

    // JSON first in Accept is JSON.
    let (_, ct, _) = proto_request(
        raw,
        Method::GET,
        &format!("{base}/pb-cm"),
        "application/json, application/vnd.kubernetes.protobuf",
        None,
    )
    .await;
    assert_eq!(ct, "application/json");

    s.kubectl_ok(&[
        "create",
        "configmap",
        "pb-cm2",
        "-n",
        "pb",
        "--from-literal=c=3",
    ]);
    let (code, ct, body) = proto_request(raw, Method::GET, base, CLIENT_GO_ACCEPT, None).await;
    assert_eq!((code, ct.as_str()), (200, PROTOBUF));
    let u = unknown(&body);
    assert_eq!(u.type_meta.clone().unwrap().kind(), "ConfigMapList");
    let list = core::ConfigMapList::decode(u.raw()).expect("list");
    let names: Vec<&str> = list
        .items
        .iter()
        .filter_map(|i| i.metadata.as_ref())
        .map(|m| m.name())
        .collect();
    assert_eq!(names, ["kube-root-ca.crt", "pb-cm", "pb-cm2"]);
    let list_rv: i64 = list
        .metadata
        .unwrap()
        .resource_version()
        .parse()
        .expect("list resourceVersion");

    // A 404 is a protobuf Status.
    let (code, ct, body) = proto_request(
        raw,
        Method::GET,
        &format!("{base}/nope"),
        CLIENT_GO_ACCEPT,
        None,
    )
    .await;
    assert_eq!((code, ct.as_str()), (404, PROTOBUF));
    let u = unknown(&body);
    assert_eq!(u.type_meta.clone().unwrap().kind(), "Status");
    let st = meta::Status::decode(u.raw()).expect("Status");
    assert_eq!(
        (st.code(), st.reason(), st.status()),
        (404, "NotFound", "Failure")
    );
    assert_eq!(st.message(), "configmaps \"nope\" not found");

    // A pod (nested messages, quantities, int-or-string) reads back.
    s.kubectl_ok(&["run", "pb-pod", "-n", "pb", "--image=busybox", "--restart=Never", "--port=8080", "--overrides={\"spec\":{\"containers\":[{\"name\":\"pb-pod\",\"image\":\"busybox\",\"resources\":{\"limits\":{\"cpu\":\"250m\"}},\"readinessProbe\":{\"httpGet\":{\"port\":\"http\"}}}]}}"]);
    let (code, _, body) = proto_request(
        raw,
        Method::GET,
        "/api/v1/namespaces/pb/pods/pb-pod",
        PROTOBUF,
        None,
    )
    .await;
    assert_eq!(code, 200, "{}", String::from_utf8_lossy(&body));
    let pod = core::Pod::decode(unknown(&body).raw()).expect("Pod");
    let c = &pod.spec.expect("spec").containers[0];
    assert_eq!(c.resources.as_ref().unwrap().limits["cpu"].string(), "250m");
    let probe = c
        .readiness_probe
        .as_ref()
        .unwrap()
        .handler
        .as_ref()
        .unwrap();
    assert_eq!(
        probe
            .http_get
            .as_ref()
            .unwrap()
            .port
            .as_ref()
            .unwrap()
            .str_val(),
        "http"
    );

    // kubectl still reads what it asked protobuf for (create answers protobuf now).
    let out = s.kubectl_ok(&[
        "create",
        "configmap",
        "pb-cm3",
        "-n",
        "pb",
        "--from-literal=d=4",
    ]);
    assert_eq!(out.trim(), "configmap/pb-cm3 created");
    let out = s.kubectl(&["create", "configmap", "pb-cm3", "-n", "pb"]);
    let (_, err) = text(&out);
    assert!(!out.status.success());
    assert!(
        err.contains("configmaps \"pb-cm3\" already exists"),
        "{err}"
    );

    // DELETE with a protobuf DeleteOptions body answers a protobuf Status … or the object.
    let opts = meta::DeleteOptions {
        grace_period_seconds: Some(0),
        ..Default::default()
    };
    let env = envelope("DeleteOptions", opts.encode_to_vec());
    let (code, ct, body) = proto_request(
        raw,
        Method::DELETE,
        &format!("{base}/pb-cm2"),
        CLIENT_GO_ACCEPT,
        Some(env),
    )
    .await;
    assert_eq!(
        (code, ct.as_str()),
        (200, PROTOBUF),
        "{}",
        String::from_utf8_lossy(&body)
    );
    let u = unknown(&body);
    // Upstream answers a deleted ConfigMap with a Success Status.
    let kind = u.type_meta.clone().unwrap().kind().to_string();
    match kind.as_str() {
        "Status" => assert_eq!(meta::Status::decode(u.raw()).unwrap().status(), "Success"),
        "ConfigMap" => assert_eq!(
            core::ConfigMap::decode(u.raw())
                .unwrap()
                .metadata
                .unwrap()
                .name(),
            "pb-cm2"
        ),
        other => panic!("DELETE answered {other}"),
    }
    s.kubectl_ok(&["label", "configmap", "pb-cm", "-n", "pb", "x=y"]);
    s.kubectl_ok(&["delete", "configmap", "pb-cm", "-n", "pb"]);

    // A protobuf create keeps the empty messages that mean something: `emptyDir: {}` is the
    // volume's type (as client-go sends a Pod with a scratch volume).
    let pod = core::Pod {
        metadata: Some(meta::ObjectMeta {
            name: Some("pb-scratch".into()),
            ..Default::default()
        }),
        spec: Some(core::PodSpec {
            containers: vec![core::Container {
                name: Some("c".into()),
                image: Some("busybox".into()),
                volume_mounts: vec![core::VolumeMount {
                    name: Some("scratch".into()),
                    mount_path: Some("/scratch".into()),
                    ..Default::default()
                }],
                ..Default::default()
            }],
            volumes: vec![core::Volume {
                name: Some("scratch".into()),
                volume_source: Some(core::VolumeSource {
                    empty_dir: Some(core::EmptyDirVolumeSource::default()),
                    ..Default::default()
                }),
            }],
            ..Default::default()
        }),
        status: None,
    };
    let env = envelope("Pod", pod.encode_to_vec());
    let (code, _, body) = proto_request(
        raw,
        Method::POST,
        "/api/v1/namespaces/pb/pods",
        CLIENT_GO_ACCEPT,
        Some(env),
    )
    .await;
    assert_eq!(code, 201, "{}", String::from_utf8_lossy(&body));
    let volume = s.kubectl_ok(&[
        "get",
        "pod",
        "pb-scratch",
        "-n",
        "pb",
        "-o",
        "jsonpath={.spec.volumes[0]}",
    ]);
    let volume: serde_json::Value = serde_json::from_str(volume.trim()).expect("volume JSON");
    assert_eq!(
        volume,
        serde_json::json!({"name": "scratch", "emptyDir": {}})
    );

    // WATCH from the list's resourceVersion replays what happened since, as frames.
    let (code, ct, body) = proto_request(
        raw,
        Method::GET,
        &format!("{base}?watch=true&resourceVersion={list_rv}&timeoutSeconds=1"),
        CLIENT_GO_ACCEPT,
        None,
    )
    .await;
    assert_eq!(
        (code, ct.as_str()),
        (200, "application/vnd.kubernetes.protobuf;stream=watch")
    );
    let mut events = Vec::new();
    let mut rest = body.as_slice();
    while !rest.is_empty() {
        let len = u32::from_be_bytes(rest[..4].try_into().unwrap()) as usize;
        let ev = meta::WatchEvent::decode(&rest[4..4 + len]).expect("WatchEvent");
        let inner = unknown(ev.object.as_ref().unwrap().raw());
        assert_eq!(inner.type_meta.clone().unwrap().kind(), "ConfigMap");
        let cm = core::ConfigMap::decode(inner.raw()).unwrap();
        events.push(format!("{} {}", ev.r#type(), cm.metadata.unwrap().name()));
        rest = &rest[4 + len..];
    }
    assert_eq!(
        events,
        [
            "ADDED pb-cm3",
            "DELETED pb-cm2",
            "MODIFIED pb-cm",
            "DELETED pb-cm"
        ],
        "every frame is one event"
    );

    // Custom resources have no protobuf form: JSON when acceptable, else 406.
    let crd = json!({"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
        "metadata": {"name": "pbthings.example.com"},
        "spec": {"group": "example.com", "scope": "Namespaced",
            "names": {"plural": "pbthings", "singular": "pbthing", "kind": "PbThing"},
            "versions": [{"name": "v1", "served": true, "storage": true,
                "schema": {"openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}}}]}});
    let a = raw
        .admin_post(
            "/apis/apiextensions.k8s.io/v1/customresourcedefinitions",
            crd.to_string().into_bytes(),
        )
        .await;
    assert_eq!(a.code, 201, "{}", a.body);
    let things = "/apis/example.com/v1/namespaces/pb/pbthings";
    let thing =
        json!({"apiVersion": "example.com/v1", "kind": "PbThing", "metadata": {"name": "t"}});
    let a = raw.admin_post(things, thing.to_string().into_bytes()).await;
    assert_eq!(a.code, 201, "{}", a.body);
    let (code, ct, body) = proto_request(
        raw,
        Method::GET,
        &format!("{things}/t"),
        CLIENT_GO_ACCEPT,
        None,
    )
    .await;
    assert_eq!((code, ct.as_str()), (200, "application/json"));
    assert_eq!(
        serde_json::from_slice::<Value>(&body).unwrap()["metadata"]["name"],
        "t"
    );
    let (code, _, body) =
        proto_request(raw, Method::GET, &format!("{things}/t"), PROTOBUF, None).await;
    assert_eq!(code, 406, "{}", String::from_utf8_lossy(&body));
    let st: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(st["reason"], "NotAcceptable");
}

//! Smaller kube-apiserver 1.33 answers a client can tell apart: discovery with a trailing
//! slash, the namespace `finalize` and `/status` strategies, Node status on create, CEL
//! cost limits, Table versions and 406, `remainingItemCount`, `?timeout`, server-side apply
//! through a status subresource, `storageVersionHash`, and named health checks. One server
//! serves the whole file; requests go raw over TLS with a kube-rs client, or via kubectl.

use capstan_e2e::{text, Server};
use http::{Method, Request};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::Client;
use serde_json::{json, Value};

struct Answer {
    code: u16,
    body: Value,
}

struct Raw {
    client: Client,
}

impl Raw {
    async fn new(s: &Server) -> Raw {
        let kc = Kubeconfig::read_from(s.kubeconfig()).expect("read kubeconfig");
        let config = kube::Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
            .await
            .expect("kubeconfig");
        Raw {
            client: Client::try_from(config).expect("client"),
        }
    }

    async fn send(
        &self,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<&Value>,
    ) -> Answer {
        let mut req = Request::builder().method(method).uri(path);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let bytes = body.map(|b| b.to_string().into_bytes()).unwrap_or_default();
        let req = req.body(kube::client::Body::from(bytes)).expect("request");
        let resp = self.client.send(req).await.expect("send");
        let code = resp.status().as_u16();
        let bytes = resp.into_body().collect_bytes().await.expect("body");
        Answer {
            code,
            body: serde_json::from_slice(&bytes)
                .unwrap_or_else(|_| json!(String::from_utf8_lossy(&bytes))),
        }
    }

    async fn get(&self, path: &str) -> Answer {
        self.send(Method::GET, path, &[], None).await
    }

    async fn get_as(&self, path: &str, accept: &str) -> Answer {
        self.send(Method::GET, path, &[("accept", accept)], None)
            .await
    }

    async fn write(&self, method: Method, path: &str, content_type: &str, body: &Value) -> Answer {
        self.send(method, path, &[("content-type", content_type)], Some(body))
            .await
    }

    async fn post(&self, path: &str, body: &Value) -> Answer {
        self.write(Method::POST, path, "application/json", body)
            .await
    }
}

fn assert_status(a: &Answer, code: u16, reason: &str) {
    assert_eq!(a.code, code, "{}", a.body);
    assert_eq!(a.body["kind"], "Status", "{}", a.body);
    assert_eq!(a.body["reason"], reason, "{}", a.body);
}

/// Every cause message of a 422, `field: message`.
fn causes(a: &Answer) -> Vec<String> {
    a.body["details"]["causes"]
        .as_array()
        .map(|cs| {
            cs.iter()
                .map(|c| {
                    format!(
                        "{}: {}",
                        c["field"].as_str().unwrap_or(""),
                        c["message"].as_str().unwrap_or("")
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_details() {
    // Exact list counts below: without the kube-root-ca.crt the publisher adds to namespaces.
    let s = Server::start_args(&["--controllers=*,-root-ca-cert-publisher"]);
    let raw = Raw::new(&s).await;
    discovery_with_trailing_slash(&raw).await;
    namespace_finalize_and_status(&raw).await;
    node_status_on_create(&raw).await;
    cel_cost_limits_and_undefined_fields(&raw).await;
    table_versions_and_not_acceptable(&raw).await;
    remaining_item_count(&raw).await;
    timeout_parameter(&s, &raw).await;
    apply_through_status(&s, &raw).await;
    health_checks(&s, &raw).await;
}

async fn discovery_with_trailing_slash(raw: &Raw) {
    const AGGREGATED: &str =
        "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList,application/json";
    for (bare, slash) in [("/api", "/api/"), ("/apis", "/apis/")] {
        for accept in ["application/json", AGGREGATED] {
            let a = raw.get_as(bare, accept).await;
            let b = raw.get_as(slash, accept).await;
            assert_eq!(a.code, 200, "{bare}: {}", a.body);
            assert_eq!(b.code, 200, "{slash}: {}", b.body);
            assert_eq!(a.body, b.body, "{slash} differs from {bare} ({accept})");
        }
    }
    assert_eq!(raw.get("/apis/").await.body["kind"], "APIGroupList");
    assert_eq!(raw.get("/api/").await.body["kind"], "APIVersions");
}

async fn namespace_finalize_and_status(raw: &Raw) {
    let created = raw
        .post("/api/v1/namespaces", &json!({"metadata": {"name": "fin"}}))
        .await;
    assert_eq!(created.code, 201, "{}", created.body);
    // Discovery names the subresource with its one verb.
    let v1 = raw.get("/api/v1").await.body;
    let finalize = v1["resources"]
        .as_array()
        .and_then(|rs| rs.iter().find(|r| r["name"] == "namespaces/finalize"))
        .cloned()
        .expect("namespaces/finalize in discovery");
    assert_eq!(finalize["verbs"], json!(["update"]));

    // finalize: the spec (finalizers) and metadata the request carries; status stays.
    let mut body = created.body.clone();
    body["spec"]["finalizers"] = json!(["kubernetes", "example.com/hold"]);
    body["status"] = json!({"phase": "Terminating"});
    body["metadata"]["labels"]["via"] = json!("finalize");
    let a = raw
        .write(
            Method::PUT,
            "/api/v1/namespaces/fin/finalize",
            "application/json",
            &body,
        )
        .await;
    assert_eq!(a.code, 200, "{}", a.body);
    assert_eq!(a.body["kind"], "Namespace");
    assert_eq!(
        a.body["spec"]["finalizers"],
        json!(["kubernetes", "example.com/hold"])
    );
    assert_eq!(a.body["status"]["phase"], "Active");
    assert_eq!(a.body["metadata"]["labels"]["via"], "finalize");
    // The main endpoint still cannot change finalizers.
    let mut main = a.body.clone();
    main["spec"]["finalizers"] = json!([]);
    let m = raw
        .write(
            Method::PUT,
            "/api/v1/namespaces/fin",
            "application/json",
            &main,
        )
        .await;
    assert_eq!(m.code, 200, "{}", m.body);
    assert_eq!(
        m.body["spec"]["finalizers"],
        json!(["kubernetes", "example.com/hold"])
    );
    // finalize is update-only.
    assert_status(
        &raw.get("/api/v1/namespaces/fin/finalize").await,
        405,
        "MethodNotAllowed",
    );

    // /status: metadata changes apply, the spec stays.
    let mut st = m.body.clone();
    st["metadata"]["labels"]["via"] = json!("status");
    st["metadata"]["annotations"] = json!({"note": "from-status"});
    st["spec"]["finalizers"] = json!([]);
    let a = raw
        .write(
            Method::PUT,
            "/api/v1/namespaces/fin/status",
            "application/json",
            &st,
        )
        .await;
    assert_eq!(a.code, 200, "{}", a.body);
    assert_eq!(a.body["metadata"]["labels"]["via"], "status");
    assert_eq!(a.body["metadata"]["annotations"]["note"], "from-status");
    assert_eq!(
        a.body["spec"]["finalizers"],
        json!(["kubernetes", "example.com/hold"])
    );
    let p = raw
        .write(
            Method::PATCH,
            "/api/v1/namespaces/fin/status",
            "application/merge-patch+json",
            &json!({"metadata": {"labels": {"patched": "yes"}}}),
        )
        .await;
    assert_eq!(p.code, 200, "{}", p.body);
    assert_eq!(p.body["metadata"]["labels"]["patched"], "yes");
    assert_eq!(p.body["metadata"]["labels"]["via"], "status");
}

async fn node_status_on_create(raw: &Raw) {
    let a = raw
        .post(
            "/api/v1/nodes",
            &json!({"metadata": {"name": "worker-1"}, "status": {
                "capacity": {"cpu": "4", "pods": "110"},
                "addresses": [{"type": "InternalIP", "address": "10.0.0.7"}]}}),
        )
        .await;
    assert_eq!(a.code, 201, "{}", a.body);
    let got = raw.get("/api/v1/nodes/worker-1").await.body;
    assert_eq!(got["status"]["capacity"]["cpu"], "4", "{got}");
    assert_eq!(got["status"]["addresses"][0]["address"], "10.0.0.7");
}

/// A CRD of kind Widget in details.example.com (status subresource) whose `spec.names`
/// strings carry `rules`.
fn widget_crd(name_rules: Vec<Value>, spec_rules: Vec<Value>, max_length: u64) -> Value {
    json!({
        "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
        "metadata": {"name": "widgets.details.example.com"},
        "spec": {"group": "details.example.com", "scope": "Namespaced",
            "names": {"plural": "widgets", "singular": "widget", "kind": "Widget", "listKind": "WidgetList"},
            "versions": [{"name": "v1", "served": true, "storage": true,
                "subresources": {"status": {}},
                "schema": {"openAPIV3Schema": {"type": "object", "properties": {
                    "spec": {"type": "object", "x-kubernetes-validations": spec_rules, "properties": {
                        "size": {"type": "integer"},
                        "names": {"type": "array", "maxItems": 1000, "items": {
                            "type": "string", "maxLength": max_length,
                            "x-kubernetes-validations": name_rules}}}},
                    "status": {"type": "object", "properties": {"phase": {"type": "string"}}}}}}}]}
    })
}

async fn cel_cost_limits_and_undefined_fields(raw: &Raw) {
    const CRDS: &str = "/apis/apiextensions.k8s.io/v1/customresourcedefinitions";
    let contains = |n: usize| -> Vec<Value> {
        (0..n)
            .map(|i| json!({"rule": format!("self.contains('{i}')")}))
            .collect()
    };
    // Forty rules of about 4,000,000 each: every one is under the 10,000,000 limit per
    // expression, together they are over the CRD's 100,000,000.
    let a = raw
        .post(CRDS, &widget_crd(contains(40), vec![], 10_000))
        .await;
    assert_status(&a, 422, "Invalid");
    let cs = causes(&a);
    assert!(
        cs.iter().any(|c| c.starts_with("spec.versions[0].schema.openAPIV3Schema: Forbidden: x-kubernetes-validations estimated rule cost total for entire OpenAPIv3 schema exceeds budget by factor of ")),
        "{cs:#?}"
    );
    assert_eq!(
        cs.iter()
            .filter(|c| c.ends_with("Forbidden: contributed to estimated rule cost total exceeding cost limit for entire OpenAPIv3 schema"))
            .count(),
        4,
        "{cs:#?}"
    );
    assert!(
        !cs.iter().any(|c| c.contains("estimated rule cost exceeds")),
        "{cs:#?}"
    );

    // A field the schema does not declare does not compile.
    let a = raw
        .post(
            CRDS,
            &widget_crd(vec![], vec![json!({"rule": "self.z > 0"})], 10_000),
        )
        .await;
    assert_status(&a, 422, "Invalid");
    let cs = causes(&a);
    assert!(
        cs.iter().any(|c| c.starts_with("spec.versions[0].schema.openAPIV3Schema.properties[spec].x-kubernetes-validations[0].rule: Invalid value") && c.contains("undefined field 'z'")),
        "{cs:#?}"
    );

    // One rule of about 4,000,000 (over the old 1,000,000 per rule) is accepted.
    let a = raw
        .post(
            CRDS,
            &widget_crd(contains(1), vec![json!({"rule": "self.size >= 0"})], 10_000),
        )
        .await;
    assert_eq!(a.code, 201, "{}", a.body);
    // Discovery names its storage version's hash: base64(sha256("details.example.com/v1/Widget")[:8]).
    // (A CRD write returns once its API is served.)
    let d = raw.get("/apis/details.example.com/v1").await;
    assert_eq!(d.code, 200, "{}", d.body);
    let hash = d.body["resources"]
        .as_array()
        .and_then(|rs| rs.iter().find(|r| r["name"] == "widgets"))
        .map(|r| r["storageVersionHash"].clone())
        .unwrap_or(Value::Null);
    assert_eq!(hash, json!("xiolUeMzr8o="));
}

async fn table_versions_and_not_acceptable(raw: &Raw) {
    let made = raw
        .post(
            "/api/v1/namespaces/default/configmaps",
            &json!({"metadata": {"name": "tabled"}, "data": {"a": "1"}}),
        )
        .await;
    assert_eq!(made.code, 201, "{}", made.body);
    for (accept, version) in [
        (
            "application/json;as=Table;v=v1;g=meta.k8s.io",
            "meta.k8s.io/v1",
        ),
        (
            "application/json;as=Table;v=v1beta1;g=meta.k8s.io",
            "meta.k8s.io/v1beta1",
        ),
    ] {
        for path in [
            "/api/v1/namespaces/default/configmaps",
            "/api/v1/namespaces/default/configmaps/tabled",
        ] {
            let t = raw.get_as(path, accept).await;
            assert_eq!(t.code, 200, "{}", t.body);
            assert_eq!(t.body["kind"], "Table", "{}", t.body);
            assert_eq!(t.body["apiVersion"], version);
            let names: Vec<&str> = t.body["columnDefinitions"]
                .as_array()
                .expect("columns")
                .iter()
                .filter_map(|c| c["name"].as_str())
                .collect();
            assert_eq!(names, ["Name", "Data", "Age"]);
        }
    }
    // A Table version or conversion that does not exist, and nothing else: 406.
    for accept in [
        "application/json;as=Table;v=v2;g=meta.k8s.io",
        "application/json;as=Chart;v=v1;g=meta.k8s.io",
    ] {
        let a = raw
            .get_as("/api/v1/namespaces/default/configmaps", accept)
            .await;
        assert_status(&a, 406, "NotAcceptable");
        assert_eq!(a.body["code"], 406);
    }
    // With an alternative, the alternative.
    let a = raw
        .get_as(
            "/api/v1/namespaces/default/configmaps",
            "application/json;as=Table;v=v2;g=meta.k8s.io,application/json",
        )
        .await;
    assert_eq!(a.code, 200, "{}", a.body);
    assert_eq!(a.body["kind"], "ConfigMapList");
}

async fn remaining_item_count(raw: &Raw) {
    let ns = raw
        .post(
            "/api/v1/namespaces",
            &json!({"metadata": {"name": "pages"}}),
        )
        .await;
    assert_eq!(ns.code, 201, "{}", ns.body);
    for i in 0..5 {
        let a = raw
            .post(
                "/api/v1/namespaces/pages/configmaps",
                &json!({"metadata": {"name": format!("cm-{i}"), "labels": {"page": "yes"}}}),
            )
            .await;
        assert_eq!(a.code, 201, "{}", a.body);
    }
    let base = "/api/v1/namespaces/pages/configmaps";
    let first = raw.get(&format!("{base}?limit=2")).await.body;
    assert_eq!(first["items"].as_array().map(Vec::len), Some(2));
    assert_eq!(first["metadata"]["remainingItemCount"], 3, "{first}");
    let token = first["metadata"]["continue"].as_str().expect("continue");
    let second = raw
        .get(&format!("{base}?limit=2&continue={token}"))
        .await
        .body;
    assert_eq!(second["metadata"]["remainingItemCount"], 1, "{second}");
    let token = second["metadata"]["continue"].as_str().expect("continue");
    let last = raw
        .get(&format!("{base}?limit=2&continue={token}"))
        .await
        .body;
    assert_eq!(last["items"].as_array().map(Vec::len), Some(1));
    assert!(
        last["metadata"].get("remainingItemCount").is_none(),
        "{last}"
    );
    assert!(last["metadata"].get("continue").is_none(), "{last}");
    // A selector in use: no count (upstream cannot count what the selector keeps).
    let selected = raw
        .get(&format!("{base}?limit=2&labelSelector=page%3Dyes"))
        .await
        .body;
    assert!(selected["metadata"]["continue"].is_string(), "{selected}");
    assert!(
        selected["metadata"].get("remainingItemCount").is_none(),
        "{selected}"
    );
    // Tables carry it too.
    let t = raw
        .get_as(
            &format!("{base}?limit=4"),
            "application/json;as=Table;v=v1;g=meta.k8s.io",
        )
        .await
        .body;
    assert_eq!(t["metadata"]["remainingItemCount"], 1, "{t}");
}

async fn timeout_parameter(s: &Server, raw: &Raw) {
    for path in [
        "/api/v1/namespaces?timeout=invalid",
        "/api/v1/namespaces/default/configmaps/tabled?timeout=invalid",
    ] {
        let a = raw.get(path).await;
        assert_status(&a, 400, "BadRequest");
        assert_eq!(
            a.body["message"],
            "invalid timeout specified in the request URL - time: invalid duration \"invalid\""
        );
    }
    let a = raw.get("/api/v1/namespaces?timeout=1x").await;
    assert_eq!(
        a.body["message"],
        "invalid timeout specified in the request URL - time: unknown unit \"x\" in duration \"1x\""
    );
    assert_eq!(raw.get("/api/v1/namespaces?timeout=30s").await.code, 200);
    // kubectl sends `timeout=` from --request-timeout.
    let out = s.kubectl(&["--request-timeout=1m30s", "get", "ns", "default"]);
    assert!(out.status.success(), "{:?}", text(&out));
}

async fn apply_through_status(s: &Server, raw: &Raw) {
    const APPLY: &str = "application/apply-patch+yaml";
    let owned = |obj: &Value, manager: &str, sub: &str| -> Vec<Value> {
        obj["metadata"]["managedFields"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .into_iter()
            .filter(|e| {
                e["manager"] == manager
                    && e["subresource"].as_str().unwrap_or("") == sub
                    && e["operation"] == "Apply"
            })
            .collect()
    };
    let cases = [
        (
            "/apis/details.example.com/v1/namespaces/default/widgets/w1",
            json!({"apiVersion": "details.example.com/v1", "kind": "Widget",
                   "metadata": {"name": "w1"}, "spec": {"size": 2}, "status": {"phase": "Ready"}}),
            "/status/phase",
            json!("Ready"),
        ),
        (
            "/apis/apps/v1/namespaces/default/deployments/d1",
            json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "d1"},
                   "spec": {"selector": {"matchLabels": {"app": "d1"}},
                            "template": {"metadata": {"labels": {"app": "d1"}},
                                         "spec": {"containers": [{"name": "c", "image": "nginx"}]}}},
                   "status": {"replicas": 0, "observedGeneration": 1}}),
            "/status/observedGeneration",
            json!(1),
        ),
    ];
    for (path, patch, status_field, status_value) in cases {
        let a = raw
            .write(
                Method::PATCH,
                &format!("{path}?fieldManager=tester"),
                APPLY,
                &patch,
            )
            .await;
        assert!(a.code == 200 || a.code == 201, "{path}: {}", a.body);
        let entries = owned(&a.body, "tester", "");
        assert_eq!(entries.len(), 1, "{}", a.body);
        assert!(
            entries[0]["fieldsV1"].get("f:status").is_none(),
            "the main endpoint drops status, so it is not owned: {}",
            entries[0]
        );
        assert!(entries[0]["fieldsV1"].get("f:spec").is_some());
        // The same manager, the same patch, through /status: no conflict with itself.
        let a = raw
            .write(
                Method::PATCH,
                &format!("{path}/status?fieldManager=tester"),
                APPLY,
                &patch,
            )
            .await;
        assert_eq!(a.code, 200, "{path}/status: {}", a.body);
        assert_eq!(a.body.pointer(status_field), Some(&status_value));
        let entries = owned(&a.body, "tester", "status");
        assert_eq!(entries.len(), 1, "{}", a.body);
        assert!(entries[0]["fieldsV1"].get("f:status").is_some());
        assert!(
            entries[0]["fieldsV1"].get("f:spec").is_none(),
            "/status drops the spec, so it is not owned there: {}",
            entries[0]
        );
    }
    // kubectl's server-side apply of the whole thing again: still no conflict.
    let out = s.kubectl_stdin(
        &[
            "apply",
            "--server-side",
            "--field-manager=tester",
            "-f",
            "-",
        ],
        "apiVersion: details.example.com/v1\nkind: Widget\nmetadata: {name: w1, namespace: default}\nspec: {size: 2}\nstatus: {phase: Ready}\n",
    );
    assert!(out.status.success(), "{:?}", text(&out));
}

async fn health_checks(s: &Server, raw: &Raw) {
    for probe in ["healthz", "livez", "readyz"] {
        let out = s.kubectl_ok(&["get", "--raw", &format!("/{probe}?verbose")]);
        let lines: Vec<&str> = out.lines().collect();
        for want in ["[+]ping ok", "[+]log ok", "[+]storage ok"] {
            assert!(lines.contains(&want), "{probe}: {out}");
        }
        assert_eq!(
            lines.last().copied(),
            Some(format!("{probe} check passed").as_str()),
            "{out}"
        );
        assert_eq!(
            s.kubectl_ok(&["get", "--raw", &format!("/{probe}")]).trim(),
            "ok"
        );
        assert_eq!(
            s.kubectl_ok(&["get", "--raw", &format!("/{probe}/ping")])
                .trim(),
            "ok"
        );
        let excluded = s.kubectl_ok(&["get", "--raw", &format!("/{probe}?verbose&exclude=log")]);
        assert!(excluded.contains("[+]log excluded: ok"), "{excluded}");
    }
    // Readiness also asks whether the store takes writes (a full disk fails it).
    let ready = s.kubectl_ok(&["get", "--raw", "/readyz?verbose"]);
    assert!(ready.contains("[+]storage-writable ok"), "{ready}");
    assert_eq!(
        s.kubectl_ok(&["get", "--raw", "/readyz/storage-writable"])
            .trim(),
        "ok"
    );
    assert_eq!(raw.get("/healthz/storage").await.code, 200);
    assert_eq!(raw.get("/healthz/no-such-check").await.code, 404);
}

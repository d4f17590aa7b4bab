//! Every kubectl from 1.27 to 1.33 against the running binary: client-side and server-side
//! apply, explain (built-in and custom) and diff — 1.27 and 1.28 read `/openapi/v2` for all
//! of them — and `/openapi/v2` itself in JSON and protobuf, with its ETag.

use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use capstan_e2e::{text, Server};
use http::Request;
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::Client;
use prost::Message;
use serde_json::Value;

/// Where `kubectl.1.27` … live: `$KUBECTL_VERSIONS_DIR`, else beside the `kubectl` on the
/// PATH (a dispatcher that picks a version).
fn kubectl_dir() -> PathBuf {
    capstan_e2e::kubectl_versions_dir()
}

struct Kubectl<'a> {
    bin: PathBuf,
    server: &'a Server,
}

impl<'a> Kubectl<'a> {
    fn new(server: &'a Server, version: &str) -> Kubectl<'a> {
        let bin = kubectl_dir().join(format!("kubectl.{version}"));
        assert!(
            bin.is_file(),
            "{} is missing: these tests need every kubectl 1.27..1.33 (set KUBECTL_VERSIONS_DIR)",
            bin.display()
        );
        Kubectl { bin, server }
    }

    fn run(&self, args: &[&str], stdin: Option<&str>) -> Output {
        use std::io::Write;
        let mut child = Command::new(&self.bin)
            .env("KUBECONFIG", self.server.kubeconfig())
            // diff's external program, the same on every machine.
            .env("KUBECTL_EXTERNAL_DIFF", "diff -u")
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run kubectl");
        let mut pipe = child.stdin.take().expect("stdin");
        pipe.write_all(stdin.unwrap_or("").as_bytes())
            .expect("write stdin");
        drop(pipe);
        child.wait_with_output().expect("kubectl output")
    }

    fn ok(&self, args: &[&str], stdin: Option<&str>) -> String {
        let out = self.run(args, stdin);
        let (o, e) = text(&out);
        assert!(
            out.status.success(),
            "{} {args:?} failed:\n{o}{e}",
            self.bin.display()
        );
        o
    }

    /// Retry until it succeeds (a CRD's API appears in discovery a moment after it is
    /// created, and kubectl caches what it found).
    fn eventually(&self, args: &[&str], stdin: Option<&str>) -> String {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let out = self.run(args, stdin);
            if out.status.success() {
                return text(&out).0;
            }
            assert!(
                Instant::now() < deadline,
                "{} {args:?} kept failing:\n{}{}",
                self.bin.display(),
                text(&out).0,
                text(&out).1
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

const CRD: &str = r#"apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata: {name: widgets.capstan.test}
spec:
  group: capstan.test
  names: {kind: Widget, listKind: WidgetList, plural: widgets, singular: widget}
  scope: Namespaced
  versions:
  - name: v1
    served: true
    storage: true
    schema:
      openAPIV3Schema:
        type: object
        description: A widget of some size.
        properties:
          spec:
            type: object
            description: What the widget should be.
            properties:
              size: {type: integer, description: How many sprockets the widget has.}
              color: {type: string}
"#;

fn deployment(image: &str, extra_spec: &str) -> String {
    format!(
        r#"apiVersion: apps/v1
kind: Deployment
metadata: {{name: web, namespace: default}}
spec:
  replicas: 2{extra_spec}
  selector: {{matchLabels: {{app: web}}}}
  template:
    metadata: {{labels: {{app: web}}}}
    spec:
      containers:
      - {{name: app, image: "{image}"}}
      - {{name: sidecar, image: "busybox:1.36"}}
"#
    )
}

const CONFIGMAP: &str = r#"apiVersion: v1
kind: ConfigMap
metadata: {name: settings, namespace: default}
data: {mode: fast}
"#;

fn widget(size: u32) -> String {
    format!(
        "apiVersion: capstan.test/v1\nkind: Widget\nmetadata: {{name: w1, namespace: default}}\nspec: {{size: {size}, color: red}}\n"
    )
}

/// What a user does with one kubectl version, each step checked on what it printed.
fn exercise(version: &str) {
    let s = Server::start();
    let k = Kubectl::new(&s, version);
    let printed = k.ok(&["version", "--client", "-o", "json"], None);
    assert!(
        printed.contains(&format!(
            "\"minor\": \"{}\"",
            version.trim_start_matches("1.")
        )),
        "{} is not kubectl {version}: {printed}",
        k.bin.display()
    );

    // Client-side apply: create, then a strategic merge patch by container name (computed
    // from the published schema's merge keys) that keeps the other container.
    let out = k.ok(&["apply", "-f", "-"], Some(&deployment("nginx:1.25", "")));
    assert_eq!(out.trim(), "deployment.apps/web created");
    let out = k.ok(&["apply", "-f", "-"], Some(&deployment("nginx:1.27", "")));
    assert_eq!(out.trim(), "deployment.apps/web configured");
    let images = k.ok(
        &[
            "get",
            "deployment",
            "web",
            "-o",
            "jsonpath={.spec.template.spec.containers[*].image}",
        ],
        None,
    );
    assert_eq!(images, "nginx:1.27 busybox:1.36");

    // An unknown field is refused by the server (kubectl found `fieldValidation` in the
    // published PATCH operation and asked for Strict).
    let out = k.run(
        &["apply", "-f", "-"],
        Some(&deployment("nginx:1.27", "\n  bogus: 1")),
    );
    let (o, e) = text(&out);
    assert!(!out.status.success(), "an unknown field was applied: {o}");
    assert!(
        e.contains("strict decoding error: unknown field \"spec.bogus\""),
        "unexpected refusal: {e}"
    );

    // Server-side apply, twice (the second is a no-op that still answers).
    let out = k.ok(&["apply", "--server-side", "-f", "-"], Some(CONFIGMAP));
    assert_eq!(out.trim(), "configmap/settings serverside-applied");
    let changed = CONFIGMAP.replace("mode: fast", "mode: slow");
    let out = k.ok(&["apply", "--server-side", "-f", "-"], Some(&changed));
    assert_eq!(out.trim(), "configmap/settings serverside-applied");
    let mode = k.ok(
        &[
            "get",
            "configmap",
            "settings",
            "-o",
            "jsonpath={.data.mode}",
        ],
        None,
    );
    assert_eq!(mode, "slow");

    // A CRD and its custom resource, client-side then server-side.
    let out = k.ok(&["apply", "-f", "-"], Some(CRD));
    assert_eq!(
        out.trim(),
        "customresourcedefinition.apiextensions.k8s.io/widgets.capstan.test created"
    );
    let out = k.eventually(&["apply", "-f", "-"], Some(&widget(3)));
    assert_eq!(out.trim(), "widget.capstan.test/w1 created");
    let out = k.ok(
        &["apply", "--server-side", "--force-conflicts", "-f", "-"],
        Some(&widget(4)),
    );
    assert_eq!(out.trim(), "widget.capstan.test/w1 serverside-applied");
    let size = k.ok(
        &["get", "widget", "w1", "-o", "jsonpath={.spec.size}"],
        None,
    );
    assert_eq!(size, "4");

    // explain: a built-in field and a custom one, with their types and descriptions.
    let out = k.ok(&["explain", "deployment.spec.replicas"], None);
    assert!(out.contains("KIND:       Deployment"), "{out}");
    assert!(
        out.contains("replicas") && out.contains("<integer>"),
        "{out}"
    );
    assert!(out.contains("Number of desired pods."), "{out}");
    let out = k.eventually(&["explain", "widgets.spec.size"], None);
    assert!(out.contains("KIND:       Widget"), "{out}");
    assert!(out.contains("size") && out.contains("<integer>"), "{out}");
    assert!(out.contains("How many sprockets the widget has."), "{out}");
    let out = k.ok(&["explain", "widgets.spec"], None);
    assert!(out.contains("What the widget should be."), "{out}");
    assert!(out.contains("color") && out.contains("<string>"), "{out}");

    // diff: nothing for what is applied (exit 0), the change for what is not (exit 1).
    let out = k.run(&["diff", "-f", "-"], Some(&deployment("nginx:1.27", "")));
    let (o, e) = text(&out);
    assert_eq!(
        out.status.code(),
        Some(0),
        "diff of the applied state: {o}{e}"
    );
    assert_eq!(o, "");
    let out = k.run(&["diff", "-f", "-"], Some(&deployment("nginx:1.28", "")));
    let (o, e) = text(&out);
    assert_eq!(out.status.code(), Some(1), "diff of a change: {o}{e}");
    assert!(o.contains("-      - image: nginx:1.27"), "{o}");
    assert!(o.contains("+      - image: nginx:1.28"), "{o}");
    let out = k.run(&["diff", "-f", "-"], Some(&widget(5)));
    let (o, e) = text(&out);
    assert_eq!(
        out.status.code(),
        Some(1),
        "diff of a custom resource: {o}{e}"
    );
    assert!(o.contains("-  size: 4") && o.contains("+  size: 5"), "{o}");
}

#[test]
fn kubectl_1_27_applies_explains_and_diffs() {
    exercise("1.27");
}

#[test]
fn kubectl_1_28_applies_explains_and_diffs() {
    exercise("1.28");
}

#[test]
fn kubectl_1_29_applies_explains_and_diffs() {
    exercise("1.29");
}

#[test]
fn kubectl_1_30_applies_explains_and_diffs() {
    exercise("1.30");
}

#[test]
fn kubectl_1_31_applies_explains_and_diffs() {
    exercise("1.31");
}

#[test]
fn kubectl_1_32_applies_explains_and_diffs() {
    exercise("1.32");
}

#[test]
fn kubectl_1_33_applies_explains_and_diffs() {
    exercise("1.33");
}

/// The gnostic `openapi.v2.Document` fields this test reads, written down independently of
/// the server's encoder (numbers from gnostic's OpenAPIv2.proto).
mod gnostic {
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Document {
        #[prost(string, tag = "1")]
        pub swagger: String,
        #[prost(message, optional, tag = "8")]
        pub paths: Option<Paths>,
        #[prost(message, optional, tag = "9")]
        pub definitions: Option<Definitions>,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Paths {
        #[prost(message, repeated, tag = "2")]
        pub path: Vec<NamedPathItem>,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct NamedPathItem {
        #[prost(string, tag = "1")]
        pub name: String,
        #[prost(message, optional, tag = "2")]
        pub value: Option<PathItem>,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct PathItem {
        #[prost(message, optional, tag = "8")]
        pub patch: Option<Operation>,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Operation {
        #[prost(message, repeated, tag = "8")]
        pub parameters: Vec<ParametersItem>,
        #[prost(message, repeated, tag = "13")]
        pub vendor_extension: Vec<NamedAny>,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ParametersItem {
        #[prost(message, optional, tag = "1")]
        pub parameter: Option<Parameter>,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Parameter {
        #[prost(message, optional, tag = "2")]
        pub non_body_parameter: Option<NonBodyParameter>,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct NonBodyParameter {
        #[prost(message, optional, tag = "3")]
        pub query_parameter_sub_schema: Option<QueryParameter>,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct QueryParameter {
        #[prost(string, tag = "4")]
        pub name: String,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Definitions {
        #[prost(message, repeated, tag = "1")]
        pub additional_properties: Vec<NamedSchema>,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct NamedSchema {
        #[prost(string, tag = "1")]
        pub name: String,
        #[prost(message, optional, tag = "2")]
        pub value: Option<Schema>,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Schema {
        #[prost(string, tag = "4")]
        pub description: String,
        #[prost(message, optional, tag = "22")]
        pub r#type: Option<TypeItem>,
        #[prost(message, repeated, tag = "31")]
        pub vendor_extension: Vec<NamedAny>,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct TypeItem {
        #[prost(string, repeated, tag = "1")]
        pub value: Vec<String>,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct NamedAny {
        #[prost(string, tag = "1")]
        pub name: String,
        #[prost(message, optional, tag = "2")]
        pub value: Option<Any>,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Any {
        #[prost(string, tag = "2")]
        pub yaml: String,
    }
}

struct Fetched {
    code: u16,
    content_type: String,
    etag: String,
    body: Vec<u8>,
}

async fn fetch_v2(client: &Client, accept: &str, if_none_match: Option<&str>) -> Fetched {
    let mut req = Request::builder()
        .uri("/openapi/v2")
        .header("accept", accept);
    if let Some(tag) = if_none_match {
        req = req.header("if-none-match", tag);
    }
    let req = req.body(kube::client::Body::empty()).expect("request");
    let resp = client.send(req).await.expect("send");
    let header = |name: &str| {
        resp.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string()
    };
    let (content_type, etag) = (header("content-type"), header("etag"));
    let code = resp.status().as_u16();
    let body = resp
        .into_body()
        .collect_bytes()
        .await
        .expect("body")
        .to_vec();
    Fetched {
        code,
        content_type,
        etag,
        body,
    }
}

/// The group-version-kinds a definition's `x-kubernetes-group-version-kind` names.
fn gvks_of(schema: &Value) -> Vec<(String, String, String)> {
    schema["x-kubernetes-group-version-kind"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|g| {
            let f = |k: &str| g[k].as_str().unwrap_or("").to_string();
            (f("group"), f("version"), f("kind"))
        })
        .collect()
}

#[tokio::test]
async fn openapi_v2_in_json_and_protobuf_with_crds_and_etag() {
    let s = Server::start();
    let kc = Kubeconfig::read_from(s.kubeconfig()).expect("kubeconfig");
    let config = kube::Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
        .await
        .expect("config");
    let client = Client::try_from(config).expect("client");

    let before = fetch_v2(&client, "application/json", None).await;
    assert_eq!(before.code, 200);
    assert_eq!(before.content_type, "application/json");
    let doc: Value = serde_json::from_slice(&before.body).expect("JSON document");
    assert_eq!(doc["swagger"], "2.0");
    assert!(doc["definitions"].get("test.capstan.v1.Widget").is_none());
    // The ETag is upstream's: quoted upper-case hex SHA-512 of the JSON.
    assert_eq!(before.etag.len(), 130, "{}", before.etag);
    assert!(before.etag.starts_with('"') && before.etag.ends_with('"'));
    let cm = &doc["definitions"]["io.k8s.api.core.v1.ConfigMap"];
    assert_eq!(
        gvks_of(cm),
        [("".to_string(), "v1".to_string(), "ConfigMap".to_string())]
    );
    assert_eq!(
        cm["properties"]["data"]["additionalProperties"]["type"],
        "string"
    );
    assert_eq!(
        doc["definitions"]["io.k8s.api.core.v1.PodSpec"]["properties"]["containers"]
            ["x-kubernetes-patch-merge-key"],
        "name"
    );
    let patch = &doc["paths"]["/api/v1/namespaces/{namespace}/configmaps/{name}"]["patch"];
    assert_eq!(
        patch["x-kubernetes-group-version-kind"]["kind"],
        "ConfigMap"
    );
    assert!(
        patch["parameters"]
            .as_array()
            .expect("parameters")
            .iter()
            .any(|p| p["name"] == "fieldValidation" && p["in"] == "query"),
        "{patch}"
    );

    // The same ETag answers 304 and no body.
    let again = fetch_v2(&client, "application/json", Some(&before.etag)).await;
    assert_eq!(again.code, 304);
    assert!(again.body.is_empty());

    // A CRD's schema appears (under upstream's definition name), and the ETag moves.
    let out = s.kubectl_stdin(&["apply", "-f", "-"], CRD);
    assert!(out.status.success(), "{:?}", text(&out));
    let deadline = Instant::now() + Duration::from_secs(20);
    let (after, doc) = loop {
        let f = fetch_v2(&client, "application/json", Some(&before.etag)).await;
        if f.code == 200 {
            let doc: Value = serde_json::from_slice(&f.body).expect("JSON document");
            if doc["definitions"].get("test.capstan.v1.Widget").is_some() {
                break (f, doc);
            }
        }
        assert!(
            Instant::now() < deadline,
            "the CRD never appeared in /openapi/v2"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_ne!(after.etag, before.etag);
    let widget = &doc["definitions"]["test.capstan.v1.Widget"];
    assert_eq!(
        gvks_of(widget),
        [(
            "capstan.test".to_string(),
            "v1".to_string(),
            "Widget".to_string()
        )]
    );
    assert_eq!(
        widget["properties"]["spec"]["properties"]["size"]["description"],
        "How many sprockets the widget has."
    );
    assert_eq!(
        widget["properties"]["metadata"]["$ref"],
        "#/definitions/io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"
    );

    // Protobuf, asked for as client-go asks, labelled as kube-openapi labels it; the same
    // document (definitions and paths) and the same ETag.
    let pb = fetch_v2(
        &client,
        "application/com.github.proto-openapi.spec.v2@v1.0+protobuf",
        None,
    )
    .await;
    assert_eq!(pb.code, 200);
    assert_eq!(
        pb.content_type,
        "application/com.github.proto-openapi.spec.v2.v1.0+protobuf"
    );
    assert_eq!(pb.etag, after.etag);
    let decoded = gnostic::Document::decode(pb.body.as_slice()).expect("protobuf document");
    assert_eq!(decoded.swagger, "2.0");
    let defs = decoded
        .definitions
        .expect("definitions")
        .additional_properties;
    let mut names: Vec<&str> = defs.iter().map(|d| d.name.as_str()).collect();
    names.sort_unstable();
    let mut json_names: Vec<&str> = doc["definitions"]
        .as_object()
        .expect("definitions")
        .keys()
        .map(String::as_str)
        .collect();
    json_names.sort_unstable();
    assert_eq!(names, json_names);
    let widget_pb = defs
        .iter()
        .find(|d| d.name == "test.capstan.v1.Widget")
        .and_then(|d| d.value.as_ref())
        .expect("Widget in protobuf");
    assert_eq!(widget_pb.r#type.as_ref().expect("type").value, ["object"]);
    assert_eq!(widget_pb.description, "A widget of some size.");
    let gvk = widget_pb
        .vendor_extension
        .iter()
        .find(|e| e.name == "x-kubernetes-group-version-kind")
        .and_then(|e| e.value.as_ref())
        .expect("gvk extension");
    // gnostic keeps extension values as YAML text; ours is the JSON subset of YAML.
    let gvk: Value = serde_json::from_str(&gvk.yaml).expect("extension YAML");
    assert_eq!(
        gvks_of(&serde_json::json!({"x-kubernetes-group-version-kind": gvk})),
        [(
            "capstan.test".to_string(),
            "v1".to_string(),
            "Widget".to_string()
        )]
    );
    let paths = decoded.paths.expect("paths").path;
    assert_eq!(paths.len(), doc["paths"].as_object().expect("paths").len());
    let widget_patch = paths
        .iter()
        .find(|p| p.name == "/apis/capstan.test/v1/namespaces/{namespace}/widgets/{name}")
        .and_then(|p| p.value.as_ref())
        .and_then(|p| p.patch.as_ref())
        .expect("the Widget PATCH operation");
    assert!(widget_patch.parameters.iter().any(|p| {
        p.parameter
            .as_ref()
            .and_then(|p| p.non_body_parameter.as_ref())
            .and_then(|p| p.query_parameter_sub_schema.as_ref())
            .is_some_and(|q| q.name == "fieldValidation")
    }));

    // Nothing either form can give: 406.
    let none = fetch_v2(&client, "text/html", None).await;
    assert_eq!(none.code, 406);

    // The CRD deleted: its definition goes with it.
    let out = s.kubectl(&["delete", "crd", "widgets.capstan.test"]);
    assert!(out.status.success(), "{:?}", text(&out));
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let f = fetch_v2(&client, "application/json", None).await;
        let doc: Value = serde_json::from_slice(&f.body).expect("JSON document");
        if doc["definitions"].get("test.capstan.v1.Widget").is_none() {
            break;
        }
        assert!(Instant::now() < deadline, "the CRD stayed in /openapi/v2");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

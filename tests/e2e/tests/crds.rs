//! CustomResourceDefinitions end to end with the real kubectl: a CRD with a rich schema
//! (nested objects, int-or-string, a list-map, defaults, CEL rules including a transition
//! rule, printer columns, status and scale subresources, two versions one deprecated) gives
//! a full API at once; and the bad cases are refused with upstream's field paths.

use std::time::{Duration, Instant};

use capstan_e2e::{text, Server};

const CRD: &str = r#"
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: webapps.apps.example.com
spec:
  group: apps.example.com
  scope: Namespaced
  names:
    plural: webapps
    singular: webapp
    kind: WebApp
    shortNames: [wa]
    categories: [all]
  versions:
  - name: v1
    served: true
    storage: true
    subresources:
      status: {}
      scale:
        specReplicasPath: .spec.replicas
        statusReplicasPath: .status.replicas
        labelSelectorPath: .status.selector
    additionalPrinterColumns:
    - {name: Image, type: string, jsonPath: .spec.image}
    - {name: Replicas, type: integer, jsonPath: .spec.replicas}
    - {name: Ready, type: string, jsonPath: '.status.conditions[?(@.type=="Ready")].status'}
    - {name: Port, type: string, jsonPath: .spec.port, priority: 1}
    - {name: Age, type: date, jsonPath: .metadata.creationTimestamp}
    schema:
      openAPIV3Schema:
        type: object
        properties:
          spec:
            type: object
            description: What the web application should look like.
            required: [image]
            x-kubernetes-validations:
            - rule: "self.replicas <= self.maxReplicas"
              message: "replicas must not exceed maxReplicas"
            properties:
              image:
                type: string
                description: The container image to run.
                minLength: 1
              replicas: {type: integer, minimum: 0, default: 1}
              maxReplicas: {type: integer, default: 10}
              port:
                x-kubernetes-int-or-string: true
                default: 8080
              tier:
                type: string
                enum: [frontend, backend]
                default: frontend
              storageClass:
                type: string
                x-kubernetes-validations:
                - rule: "self == oldSelf"
                  message: "storageClass is immutable"
              env:
                type: array
                maxItems: 64
                x-kubernetes-list-type: map
                x-kubernetes-list-map-keys: [name]
                x-kubernetes-validations:
                - rule: "self.all(e, !e.name.startsWith('CAPSTAN_'))"
                  message: "names starting with CAPSTAN_ are reserved"
                items:
                  type: object
                  required: [name]
                  properties:
                    name: {type: string, maxLength: 128}
                    value: {type: string, maxLength: 4096}
              resources:
                type: object
                properties:
                  limits:
                    type: object
                    properties:
                      memory: {type: string, pattern: '^[0-9]+(Mi|Gi)$'}
          status:
            type: object
            properties:
              replicas: {type: integer}
              selector: {type: string}
              conditions:
                type: array
                items:
                  type: object
                  properties:
                    type: {type: string}
                    status: {type: string}
  - name: v1beta1
    served: true
    storage: false
    deprecated: true
    deprecationWarning: "apps.example.com/v1beta1 WebApp is deprecated; use apps.example.com/v1"
    schema:
      openAPIV3Schema:
        type: object
        properties:
          spec:
            type: object
            x-kubernetes-preserve-unknown-fields: true
          status:
            type: object
            x-kubernetes-preserve-unknown-fields: true
"#;

const APP: &str = r#"
apiVersion: apps.example.com/v1
kind: WebApp
metadata:
  name: shop
spec:
  image: nginx:1.25
  replicas: 2
  env:
  - {name: MODE, value: prod}
  resources:
    limits: {memory: 256Mi}
"#;

fn install(s: &Server) {
    let out = s.kubectl_stdin(&["apply", "-f", "-"], CRD);
    let (o, e) = text(&out);
    assert!(out.status.success(), "{o}{e}");
    assert!(
        o.contains(
            "customresourcedefinition.apiextensions.k8s.io/webapps.apps.example.com created"
        ),
        "{o}"
    );
    s.kubectl_ok(&[
        "wait",
        "--for=condition=Established",
        "crd/webapps.apps.example.com",
        "--timeout=10s",
    ]);
}

fn apply(s: &Server, yaml: &str) -> (bool, String, String) {
    let out = s.kubectl_stdin(&["apply", "-f", "-"], yaml);
    let (o, e) = text(&out);
    (out.status.success(), o, e)
}

#[test]
fn a_crd_gives_a_full_api_at_once() {
    let s = Server::start();
    install(&s);

    // Discovery and OpenAPI know the new type without a restart.
    let resources = s.kubectl_ok(&["api-resources", "--api-group=apps.example.com"]);
    assert!(
        resources.lines().any(|l| l.starts_with("webapps")
            && l.contains(" wa ")
            && l.contains("apps.example.com/v1")
            && l.contains("WebApp")),
        "{resources}"
    );
    let explain = s.kubectl_ok(&["explain", "webapp.spec.image"]);
    assert!(explain.contains("The container image to run."), "{explain}");
    let crd = s.kubectl_ok(&["get", "crd", "webapps.apps.example.com", "-o", "jsonpath={.status.conditions[*].type} {.status.storedVersions} {.status.acceptedNames.kind}"]);
    assert_eq!(crd, "NamesAccepted Established [\"v1\"] WebApp");

    // Create: defaults filled in at every level, unknown fields pruned.
    let (ok, o, e) = apply(&s, APP);
    assert!(ok, "{o}{e}");
    let spec = s.kubectl_ok(&["get", "webapp", "shop", "-o", "jsonpath={.spec}"]);
    let spec: serde_json::Value = serde_json::from_str(&spec).unwrap();
    assert_eq!(spec["replicas"], 2);
    assert_eq!(spec["maxReplicas"], 10);
    assert_eq!(spec["port"], 8080);
    assert_eq!(spec["tier"], "frontend");
    let gen = s.kubectl_ok(&["get", "wa", "shop", "-o", "jsonpath={.metadata.generation}"]);
    assert_eq!(gen, "1");

    let pruned = APP
        .replace("  replicas: 2\n", "  replicas: 2\n  colour: blue\n")
        .replace("name: shop", "name: pruned");
    let out = s.kubectl_stdin(&["apply", "--validate=false", "-f", "-"], &pruned);
    assert!(out.status.success(), "{:?}", text(&out));
    let spec = s.kubectl_ok(&["get", "webapp", "pruned", "-o", "jsonpath={.spec}"]);
    assert!(!spec.contains("colour"), "unknown field kept: {spec}");
    // Under Strict (kubectl's default for apply) the same field is refused, naming it.
    let (ok, _, e) = apply(&s, &pruned.replace("name: pruned", "name: strict"));
    assert!(!ok);
    assert!(e.contains("unknown field \"spec.colour\""), "{e}");
    // Warn: created, with kubectl printing the server's warning.
    let out = s.kubectl_stdin(
        &["apply", "--validate=warn", "-f", "-"],
        &pruned.replace("name: pruned", "name: warned"),
    );
    let (o, e) = text(&out);
    assert!(out.status.success(), "{o}{e}");
    assert!(e.contains("Warning: unknown field \"spec.colour\""), "{e}");

    // Printer columns, priority 1 only with -o wide, JSONPath filters.
    s.kubectl_ok(&["patch", "webapp", "shop", "--subresource=status", "--type=merge", "-p", r#"{"status":{"replicas":2,"selector":"app=shop","conditions":[{"type":"Ready","status":"True"}]}}"#]);
    let table = s.kubectl_ok(&["get", "webapps"]);
    let header: Vec<&str> = table.lines().next().unwrap().split_whitespace().collect();
    assert_eq!(
        header,
        ["NAME", "IMAGE", "REPLICAS", "READY", "AGE"],
        "{table}"
    );
    let row = table.lines().find(|l| l.starts_with("shop")).unwrap();
    let cells: Vec<&str> = row.split_whitespace().collect();
    assert_eq!(&cells[..4], ["shop", "nginx:1.25", "2", "True"], "{table}");
    let wide = s.kubectl_ok(&["get", "webapps", "-o", "wide"]);
    assert!(wide.lines().next().unwrap().contains("PORT"), "{wide}");
    assert!(
        wide.lines()
            .any(|l| l.starts_with("shop") && l.contains("8080")),
        "{wide}"
    );
    // `kubectl get all` includes types in the `all` category.
    let all = s.kubectl_ok(&["get", "all"]);
    // (kubectl prefixes names with the type only when `all` spans several types.)
    assert!(
        all.lines()
            .any(|l| l.starts_with("shop ") || l.starts_with("webapp.apps.example.com/shop ")),
        "{all}"
    );

    // /status isolation: the main endpoint keeps status, /status keeps spec; generation
    // moves with spec only.
    let (ok, o, e) = apply(&s, &APP.replace("replicas: 2", "replicas: 3"));
    assert!(ok, "{o}{e}");
    let got = s.kubectl_ok(&[
        "get",
        "wa",
        "shop",
        "-o",
        "jsonpath={.spec.replicas} {.status.replicas} {.metadata.generation}",
    ]);
    assert_eq!(got, "3 2 2");
    s.kubectl_ok(&[
        "patch",
        "webapp",
        "shop",
        "--subresource=status",
        "--type=merge",
        "-p",
        r#"{"spec":{"replicas":9},"status":{"replicas":3}}"#,
    ]);
    let got = s.kubectl_ok(&[
        "get",
        "wa",
        "shop",
        "-o",
        "jsonpath={.spec.replicas} {.status.replicas} {.metadata.generation}",
    ]);
    assert_eq!(got, "3 3 2");

    // kubectl scale through the scale subresource.
    let out = s.kubectl_ok(&["scale", "webapp/shop", "--replicas=5"]);
    assert!(out.contains("webapp.apps.example.com/shop scaled"), "{out}");
    let scale = s.kubectl_ok(&[
        "get",
        "--raw",
        "/apis/apps.example.com/v1/namespaces/default/webapps/shop/scale",
    ]);
    let scale: serde_json::Value = serde_json::from_str(&scale).unwrap();
    assert_eq!(scale["kind"], "Scale");
    assert_eq!(scale["spec"]["replicas"], 5);
    assert_eq!(
        scale["status"],
        serde_json::json!({"replicas": 3, "selector": "app=shop"})
    );
    let out = s.kubectl(&["scale", "webapp/shop", "--replicas=-1"]);
    assert!(!out.status.success());

    // The deprecated version serves the same object, converted, with kubectl printing the
    // deprecation warning; objects written through it are stored as v1.
    let out = s.kubectl(&[
        "get",
        "webapps.v1beta1.apps.example.com",
        "shop",
        "-o",
        "jsonpath={.apiVersion} {.spec.image}",
    ]);
    let (o, e) = text(&out);
    assert!(out.status.success(), "{o}{e}");
    assert_eq!(o, "apps.example.com/v1beta1 nginx:1.25");
    assert!(
        e.contains(
            "Warning: apps.example.com/v1beta1 WebApp is deprecated; use apps.example.com/v1"
        ),
        "{e}"
    );
    let old = "apiVersion: apps.example.com/v1beta1\nkind: WebApp\nmetadata:\n  name: legacy\nspec:\n  image: httpd:2\n";
    let (ok, o, e) = apply(&s, old);
    assert!(ok, "{o}{e}");
    let got = s.kubectl_ok(&[
        "get",
        "webapps.v1.apps.example.com",
        "legacy",
        "-o",
        "jsonpath={.apiVersion} {.spec.replicas}",
    ]);
    assert_eq!(
        got, "apps.example.com/v1 1",
        "read through v1: converted and defaulted"
    );

    // Watch sees changes to custom resources.
    let watch = s.kubectl_follow(&["get", "webapps", "-w", "--output-watch-events"]);
    watch.wait_for_line("ADDED legacy", Duration::from_secs(30), |l| {
        l.starts_with("ADDED") && l.contains("legacy")
    });
    s.kubectl_ok(&["delete", "webapp", "legacy"]);
    watch.wait_for_line("DELETED legacy", Duration::from_secs(30), |l| {
        l.starts_with("DELETED") && l.contains("legacy")
    });
    drop(watch);

    // Deleting the CRD takes its objects and its API with it.
    s.kubectl_ok(&["delete", "crd", "webapps.apps.example.com", "--timeout=20s"]);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let r = s.kubectl_ok(&["api-resources", "--api-group=apps.example.com"]);
        if !r.contains("webapps") {
            break;
        }
        assert!(Instant::now() < deadline, "API still served: {r}");
        std::thread::sleep(Duration::from_millis(200));
    }
    let out = s.kubectl(&[
        "get",
        "--raw",
        "/apis/apps.example.com/v1/namespaces/default/webapps",
    ]);
    assert!(!out.status.success());
    // Installing it again starts empty: the objects went with the CRD.
    install(&s);
    let left = s.kubectl_ok(&["get", "webapps", "-o", "name"]);
    assert_eq!(left, "", "objects survived their CRD");
}

#[test]
fn bad_custom_resources_are_refused_naming_every_field() {
    let s = Server::start();
    install(&s);
    let bad = r#"
apiVersion: apps.example.com/v1
kind: WebApp
metadata:
  name: bad
spec:
  image: ""
  replicas: 12
  maxReplicas: 3
  tier: middle
  port: [80]
  env:
  - {name: A, value: "1"}
  - {name: A, value: "2"}
  resources:
    limits: {memory: lots}
"#;
    let (ok, _, e) = apply(&s, bad);
    assert!(!ok);
    assert!(e.contains("The WebApp \"bad\" is invalid"), "{e}");
    for want in [
        "spec.image: Invalid value: \"\": spec.image in body should be at least 1 chars long",
        "spec.tier: Unsupported value: \"middle\": supported values: \"frontend\", \"backend\"",
        "spec.port: Invalid value: \"array\": spec.port in body must be of type integer,string: \"array\"",
        "spec.env[1]: Duplicate value: {\"name\":\"A\"}",
        "spec.resources.limits.memory: Invalid value: \"lots\": spec.resources.limits.memory in body should match '^[0-9]+(Mi|Gi)$'",
        "spec: Invalid value: \"object\": replicas must not exceed maxReplicas",
    ] {
        assert!(e.contains(want), "missing `{want}` in:\n{e}");
    }
    let (ok, _, e) = apply(
        &s,
        "apiVersion: apps.example.com/v1\nkind: WebApp\nmetadata:\n  name: bare\nspec: {}\n",
    );
    assert!(!ok);
    assert!(e.contains("spec.image: Required value"), "{e}");

    // A transition rule: storageClass may be set once, never changed.
    let app = "apiVersion: apps.example.com/v1\nkind: WebApp\nmetadata:\n  name: db\nspec:\n  image: pg:16\n  storageClass: fast\n";
    let (ok, o, e) = apply(&s, app);
    assert!(ok, "{o}{e}");
    let (ok, _, e) = apply(&s, &app.replace("fast", "slow"));
    assert!(!ok);
    assert!(
        e.contains("spec.storageClass: Invalid value: \"string\": storageClass is immutable"),
        "{e}"
    );

    // A rule with a comprehension (its variable bound by `all`).
    let (ok, _, e) = apply(
        &s,
        "apiVersion: apps.example.com/v1\nkind: WebApp\nmetadata:\n  name: envy\nspec:\n  image: i\n  env: [{name: A}, {name: CAPSTAN_X}]\n",
    );
    assert!(!ok);
    assert!(
        e.contains("spec.env: Invalid value: \"array\": names starting with CAPSTAN_ are reserved"),
        "{e}"
    );

    // Changing the schema takes effect on the next request: a tier is now required.
    let stricter = CRD
        .replacen("required: [image]", "required: [image, tier]", 1)
        .replacen("                default: frontend\n", "", 1);
    let out = s.kubectl_stdin(&["apply", "-f", "-"], &stricter);
    assert!(out.status.success(), "{:?}", text(&out));
    let (ok, _, e) = apply(&s, "apiVersion: apps.example.com/v1\nkind: WebApp\nmetadata:\n  name: late\nspec:\n  image: x\n");
    assert!(!ok);
    assert!(e.contains("spec.tier: Required value"), "{e}");
}

#[test]
fn bad_crds_are_refused_and_names_conflict_visibly() {
    let s = Server::start();
    let bad = r#"
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: things.example.com
spec:
  group: example
  scope: Galaxy
  names: {plural: things, kind: Thing}
  versions:
  - name: v1
    served: true
    storage: true
    schema:
      openAPIV3Schema:
        type: object
        properties:
          spec:
            properties:
              size: {type: integer}
              when: {type: string, x-kubernetes-validations: [{rule: "self >>> 1"}]}
              grid:
                type: array
                items: {type: array, items: {type: string}}
                x-kubernetes-validations: [{rule: "self.all(r, r.all(c, self.all(q, q.all(d, d != c))))"}]
  - name: v2
    served: true
    storage: true
    schema:
      openAPIV3Schema: {type: object}
"#;
    let out = s.kubectl_stdin(&["apply", "-f", "-"], bad);
    let (_, e) = text(&out);
    assert!(!out.status.success());
    for want in [
        "metadata.name: Invalid value: \"things.example.com\": must be spec.names.plural+\".\"+spec.group",
        "spec.group: Invalid value: \"example\": should be a domain with at least one dot",
        "spec.scope: Unsupported value: \"Galaxy\"",
        "spec.versions: Invalid value: \"\": must have exactly one version marked as storage version",
        "spec.versions[0].schema.openAPIV3Schema.properties[spec].type: Required value: must not be empty for specified object fields",
        "spec.versions[0].schema.openAPIV3Schema.properties[spec].properties[when].x-kubernetes-validations[0].rule: Invalid value: \"self >>> 1\": compilation failed",
        // Unbounded nested comprehensions could cost more than a call's budget: refused.
        "spec.versions[0].schema.openAPIV3Schema.properties[spec].properties[grid].x-kubernetes-validations[0].rule: Forbidden: estimated rule cost exceeds budget by factor of more than 100x",
    ] {
        assert!(e.contains(want), "missing `{want}` in:\n{e}");
    }

    // Two CRDs claiming one kind in a group: the second is not established.
    let one = |plural: &str| {
        format!(
            "apiVersion: apiextensions.k8s.io/v1\nkind: CustomResourceDefinition\nmetadata:\n  name: {plural}.example.com\nspec:\n  group: example.com\n  scope: Cluster\n  names: {{plural: {plural}, kind: Gadget}}\n  versions:\n  - name: v1\n    served: true\n    storage: true\n    schema:\n      openAPIV3Schema: {{type: object, x-kubernetes-preserve-unknown-fields: true}}\n"
        )
    };
    s.kubectl_stdin(&["apply", "-f", "-"], &one("gadgets"));
    std::thread::sleep(Duration::from_millis(50));
    s.kubectl_stdin(&["apply", "-f", "-"], &one("widgets"));
    let status = s.kubectl_ok(&["get", "crd", "widgets.example.com", "-o", "jsonpath={.status.conditions[?(@.type==\"NamesAccepted\")].reason} {.status.conditions[?(@.type==\"Established\")].status}"]);
    assert_eq!(status, "KindConflict False");
    // The first one serves a cluster-scoped API.
    let out = s.kubectl_stdin(
        &["apply", "-f", "-"],
        "apiVersion: example.com/v1\nkind: Gadget\nmetadata:\n  name: g1\nanything: [1, 2]\n",
    );
    assert!(out.status.success(), "{:?}", text(&out));
    let got = s.kubectl_ok(&["get", "gadgets", "g1", "-o", "jsonpath={.anything}"]);
    assert_eq!(got, "[1,2]");
}

#[test]
fn versions_alpha_beta_stable_and_a_storage_switch() {
    let s = Server::start();
    let crd = |storage: &str, alpha_served: bool| {
        let v = |name: &str| {
            format!(
                "  - name: {name}\n    served: {}\n    storage: {}\n    schema:\n      openAPIV3Schema:\n        type: object\n        properties:\n          spec:\n            type: object\n            properties:\n              size: {{type: integer, default: 3}}\n",
                name != "v1alpha1" || alpha_served,
                name == storage
            )
        };
        format!(
            "apiVersion: apiextensions.k8s.io/v1\nkind: CustomResourceDefinition\nmetadata:\n  name: boxes.store.example.com\nspec:\n  group: store.example.com\n  scope: Cluster\n  names: {{plural: boxes, kind: Box}}\n  versions:\n{}{}{}",
            v("v1alpha1"),
            v("v1beta1"),
            v("v1")
        )
    };
    let out = s.kubectl_stdin(&["apply", "-f", "-"], &crd("v1beta1", true));
    assert!(out.status.success(), "{:?}", text(&out));
    // Discovery prefers v1, then v1beta1, then v1alpha1.
    let group = s.kubectl_ok(&["get", "--raw", "/apis/store.example.com"]);
    let group: serde_json::Value = serde_json::from_str(&group).unwrap();
    assert_eq!(group["preferredVersion"]["version"], "v1");
    let versions: Vec<&str> = group["versions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["version"].as_str().unwrap())
        .collect();
    assert_eq!(versions, ["v1", "v1beta1", "v1alpha1"]);

    let out = s.kubectl_stdin(
        &["apply", "-f", "-"],
        "apiVersion: store.example.com/v1alpha1\nkind: Box\nmetadata:\n  name: old\nspec: {}\n",
    );
    assert!(out.status.success(), "{:?}", text(&out));
    // Switch storage to v1 and stop serving v1alpha1: the old object still reads, in every
    // served version; storedVersions remembers both storage versions.
    let out = s.kubectl_stdin(&["apply", "-f", "-"], &crd("v1", false));
    assert!(out.status.success(), "{:?}", text(&out));
    let stored = s.kubectl_ok(&[
        "get",
        "crd",
        "boxes.store.example.com",
        "-o",
        "jsonpath={.status.storedVersions}",
    ]);
    assert_eq!(stored, "[\"v1beta1\",\"v1\"]");
    for v in ["v1", "v1beta1"] {
        let got = s.kubectl_ok(&[
            "get",
            &format!("boxes.{v}.store.example.com"),
            "old",
            "-o",
            "jsonpath={.apiVersion} {.spec.size}",
        ]);
        assert_eq!(got, format!("store.example.com/{v} 3"));
    }
    let out = s.kubectl(&["get", "--raw", "/apis/store.example.com/v1alpha1/boxes"]);
    assert!(!out.status.success(), "an unserved version is not served");
    let resources = s.kubectl_ok(&["api-versions"]);
    assert!(
        resources.contains("store.example.com/v1beta1")
            && !resources.contains("store.example.com/v1alpha1"),
        "{resources}"
    );

    // A custom resource's finalizer holds back both it and its CRD's deletion.
    s.kubectl_ok(&[
        "patch",
        "box",
        "old",
        "--type=merge",
        "-p",
        r#"{"metadata":{"finalizers":["example.com/keep"]}}"#,
    ]);
    s.kubectl_ok(&["delete", "crd", "boxes.store.example.com", "--wait=false"]);
    // The controller marks it Terminating and deletes the Box, which its finalizer holds.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let cond = s.kubectl_ok(&[
            "get",
            "crd",
            "boxes.store.example.com",
            "-o",
            "jsonpath={.status.conditions[?(@.type==\"Terminating\")].status}",
        ]);
        let ts = s.kubectl_ok(&[
            "get",
            "box",
            "old",
            "-o",
            "jsonpath={.metadata.deletionTimestamp}",
        ]);
        if cond == "True" && !ts.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "not terminating: {cond:?} {ts:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let out = s.kubectl_stdin(
        &["apply", "-f", "-"],
        "apiVersion: store.example.com/v1\nkind: Box\nmetadata:\n  name: new\n",
    );
    assert!(!out.status.success(), "no creates while terminating");
    let ts = s.kubectl_ok(&[
        "get",
        "box",
        "old",
        "-o",
        "jsonpath={.metadata.deletionTimestamp}",
    ]);
    assert!(!ts.is_empty());
    s.kubectl_ok(&[
        "patch",
        "box",
        "old",
        "--type=merge",
        "-p",
        r#"{"metadata":{"finalizers":null}}"#,
    ]);
    s.kubectl_ok(&[
        "wait",
        "--for=delete",
        "crd/boxes.store.example.com",
        "--timeout=15s",
    ]);
}

/// CRDs as generators write them (int-or-string and quantities as `anyOf: [integer,
/// string]`) install with client-side and server-side apply, re-apply cleanly, and their
/// objects take both an integer and a string where the schema allows either.
#[test]
fn generated_crds_with_int_or_string_install_both_ways() {
    let s = Server::start();
    let crd = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/generated-crd.yaml"
    );
    let out = s.kubectl_ok(&["apply", "-f", crd]);
    assert!(out.contains("created"), "{out}");
    s.kubectl_ok(&[
        "wait",
        "--for=condition=Established",
        "crd/scrapers.monitoring.capstan.test",
    ]);
    let out = s.kubectl_ok(&["apply", "--server-side", "--force-conflicts", "-f", crd]);
    assert!(out.contains("serverside-applied"), "{out}");
    let out = s.kubectl_ok(&["apply", "--server-side", "-f", crd]);
    assert!(out.contains("serverside-applied"), "{out}");
    let cr = |name: &str, port: &str, cpu: &str| {
        format!(
            "apiVersion: monitoring.capstan.test/v1\nkind: Scraper\nmetadata: {{name: {name}}}\nspec:\n  endpoints:\n  - {{name: web, port: {port}, relabelings: [{{sourceLabels: [a], targetLabel: b}}]}}\n  resources: {{requests: {{cpu: {cpu}}}, limits: {{memory: 1Gi}}}}\n  maxUnavailable: 1\n"
        )
    };
    let out = s.kubectl_stdin(&["apply", "-f", "-"], &cr("by-number", "8080", "1"));
    assert!(out.status.success(), "{:?}", capstan_e2e::text(&out));
    let out = s.kubectl_stdin(
        &["apply", "--server-side", "-f", "-"],
        &cr("by-name", "metrics", "500m"),
    );
    assert!(out.status.success(), "{:?}", capstan_e2e::text(&out));
    let got = s.kubectl_ok(&[
        "get",
        "scrapers",
        "-o",
        "jsonpath={range .items[*]}{.metadata.name}={.spec.endpoints[0].port},{.spec.interval},{.spec.endpoints[0].relabelings[0].action};{end}",
    ]);
    assert_eq!(
        got,
        "by-name=metrics,30s,replace;by-number=8080,30s,replace;"
    );
    // The schema still refuses what is neither, and the CEL rule runs.
    let out = s.kubectl_stdin(&["apply", "-f", "-"], &cr("bad", "[1]", "1"));
    let (_, err) = capstan_e2e::text(&out);
    assert!(
        !out.status.success() && err.contains("spec.endpoints[0].port"),
        "{err}"
    );
    let long = "x".repeat(70);
    let body = cr("long", "1", "1").replace("name: web", &format!("name: {long}"));
    let out = s.kubectl_stdin(&["apply", "-f", "-"], &body);
    let (_, err) = capstan_e2e::text(&out);
    assert!(
        err.contains("endpoint names are at most 63 characters"),
        "{err}"
    );
    let table = s.kubectl_ok(&["get", "scr"]);
    assert!(
        table.contains("INTERVAL") && table.contains("by-number"),
        "{table}"
    );
}

/// The cleanup that deletes a CRD's objects cannot be lost: a server-side re-apply of the
/// manifest (Prometheus Operator's documented path) used to strip the finalizer added at
/// create, so deletion left the objects behind and a re-created CRD showed them again.
#[test]
fn a_crd_deleted_after_a_server_side_re_apply_takes_its_objects_with_it() {
    let s = Server::start();
    let crd = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/generated-crd.yaml"
    );
    s.kubectl_ok(&["apply", "--server-side", "-f", crd]);
    s.kubectl_ok(&[
        "wait",
        "--for=condition=Established",
        "crd/scrapers.monitoring.capstan.test",
    ]);
    s.kubectl_ok(&["apply", "--server-side", "-f", crd]);
    let cr = "apiVersion: monitoring.capstan.test/v1\nkind: Scraper\nmetadata: {name: left}\nspec:\n  endpoints: [{name: web, port: 80}]\n";
    let out = s.kubectl_stdin(&["apply", "-f", "-"], cr);
    assert!(out.status.success(), "{:?}", text(&out));
    s.kubectl_ok(&["apply", "--server-side", "-f", crd]);
    s.kubectl_ok(&[
        "delete",
        "crd",
        "scrapers.monitoring.capstan.test",
        "--wait=true",
        "--timeout=60s",
    ]);
    s.kubectl_ok(&["apply", "--server-side", "-f", crd]);
    s.kubectl_ok(&[
        "wait",
        "--for=condition=Established",
        "crd/scrapers.monitoring.capstan.test",
    ]);
    let left = s.kubectl_ok(&["get", "scrapers", "-A", "-o", "name"]);
    assert_eq!(
        left.trim(),
        "",
        "objects of the deleted CRD came back: {left}"
    );
}

/// The `kubectl get apiservices` line of `name`, once it shows `want` in AVAILABLE.
fn apiservice_line(s: &Server, name: &str, want: &str) -> String {
    capstan_e2e::wait_for(
        &format!("APIService {name} {want}"),
        Duration::from_secs(20),
        || {
            let out = s.kubectl(&["get", "apiservices"]);
            let (o, _) = text(&out);
            o.lines()
                .find(|l| {
                    let cols: Vec<&str> = l.split_whitespace().collect();
                    cols.first() == Some(&name) && l.contains(want)
                })
                .map(str::to_string)
        },
    )
}

#[test]
fn apiservices_register_every_served_group_version() {
    let s = Server::start();
    // Built-in group-versions: Local and Available, as kube-aggregator registers them.
    for name in [
        "v1.",
        "v1.apps",
        "v2.autoscaling",
        "v1.apiextensions.k8s.io",
        "v1.apiregistration.k8s.io",
    ] {
        let line = apiservice_line(&s, name, "True");
        let cols: Vec<&str> = line.split_whitespace().collect();
        assert_eq!(cols[1..3], ["Local", "True"], "{line}");
    }
    let apps = capstan_e2e::get_json(&s, &["apiservice", "v1.apps"]).expect("v1.apps");
    assert_eq!(apps["spec"]["groupPriorityMinimum"], 17800, "{apps}");
    assert_eq!(apps["spec"]["versionPriority"], 15, "{apps}");
    assert_eq!(
        apps["metadata"]["labels"]["kube-aggregator.kubernetes.io/automanaged"],
        "onstart"
    );
    let cond = &apps["status"]["conditions"][0];
    assert_eq!(
        (&cond["type"], &cond["status"], &cond["reason"]),
        (&"Available".into(), &"True".into(), &"Local".into()),
        "{apps}"
    );

    // Every served version of a CRD gets one, removed with the CRD.
    let crd = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/generated-crd.yaml"
    );
    s.kubectl_ok(&["apply", "--server-side", "-f", crd]);
    for name in [
        "v1.monitoring.capstan.test",
        "v1alpha1.monitoring.capstan.test",
    ] {
        apiservice_line(&s, name, "True");
    }
    let mine = s.kubectl_ok(&[
        "get",
        "apiservice",
        "v1.monitoring.capstan.test",
        "-o",
        "jsonpath={.spec.groupPriorityMinimum}/{.spec.versionPriority}/{.metadata.labels.kube-aggregator\\.kubernetes\\.io/automanaged}",
    ]);
    assert_eq!(mine.trim(), "1000/100/true");

    // A user's edit of an automanaged registration is put back; a deleted one comes back.
    s.kubectl_ok(&[
        "patch",
        "apiservice",
        "v1.apps",
        "--type=merge",
        "-p",
        r#"{"spec":{"versionPriority":1}}"#,
    ]);
    capstan_e2e::wait_for("v1.apps restored", Duration::from_secs(20), || {
        let p = s.kubectl_ok(&[
            "get",
            "apiservice",
            "v1.apps",
            "-o",
            "jsonpath={.spec.versionPriority}",
        ]);
        (p.trim() == "15").then_some(())
    });
    s.kubectl_ok(&["delete", "apiservice", "v1.batch"]);
    apiservice_line(&s, "v1.batch", "True");

    // An aggregated API's registration is stored, and says why it is not available.
    let aggregated = "apiVersion: apiregistration.k8s.io/v1\nkind: APIService\nmetadata: {name: v1beta1.metrics.k8s.io}\nspec:\n  group: metrics.k8s.io\n  version: v1beta1\n  groupPriorityMinimum: 100\n  versionPriority: 100\n  insecureSkipTLSVerify: true\n  service: {namespace: kube-system, name: metrics-server}\n";
    let (ok, o, e) = apply(&s, aggregated);
    assert!(ok, "{o}{e}");
    let line = apiservice_line(&s, "v1beta1.metrics.k8s.io", "False (ServiceNotFound)");
    assert!(line.contains("kube-system/metrics-server"), "{line}");
    s.kubectl_ok(&[
        "create",
        "service",
        "clusterip",
        "metrics-server",
        "-n",
        "kube-system",
        "--tcp=443",
    ]);
    apiservice_line(&s, "v1beta1.metrics.k8s.io", "False (FailedDiscoveryCheck)");
    let port = s.kubectl_ok(&[
        "get",
        "apiservice",
        "v1beta1.metrics.k8s.io",
        "-o",
        "jsonpath={.spec.service.port}",
    ]);
    assert_eq!(port.trim(), "443", "the service port defaults as upstream");

    // Bad input is refused naming the field.
    let bad = "apiVersion: apiregistration.k8s.io/v1\nkind: APIService\nmetadata: {name: v1.wrong.example.com}\nspec: {group: example.com, version: v1, groupPriorityMinimum: 0, versionPriority: 10, caBundle: AAAA}\n";
    let (ok, o, e) = apply(&s, bad);
    assert!(!ok, "{o}");
    assert!(
        e.contains(r#"metadata.name: Invalid value: "v1.wrong.example.com": must be `spec.version+"."+spec.group`: "v1.example.com""#),
        "{e}"
    );
    assert!(
        e.contains(
            "spec.groupPriorityMinimum: Invalid value: 0: must be positive and less than 20000"
        ),
        "{e}"
    );
    assert!(
        e.contains(
            r#"spec.caBundle: Invalid value: "3 bytes": local APIServices may not have a caBundle"#
        ),
        "{e}"
    );

    // The CRD's registrations go with it.
    s.kubectl_ok(&[
        "delete",
        "crd",
        "scrapers.monitoring.capstan.test",
        "--wait=true",
        "--timeout=60s",
    ]);
    capstan_e2e::wait_for(
        "the CRD's APIServices removed",
        Duration::from_secs(20),
        || {
            let o = s.kubectl_ok(&["get", "apiservices", "-o", "name"]);
            (!o.contains("monitoring.capstan.test")).then_some(())
        },
    );
}

/// Every JSON watch event line starts `{"type":"<T>","object":`, as upstream writes it, for
/// custom resources too (whose lines are built, not spliced from stored bytes); clients that
/// capture an event's object as text while decoding, as capstan's own watchers do, rely on
/// `type` coming first.
#[test]
fn a_custom_resource_watch_writes_each_events_type_first() {
    let s = Server::start();
    install(&s);
    let base = "/apis/apps.example.com/v1/namespaces/default/webapps";
    let list: serde_json::Value =
        serde_json::from_str(&s.kubectl_ok(&["get", "--raw", base])).expect("list JSON");
    let rv = list["metadata"]["resourceVersion"]
        .as_str()
        .expect("list resourceVersion")
        .to_string();
    let (ok, o, e) = apply(&s, APP);
    assert!(ok, "{o}{e}");
    s.kubectl_ok(&["annotate", "webapp", "shop", "team=web"]);
    s.kubectl_ok(&["delete", "webapp", "shop"]);
    let watch = s.kubectl_ok(&[
        "get",
        "--raw",
        &format!("{base}?watch=true&resourceVersion={rv}&timeoutSeconds=1"),
    ]);
    let mut seen = Vec::new();
    for line in watch.lines().filter(|l| !l.is_empty()) {
        let ev: serde_json::Value = serde_json::from_str(line).expect("event JSON");
        let kind = ev["type"].as_str().expect("type").to_string();
        assert!(
            line.starts_with(&format!("{{\"type\":\"{kind}\",\"object\":{{")),
            "{line}"
        );
        seen.push(format!(
            "{kind} {}",
            ev["object"]["metadata"]["name"].as_str().unwrap_or("")
        ));
    }
    assert_eq!(
        seen,
        ["ADDED shop", "MODIFIED shop", "DELETED shop"],
        "{watch}"
    );
}

//! Server-side apply with the real kubectl and kube-rs: create, update and remove a field;
//! two managers on a ConfigMap and a Deployment with a conflict kubectl prints and
//! `--force-conflicts` resolves; managedFields' shape; the client-side ⇄ server-side
//! migration; a controller owning only status through `/status` while a user owns spec.

use capstan_e2e::{text, Server};

const CM: &str = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: settings\ndata:\n  mode: fast\n  level: \"3\"\n";

fn ssa(s: &Server, yaml: &str, extra: &[&str]) -> (bool, String, String) {
    let mut args = vec!["apply", "--server-side", "-f", "-"];
    args.extend_from_slice(extra);
    let out = s.kubectl_stdin(&args, yaml);
    let (o, e) = text(&out);
    (out.status.success(), o, e)
}

fn managed(s: &Server, what: &[&str]) -> serde_json::Value {
    let mut args = vec!["get"];
    args.extend_from_slice(what);
    args.extend_from_slice(&["-o", "json", "--show-managed-fields"]);
    let obj: serde_json::Value = serde_json::from_str(&s.kubectl_ok(&args)).unwrap();
    obj["metadata"]["managedFields"].clone()
}

#[test]
fn apply_creates_updates_removes_and_reports_conflicts() {
    let s = Server::start();
    let (ok, o, e) = ssa(&s, CM, &[]);
    assert!(
        ok && o.contains("configmap/settings serverside-applied"),
        "{o}{e}"
    );
    let mf = managed(&s, &["cm", "settings"]);
    assert_eq!(mf.as_array().unwrap().len(), 1);
    assert_eq!(mf[0]["manager"], "kubectl");
    assert_eq!(mf[0]["operation"], "Apply");
    assert_eq!(mf[0]["apiVersion"], "v1");
    assert_eq!(mf[0]["fieldsType"], "FieldsV1");
    assert!(mf[0]["time"].as_str().unwrap().ends_with('Z'));
    assert_eq!(
        mf[0]["fieldsV1"],
        serde_json::json!({"f:data": {"f:level": {}, "f:mode": {}}})
    );
    // Leaving a field out of the next apply removes it (nobody else owns it).
    let (ok, _, e) = ssa(&s, &CM.replace("  level: \"3\"\n", ""), &[]);
    assert!(ok, "{e}");
    assert_eq!(
        s.kubectl_ok(&["get", "cm", "settings", "-o", "jsonpath={.data}"]),
        r#"{"mode":"fast"}"#
    );
    // A second manager takes a field with an update; the first one's apply now conflicts.
    s.kubectl_ok(&[
        "patch",
        "cm",
        "settings",
        "--type=merge",
        "-p",
        r#"{"data":{"mode":"slow","owner":"ops"}}"#,
    ]);
    let (ok, _, e) = ssa(&s, &CM.replace("  level: \"3\"\n", ""), &[]);
    assert!(!ok);
    assert!(
        e.contains(
            "Apply failed with 1 conflict: conflict with \"kubectl-patch\" using v1: .data.mode"
        ),
        "{e}"
    );
    assert!(
        e.contains("--force-conflicts"),
        "kubectl explains the way out: {e}"
    );
    let (ok, _, e) = ssa(
        &s,
        &CM.replace("  level: \"3\"\n", ""),
        &["--force-conflicts"],
    );
    assert!(ok, "{e}");
    assert_eq!(
        s.kubectl_ok(&[
            "get",
            "cm",
            "settings",
            "-o",
            "jsonpath={.data.mode} {.data.owner}"
        ]),
        "fast ops"
    );
    let mf = managed(&s, &["cm", "settings"]);
    let by = |m: &str| {
        mf.as_array()
            .unwrap()
            .iter()
            .find(|e| e["manager"] == m)
            .cloned()
            .unwrap()
    };
    assert_eq!(
        by("kubectl")["fieldsV1"],
        serde_json::json!({"f:data": {"f:mode": {}}})
    );
    assert_eq!(
        by("kubectl-patch")["fieldsV1"],
        serde_json::json!({"f:data": {"f:owner": {}}})
    );
    assert_eq!(by("kubectl-patch")["operation"], "Update");
    // Dry run stores nothing; a stale resourceVersion is a conflict.
    let (ok, _, e) = ssa(&s, &CM.replace("fast", "dry"), &["--dry-run=server"]);
    assert!(ok, "{e}");
    assert_eq!(
        s.kubectl_ok(&["get", "cm", "settings", "-o", "jsonpath={.data.mode}"]),
        "fast"
    );
    let stale = CM.replace(
        "  name: settings\n",
        "  name: settings\n  resourceVersion: \"1\"\n",
    );
    let (ok, _, e) = ssa(&s, &stale, &[]);
    assert!(!ok && e.contains("the object has been modified"), "{e}");
}

const DEPLOY: &str = r#"
apiVersion: apps/v1
kind: Deployment
metadata: {name: web}
spec:
  replicas: 2
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      containers:
      - name: nginx
        image: nginx:1.25
        ports: [{containerPort: 80}]
"#;

#[test]
fn two_managers_share_a_deployment() {
    let s = Server::start();
    let (ok, _, e) = ssa(&s, DEPLOY, &[]);
    assert!(ok, "{e}");
    // Another manager (an autoscaler, say) owns replicas through the scale subresource.
    s.kubectl_ok(&["scale", "deployment/web", "--replicas=5"]);
    let (ok, _, e) = ssa(&s, &DEPLOY.replace("nginx:1.25", "nginx:1.26"), &[]);
    assert!(!ok);
    assert!(
        e.contains("conflict with") && e.contains(".spec.replicas"),
        "{e}"
    );
    // --force-conflicts takes replicas back from the scaler...
    let (ok, _, e) = ssa(&s, DEPLOY, &["--force-conflicts"]);
    assert!(ok, "{e}");
    assert_eq!(
        s.kubectl_ok(&["get", "deploy", "web", "-o", "jsonpath={.spec.replicas}"]),
        "2"
    );
    s.kubectl_ok(&["scale", "deployment/web", "--replicas=5"]);
    // ...and without replicas in the manifest the apply succeeds and leaves them alone.
    let (ok, _, e) = ssa(
        &s,
        &DEPLOY
            .replace("nginx:1.25", "nginx:1.26")
            .replace("  replicas: 2\n", ""),
        &[],
    );
    assert!(ok, "{e}");
    let got = s.kubectl_ok(&["get", "deploy", "web", "-o", "jsonpath={.spec.replicas} {.spec.template.spec.containers[0].image} {.spec.template.spec.containers[0].ports[0].protocol}"]);
    assert_eq!(got, "5 nginx:1.26 TCP");
    let mf = managed(&s, &["deploy", "web"]);
    let apply = mf
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["operation"] == "Apply")
        .unwrap();
    let containers = &apply["fieldsV1"]["f:spec"]["f:template"]["f:spec"]["f:containers"];
    assert!(
        containers.get("k:{\"name\":\"nginx\"}").is_some(),
        "{apply}"
    );
    assert!(
        containers["k:{\"name\":\"nginx\"}"]["f:ports"]
            .get("k:{\"containerPort\":80,\"protocol\":\"TCP\"}")
            .is_some(),
        "{apply}"
    );
    let scaler = mf
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["subresource"] == "scale")
        .unwrap();
    assert_eq!(
        scaler["fieldsV1"],
        serde_json::json!({"f:spec": {"f:replicas": {}}})
    );
}

#[test]
fn client_side_and_server_side_apply_take_turns() {
    let s = Server::start();
    let out = s.kubectl_stdin(&["apply", "-f", "-"], DEPLOY);
    assert!(out.status.success(), "{:?}", text(&out));
    // Server-side over client-side: kubectl migrates the ownership and the annotation.
    let (ok, o, e) = ssa(&s, DEPLOY, &[]);
    assert!(ok && o.contains("serverside-applied"), "{o}{e}");
    let mf = managed(&s, &["deploy", "web"]);
    let managers: Vec<&str> = mf
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["manager"].as_str().unwrap())
        .collect();
    assert!(managers.contains(&"kubectl"), "{managers:?}");
    // And back: client-side apply of a change, then server-side again.
    let out = s.kubectl_stdin(
        &["apply", "-f", "-"],
        &DEPLOY.replace("replicas: 2", "replicas: 3"),
    );
    assert!(out.status.success(), "{:?}", text(&out));
    assert_eq!(
        s.kubectl_ok(&["get", "deploy", "web", "-o", "jsonpath={.spec.replicas}"]),
        "3"
    );
    let (ok, _, e) = ssa(&s, &DEPLOY.replace("replicas: 2", "replicas: 3"), &[]);
    assert!(ok, "{e}");
}

#[test]
fn many_updating_managers_are_capped_into_ancient_changes() {
    let s = Server::start();
    let (ok, _, e) = ssa(&s, CM, &[]);
    assert!(ok, "{e}");
    // Twelve clients each label the ConfigMap under their own field manager.
    for i in 0..12 {
        s.kubectl_ok(&[
            "label",
            "cm",
            "settings",
            &format!("team{i:02}=yes"),
            &format!("--field-manager=team{i:02}"),
        ]);
    }
    let mf = managed(&s, &["cm", "settings"]);
    let entries = mf.as_array().unwrap();
    let updates: Vec<&serde_json::Value> = entries
        .iter()
        .filter(|e| e["operation"] == "Update")
        .collect();
    assert_eq!(updates.len(), 10, "{mf:#}");
    let bucket = updates
        .iter()
        .find(|e| e["manager"] == "ancient-changes")
        .unwrap_or_else(|| panic!("no ancient-changes in {mf:#}"));
    // The oldest labels' ownership moved into the bucket, not lost.
    let labels = &bucket["fieldsV1"]["f:metadata"]["f:labels"];
    assert!(
        labels.get("f:team00").is_some() && labels.get("f:team01").is_some(),
        "{bucket:#}"
    );
    // The applier keeps its own entry, whatever the count of updaters.
    assert!(
        entries
            .iter()
            .any(|e| e["manager"] == "kubectl" && e["operation"] == "Apply"),
        "{mf:#}"
    );
    assert!(
        entries.iter().any(|e| e["manager"] == "team11"),
        "the newest writer keeps its name: {mf:#}"
    );
}

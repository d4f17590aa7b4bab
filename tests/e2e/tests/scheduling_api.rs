//! What the scheduler relies on, through the real kubectl: `pods/binding` sets a pending
//! pod's node once and marks it scheduled (a second binding is a 409, a bad one names its
//! field), and placement rules a scheduler could not honour are refused at the door.

use capstan_e2e::{text, Server};

const POD: &str = "apiVersion: v1\nkind: Pod\nmetadata:\n  name: web\nspec:\n  containers:\n  - name: c\n    image: busybox\n";

fn binding(pod: &str, node: &str) -> String {
    format!(
        r#"{{"apiVersion":"v1","kind":"Binding","metadata":{{"name":"{pod}","annotations":{{"bound-by":"test"}}}},"target":{{"apiVersion":"v1","kind":"Node","name":"{node}"}}}}"#
    )
}

fn post_binding(s: &Server, pod: &str, body: &str) -> (bool, String) {
    let path = format!("/api/v1/namespaces/default/pods/{pod}/binding");
    let out = s.kubectl_stdin(&["create", "--raw", &path, "-f", "-"], body);
    let (o, e) = text(&out);
    (out.status.success(), format!("{o}{e}"))
}

#[test]
fn a_binding_assigns_a_pod_once() {
    let s = Server::start();
    s.kubectl_stdin(&["apply", "-f", "-"], POD);
    let (ok, out) = post_binding(&s, "web", &binding("web", "node-a"));
    assert!(ok, "{out}");
    assert!(
        out.contains(r#""status":"Success""#) && out.contains(r#""code":201"#),
        "{out}"
    );
    let got = s.kubectl_ok(&[
        "get",
        "pod",
        "web",
        "-o",
        "jsonpath={.spec.nodeName} {.metadata.annotations.bound-by} {.status.conditions[?(@.type==\"PodScheduled\")].status}",
    ]);
    assert_eq!(got, "node-a test True");
    assert!(s
        .kubectl_ok(&["get", "pods", "-o", "wide"])
        .contains("node-a"));

    // Bound once: a second binding (even to the same node) is upstream's 409.
    let (ok, out) = post_binding(&s, "web", &binding("web", "node-b"));
    assert!(!ok);
    assert!(
        out.contains(r#"Operation cannot be fulfilled on pods/binding "web": pod web is already assigned to node "node-a""#),
        "{out}"
    );
    // A node that does not exist is accepted, as upstream (the binding names any node).
    s.kubectl_stdin(
        &["apply", "-f", "-"],
        &POD.replace("name: web", "name: far"),
    );
    let (ok, out) = post_binding(&s, "far", &binding("far", "no-such-node"));
    assert!(ok, "{out}");
    // The pod's spec is otherwise still immutable: nodeName cannot be patched.
    let out = s.kubectl(&[
        "patch",
        "pod",
        "far",
        "--type=merge",
        "-p",
        r#"{"spec":{"nodeName":"node-c"}}"#,
    ]);
    assert!(!out.status.success());
}

#[test]
fn bad_bindings_are_refused_by_name() {
    let s = Server::start();
    s.kubectl_stdin(&["apply", "-f", "-"], POD);
    let (ok, out) = post_binding(&s, "web", &binding("other", "node-a"));
    assert!(
        !ok && out.contains("name in URL does not match name in Binding object"),
        "{out}"
    );
    let (ok, out) = post_binding(
        &s,
        "web",
        r#"{"apiVersion":"v1","kind":"Binding","metadata":{"name":"web"},"target":{"kind":"Pod"}}"#,
    );
    assert!(!ok, "{out}");
    assert!(
        out.contains("target.kind") && out.contains("target.name: Required value"),
        "{out}"
    );
    let (ok, out) = post_binding(&s, "missing", &binding("missing", "node-a"));
    assert!(!ok && out.contains(r#"pods "missing" not found"#), "{out}");
    // Nothing was bound by the refused requests.
    assert_eq!(
        s.kubectl_ok(&["get", "pod", "web", "-o", "jsonpath={.spec.nodeName}"]),
        ""
    );
}

#[test]
fn placement_rules_are_validated_at_the_door() {
    let s = Server::start();
    let pod = r#"apiVersion: v1
kind: Pod
metadata:
  name: picky
spec:
  containers:
  - name: c
    image: busybox
  affinity:
    nodeAffinity:
      requiredDuringSchedulingIgnoredDuringExecution:
        nodeSelectorTerms:
        - matchExpressions:
          - key: zone
            operator: Near
            values: [a]
    podAntiAffinity:
      requiredDuringSchedulingIgnoredDuringExecution:
      - labelSelector:
          matchExpressions:
          - key: app
            operator: Within
            values: [web]
  topologySpreadConstraints:
  - maxSkew: 0
    topologyKey: zone
    whenUnsatisfiable: Sometimes
"#;
    let out = s.kubectl_stdin(&["apply", "-f", "-"], pod);
    let (o, e) = text(&out);
    assert!(!out.status.success(), "{o}");
    for want in [
        r#"The Pod "picky" is invalid"#,
        r#"spec.affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution.nodeSelectorTerms[0].matchExpressions[0].operator: Invalid value: "Near": not a valid selector operator"#,
        r#"spec.affinity.podAntiAffinity.requiredDuringSchedulingIgnoredDuringExecution[0].labelSelector.matchExpressions[0].operator: Invalid value: "Within": not a valid selector operator"#,
        "spec.affinity.podAntiAffinity.requiredDuringSchedulingIgnoredDuringExecution[0].topologyKey: Required value: can not be empty",
        "spec.topologySpreadConstraints[0].maxSkew: Invalid value: 0: must be greater than zero",
        r#"spec.topologySpreadConstraints[0].whenUnsatisfiable: Unsupported value: "Sometimes""#,
    ] {
        assert!(e.contains(want), "missing {want:?} in:\n{e}");
    }
    assert!(!s.kubectl(&["get", "pod", "picky"]).status.success());
}

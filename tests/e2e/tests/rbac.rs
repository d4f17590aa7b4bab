//! RBAC end to end through the real kubectl: a client-certificate user from `capstan
//! kubeconfig`, refusals in upstream's words, `auth can-i` (incl. `--list` and `--as`),
//! `auth whoami`, escalation prevention, a service account's token, aggregated ClusterRoles.

use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use capstan_e2e::{apply, get_json, kubectl_stdin_as, text, user_kubeconfig, wait_for, Server};
use serde_json::Value;

fn kubectl_with(kubeconfig: &Path, args: &[&str]) -> Output {
    Command::new("kubectl")
        .env("KUBECONFIG", kubeconfig)
        .args(args)
        .output()
        .expect("run kubectl")
}

/// kubectl's stderr for a refused command (which must fail).
fn refused(out: &Output) -> String {
    assert!(!out.status.success(), "expected a refusal: {:?}", text(out));
    text(out).1
}

#[test]
fn a_certificate_user_bound_to_view_reads_only_what_view_gives() {
    let s = Server::start();
    let (a, b) = ("rbac-view-a", "rbac-view-b");
    s.kubectl_ok(&["create", "namespace", a]);
    s.kubectl_ok(&["create", "namespace", b]);
    s.kubectl_ok(&[
        "create",
        "rolebinding",
        "alice-view",
        "--clusterrole=view",
        "--user=alice",
        "-n",
        a,
    ]);
    let alice = user_kubeconfig(&s, "alice", &["dev", "ops"]);

    let out = kubectl_with(&alice, &["get", "pods", "-n", a]);
    assert!(out.status.success(), "{:?}", text(&out));
    let err = refused(&kubectl_with(&alice, &["get", "secrets", "-n", a]));
    assert!(
        err.contains(&format!("Error from server (Forbidden): secrets is forbidden: User \"alice\" cannot list resource \"secrets\" in API group \"\" in the namespace \"{a}\"")),
        "{err}"
    );
    let err = refused(&kubectl_with(&alice, &["get", "pods", "-n", b]));
    assert!(
        err.contains(&format!("Error from server (Forbidden): pods is forbidden: User \"alice\" cannot list resource \"pods\" in API group \"\" in the namespace \"{b}\"")),
        "{err}"
    );
    let err = refused(&kubectl_with(&alice, &["get", "nodes"]));
    assert!(
        err.contains("nodes is forbidden: User \"alice\" cannot list resource \"nodes\" in API group \"\" at the cluster scope"),
        "{err}"
    );
    let err = refused(&kubectl_with(
        &alice,
        &["create", "configmap", "x", "-n", a, "--from-literal=k=v"],
    ));
    assert!(
        err.contains("User \"alice\" cannot create resource \"configmaps\""),
        "{err}"
    );

    // Who she is, from her certificate.
    let who: Value =
        serde_json::from_slice(&kubectl_with(&alice, &["auth", "whoami", "-o", "json"]).stdout)
            .expect("SelfSubjectReview JSON");
    assert_eq!(who["status"]["userInfo"]["username"], "alice", "{who}");
    assert_eq!(
        who["status"]["userInfo"]["groups"],
        serde_json::json!(["dev", "ops", "system:authenticated"])
    );

    // What she may do, asked by the admin impersonating her.
    let list = s.kubectl_ok(&["auth", "can-i", "--list", "--as=alice", "-n", a]);
    let pods = list
        .lines()
        .find(|l| l.split_whitespace().next() == Some("pods"))
        .unwrap_or_else(|| panic!("no pods line: {list}"));
    assert!(pods.contains("[get list watch]"), "{list}");
    assert!(!list.lines().any(|l| l.starts_with("secrets ")), "{list}");
    assert!(
        list.contains("selfsubjectaccessreviews.authorization.k8s.io"),
        "{list}"
    );
    let out = s.kubectl(&[
        "auth",
        "can-i",
        "create",
        "deployments",
        "--as=alice",
        "-n",
        a,
    ]);
    assert_eq!(text(&out).0.trim(), "no", "{:?}", text(&out));
    assert!(!out.status.success());
    let out = s.kubectl(&["auth", "can-i", "list", "pods", "--as=alice", "-n", a]);
    assert_eq!(text(&out).0.trim(), "yes", "{:?}", text(&out));
    let out = s.kubectl(&[
        "auth",
        "can-i",
        "get",
        "pods",
        "--subresource=log",
        "--as=alice",
        "-n",
        a,
    ]);
    assert_eq!(text(&out).0.trim(), "yes", "{:?}", text(&out));
    let out = s.kubectl(&["auth", "can-i", "get", "pods", "--as=alice", "-n", b]);
    assert_eq!(text(&out).0.trim(), "no", "{:?}", text(&out));
    // Her own question, with her certificate.
    let out = kubectl_with(&alice, &["auth", "can-i", "watch", "configmaps", "-n", a]);
    assert_eq!(text(&out).0.trim(), "yes", "{:?}", text(&out));

    // The admin acting as her, with a group: her bindings apply.
    s.kubectl_ok(&["get", "pods", "-n", a, "--as=alice", "--as-group=dev"]);
    let err = refused(&s.kubectl(&["get", "secrets", "-n", a, "--as=alice", "--as-group=dev"]));
    assert!(
        err.contains("User \"alice\" cannot list resource \"secrets\""),
        "{err}"
    );
    // She may not act as anyone else.
    let err = refused(&kubectl_with(&alice, &["get", "pods", "-n", a, "--as=bob"]));
    assert!(
        err.contains("users \"bob\" is forbidden: User \"alice\" cannot impersonate resource \"users\" in API group \"\" at the cluster scope"),
        "{err}"
    );

    s.kubectl_ok(&["delete", "namespace", a, b, "--wait=false"]);
}

#[test]
fn a_user_who_may_create_role_bindings_cannot_grant_more_than_he_holds() {
    let s = Server::start();
    let ns = "rbac-escalation";
    s.kubectl_ok(&["create", "namespace", ns]);
    s.kubectl_ok(&[
        "create",
        "role",
        "binder",
        "--verb=create,get,list",
        "--resource=rolebindings.rbac.authorization.k8s.io",
        "-n",
        ns,
    ]);
    s.kubectl_ok(&[
        "create",
        "rolebinding",
        "carol-binder",
        "--role=binder",
        "--user=carol",
        "-n",
        ns,
    ]);
    s.kubectl_ok(&[
        "create",
        "rolebinding",
        "carol-view",
        "--clusterrole=view",
        "--user=carol",
        "-n",
        ns,
    ]);
    let carol = user_kubeconfig(&s, "carol", &[]);

    let err = refused(&kubectl_with(
        &carol,
        &[
            "create",
            "rolebinding",
            "grab",
            "--clusterrole=cluster-admin",
            "--user=dave",
            "-n",
            ns,
        ],
    ));
    assert!(
        err.contains("rolebindings.rbac.authorization.k8s.io \"grab\" is forbidden: user \"carol\" (groups=[\"system:authenticated\"]) is attempting to grant RBAC permissions not currently held:"),
        "{err}"
    );
    assert!(
        err.contains("{APIGroups:[\"*\"], Resources:[\"*\"], Verbs:[\"*\"]}"),
        "{err}"
    );
    assert!(get_json(&s, &["rolebinding", "grab", "-n", ns]).is_none());

    // What she holds she may hand on.
    let out = kubectl_with(
        &carol,
        &[
            "create",
            "rolebinding",
            "dave-view",
            "--clusterrole=view",
            "--user=dave",
            "-n",
            ns,
        ],
    );
    assert!(out.status.success(), "{:?}", text(&out));
    let out = s.kubectl(&["auth", "can-i", "list", "pods", "--as=dave", "-n", ns]);
    assert_eq!(text(&out).0.trim(), "yes", "{:?}", text(&out));

    // A role granting what she lacks: she may not even create roles, and with `create` on
    // roles she still may not grant secrets.
    s.kubectl_ok(&[
        "create",
        "role",
        "role-maker",
        "--verb=create",
        "--resource=roles.rbac.authorization.k8s.io",
        "-n",
        ns,
    ]);
    s.kubectl_ok(&[
        "create",
        "rolebinding",
        "carol-role-maker",
        "--role=role-maker",
        "--user=carol",
        "-n",
        ns,
    ]);
    let err = refused(&kubectl_with(
        &carol,
        &[
            "create",
            "role",
            "secret-reader",
            "--verb=get",
            "--resource=secrets",
            "-n",
            ns,
        ],
    ));
    assert!(
        err.contains(
            "roles.rbac.authorization.k8s.io \"secret-reader\" is forbidden: user \"carol\""
        ) && err.contains("{APIGroups:[\"\"], Resources:[\"secrets\"], Verbs:[\"get\"]}"),
        "{err}"
    );
    let out = kubectl_with(
        &carol,
        &[
            "create",
            "role",
            "pod-reader",
            "--verb=get",
            "--resource=pods",
            "-n",
            ns,
        ],
    );
    assert!(out.status.success(), "{:?}", text(&out));
    s.kubectl_ok(&["delete", "namespace", ns, "--wait=false"]);
}

#[test]
fn a_service_account_token_is_limited_to_its_role() {
    let s = Server::start();
    let ns = "rbac-robot";
    s.kubectl_ok(&["create", "namespace", ns]);
    s.kubectl_ok(&["create", "serviceaccount", "robot", "-n", ns]);
    s.kubectl_ok(&[
        "create",
        "role",
        "cm-reader",
        "--verb=get,list",
        "--resource=configmaps",
        "-n",
        ns,
    ]);
    s.kubectl_ok(&[
        "create",
        "rolebinding",
        "robot-cm",
        "--role=cm-reader",
        &format!("--serviceaccount={ns}:robot"),
        "-n",
        ns,
    ]);
    let token = s.kubectl_ok(&["create", "token", "robot", "-n", ns]);
    let token = format!("--token={}", token.trim());

    let out = s.kubectl(&[&token, "get", "configmaps", "-n", ns]);
    assert!(out.status.success(), "{:?}", text(&out));
    let user = format!("system:serviceaccount:{ns}:robot");
    let err = refused(&s.kubectl(&[
        &token,
        "get",
        "configmap",
        "kube-root-ca.crt",
        "-n",
        "default",
    ]));
    assert!(
        err.contains(&format!("configmaps \"kube-root-ca.crt\" is forbidden: User \"{user}\" cannot get resource \"configmaps\" in API group \"\" in the namespace \"default\"")),
        "{err}"
    );
    let err = refused(&s.kubectl(&[&token, "get", "secrets", "-n", ns]));
    assert!(
        err.contains(&format!("User \"{user}\" cannot list resource \"secrets\"")),
        "{err}"
    );
    let err = refused(&s.kubectl(&[&token, "delete", "configmap", "kube-root-ca.crt", "-n", ns]));
    assert!(
        err.contains("cannot delete resource \"configmaps\""),
        "{err}"
    );
    s.kubectl_ok(&["delete", "namespace", ns, "--wait=false"]);
}

fn rule_resources(s: &Server, role: &str) -> Vec<String> {
    get_json(s, &["clusterrole", role])
        .and_then(|r| r["rules"].as_array().cloned())
        .unwrap_or_default()
        .iter()
        .flat_map(|r| r["resources"].as_array().cloned().unwrap_or_default())
        .filter_map(|v| v.as_str().map(str::to_string))
        .collect()
}

#[test]
fn aggregated_cluster_roles_pick_up_labelled_roles() {
    let s = Server::start();
    // The default roles are there, view already aggregated.
    assert!(rule_resources(&s, "view").iter().any(|r| r == "pods"));
    assert!(!rule_resources(&s, "view").iter().any(|r| r == "secrets"));
    assert!(rule_resources(&s, "edit").iter().any(|r| r == "secrets"));

    capstan_e2e::apply(
        &s,
        r#"
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata:
  name: rbac-agg-parent
aggregationRule:
  clusterRoleSelectors:
  - matchLabels:
      rbac.example.com/aggregate-to-parent: "true"
rules: []
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata:
  name: rbac-agg-widgets
  labels:
    rbac.example.com/aggregate-to-parent: "true"
    rbac.authorization.k8s.io/aggregate-to-view: "true"
rules:
- apiGroups: ["example.com"]
  resources: ["widgets"]
  verbs: ["get", "list"]
"#,
    );
    for role in ["rbac-agg-parent", "view", "edit", "admin"] {
        wait_for(
            &format!("{role} to aggregate widgets"),
            Duration::from_secs(30),
            || {
                rule_resources(&s, role)
                    .iter()
                    .any(|r| r == "widgets")
                    .then_some(())
            },
        );
    }
    // A bound user gets the new rule through view.
    s.kubectl_ok(&["create", "namespace", "rbac-agg"]);
    s.kubectl_ok(&[
        "create",
        "rolebinding",
        "erin-view",
        "--clusterrole=view",
        "--user=erin",
        "-n",
        "rbac-agg",
    ]);
    // (`auth can-i` would not ask about a type discovery does not list: a review does.)
    let review = serde_json::json!({
        "apiVersion": "authorization.k8s.io/v1",
        "kind": "SubjectAccessReview",
        "spec": {"user": "erin", "resourceAttributes": {
            "namespace": "rbac-agg", "verb": "list", "group": "example.com", "resource": "widgets",
        }},
    });
    let out = s.kubectl_stdin(&["create", "-f", "-", "-o", "json"], &review.to_string());
    assert!(out.status.success(), "{:?}", text(&out));
    let answered: Value = serde_json::from_slice(&out.stdout).expect("SubjectAccessReview JSON");
    assert_eq!(answered["status"]["allowed"], true, "{answered}");
    assert!(
        answered["status"]["reason"].as_str().is_some_and(
            |r| r.contains("RoleBinding \"erin-view/rbac-agg\" of ClusterRole \"view\"")
        ),
        "{answered}"
    );

    // Unlabelled, its rules leave the parent.
    s.kubectl_ok(&[
        "label",
        "clusterrole",
        "rbac-agg-widgets",
        "rbac.example.com/aggregate-to-parent-",
    ]);
    wait_for(
        "the parent to drop widgets",
        Duration::from_secs(30),
        || {
            (!rule_resources(&s, "rbac-agg-parent")
                .iter()
                .any(|r| r == "widgets"))
            .then_some(())
        },
    );
    s.kubectl_ok(&[
        "delete",
        "clusterrole",
        "rbac-agg-parent",
        "rbac-agg-widgets",
    ]);
    s.kubectl_ok(&["delete", "namespace", "rbac-agg", "--wait=false"]);
}

/// NodeRestriction: a node's credential (`system:node:<name>` in `system:nodes`) writes only
/// its own Node, Lease and pods' status, and takes tokens only for its own pods — each
/// refusal as kubectl prints upstream's.
#[test]
fn a_node_writes_only_its_own_objects() {
    let s = Server::start();
    let ns = "nr-pods";
    s.kubectl_ok(&["create", "namespace", ns]);
    s.kubectl_ok(&["create", "serviceaccount", "runner", "-n", ns]);
    for node in ["nr-a", "nr-b"] {
        apply(
            &s,
            &format!("{{\"apiVersion\": \"v1\", \"kind\": \"Node\", \"metadata\": {{\"name\": \"{node}\"}}}}"),
        );
        apply(
            &s,
            &format!(
                r#"{{"apiVersion": "v1", "kind": "Pod", "metadata": {{"name": "on-{node}", "namespace": "{ns}", "labels": {{"app": "x"}}}},
                "spec": {{"nodeName": "{node}", "serviceAccountName": "runner", "containers": [{{"name": "c", "image": "busybox"}}]}}}}"#
            ),
        );
    }
    let a = user_kubeconfig(&s, "system:node:nr-a", &["system:nodes"]);
    let as_a = |args: &[&str]| kubectl_with(&a, args);

    // Its own Node: an ordinary label and its status, yes; another node, its own taints or
    // a role label, no.
    let out = as_a(&["label", "node", "nr-a", "example.com/rack=r1"]);
    assert!(out.status.success(), "{:?}", text(&out));
    let err = refused(&as_a(&["label", "node", "nr-b", "example.com/rack=r1"]));
    assert!(
        err.contains(
            "nodes \"nr-b\" is forbidden: node \"nr-a\" is not allowed to modify node \"nr-b\""
        ),
        "{err}"
    );
    let err = refused(&as_a(&["taint", "node", "nr-a", "dedicated=me:NoSchedule"]));
    assert!(
        err.contains("nodes \"nr-a\" is forbidden: node \"nr-a\" is not allowed to modify taints"),
        "{err}"
    );
    let err = refused(&as_a(&[
        "label",
        "node",
        "nr-a",
        "node-role.kubernetes.io/worker=",
    ]));
    assert!(
        err.contains("nodes \"nr-a\" is forbidden: is not allowed to modify labels: node-role.kubernetes.io/worker"),
        "{err}"
    );
    // Pods: status of its own, not another node's; no relabelling through status (PUT of
    // the status subresource: a node may not GET it, so `kubectl patch` cannot); no
    // ordinary pods made or changed; deleting only its own.
    let put_status = |pod: &str, change: &dyn Fn(&mut Value)| {
        let mut obj = get_json(&s, &["pod", pod, "-n", ns]).expect("pod");
        change(&mut obj);
        let path = format!("/api/v1/namespaces/{ns}/pods/{pod}/status");
        kubectl_stdin_as(
            &a,
            &["replace", "--raw", &path, "-f", "-"],
            &obj.to_string(),
        )
    };
    let running = |p: &mut Value| p["status"]["phase"] = "Running".into();
    let out = put_status("on-nr-a", &running);
    assert!(out.status.success(), "{:?}", text(&out));
    let err = refused(&put_status("on-nr-b", &running));
    assert!(
        err.contains("pods \"on-nr-b\" is forbidden: node \"nr-a\" can only update pod status for pods with spec.nodeName set to itself"),
        "{err}"
    );
    // Relabelling through status does not happen: the status endpoint keeps the stored
    // metadata (NodeRestriction's own label check stands behind it).
    let out = put_status("on-nr-a", &|p: &mut Value| {
        p["metadata"]["labels"]["app"] = "stolen".into()
    });
    assert!(out.status.success(), "{:?}", text(&out));
    let pod = get_json(&s, &["pod", "on-nr-a", "-n", ns]).expect("pod");
    assert_eq!(pod["metadata"]["labels"]["app"], "x", "{pod}");
    let err = refused(&as_a(&[
        "label",
        "pod",
        "on-nr-a",
        "-n",
        ns,
        "app=y",
        "--overwrite",
    ]));
    assert!(
        // The node roles give no pod updates at all (NodeRestriction would refuse one too).
        err.contains(
            "User \"system:node:nr-a\" cannot patch resource \"pods\" in API group \"\" in the namespace \"nr-pods\""
        ),
        "{err}"
    );
    let err = refused(&kubectl_with(
        &a,
        &[
            "run",
            "sneaky",
            "-n",
            ns,
            "--image=busybox",
            "--overrides",
            r#"{"spec":{"nodeName":"nr-a"}}"#,
        ],
    ));
    assert!(
        err.contains("pod does not have \"kubernetes.io/config.mirror\" annotation, node \"nr-a\" can only create mirror pods"),
        "{err}"
    );
    let err = refused(&as_a(&[
        "delete",
        "pod",
        "on-nr-b",
        "-n",
        ns,
        "--wait=false",
    ]));
    assert!(
        err.contains("node \"nr-a\" can only delete pods with spec.nodeName set to itself"),
        "{err}"
    );

    // Tokens only for its own pods (the Node authorizer lets it ask for the service
    // account on-nr-a runs as; binding the token to on-nr-b is refused here).
    let uid = |pod: &str| {
        s.kubectl_ok(&[
            "get",
            "pod",
            pod,
            "-n",
            ns,
            "-o",
            "jsonpath={.metadata.uid}",
        ])
    };
    let token = |pod: &str, uid: &str| {
        as_a(&[
            "create",
            "token",
            "runner",
            "-n",
            ns,
            "--bound-object-kind=Pod",
            &format!("--bound-object-name={pod}"),
            &format!("--bound-object-uid={uid}"),
        ])
    };
    let out = token("on-nr-a", &uid("on-nr-a"));
    assert!(out.status.success(), "{:?}", text(&out));
    let err = refused(&token("on-nr-b", &uid("on-nr-b")));
    assert!(
        err.contains("serviceaccounts \"runner\" is forbidden: node requested token bound to a pod scheduled on a different node"),
        "{err}"
    );
    let err = refused(&as_a(&["create", "token", "runner", "-n", ns]));
    assert!(
        err.contains("node requested token not bound to a pod"),
        "{err}"
    );

    // Its Lease, in kube-node-lease only.
    let lease = |name: &str, lease_ns: &str| {
        format!(
            r#"{{"apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": {{"name": "{name}", "namespace": "{lease_ns}"}}, "spec": {{"holderIdentity": "{name}"}}}}"#
        )
    };
    let create = |body: String| kubectl_stdin_as(&a, &["create", "-f", "-"], &body);
    let out = create(lease("nr-a", "kube-node-lease"));
    assert!(out.status.success(), "{:?}", text(&out));
    let err = refused(&create(lease("nr-b", "kube-node-lease")));
    assert!(
        err.contains("can only access node lease with the same name as the requesting node"),
        "{err}"
    );

    // Evictions only of its own pods.
    let evict = |pod: &str| {
        let body = format!(
            r#"{{"apiVersion": "policy/v1", "kind": "Eviction", "metadata": {{"name": "{pod}", "namespace": "{ns}"}}}}"#
        );
        let path = format!("/api/v1/namespaces/{ns}/pods/{pod}/eviction");
        kubectl_stdin_as(&a, &["create", "--raw", &path, "-f", "-"], &body)
    };
    let err = refused(&evict("on-nr-b"));
    assert!(
        err.contains("pods \"on-nr-b\" is forbidden: node nr-a can only evict pods with spec.nodeName set to itself"),
        "{err}"
    );

    // Nothing of this touched what the admin sees of the other node.
    let b: Value = get_json(&s, &["node", "nr-b"]).expect("node nr-b");
    assert!(
        b["metadata"]["labels"].get("example.com/rack").is_none(),
        "{b}"
    );
    assert!(get_json(&s, &["pod", "on-nr-b", "-n", ns]).is_some());
    s.kubectl_ok(&["delete", "namespace", ns, "--wait=false"]);
}

/// Default roles and bindings marked `rbac.authorization.kubernetes.io/autoupdate: "true"`
/// get back what they lack at the next start (upstream's reconciliation, which never takes
/// away); one an admin marked `"false"` is left as it is.
#[test]
fn default_roles_and_bindings_are_reconciled_at_start_unless_opted_out() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut s = Server::start_with_args(dir.path(), &[]);
    // An admin empties two default bindings and trims a default role; one binding opts out.
    s.kubectl_ok(&[
        "patch", "clusterrolebinding", "system:basic-user", "--type=json",
        "-p", r#"[{"op": "replace", "path": "/subjects", "value": [{"kind": "User", "apiGroup": "rbac.authorization.k8s.io", "name": "extra-admin-choice"}]}]"#,
    ]);
    s.kubectl_ok(&[
        "patch", "clusterrolebinding", "system:discovery", "--type=json",
        "-p", r#"[{"op": "remove", "path": "/subjects"}, {"op": "replace", "path": "/metadata/annotations/rbac.authorization.kubernetes.io~1autoupdate", "value": "false"}]"#,
    ]);
    s.kubectl_ok(&[
        "patch",
        "clusterrole",
        "system:basic-user",
        "--type=json",
        "-p",
        r#"[{"op": "replace", "path": "/rules", "value": []}]"#,
    ]);
    s.kill();
    let s = Server::start_with_args(dir.path(), &[]);
    let subjects = |name: &str| -> Vec<String> {
        let b = get_json(&s, &["clusterrolebinding", name]).expect("binding");
        b["subjects"]
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|x| x["name"].as_str().unwrap_or("").to_string())
                    .collect()
            })
            .unwrap_or_default()
    };
    // The default subject is back beside the admin's own.
    assert_eq!(
        subjects("system:basic-user"),
        ["extra-admin-choice", "system:authenticated"]
    );
    // Opted out: left empty.
    assert!(subjects("system:discovery").is_empty());
    let role = get_json(&s, &["clusterrole", "system:basic-user"]).expect("role");
    let rules = role["rules"].as_array().map(Vec::len).unwrap_or(0);
    assert!(rules > 0, "the default rules are back: {role}");
}

//! RBAC end to end through the real kubectl: a client-certificate user from `capstan
//! kubeconfig`, refusals in upstream's words, `auth can-i` (incl. `--list` and `--as`),
//! `auth whoami`, escalation prevention, a service account's token, aggregated ClusterRoles.

use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use capstan_e2e::{get_json, text, user_kubeconfig, wait_for, Server};
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

//! The core API machinery through the real kubectl: namespaces, configmaps and secrets
//! created, applied, read in every format, selected, paged, watched, patched, refused when
//! invalid or stale, deleted (also dry-run and by namespace), and kept across kill -9.

use std::time::Duration;

use capstan_e2e::{text, Server};

const NS: &str = "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: team-a\n";

fn cm(name: &str, value: &str) -> String {
    format!("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {name}\n  namespace: team-a\n  labels:\n    app: web\ndata:\n  key: \"{value}\"\n")
}

/// Output lines without the `kube-root-ca.crt` ConfigMap the root-CA publisher puts in every
/// namespace (as upstream's does).
/// Lines of `out` but the ConfigMaps every cluster has: each namespace's
/// `kube-root-ca.crt` and kubeadm's `kube-public/cluster-info`.
fn without_root_ca(out: &str) -> Vec<&str> {
    out.lines()
        .filter(|l| !l.contains("kube-root-ca.crt") && l.trim() != "configmap/cluster-info")
        .collect()
}

/// kubectl apply from stdin (kubectl validates against our OpenAPI v3 first).
fn apply(s: &Server, yaml: &str) -> String {
    let out = s.kubectl_stdin(&["apply", "-f", "-"], yaml);
    let (o, e) = text(&out);
    assert!(out.status.success(), "apply failed: {o}{e}");
    o
}

#[test]
fn system_namespaces_exist_from_the_start() {
    let s = Server::start();
    let out = s.kubectl_ok(&["get", "namespaces"]);
    let header = out.lines().next().unwrap();
    assert!(
        header.starts_with("NAME") && header.contains("STATUS") && header.contains("AGE"),
        "{out}"
    );
    for ns in ["default", "kube-system", "kube-public", "kube-node-lease"] {
        assert!(
            out.lines()
                .any(|l| l.starts_with(ns) && l.contains("Active")),
            "{ns} missing in:\n{out}"
        );
    }
}

#[test]
fn apply_creates_then_configures_then_is_unchanged() {
    let s = Server::start();
    assert!(apply(&s, NS).contains("namespace/team-a created"));
    assert!(apply(&s, &cm("settings", "one")).contains("configmap/settings created"));
    // A change goes out as a strategic merge patch.
    assert!(apply(&s, &cm("settings", "two")).contains("configmap/settings configured"));
    assert!(apply(&s, &cm("settings", "two")).contains("configmap/settings unchanged"));
    assert_eq!(
        s.kubectl_ok(&[
            "get",
            "cm",
            "settings",
            "-n",
            "team-a",
            "-o",
            "jsonpath={.data.key}"
        ]),
        "two"
    );
}

#[test]
fn get_in_every_format_with_selectors_and_paging() {
    let s = Server::start();
    apply(&s, NS);
    for (name, app) in [("alpha", "web"), ("beta", "db"), ("gamma", "web")] {
        apply(
            &s,
            &cm(name, "v").replace("app: web", &format!("app: {app}")),
        );
    }
    let table = s.kubectl_ok(&["get", "configmaps", "-n", "team-a"]);
    assert!(
        table
            .lines()
            .next()
            .unwrap()
            .split_whitespace()
            .eq(["NAME", "DATA", "AGE"]),
        "{table}"
    );
    assert!(
        table
            .lines()
            .any(|l| l.split_whitespace().take(2).eq(["alpha", "1"])),
        "{table}"
    );
    let yaml = s.kubectl_ok(&["get", "cm", "alpha", "-n", "team-a", "-o", "yaml"]);
    for needle in [
        "kind: ConfigMap",
        "name: alpha",
        "namespace: team-a",
        "resourceVersion:",
        "uid:",
        "creationTimestamp:",
    ] {
        assert!(yaml.contains(needle), "{needle} missing in:\n{yaml}");
    }
    let json = s.kubectl_ok(&["get", "cm", "beta", "-n", "team-a", "-o", "json"]);
    assert!(json.contains("\"app\": \"db\""), "{json}");
    let web = s.kubectl_ok(&["get", "cm", "-n", "team-a", "-l", "app=web", "-o", "name"]);
    assert_eq!(
        web.lines().collect::<Vec<_>>(),
        ["configmap/alpha", "configmap/gamma"]
    );
    let not_web = s.kubectl_ok(&[
        "get",
        "cm",
        "-n",
        "team-a",
        "-l",
        "app notin (web)",
        "-o",
        "name",
    ]);
    assert_eq!(without_root_ca(&not_web), ["configmap/beta"]);
    let by_name = s.kubectl_ok(&[
        "get",
        "cm",
        "-n",
        "team-a",
        "--field-selector",
        "metadata.name=gamma",
        "-o",
        "name",
    ]);
    assert_eq!(by_name.trim(), "configmap/gamma");
    let all = s.kubectl_ok(&["get", "cm", "-A"]);
    assert!(
        all.lines().next().unwrap().starts_with("NAMESPACE"),
        "{all}"
    );
    assert_eq!(
        without_root_ca(&all)
            .iter()
            .filter(|l| l.starts_with("team-a"))
            .count(),
        3,
        "{all}"
    );
    // One object per page, still all three, in order.
    let paged = s.kubectl_ok(&["get", "cm", "-n", "team-a", "--chunk-size=1", "-o", "name"]);
    assert_eq!(
        without_root_ca(&paged),
        ["configmap/alpha", "configmap/beta", "configmap/gamma"]
    );
    let bad = s.kubectl(&[
        "get",
        "cm",
        "-n",
        "team-a",
        "--field-selector",
        "data.key=v",
    ]);
    assert!(!bad.status.success());
    assert!(
        text(&bad).1.contains("field label not supported"),
        "{:?}",
        text(&bad)
    );
}

#[test]
fn watch_sees_added_modified_deleted() {
    let s = Server::start();
    apply(&s, NS);
    // Something already there: its ADDED line says the watch is running.
    apply(&s, &cm("sentinel", "0"));
    let watch = s.kubectl_follow(&["get", "cm", "-n", "team-a", "-w", "--output-watch-events"]);
    watch.wait_for_line("the sentinel", Duration::from_secs(30), |l| {
        l.contains("sentinel")
    });
    apply(&s, &cm("watched", "1"));
    s.kubectl_ok(&[
        "patch",
        "cm",
        "watched",
        "-n",
        "team-a",
        "--type",
        "merge",
        "-p",
        r#"{"data":{"more":"x"}}"#,
    ]);
    s.kubectl_ok(&["delete", "cm", "watched", "-n", "team-a"]);
    watch.wait_for_line("DELETED watched", Duration::from_secs(30), |l| {
        l.starts_with("DELETED") && l.contains("watched")
    });
    let lines = watch.lines();
    let events: Vec<&str> = lines
        .iter()
        .filter(|l| l.contains("watched"))
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    assert_eq!(
        events,
        ["ADDED", "MODIFIED", "DELETED"],
        "watch printed:\n{}",
        lines.join("\n")
    );
}

#[test]
fn patch_label_annotate_replace() {
    let s = Server::start();
    apply(&s, NS);
    apply(&s, &cm("p", "1"));
    s.kubectl_ok(&[
        "patch",
        "cm",
        "p",
        "-n",
        "team-a",
        "-p",
        r#"{"data":{"strategic":"1"}}"#,
    ]);
    s.kubectl_ok(&[
        "patch",
        "cm",
        "p",
        "-n",
        "team-a",
        "--type",
        "merge",
        "-p",
        r#"{"data":{"merge":"2"}}"#,
    ]);
    s.kubectl_ok(&[
        "patch",
        "cm",
        "p",
        "-n",
        "team-a",
        "--type",
        "json",
        "-p",
        r#"[{"op":"add","path":"/data/json","value":"3"}]"#,
    ]);
    assert!(s
        .kubectl_ok(&["label", "cm", "p", "-n", "team-a", "tier=backend"])
        .contains("configmap/p labeled"));
    assert!(s
        .kubectl_ok(&["annotate", "cm", "p", "-n", "team-a", "owner=me"])
        .contains("configmap/p annotated"));
    let data = s.kubectl_ok(&["get", "cm", "p", "-n", "team-a", "-o", "jsonpath={.data}"]);
    assert_eq!(
        data,
        r#"{"json":"3","key":"1","merge":"2","strategic":"1"}"#
    );
    let labels = s.kubectl_ok(&[
        "get",
        "cm",
        "p",
        "-n",
        "team-a",
        "-o",
        "jsonpath={.metadata.labels.tier} {.metadata.annotations.owner}",
    ]);
    assert_eq!(labels, "backend me");
    // A bad JSON patch is refused and changes nothing.
    let bad = s.kubectl(&[
        "patch",
        "cm",
        "p",
        "-n",
        "team-a",
        "--type",
        "json",
        "-p",
        r#"[{"op":"remove","path":"/data/nope"}]"#,
    ]);
    assert!(!bad.status.success());
    assert!(
        s.kubectl_ok(&[
            "get",
            "cm",
            "p",
            "-n",
            "team-a",
            "-o",
            "jsonpath={.data.json}"
        ]) == "3"
    );
    // replace with the current resourceVersion works; with a stale one it is a Conflict.
    let current = s.kubectl_ok(&["get", "cm", "p", "-n", "team-a", "-o", "json"]);
    let replaced = s.kubectl_stdin(
        &["replace", "-f", "-"],
        &current.replace("\"key\": \"1\"", "\"key\": \"replaced\""),
    );
    assert!(replaced.status.success(), "{:?}", text(&replaced));
    let stale = s.kubectl_stdin(&["replace", "-f", "-"], &current);
    assert!(!stale.status.success());
    let err = text(&stale).1;
    assert!(
        err.contains("Error from server (Conflict)")
            && err.contains("the object has been modified"),
        "{err}"
    );
}

#[test]
fn invalid_objects_are_refused_naming_each_field() {
    let s = Server::start();
    apply(&s, NS);
    let bad = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: Not_Valid\n  namespace: team-a\n  labels:\n    \"bad key!\": v\ndata:\n  \"bad key\": x\n";
    let out = s.kubectl_stdin(&["create", "-f", "-"], bad);
    assert!(!out.status.success());
    let err = text(&out).1;
    assert!(
        err.contains("The ConfigMap \"Not_Valid\" is invalid"),
        "{err}"
    );
    assert!(
        err.contains("* metadata.name: Invalid value: \"Not_Valid\""),
        "{err}"
    );
    assert!(
        err.contains("* metadata.labels: Invalid value: \"bad key!\""),
        "{err}"
    );
    assert!(
        err.contains("* data[bad key]: Invalid value: \"bad key\""),
        "{err}"
    );
    let missing_ns = s.kubectl_stdin(
        &["create", "-f", "-"],
        &cm("x", "1").replace("team-a", "nowhere"),
    );
    assert!(
        text(&missing_ns)
            .1
            .contains("namespaces \"nowhere\" not found"),
        "{:?}",
        text(&missing_ns)
    );
    let dup = s.kubectl_stdin(&["create", "-f", "-"], NS);
    assert!(
        text(&dup).1.contains("AlreadyExists") || text(&dup).1.contains("already exists"),
        "{:?}",
        text(&dup)
    );
    let missing = s.kubectl(&["get", "cm", "ghost", "-n", "team-a"]);
    assert_eq!(
        text(&missing).1.trim(),
        "Error from server (NotFound): configmaps \"ghost\" not found"
    );
}

#[test]
fn secrets_get_their_string_data_encoded() {
    let s = Server::start();
    apply(&s, NS);
    let secret = "apiVersion: v1\nkind: Secret\nmetadata:\n  name: creds\n  namespace: team-a\nstringData:\n  user: admin\n";
    apply(&s, secret);
    assert_eq!(
        s.kubectl_ok(&[
            "get",
            "secret",
            "creds",
            "-n",
            "team-a",
            "-o",
            "jsonpath={.data.user} {.type}"
        ]),
        "YWRtaW4= Opaque"
    );
    let table = s.kubectl_ok(&["get", "secrets", "-n", "team-a"]);
    assert!(
        table
            .lines()
            .next()
            .unwrap()
            .split_whitespace()
            .eq(["NAME", "TYPE", "DATA", "AGE"]),
        "{table}"
    );
    assert!(
        table
            .lines()
            .any(|l| l.split_whitespace().take(3).eq(["creds", "Opaque", "1"])),
        "{table}"
    );
}

#[test]
fn delete_dry_run_then_delete_and_wait() {
    let s = Server::start();
    apply(&s, NS);
    apply(&s, &cm("doomed", "1"));
    assert!(s
        .kubectl_ok(&["delete", "cm", "doomed", "-n", "team-a", "--dry-run=server"])
        .contains("(server dry run)"));
    assert!(s
        .kubectl_ok(&["get", "cm", "-n", "team-a", "-o", "name"])
        .contains("configmap/doomed"));
    let waiter = s.kubectl_spawn(&[
        "wait",
        "--for=delete",
        "cm/doomed",
        "-n",
        "team-a",
        "--timeout=20s",
    ]);
    std::thread::sleep(Duration::from_millis(500));
    assert!(s
        .kubectl_ok(&["delete", "cm", "doomed", "-n", "team-a"])
        .contains("configmap \"doomed\" deleted"));
    let out = waiter.wait_with_output().unwrap();
    assert!(out.status.success(), "{:?}", text(&out));
    assert!(
        without_root_ca(&s.kubectl_ok(&["get", "cm", "-n", "team-a", "-o", "name"])).is_empty()
    );
}

#[test]
fn deleting_a_namespace_removes_its_contents() {
    let s = Server::start();
    apply(&s, NS);
    apply(&s, &cm("one", "1"));
    apply(&s, &cm("two", "2"));
    let out = s.kubectl(&["delete", "namespace", "team-a", "--timeout=30s"]);
    assert!(out.status.success(), "{:?}", text(&out));
    assert!(!s
        .kubectl_ok(&["get", "ns", "-o", "name"])
        .contains("team-a"));
    assert!(without_root_ca(&s.kubectl_ok(&["get", "cm", "-A", "-o", "name"])).is_empty());
    // Creating into a deleted namespace is refused.
    let late = s.kubectl_stdin(&["create", "-f", "-"], &cm("late", "1"));
    assert!(
        text(&late).1.contains("namespaces \"team-a\" not found"),
        "{:?}",
        text(&late)
    );
}

#[test]
fn data_survives_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = Server::start_in(dir.path(), 0);
    let port = s.port; // the restart listens where the first run did
    apply(&s, NS);
    for i in 0..20 {
        apply(&s, &cm(&format!("cm-{i:02}"), &i.to_string()));
    }
    s.kill();
    let s = Server::start_in(dir.path(), port);
    let names = s.kubectl_ok(&["get", "cm", "-n", "team-a", "-o", "name"]);
    assert_eq!(without_root_ca(&names).len(), 20, "{names}");
    assert_eq!(
        s.kubectl_ok(&[
            "get",
            "cm",
            "cm-13",
            "-n",
            "team-a",
            "-o",
            "jsonpath={.data.key}"
        ]),
        "13"
    );
}

#[test]
fn create_generators_send_protobuf_and_work() {
    let s = Server::start();
    assert_eq!(
        s.kubectl_ok(&["create", "namespace", "gen"]).trim(),
        "namespace/gen created"
    );
    assert_eq!(
        s.kubectl_ok(&[
            "create",
            "configmap",
            "cfg",
            "-n",
            "gen",
            "--from-literal=a=b",
            "--from-literal=c=d"
        ])
        .trim(),
        "configmap/cfg created"
    );
    assert_eq!(
        s.kubectl_ok(&[
            "create",
            "secret",
            "generic",
            "sec",
            "-n",
            "gen",
            "--from-literal=pw=hunter2"
        ])
        .trim(),
        "secret/sec created"
    );
    assert_eq!(
        s.kubectl_ok(&["create", "serviceaccount", "robot", "-n", "gen"])
            .trim(),
        "serviceaccount/robot created"
    );
    assert_eq!(
        s.kubectl_ok(&["get", "cm", "cfg", "-n", "gen", "-o", "jsonpath={.data}"]),
        r#"{"a":"b","c":"d"}"#
    );
    // hunter2, base64-encoded, as a Secret's data is.
    assert_eq!(
        s.kubectl_ok(&[
            "get",
            "secret",
            "sec",
            "-n",
            "gen",
            "-o",
            "jsonpath={.data.pw} {.type}"
        ]),
        "aHVudGVyMg== Opaque"
    );
    let ns = s.kubectl_ok(&[
        "get",
        "ns",
        "gen",
        "-o",
        "jsonpath={.status.phase} {.spec.finalizers}",
    ]);
    assert_eq!(ns, r#"Active ["kubernetes"]"#);
    let dup = s.kubectl(&["create", "configmap", "cfg", "-n", "gen"]);
    assert!(
        text(&dup).1.contains("configmaps \"cfg\" already exists"),
        "{:?}",
        text(&dup)
    );
}

#[test]
fn explain_and_unknown_fields_follow_field_validation() {
    let s = Server::start();
    apply(&s, NS);
    let explain = s.kubectl_ok(&["explain", "configmap"]);
    assert!(
        explain.contains("KIND:       ConfigMap")
            && explain.contains("ConfigMap holds configuration data for pods to consume."),
        "{explain}"
    );
    let field = s.kubectl_ok(&["explain", "configmap.data"]);
    assert!(field.contains("FIELD: data <map[string]string>"), "{field}");
    let lease = s.kubectl_ok(&["explain", "lease.spec.holderIdentity"]);
    assert!(lease.contains("holderIdentity"), "{lease}");
    let with_unknown = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: u\n  namespace: team-a\n  bogus: 1\ndata:\n  a: \"1\"\nextra: {x: 1}\n";
    // kubectl's default is Strict: refused, naming both fields.
    let strict = s.kubectl_stdin(&["apply", "-f", "-"], with_unknown);
    assert!(!strict.status.success());
    let err = text(&strict).1;
    assert!(
        err.contains("strict decoding error")
            && err.contains(r#"unknown field "extra""#)
            && err.contains(r#"unknown field "metadata.bogus""#),
        "{err}"
    );
    // Warn: created, with kubectl printing the server's warnings; the fields are dropped.
    let warn = s.kubectl_stdin(&["apply", "--validate=warn", "-f", "-"], with_unknown);
    let (out, err) = text(&warn);
    assert!(warn.status.success(), "{out}{err}");
    assert!(err.contains(r#"Warning: unknown field "extra""#), "{err}");
    let stored = s.kubectl_ok(&[
        "get",
        "cm",
        "u",
        "-n",
        "team-a",
        "-o",
        "jsonpath={.extra}|{.metadata.bogus}|{.data.a}",
    ]);
    assert_eq!(stored, "||1");

    // Patches are held to the same rule (the server checks a clean patch alone, and the
    // patched object when the patch is not clean). `kubectl patch` sends no fieldValidation:
    // Warn, so the known fields are applied and the unknown ones named, strategic and merge.
    let quota = "apiVersion: v1\nkind: ResourceQuota\nmetadata:\n  name: q\n  namespace: team-a\nspec:\n  hard:\n    cpu: \"2\"\n";
    let made = s.kubectl_stdin(&["apply", "-f", "-"], quota);
    assert!(made.status.success(), "{:?}", text(&made));
    for (kind, body, field) in [
        (
            "strategic",
            r#"{"spec":{"hard":{"cpu":"0.5"},"bogus":1}}"#,
            "spec.bogus",
        ),
        (
            "merge",
            r#"{"metadata":{"bogus":{"x":1}},"spec":{"hard":{"memory":"1Gi"}}}"#,
            "metadata.bogus",
        ),
    ] {
        let out = s.kubectl(&[
            "patch", "quota", "q", "-n", "team-a", "--type", kind, "-p", body,
        ]);
        let (o, err) = text(&out);
        assert!(out.status.success(), "{kind}: {o}{err}");
        assert!(
            err.contains(&format!("Warning: unknown field \"{field}\"")),
            "{kind}: {err}"
        );
    }
    // Quantities are stored canonical; the unknown fields are dropped.
    let hard = s.kubectl_ok(&[
        "get",
        "quota",
        "q",
        "-n",
        "team-a",
        "-o",
        "jsonpath={.spec.hard.cpu} {.spec.hard.memory}|{.spec.bogus}{.metadata.bogus}",
    ]);
    assert_eq!(hard.trim(), "500m 1Gi|");
    // A clean patch: no warning.
    let clean = s.kubectl(&[
        "patch",
        "quota",
        "q",
        "-n",
        "team-a",
        "-p",
        r#"{"spec":{"hard":{"cpu":"1"}}}"#,
    ]);
    assert!(
        clean.status.success() && !text(&clean).1.contains("Warning"),
        "{:?}",
        text(&clean)
    );
    // A wrong type is a 400 whatever the mode.
    let wrong = s.kubectl(&[
        "patch",
        "quota",
        "q",
        "-n",
        "team-a",
        "--type",
        "merge",
        "-p",
        r#"{"spec":{"hard":"x"}}"#,
    ]);
    assert!(
        !wrong.status.success()
            && text(&wrong)
                .1
                .contains("cannot unmarshal string into field spec.hard of type object"),
        "{:?}",
        text(&wrong)
    );
    // An unknown field inside a list item is named by its index in the patched object.
    s.kubectl_ok(&["delete", "quota", "q", "-n", "team-a"]);
    let pod = "apiVersion: v1\nkind: Pod\nmetadata:\n  name: pv\n  namespace: team-a\nspec:\n  containers:\n  - {name: a, image: busybox}\n  - {name: b, image: busybox}\n";
    let made = s.kubectl_stdin(&["apply", "-f", "-"], pod);
    assert!(made.status.success(), "{:?}", text(&made));
    let out = s.kubectl(&[
        "patch",
        "pod",
        "pv",
        "-n",
        "team-a",
        "-p",
        r#"{"spec":{"containers":[{"name":"b","bogus":1}]}}"#,
    ]);
    let err = text(&out).1;
    assert!(
        err.contains(r#"Warning: unknown field "spec.containers[1].bogus""#),
        "{err}"
    );
}

#[test]
fn edit_diff_and_describe() {
    let s = Server::start();
    apply(&s, NS);
    apply(&s, &cm("ed", "before"));
    // edit: the editor is a script that rewrites the value.
    let dir = tempfile::tempdir().unwrap();
    let editor = dir.path().join("editor.sh");
    std::fs::write(
        &editor,
        "#!/bin/sh\nsed -i 's/key: before/key: edited/' \"$1\"\n",
    )
    .unwrap();
    std::fs::set_permissions(&editor, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let out = std::process::Command::new("kubectl")
        .env("KUBECONFIG", s.kubeconfig())
        .env("KUBE_EDITOR", &editor)
        .args(["edit", "cm", "ed", "-n", "team-a"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{:?}", text(&out));
    assert!(
        text(&out).0.contains("configmap/ed edited"),
        "{:?}",
        text(&out)
    );
    assert_eq!(
        s.kubectl_ok(&[
            "get",
            "cm",
            "ed",
            "-n",
            "team-a",
            "-o",
            "jsonpath={.data.key}"
        ]),
        "edited"
    );
    // diff: exit 0 when the same, exit 1 with a unified diff when not.
    let same = s.kubectl_stdin(&["diff", "-f", "-"], &cm("ed", "edited"));
    assert_eq!(same.status.code(), Some(0), "{:?}", text(&same));
    let differs = s.kubectl_stdin(&["diff", "-f", "-"], &cm("ed", "other"));
    assert_eq!(differs.status.code(), Some(1), "{:?}", text(&differs));
    let d = text(&differs).0;
    assert!(
        d.contains("-  key: edited") && d.contains("+  key: other"),
        "{d}"
    );
    assert_eq!(
        s.kubectl_ok(&[
            "get",
            "cm",
            "ed",
            "-n",
            "team-a",
            "-o",
            "jsonpath={.data.key}"
        ]),
        "edited",
        "diff must not write"
    );
    // describe, with an Event about the object found by its involvedObject fields.
    let uid = s.kubectl_ok(&[
        "get",
        "cm",
        "ed",
        "-n",
        "team-a",
        "-o",
        "jsonpath={.metadata.uid}",
    ]);
    let event = format!(
        "apiVersion: v1\nkind: Event\nmetadata:\n  name: ed.1\n  namespace: team-a\ninvolvedObject:\n  apiVersion: v1\n  kind: ConfigMap\n  name: ed\n  namespace: team-a\n  uid: {uid}\nreason: Checked\nmessage: looked at it\ntype: Normal\nlastTimestamp: \"2026-01-01T00:00:00Z\"\n"
    );
    apply(&s, &event);
    let desc = s.kubectl_ok(&["describe", "cm", "ed", "-n", "team-a"]);
    assert!(
        desc.contains("Name:         ed") && desc.contains("edited"),
        "{desc}"
    );
    assert!(
        desc.contains("Events:") && desc.contains("Checked") && desc.contains("looked at it"),
        "{desc}"
    );
    let events = s.kubectl_ok(&["get", "events", "-n", "team-a"]);
    assert!(
        events
            .lines()
            .next()
            .unwrap()
            .split_whitespace()
            .eq(["LAST", "SEEN", "TYPE", "REASON", "OBJECT", "MESSAGE"]),
        "{events}"
    );
    assert!(events.contains("configmap/ed"), "{events}");
}

#[test]
fn finalizers_hold_deletion_until_removed() {
    let s = Server::start();
    apply(&s, NS);
    let held = cm("held", "1").replace(
        "  labels:",
        "  finalizers:\n  - example.com/hold\n  labels:",
    );
    apply(&s, &held);
    let out = s.kubectl(&["delete", "cm", "held", "-n", "team-a", "--wait=false"]);
    assert!(out.status.success(), "{:?}", text(&out));
    // Still there, marked for deletion.
    let ts = s.kubectl_ok(&[
        "get",
        "cm",
        "held",
        "-n",
        "team-a",
        "-o",
        "jsonpath={.metadata.deletionTimestamp}",
    ]);
    assert!(
        ts.starts_with("20"),
        "deletionTimestamp should be set, got {ts:?}"
    );
    // Removing the last finalizer lets it go.
    s.kubectl_ok(&[
        "patch",
        "cm",
        "held",
        "-n",
        "team-a",
        "--type",
        "merge",
        "-p",
        r#"{"metadata":{"finalizers":null}}"#,
    ]);
    let gone = s.kubectl(&["get", "cm", "held", "-n", "team-a"]);
    assert!(text(&gone).1.contains("not found"), "{:?}", text(&gone));
}

#[test]
fn kill_9_under_concurrent_writes_loses_no_acknowledged_write() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = Server::start_in(dir.path(), 0);
    let port = s.port; // the restart listens where the first run did
    apply(&s, NS);
    let acked = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let kubeconfig = s.kubeconfig();
    let writers: Vec<_> = (0..6)
        .map(|w| {
            let (acked, stop, kubeconfig) = (acked.clone(), stop.clone(), kubeconfig.clone());
            std::thread::spawn(move || {
                let mut i = 0;
                while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                    let name = format!("w{w}-{i}");
                    let out = std::process::Command::new("kubectl")
                        .env("KUBECONFIG", &kubeconfig)
                        .args([
                            "create",
                            "configmap",
                            &name,
                            "-n",
                            "team-a",
                            "--from-literal=k=v",
                        ])
                        .output()
                        .unwrap();
                    if out.status.success() {
                        acked.lock().unwrap().push(name);
                    }
                    i += 1;
                }
            })
        })
        .collect();
    // Kill once some writes are acknowledged (however slow the machine), a moment into
    // the next ones, so creates are in flight.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while acked.lock().unwrap().len() < 10 && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| u64::from(d.subsec_millis() % 300))
            .unwrap_or(0),
    ));
    s.kill(); // SIGKILL while creates are in flight
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    for w in writers {
        w.join().unwrap();
    }
    let acked = acked.lock().unwrap().clone();
    assert!(
        acked.len() >= 10,
        "too few writes were acknowledged: {}",
        acked.len()
    );
    let s = Server::start_in(dir.path(), port);
    let present = s.kubectl_ok(&["get", "cm", "-n", "team-a", "-o", "name"]);
    for name in &acked {
        assert!(
            present.lines().any(|l| l == format!("configmap/{name}")),
            "acknowledged {name} was lost"
        );
    }
}

#[test]
fn compacted_resource_versions_get_410_expired() {
    // Keep one second of history and compact every second.
    let s = Server::start_args(&[
        "--history-retention-seconds",
        "1",
        "--compaction-interval-seconds",
        "1",
    ]);
    apply(&s, NS);
    for i in 0..4 {
        apply(&s, &cm(&format!("old-{i}"), "1"));
    }
    let page = s.kubectl_ok(&[
        "get",
        "--raw",
        "/api/v1/namespaces/team-a/configmaps?limit=1",
    ]);
    let token = page
        .split("\"continue\":\"")
        .nth(1)
        .and_then(|r| r.split('"').next())
        .expect("continue token")
        .to_string();
    apply(&s, &cm("new", "1"));
    // Compaction runs on its own; wait (bounded) until it has passed the list's revision.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let cont = loop {
        let out = s.kubectl(&[
            "get",
            "--raw",
            &format!("/api/v1/namespaces/team-a/configmaps?limit=1&continue={token}"),
        ]);
        if !out.status.success() || std::time::Instant::now() > deadline {
            break out;
        }
        std::thread::sleep(Duration::from_millis(250));
    };
    // A list continuing from a compacted revision is told it expired.
    assert!(!cont.status.success(), "history was never compacted");
    assert!(
        text(&cont).1.contains("Expired") || text(&cont).1.contains("too old"),
        "{:?}",
        text(&cont)
    );
    // A watch from a compacted resourceVersion gets one ERROR event carrying a 410 Status.
    let watch = s.kubectl_ok(&[
        "get",
        "--raw",
        "/api/v1/namespaces/team-a/configmaps?watch=true&resourceVersion=3&timeoutSeconds=5",
    ]);
    // `type` first, as upstream writes every event (this line is built, not spliced).
    assert!(
        watch.starts_with("{\"type\":\"ERROR\",\"object\":{"),
        "{watch}"
    );
    assert!(
        watch.contains("\"type\":\"ERROR\"")
            && watch.contains("\"code\":410")
            && watch.contains("\"reason\":\"Expired\""),
        "{watch}"
    );
    // kubectl's own watch recovers: it relists and shows the current objects.
    let fresh = s.kubectl_ok(&["get", "cm", "-n", "team-a", "-o", "name"]);
    assert_eq!(without_root_ca(&fresh).len(), 5, "{fresh}");
}

#[test]
fn status_subresource_is_isolated_from_the_main_endpoint() {
    let s = Server::start();
    apply(&s, NS);
    // The main endpoint ignores status.
    s.kubectl_ok(&[
        "patch",
        "ns",
        "team-a",
        "--type",
        "merge",
        "-p",
        r#"{"status":{"phase":"Pretend"},"metadata":{"labels":{"x":"1"}}}"#,
    ]);
    assert_eq!(
        s.kubectl_ok(&[
            "get",
            "ns",
            "team-a",
            "-o",
            "jsonpath={.status.phase} {.metadata.labels.x}"
        ]),
        "Active 1"
    );
    // /status changes status and metadata, never the spec: upstream's namespace status
    // strategy resets only the spec.
    s.kubectl_ok(&[
        "patch",
        "ns",
        "team-a",
        "--subresource=status",
        "--type",
        "merge",
        "-p",
        r#"{"status":{"conditions":[{"type":"Checked","status":"True"}]},"metadata":{"labels":{"x":"2"}}}"#,
    ]);
    assert_eq!(
        s.kubectl_ok(&[
            "get",
            "ns",
            "team-a",
            "-o",
            "jsonpath={.status.conditions[0].type} {.metadata.labels.x}"
        ]),
        "Checked 2"
    );
    // Neither bumps generation: only spec changes do, and a namespace's spec is its own.
    assert_eq!(
        s.kubectl_ok(&[
            "get",
            "ns",
            "team-a",
            "-o",
            "jsonpath={.metadata.generation}"
        ]),
        "1"
    );
}

#[test]
fn oversized_bodies_and_future_watches_get_clear_answers() {
    let s = Server::start();
    apply(&s, NS);
    let dir = tempfile::tempdir().unwrap();
    let big = dir.path().join("big.txt");
    std::fs::write(&big, "x".repeat(4 << 20)).unwrap();
    let out = s.kubectl(&[
        "create",
        "configmap",
        "big",
        "-n",
        "team-a",
        &format!("--from-file={}", big.display()),
    ]);
    assert!(!out.status.success());
    assert!(
        text(&out).1.contains("larger than the 3145728 byte limit"),
        "{:?}",
        text(&out)
    );
    // A watch from a resourceVersion the server has not reached is refused at once.
    let w = s.kubectl(&[
        "get",
        "--raw",
        "/api/v1/namespaces/team-a/configmaps?watch=true&resourceVersion=999999999",
    ]);
    assert!(!w.status.success());
    assert!(
        text(&w).1.contains("Too large resource version"),
        "{:?}",
        text(&w)
    );
}

#[test]
fn events_expire_after_their_ttl() {
    let s = Server::start_args(&["--event-ttl", "3s"]);
    apply(&s, NS);
    // An event counts as seen at the newest of its timestamps and its creation.
    let event = "apiVersion: v1\nkind: Event\nmetadata:\n  name: brief\n  namespace: team-a\ninvolvedObject:\n  kind: ConfigMap\n  name: x\n  namespace: team-a\nreason: R\nmessage: m\ntype: Normal\nlastTimestamp: \"2020-01-01T00:00:00Z\"\n";
    let created = std::time::Instant::now();
    apply(&s, event);
    assert!(s
        .kubectl_ok(&["get", "events", "-n", "team-a", "-o", "name"])
        .contains("event/brief"));
    let deadline = created + Duration::from_secs(30);
    while s
        .kubectl_ok(&["get", "events", "-n", "team-a", "-o", "name"])
        .contains("event/brief")
    {
        assert!(
            std::time::Instant::now() < deadline,
            "the event never expired"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    // Gone, and not before its TTL had passed.
    assert!(
        created.elapsed() >= Duration::from_secs(3),
        "expired after only {:?}",
        created.elapsed()
    );
}

#[test]
fn bookmarks_report_progress_even_when_nothing_matches() {
    // No kube-root-ca.crt in the namespaces: the lists' resourceVersions are read from the
    // text, and nothing may match the team-a watch.
    let s = Server::start_args(&[
        "--watch-bookmark-interval-seconds",
        "1",
        "--controllers=*,-root-ca-cert-publisher",
    ]);
    apply(&s, NS);
    apply(&s, &NS.replace("team-a", "team-b"));
    let list = s.kubectl_ok(&["get", "--raw", "/api/v1/namespaces/team-a/configmaps"]);
    let rv0: i64 = list
        .split("\"resourceVersion\":\"")
        .nth(1)
        .unwrap()
        .split('"')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    // Writes elsewhere move the store on; the team-a watcher sees no event for them...
    for i in 0..3 {
        apply(
            &s,
            &cm(&format!("elsewhere-{i}"), "1").replace("team-a", "team-b"),
        );
    }
    let current: i64 = {
        let l = s.kubectl_ok(&["get", "--raw", "/api/v1/namespaces/team-b/configmaps"]);
        // The list's own resourceVersion is the last one in the document.
        l.rsplit("\"resourceVersion\":\"")
            .next()
            .unwrap()
            .split('"')
            .next()
            .unwrap()
            .parse()
            .unwrap()
    };
    assert!(current > rv0);
    let path = format!("/api/v1/namespaces/team-a/configmaps?watch=true&allowWatchBookmarks=true&resourceVersion={rv0}&timeoutSeconds=3");
    let out = s.kubectl_ok(&["get", "--raw", &path]);
    // ...but its bookmarks carry the store's progress, so a resume after compaction works.
    let bookmark = out
        .lines()
        .find(|l| l.contains("\"type\":\"BOOKMARK\""))
        .unwrap_or_else(|| panic!("no bookmark in {out}"));
    // At least where the store was when the watch began: the controllers' own writes (the
    // new namespaces' ServiceAccounts, say) may land in between and move it further.
    let at: i64 = bookmark
        .split("\"resourceVersion\":\"")
        .nth(1)
        .and_then(|r| r.split('"').next())
        .and_then(|r| r.parse().ok())
        .unwrap_or_else(|| panic!("no resourceVersion in {bookmark}"));
    assert!(at >= current, "{bookmark} should be at {current} or later");
    assert!(!out.contains("\"type\":\"ADDED\""), "{out}");
}

/// Removing the last annotation or label leaves no empty map behind (upstream omits them),
/// so `kubectl diff` against the original manifest shows nothing.
#[test]
fn removing_the_last_annotation_leaves_no_empty_map() {
    let s = Server::start();
    let manifest = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: tidy, namespace: default}\ndata: {k: v}\n";
    let out = s.kubectl_stdin(&["apply", "--server-side", "-f", "-"], manifest);
    assert!(out.status.success(), "{:?}", capstan_e2e::text(&out));
    s.kubectl_ok(&["annotate", "configmap", "tidy", "note=x"]);
    s.kubectl_ok(&["label", "configmap", "tidy", "tier=web"]);
    s.kubectl_ok(&["annotate", "configmap", "tidy", "note-"]);
    s.kubectl_ok(&["label", "configmap", "tidy", "tier-"]);
    let json = s.kubectl_ok(&["get", "configmap", "tidy", "-o", "json"]);
    let obj: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert!(obj["metadata"].get("annotations").is_none(), "{json}");
    assert!(obj["metadata"].get("labels").is_none(), "{json}");
    let diff = s.kubectl_stdin(&["diff", "--server-side", "-f", "-"], manifest);
    assert_eq!(
        diff.status.code(),
        Some(0),
        "{:?}",
        capstan_e2e::text(&diff)
    );
}

/// Field selectors the node agent, the scheduler and kubectl use, per type as upstream.
#[test]
fn per_type_field_selectors_select_as_upstream() {
    let s = Server::start();
    let pods = "apiVersion: v1\nkind: Pod\nmetadata: {name: on-n1}\nspec: {nodeName: n1, containers: [{name: c, image: busybox}]}\n---\napiVersion: v1\nkind: Pod\nmetadata: {name: host}\nspec: {hostNetwork: true, restartPolicy: Never, containers: [{name: c, image: busybox}]}\n---\napiVersion: v1\nkind: Node\nmetadata: {name: n1}\nspec: {unschedulable: true}\n---\napiVersion: v1\nkind: Node\nmetadata: {name: n2}\n";
    let out = s.kubectl_stdin(&["apply", "-f", "-"], pods);
    assert!(out.status.success(), "{:?}", capstan_e2e::text(&out));
    let names = |args: &[&str]| s.kubectl_ok(args).trim().to_string();
    assert_eq!(
        names(&[
            "get",
            "pods",
            "--field-selector",
            "spec.nodeName=n1",
            "-o",
            "name"
        ]),
        "pod/on-n1"
    );
    assert_eq!(
        names(&[
            "get",
            "pods",
            "--field-selector",
            "spec.nodeName=",
            "-o",
            "name"
        ]),
        "pod/host"
    );
    assert_eq!(
        names(&[
            "get",
            "pods",
            "--field-selector",
            "spec.hostNetwork=false",
            "-o",
            "name"
        ]),
        "pod/on-n1"
    );
    assert_eq!(
        names(&[
            "get",
            "pods",
            "--field-selector",
            "spec.restartPolicy=Never,status.phase=Pending",
            "-o",
            "name"
        ]),
        "pod/host"
    );
    assert_eq!(
        names(&[
            "get",
            "nodes",
            "--field-selector",
            "spec.unschedulable=false",
            "-o",
            "name"
        ]),
        "node/n2"
    );
    assert_eq!(
        names(&[
            "get",
            "services",
            "-A",
            "--field-selector",
            "spec.type=ClusterIP",
            "-o",
            "name"
        ]),
        // Both bootstrap Services: `kubernetes` (default), `kube-dns` (kube-system).
        "service/kubernetes\nservice/kube-dns"
    );
    let out = s.kubectl(&["get", "pods", "--field-selector", "spec.containers=x"]);
    let (_, err) = capstan_e2e::text(&out);
    assert!(
        !out.status.success() && err.contains("field label not supported: spec.containers"),
        "{err}"
    );
}

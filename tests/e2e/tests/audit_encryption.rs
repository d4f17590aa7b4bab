//! The audit log and encryption at rest, through the real kubectl: what the policy asks for
//! is in the JSON lines, and a Secret's value is in no file of the data dir while it reads back.

use std::path::{Path, PathBuf};
use std::time::Duration;

use capstan_e2e::{text, wait_for, Server};
use serde_json::Value;

const WITHIN: Duration = Duration::from_secs(20);

fn events(log: &Path) -> Vec<Value> {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).expect("each audit line is JSON"))
        .collect()
}

fn find<'a>(evs: &'a [Value], resource: &str, name: &str, verb: &str) -> Option<&'a Value> {
    evs.iter().find(|e| {
        e["objectRef"]["resource"] == resource
            && e["objectRef"]["name"] == name
            && e["verb"] == verb
            && e["stage"] == "ResponseComplete"
    })
}

#[test]
fn audit_log_records_what_the_policy_asks() {
    let conf = tempfile::tempdir().unwrap();
    let policy = conf.path().join("audit-policy.yaml");
    let log = conf.path().join("audit.log");
    std::fs::write(
        &policy,
        r#"apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: ["RequestReceived"]
rules:
  - level: None
    users: ["system:serviceaccount:audited:quiet"]
  - level: Metadata
    resources:
    - group: ""
      resources: ["secrets"]
  - level: RequestResponse
    resources:
    - group: ""
      resources: ["configmaps"]
"#,
    )
    .unwrap();
    let s = Server::start_args(&[
        "--audit-policy-file",
        policy.to_str().unwrap(),
        "--audit-log-path",
        log.to_str().unwrap(),
    ]);
    s.kubectl_ok(&["create", "namespace", "audited"]);
    s.kubectl_ok(&[
        "create",
        "secret",
        "generic",
        "pw",
        "-n",
        "audited",
        "--from-literal=password=hunter2",
    ]);
    s.kubectl_ok(&[
        "create",
        "configmap",
        "settings",
        "-n",
        "audited",
        "--from-literal=color=blue",
    ]);
    s.kubectl_ok(&["create", "serviceaccount", "quiet", "-n", "audited"]);
    // RBAC: the account may write in its namespace only once bound.
    s.kubectl_ok(&[
        "create",
        "rolebinding",
        "quiet-edit",
        "--clusterrole=edit",
        "--serviceaccount=audited:quiet",
        "-n",
        "audited",
    ]);
    let token = s.kubectl_ok(&["create", "token", "quiet", "-n", "audited"]);
    s.kubectl_ok(&[
        "--token",
        token.trim(),
        "create",
        "configmap",
        "from-quiet",
        "-n",
        "audited",
    ]);
    // A marker after the quiet account's request: once it is logged, so would that be.
    s.kubectl_ok(&["create", "configmap", "marker", "-n", "audited"]);

    let evs = wait_for("the marker's audit event", WITHIN, || {
        let evs = events(&log);
        find(&evs, "configmaps", "marker", "create")
            .is_some()
            .then_some(evs)
    });
    let secret = find(&evs, "secrets", "pw", "create").expect("the secret's create is logged");
    assert_eq!(secret["level"], "Metadata");
    assert_eq!(secret["apiVersion"], "audit.k8s.io/v1");
    assert_eq!(secret["kind"], "Event");
    assert_eq!(secret["user"]["username"], "system:admin");
    assert_eq!(secret["responseStatus"]["code"], 201);
    assert_eq!(secret["objectRef"]["namespace"], "audited");
    assert!(secret.get("requestObject").is_none(), "{secret}");
    assert!(secret.get("responseObject").is_none(), "{secret}");
    assert!(
        secret["userAgent"]
            .as_str()
            .unwrap_or("")
            .starts_with("kubectl"),
        "{secret}"
    );
    assert_eq!(secret["sourceIPs"][0], "127.0.0.1");
    assert!(secret["auditID"].as_str().is_some_and(|id| !id.is_empty()));
    let text_log = std::fs::read_to_string(&log).unwrap();
    assert!(
        !text_log.contains("aHVudGVyMg=="),
        "the secret's value is not logged"
    );

    let cm = find(&evs, "configmaps", "settings", "create").expect("the configmap is logged");
    assert_eq!(cm["level"], "RequestResponse");
    assert_eq!(cm["requestObject"]["data"]["color"], "blue");
    assert_eq!(cm["responseObject"]["data"]["color"], "blue");
    assert!(cm["responseObject"]["metadata"]["uid"].is_string());
    assert!(cm["requestReceivedTimestamp"].is_string() && cm["stageTimestamp"].is_string());

    assert!(
        find(&evs, "configmaps", "from-quiet", "create").is_none(),
        "the None rule leaves the quiet account out"
    );
    assert!(
        evs.iter().all(|e| e["stage"] != "RequestReceived"),
        "omitStages"
    );
    // Reads of secrets are Metadata too; namespaces match no rule and are not logged.
    assert!(evs
        .iter()
        .all(|e| e["objectRef"]["resource"] != "namespaces"));
}

#[test]
fn audit_action_of_a_policy_annotates_the_event() {
    let conf = tempfile::tempdir().unwrap();
    let policy = conf.path().join("audit-policy.yaml");
    let log = conf.path().join("audit.log");
    std::fs::write(
        &policy,
        "apiVersion: audit.k8s.io/v1\nkind: Policy\nomitStages: [\"RequestReceived\"]\nrules:\n  - level: Metadata\n    resources:\n    - group: \"\"\n      resources: [\"configmaps\"]\n",
    )
    .unwrap();
    let s = Server::start_args(&[
        "--audit-policy-file",
        policy.to_str().unwrap(),
        "--audit-log-path",
        log.to_str().unwrap(),
    ]);
    capstan_e2e::apply(
        &s,
        r#"apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingAdmissionPolicy
metadata:
  name: no-color
spec:
  matchConstraints:
    resourceRules:
    - apiGroups: [""]
      apiVersions: ["v1"]
      operations: ["CREATE"]
      resources: ["configmaps"]
  validations:
  - expression: "!has(object.data) || !('color' in object.data)"
    message: "colors are audited"
  auditAnnotations:
  - key: color
    valueExpression: "has(object.data) && 'color' in object.data ? object.data['color'] : null"
---
apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingAdmissionPolicyBinding
metadata:
  name: no-color-audit
spec:
  policyName: no-color
  validationActions: [Audit]
"#,
    );
    let mut n = 0;
    let ev = wait_for("an audit annotation from the policy", WITHIN, || {
        n += 1;
        let name = format!("tinted-{n}");
        s.kubectl_ok(&["create", "configmap", &name, "--from-literal=color=red"]);
        let evs = wait_for("the create's event", WITHIN, || {
            let evs = events(&log);
            find(&evs, "configmaps", &name, "create")
                .is_some()
                .then_some(evs)
        });
        let ev = find(&evs, "configmaps", &name, "create").cloned()?;
        ev["annotations"]["validation.policy.admission.k8s.io/validation_failure"]
            .is_string()
            .then_some(ev)
    });
    let failure: Value = serde_json::from_str(
        ev["annotations"]["validation.policy.admission.k8s.io/validation_failure"]
            .as_str()
            .unwrap(),
    )
    .unwrap();
    assert_eq!(failure[0]["message"], "colors are audited");
    assert_eq!(failure[0]["policy"], "no-color");
    assert_eq!(failure[0]["binding"], "no-color-audit");
    assert_eq!(failure[0]["validationActions"][0], "Audit");
    assert_eq!(ev["annotations"]["no-color/color"], "red");
    assert_eq!(ev["responseStatus"]["code"], 201, "Audit does not refuse");
}

const KEY1: &str = "c2VjcmV0IGlzIHNlY3VyZSwgb3IgaXMgaXQ/IDEyMzQ="; // 32 bytes
const KEY2: &str = "YW5vdGhlciAzMiBieXRlIGtleSBmb3IgYWVzY2JjISE="; // 32 bytes

fn write_config(dir: &Path, name: &str, providers: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(
        &p,
        format!(
            "apiVersion: apiserver.config.k8s.io/v1\nkind: EncryptionConfiguration\nresources:\n  - resources: [\"secrets\"]\n    providers:\n{providers}"
        ),
    )
    .unwrap();
    p
}

fn aescbc(key: &str) -> String {
    format!("    - aescbc:\n        keys:\n        - name: key1\n          secret: {key}\n")
}

/// Whether `needle` is in any file of the data dir (the database, its WAL …).
fn on_disk(dir: &Path, needle: &[u8]) -> bool {
    fn walk(dir: &Path, needle: &[u8]) -> bool {
        std::fs::read_dir(dir)
            .into_iter()
            .flatten()
            .flatten()
            .any(|e| {
                let p = e.path();
                if p.is_dir() {
                    walk(&p, needle)
                } else {
                    std::fs::read(&p).is_ok_and(|b| b.windows(needle.len()).any(|w| w == needle))
                }
            })
    }
    walk(dir, needle)
}

fn secret_value(s: &Server) -> String {
    let out = s.kubectl_ok(&["get", "secret", "vault", "-o", "jsonpath={.data.token}"]);
    String::from_utf8(base64_decode(out.trim())).unwrap()
}

fn base64_decode(s: &str) -> Vec<u8> {
    let out = std::process::Command::new("base64")
        .arg("-d")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            use std::io::Write;
            c.stdin.take().unwrap().write_all(s.as_bytes())?;
            c.wait_with_output()
        })
        .unwrap();
    out.stdout
}

#[test]
fn secrets_are_encrypted_at_rest_and_read_back() {
    let data = tempfile::tempdir().unwrap();
    let conf = tempfile::tempdir().unwrap();
    let value = format!("plaintext-{}", std::process::id());
    let encoded = {
        let out = std::process::Command::new("base64")
            .args(["-w0"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .and_then(|mut c| {
                use std::io::Write;
                c.stdin.take().unwrap().write_all(value.as_bytes())?;
                c.wait_with_output()
            })
            .unwrap();
        String::from_utf8(out.stdout).unwrap()
    };
    let enc_first = write_config(
        conf.path(),
        "enc.yaml",
        &format!("{}    - identity: {{}}\n", aescbc(KEY1)),
    );
    let mut s = Server::start_with_args(
        data.path(),
        &["--encryption-provider-config", enc_first.to_str().unwrap()],
    );
    s.kubectl_ok(&[
        "create",
        "secret",
        "generic",
        "vault",
        &format!("--from-literal=token={value}"),
    ]);
    assert_eq!(secret_value(&s), value);
    assert!(
        !on_disk(data.path(), value.as_bytes()),
        "plain value on disk"
    );
    assert!(
        !on_disk(data.path(), encoded.as_bytes()),
        "base64 value on disk"
    );
    assert!(
        on_disk(data.path(), b"k8s:enc:aescbc:v1:key1:"),
        "upstream's prefix on disk"
    );
    // Other kinds are not listed: stored as they are.
    s.kubectl_ok(&[
        "create",
        "configmap",
        "open",
        "--from-literal=note=visible-note",
    ]);
    assert!(on_disk(data.path(), b"visible-note"));
    s.kill();
    drop(s);

    // identity first, aescbc second: old data still reads; a replace writes it plain.
    let plain_first = write_config(
        conf.path(),
        "plain.yaml",
        &format!("    - identity: {{}}\n{}", aescbc(KEY1)),
    );
    let mut s = Server::start_with_args(
        data.path(),
        &[
            "--encryption-provider-config",
            plain_first.to_str().unwrap(),
        ],
    );
    assert_eq!(secret_value(&s), value);
    let json = s.kubectl_ok(&["get", "secret", "vault", "-o", "json"]);
    let out = s.kubectl_stdin(&["replace", "-f", "-"], &json);
    assert!(out.status.success(), "{:?}", text(&out));
    wait_for("the replaced secret on disk in plain", WITHIN, || {
        on_disk(data.path(), encoded.as_bytes()).then_some(())
    });
    s.kill();
    drop(s);

    // A wrong key: the secret cannot be read, and the server says why (a 500, no panic).
    let gcm = |key: &str| {
        format!("    - aesgcm:\n        keys:\n        - name: key1\n          secret: {key}\n")
    };
    let right = write_config(conf.path(), "gcm.yaml", &gcm(KEY1));
    let mut s = Server::start_with_args(
        data.path(),
        &["--encryption-provider-config", right.to_str().unwrap()],
    );
    s.kubectl_ok(&[
        "create",
        "secret",
        "generic",
        "sealed",
        "--from-literal=x=y",
    ]);
    s.kill();
    drop(s);
    let wrong = write_config(conf.path(), "wrong.yaml", &gcm(KEY2));
    let s = Server::start_with_args(
        data.path(),
        &["--encryption-provider-config", wrong.to_str().unwrap()],
    );
    let out = s.kubectl(&["get", "secret", "sealed"]);
    assert!(!out.status.success());
    let err = text(&out).1;
    assert!(
        err.contains("InternalError")
            && err.contains("unable to transform key \"/registry/secrets/default/sealed\": aesgcm key \"key1\": decryption failed"),
        "{err}"
    );
    // Data written before encryption was configured, with no identity listed: named too.
    let out = s.kubectl(&["get", "secret", "vault"]);
    assert!(
        text(&out).1.contains("no matching prefix found"),
        "{:?}",
        text(&out)
    );
}

/// The built-in components act as upstream's identities, not as the admin: the audit log
/// names the ReplicaSet controller's ServiceAccount for the pod it creates, the scheduler for
/// the binding and the node for the pod's status; their roles are upstream's (`auth can-i`).
#[test]
fn built_in_components_act_as_their_own_identities() {
    let conf = tempfile::tempdir().unwrap();
    let policy = conf.path().join("audit-policy.yaml");
    let log = conf.path().join("audit.log");
    std::fs::write(
        &policy,
        "apiVersion: audit.k8s.io/v1\nkind: Policy\nomitStages: [\"RequestReceived\"]\nrules:\n  - level: Metadata\n    resources:\n    - group: \"\"\n      resources: [\"pods\", \"pods/binding\", \"pods/status\"]\n",
    )
    .unwrap();
    let s = Server::start_node(&[
        "--audit-policy-file",
        policy.to_str().unwrap(),
        "--audit-log-path",
        log.to_str().unwrap(),
    ]);
    capstan_e2e::node_ready(&s);
    let node = s.kubectl_ok(&["get", "nodes", "-o", "jsonpath={.items[0].metadata.name}"]);
    let ns = "identities";
    s.kubectl_ok(&["create", "namespace", ns]);
    capstan_e2e::apply(
        &s,
        r#"apiVersion: apps/v1
kind: ReplicaSet
metadata:
  name: sleeper
  namespace: identities
spec:
  replicas: 1
  selector:
    matchLabels: {app: sleeper}
  template:
    metadata:
      labels: {app: sleeper}
    spec:
      terminationGracePeriodSeconds: 0
      containers:
      - name: main
        image: busybox
        imagePullPolicy: Never
        command: ["sleep", "3600"]
"#,
    );
    let user_of = |evs: &[Value], verb: &[&str], subresource: Option<&str>| -> Option<String> {
        evs.iter()
            .find(|e| {
                e["objectRef"]["namespace"] == ns
                    && e["objectRef"]["resource"] == "pods"
                    && e["objectRef"]["subresource"].as_str() == subresource
                    && verb.contains(&e["verb"].as_str().unwrap_or_default())
                    && e["stage"] == "ResponseComplete"
                    && e["responseStatus"]["code"]
                        .as_u64()
                        .is_some_and(|c| c < 300)
            })
            .map(|e| {
                e["user"]["username"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string()
            })
    };
    let evs = wait_for(
        "the pod's creation, binding and status in the audit log",
        WITHIN,
        || {
            let evs = events(&log);
            (user_of(&evs, &["create"], None).is_some()
                && user_of(&evs, &["create"], Some("binding")).is_some()
                && user_of(&evs, &["update", "patch"], Some("status")).is_some())
            .then_some(evs)
        },
    );
    assert_eq!(
        user_of(&evs, &["create"], None).unwrap(),
        "system:serviceaccount:kube-system:replicaset-controller"
    );
    assert_eq!(
        user_of(&evs, &["create"], Some("binding")).unwrap(),
        "system:kube-scheduler"
    );
    assert_eq!(
        user_of(&evs, &["update", "patch"], Some("status")).unwrap(),
        format!("system:node:{node}")
    );
    let create = evs
        .iter()
        .find(|e| {
            e["objectRef"]["namespace"] == ns
                && e["verb"] == "create"
                && e["objectRef"]["subresource"].is_null()
        })
        .unwrap();
    assert_eq!(
        create["user"]["groups"],
        serde_json::json!([
            "system:serviceaccounts",
            "system:serviceaccounts:kube-system",
            "system:authenticated"
        ])
    );

    // The controller-manager made its loops' ServiceAccounts, as upstream's does.
    let accounts = s.kubectl_ok(&["get", "serviceaccounts", "-n", "kube-system", "-o", "name"]);
    for sa in [
        "deployment-controller",
        "replicaset-controller",
        "generic-garbage-collector",
        "namespace-controller",
        "node-controller",
    ] {
        assert!(
            accounts.contains(&format!("serviceaccount/{sa}\n")),
            "{sa} in {accounts}"
        );
    }
    // Their rules are upstream's.
    let list = s.kubectl_ok(&[
        "auth",
        "can-i",
        "--list",
        "--as=system:serviceaccount:kube-system:deployment-controller",
    ]);
    let line = |resource: &str| {
        list.lines()
            .find(|l| l.split_whitespace().next() == Some(resource))
            .unwrap_or_else(|| panic!("no {resource} in {list}"))
            .to_string()
    };
    assert!(
        line("replicasets.apps").contains("[get list watch create update patch delete]"),
        "{list}"
    );
    assert!(
        line("deployments.apps/status").contains("update]"),
        "{list}"
    );
    assert!(line("pods").contains("[get list watch update]"), "{list}");
    assert!(!list.contains("secrets"), "{list}");
    let (out, _) = text(&s.kubectl(&[
        "auth",
        "can-i",
        "get",
        "secrets",
        "--as=system:kube-scheduler",
    ]));
    assert_eq!(out.trim(), "no");
    let (out, _) = text(&s.kubectl(&[
        "auth",
        "can-i",
        "create",
        "pods",
        "--subresource=binding",
        "--as=system:kube-scheduler",
    ]));
    assert_eq!(out.trim(), "yes");
    let (out, _) = text(&s.kubectl(&[
        "auth",
        "can-i",
        "delete",
        "widgets.example.com",
        "--as=system:serviceaccount:kube-system:generic-garbage-collector",
    ]));
    assert_eq!(
        out.trim(),
        "yes",
        "the garbage collector may delete any kind"
    );
    s.kubectl_ok(&["delete", "namespace", ns, "--wait=false"]);
}

/// A policy or encryption file with a wrong value stops the server at once, naming the file
/// and the value's path in it (both are read YAML into JSON, then typed, as upstream reads
/// them).
#[test]
fn a_wrong_value_in_a_config_file_is_refused_by_its_path() {
    let dir = tempfile::tempdir().unwrap();
    let policy = dir.path().join("policy.yaml");
    std::fs::write(
        &policy,
        "apiVersion: audit.k8s.io/v1\nkind: Policy\nrules:\n- level: Metadata\n- level: Loud\n",
    )
    .unwrap();
    let encryption = dir.path().join("encryption.yaml");
    std::fs::write(
        &encryption,
        "apiVersion: apiserver.config.k8s.io/v1\nkind: EncryptionConfiguration\nresources:\n\
         - resources: [secrets]\n  providers:\n  - aescbc:\n      keys: {name: k}\n",
    )
    .unwrap();
    let log = dir.path().join("audit.log");
    let cases: [(Vec<&str>, &str); 2] = [
        (
            vec![
                "--audit-policy-file",
                policy.to_str().unwrap(),
                "--audit-log-path",
                log.to_str().unwrap(),
            ],
            "rules[1].level: unknown variant `Loud`",
        ),
        (
            vec!["--encryption-provider-config", encryption.to_str().unwrap()],
            "resources[0].providers[0].aescbc.keys: invalid type: map, expected a sequence",
        ),
    ];
    for (i, (flags, want)) in cases.iter().enumerate() {
        // Bounded: a server that started anyway would otherwise run on.
        let out = std::process::Command::new("timeout")
            .arg("20")
            .arg(capstan_e2e::capstan_bin())
            .args(["server", "--data-dir"])
            .arg(dir.path().join(format!("data-{i}")))
            .args(["--listen", "127.0.0.1:0", "--no-agent"])
            .args(flags)
            .env("RUST_BACKTRACE", "0")
            .output()
            .unwrap();
        let (stdout, stderr) = text(&out);
        assert_eq!(out.status.code(), Some(1), "{stdout}{stderr}");
        assert!(stderr.contains(want), "want {want:?} in: {stderr}");
    }
}

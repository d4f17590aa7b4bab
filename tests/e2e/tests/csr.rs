//! CertificateSigningRequests, signers and bootstrap tokens through the real kubectl: a user's
//! openssl request approved and issued (the certificate then logs in), denial, the approve
//! permission on signers, the system:masters restriction, a join token whose node client
//! certificate is auto-approved, expired and foreign credentials refused with 401.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use capstan_e2e::{capstan_bin, get_json, text, user_kubeconfig, wait_for, Server};
use serde_json::Value;

fn kubectl_with(kubeconfig: &Path, args: &[&str]) -> Output {
    Command::new("kubectl")
        .env("KUBECONFIG", kubeconfig)
        .args(args)
        .output()
        .expect("run kubectl")
}

fn kubectl_stdin_with(kubeconfig: &Path, args: &[&str], input: &str) -> Output {
    use std::io::Write;
    let mut child = Command::new("kubectl")
        .env("KUBECONFIG", kubeconfig)
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run kubectl");
    if let Some(mut stdin) = child.stdin.take() {
        stdin.write_all(input.as_bytes()).expect("write stdin");
    }
    child.wait_with_output().expect("kubectl output")
}

fn openssl(args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .output()
        .expect("run openssl");
    assert!(out.status.success(), "openssl {args:?}: {:?}", text(&out));
}

/// A P-256 key and a certificate request for `subject` (`/CN=x/O=y`) in `dir`: (key, csr).
fn key_and_request(dir: &Path, stem: &str, subject: &str) -> (PathBuf, PathBuf) {
    let (key, csr) = (
        dir.join(format!("{stem}.key")),
        dir.join(format!("{stem}.csr")),
    );
    openssl(&[
        "req",
        "-new",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
        "-keyout",
        key.to_str().unwrap(),
        "-subj",
        subject,
        "-out",
        csr.to_str().unwrap(),
    ]);
    (key, csr)
}

fn b64(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// The CSR manifest for the request file `csr`.
fn csr_yaml(name: &str, csr: &Path, signer: &str, usages: &[&str], extra_spec: &str) -> String {
    let request = b64(&std::fs::read(csr).expect("read the request"));
    let usages: String = usages.iter().map(|u| format!("  - {u}\n")).collect();
    format!(
        "apiVersion: certificates.k8s.io/v1\nkind: CertificateSigningRequest\nmetadata:\n  name: {name}\nspec:\n  request: {request}\n  signerName: {signer}\n  usages:\n{usages}{extra_spec}"
    )
}

/// The CONDITION column of `kubectl get csr NAME`.
fn condition(kubeconfig: &Path, name: &str) -> String {
    let out = kubectl_with(kubeconfig, &["get", "csr", name, "--no-headers"]);
    assert!(out.status.success(), "{:?}", text(&out));
    text(&out)
        .0
        .split_whitespace()
        .last()
        .unwrap_or("")
        .to_string()
}

/// A kubeconfig logging in with `cert` and `key` (PEM files) to `s`.
fn cert_kubeconfig(s: &Server, name: &str, cert: &Path, key: &Path) -> PathBuf {
    let path = s.data_dir.join(format!("{name}.kubeconfig"));
    let ca = s.data_dir.join("pki").join("ca.crt");
    let yaml = format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster:\n    server: https://127.0.0.1:{}\n    certificate-authority: {}\nusers:\n- name: u\n  user:\n    client-certificate: {}\n    client-key: {}\ncontexts:\n- name: x\n  context: {{cluster: c, user: u}}\ncurrent-context: x\n",
        s.port,
        ca.display(),
        cert.display(),
        key.display()
    );
    std::fs::write(&path, yaml).expect("write kubeconfig");
    path
}

/// A kubeconfig logging in with a bearer `token` to `s`.
fn token_kubeconfig(s: &Server, name: &str, token: &str) -> PathBuf {
    let path = s.data_dir.join(format!("{name}.kubeconfig"));
    let ca = s.data_dir.join("pki").join("ca.crt");
    let yaml = format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster:\n    server: https://127.0.0.1:{}\n    certificate-authority: {}\nusers:\n- name: u\n  user:\n    token: {token}\ncontexts:\n- name: x\n  context: {{cluster: c, user: u, namespace: default}}\ncurrent-context: x\n",
        s.port,
        ca.display()
    );
    std::fs::write(&path, yaml).expect("write kubeconfig");
    path
}

/// Wait for the CSR's certificate and write it to a file.
fn issued_certificate(s: &Server, name: &str, to: &Path) -> Value {
    let csr = wait_for(
        &format!("csr {name} issued"),
        Duration::from_secs(30),
        || {
            get_json(s, &["csr", name]).filter(|c| {
                c.pointer("/status/certificate")
                    .and_then(Value::as_str)
                    .is_some_and(|c| !c.is_empty())
            })
        },
    );
    let pem = {
        use base64::Engine;
        base64::engine::general_purpose::STANDARD
            .decode(csr["status"]["certificate"].as_str().unwrap_or(""))
            .expect("certificate is base64")
    };
    std::fs::write(to, pem).expect("write certificate");
    csr
}

fn token_create(s: &Server, ttl: &str) -> String {
    let out = Command::new(capstan_bin())
        .args(["token", "create", "--ttl", ttl, "--data-dir"])
        .arg(&s.data_dir)
        .output()
        .expect("capstan token create");
    assert!(out.status.success(), "{:?}", text(&out));
    let token = text(&out).0.trim().to_string();
    let (id, secret) = token.split_once('.').expect("id.secret");
    assert_eq!((id.len(), secret.len()), (6, 16), "{token}");
    token
}

#[test]
fn a_user_request_is_approved_issued_and_the_certificate_logs_in() {
    let s = Server::start();
    let admin = s.kubeconfig();
    let dir = s.data_dir.clone();
    let (key, req) = key_and_request(&dir, "carol", "/CN=carol/O=dev/O=qa");
    // The requester is whoever creates it: the body's username is replaced.
    let yaml = csr_yaml(
        "csr-carol",
        &req,
        "kubernetes.io/kube-apiserver-client",
        &["client auth"],
        "  expirationSeconds: 86400\n  username: mallory\n",
    );
    let out = kubectl_stdin_with(&admin, &["create", "-f", "-"], &yaml);
    assert!(out.status.success(), "{:?}", text(&out));
    assert_eq!(condition(&admin, "csr-carol"), "Pending");
    let stored = get_json(&s, &["csr", "csr-carol"]).expect("csr");
    assert_eq!(stored["spec"]["username"], "system:admin");
    let table = s.kubectl_ok(&["get", "csr", "csr-carol"]);
    assert!(
        table.contains("kubernetes.io/kube-apiserver-client"),
        "{table}"
    );
    assert!(table.contains("24h"), "{table}");

    let out = s.kubectl_ok(&["certificate", "approve", "csr-carol"]);
    assert!(
        out.contains("certificatesigningrequest.certificates.k8s.io/csr-carol approved"),
        "{out}"
    );
    let cert = dir.join("carol.crt");
    let issued = issued_certificate(&s, "csr-carol", &cert);
    let approved = &issued["status"]["conditions"][0];
    assert_eq!(approved["type"], "Approved");
    assert_eq!(approved["reason"], "KubectlApprove");
    assert_eq!(condition(&admin, "csr-carol"), "Approved,Issued");
    // A day, as asked (plus the signer's five minutes of backdating).
    let end = Command::new("openssl")
        .args(["x509", "-noout", "-checkend", "90000", "-in"])
        .arg(&cert)
        .output()
        .expect("openssl");
    assert!(
        !end.status.success(),
        "the certificate should expire within 25h"
    );

    let carol = cert_kubeconfig(&s, "carol", &cert, &key);
    let out = kubectl_with(&carol, &["auth", "whoami"]);
    assert!(out.status.success(), "{:?}", text(&out));
    let who = text(&out).0;
    assert!(who.contains("carol"), "{who}");
    assert!(who.contains("[dev qa system:authenticated]"), "{who}");

    // Approved stays: Denied cannot join it, nor can it be taken away (kubectl itself refuses
    // to deny an approved request, so the writes go to /approval directly).
    let path = "/apis/certificates.k8s.io/v1/certificatesigningrequests/csr-carol/approval";
    let mut both = get_json(&s, &["csr", "csr-carol"]).expect("csr");
    both["status"]["conditions"]
        .as_array_mut()
        .expect("conditions")
        .push(serde_json::json!({"type": "Denied", "status": "True", "reason": "Late"}));
    let out = s.kubectl_stdin(&["replace", "--raw", path, "-f", "-"], &both.to_string());
    assert!(!out.status.success(), "{:?}", text(&out));
    let (o, e) = text(&out);
    assert!(
        (o.clone() + &e).contains("Approved and Denied conditions are mutually exclusive"),
        "{o}{e}"
    );
    let mut none = get_json(&s, &["csr", "csr-carol"]).expect("csr");
    none["status"]["conditions"] = serde_json::json!([]);
    let out = s.kubectl_stdin(&["replace", "--raw", path, "-f", "-"], &none.to_string());
    let (o, e) = text(&out);
    assert!(
        (o.clone() + &e).contains("updates may not remove a condition of type"),
        "{o}{e}"
    );

    // Another request, denied: no certificate.
    let (_, req) = key_and_request(&dir, "dan", "/CN=dan");
    let yaml = csr_yaml(
        "csr-dan",
        &req,
        "kubernetes.io/kube-apiserver-client",
        &["client auth"],
        "",
    );
    assert!(kubectl_stdin_with(&admin, &["create", "-f", "-"], &yaml)
        .status
        .success());
    let out = s.kubectl_ok(&["certificate", "deny", "csr-dan"]);
    assert!(out.contains("csr-dan denied"), "{out}");
    assert_eq!(condition(&admin, "csr-dan"), "Denied");
    let denied = get_json(&s, &["csr", "csr-dan"]).expect("csr");
    assert!(denied["status"].get("certificate").is_none(), "{denied}");
    s.kubectl_ok(&["delete", "csr", "csr-carol", "csr-dan"]);
}

#[test]
fn bad_requests_are_refused_in_upstreams_words() {
    let s = Server::start();
    let admin = s.kubeconfig();
    let (_, req) = key_and_request(&s.data_dir, "eve", "/CN=eve");
    let yaml = csr_yaml(
        "csr-short",
        &req,
        "kubernetes.io/kube-apiserver-client",
        &["client auth", "flying"],
        "  expirationSeconds: 100\n",
    );
    let out = kubectl_stdin_with(&admin, &["create", "-f", "-"], &yaml);
    let err = text(&out).1;
    assert!(!out.status.success());
    assert!(err.contains("spec.expirationSeconds: Invalid value: 100: may not specify a duration less than 600 seconds (10 minutes)"), "{err}");
    assert!(
        err.contains("spec.usages[1]: Unsupported value: \"flying\""),
        "{err}"
    );

    let junk = s.data_dir.join("junk.csr");
    std::fs::write(&junk, "not a request").expect("write");
    let yaml = csr_yaml("csr-junk", &junk, "no-slash", &["client auth"], "");
    let out = kubectl_stdin_with(&admin, &["create", "-f", "-"], &yaml);
    let err = text(&out).1;
    assert!(err.contains("spec.request: Invalid value"), "{err}");
    assert!(
        err.contains("PEM block type must be CERTIFICATE REQUEST"),
        "{err}"
    );
    assert!(
        err.contains("spec.signerName: Invalid value: \"no-slash\""),
        "{err}"
    );

    // system:masters through the client signer would be cluster-admin.
    let (_, req) = key_and_request(&s.data_dir, "root", "/CN=root/O=system:masters");
    let yaml = csr_yaml(
        "csr-root",
        &req,
        "kubernetes.io/kube-apiserver-client",
        &["client auth"],
        "",
    );
    let out = kubectl_stdin_with(&admin, &["create", "-f", "-"], &yaml);
    assert!(!out.status.success());
    assert!(
        text(&out).1.contains("certificatesigningrequests.certificates.k8s.io \"csr-root\" is forbidden: use of kubernetes.io/kube-apiserver-client signer with system:masters group is not allowed"),
        "{:?}",
        text(&out)
    );
}

#[test]
fn approving_needs_the_approve_verb_on_the_signer() {
    let s = Server::start();
    let admin = s.kubeconfig();
    let (_, req) = key_and_request(&s.data_dir, "frank", "/CN=frank");
    let yaml = csr_yaml(
        "csr-frank",
        &req,
        "kubernetes.io/kube-apiserver-client",
        &["client auth"],
        "",
    );
    assert!(kubectl_stdin_with(&admin, &["create", "-f", "-"], &yaml)
        .status
        .success());
    // May update approvals, but approve no signer.
    s.kubectl_ok(&[
        "create",
        "clusterrole",
        "csr-approver-without-signer",
        "--verb=get,list,watch,update",
        "--resource=certificatesigningrequests,certificatesigningrequests/approval",
    ]);
    s.kubectl_ok(&[
        "create",
        "clusterrolebinding",
        "grace-csr",
        "--clusterrole=csr-approver-without-signer",
        "--user=grace",
    ]);
    let grace = user_kubeconfig(&s, "grace", &[]);
    let out = kubectl_with(&grace, &["certificate", "approve", "csr-frank"]);
    assert!(!out.status.success());
    assert!(
        text(&out).1.contains("certificatesigningrequests.certificates.k8s.io \"csr-frank\" is forbidden: user not permitted to approve requests with signerName \"kubernetes.io/kube-apiserver-client\""),
        "{:?}",
        text(&out)
    );
    assert_eq!(condition(&admin, "csr-frank"), "Pending");
    // The default approver role for that signer lets her.
    s.kubectl_ok(&[
        "create",
        "clusterrolebinding",
        "grace-signer",
        "--clusterrole=system:certificates.k8s.io:kube-apiserver-client-approver",
        "--user=grace",
    ]);
    wait_for("grace may approve", Duration::from_secs(10), || {
        kubectl_with(&grace, &["certificate", "approve", "csr-frank"])
            .status
            .success()
            .then_some(())
    });
    wait_for("csr-frank issued", Duration::from_secs(30), || {
        (condition(&admin, "csr-frank") == "Approved,Issued").then_some(())
    });
}

#[test]
fn a_bootstrap_token_gets_a_node_client_certificate_auto_approved() {
    let s = Server::start();
    let admin = s.kubeconfig();
    let token = token_create(&s, "1h");
    let id = token.split('.').next().unwrap_or_default().to_string();
    let secret = get_json(
        &s,
        &[
            "secret",
            "-n",
            "kube-system",
            &format!("bootstrap-token-{id}"),
        ],
    )
    .expect("the token's Secret");
    assert_eq!(secret["type"], "bootstrap.kubernetes.io/token");
    let joiner = token_kubeconfig(&s, "joiner", &token);

    let out = kubectl_with(&joiner, &["auth", "whoami", "-o", "json"]);
    assert!(out.status.success(), "{:?}", text(&out));
    let who: Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(
        who["status"]["userInfo"]["username"],
        format!("system:bootstrap:{id}")
    );
    let groups = who["status"]["userInfo"]["groups"].to_string();
    assert!(groups.contains("system:bootstrappers"), "{groups}");

    // The token may file CSRs, nothing else.
    let out = kubectl_with(&joiner, &["get", "pods"]);
    assert!(!out.status.success());
    assert!(
        text(&out).1.contains(&format!("pods is forbidden: User \"system:bootstrap:{id}\" cannot list resource \"pods\" in API group \"\" in the namespace \"default\"")),
        "{:?}",
        text(&out)
    );

    let (key, req) = key_and_request(&s.data_dir, "n1", "/O=system:nodes/CN=system:node:n1");
    let yaml = csr_yaml(
        "node-csr-n1",
        &req,
        "kubernetes.io/kube-apiserver-client-kubelet",
        &["digital signature", "client auth"],
        "",
    );
    let out = kubectl_stdin_with(&joiner, &["create", "-f", "-"], &yaml);
    assert!(out.status.success(), "{:?}", text(&out));
    let cert = s.data_dir.join("n1.crt");
    let issued = issued_certificate(&s, "node-csr-n1", &cert);
    assert_eq!(issued["spec"]["username"], format!("system:bootstrap:{id}"));
    let approved = &issued["status"]["conditions"][0];
    assert_eq!(approved["type"], "Approved");
    assert_eq!(approved["reason"], "AutoApproved");
    assert_eq!(
        approved["message"],
        "Auto approving kubelet client certificate after SubjectAccessReview."
    );
    // The joiner can read its own CSR back (system:node-bootstrapper).
    let out = kubectl_with(&joiner, &["get", "csr", "node-csr-n1"]);
    assert!(out.status.success(), "{:?}", text(&out));

    let node = cert_kubeconfig(&s, "n1", &cert, &key);
    let out = kubectl_with(&node, &["auth", "whoami"]);
    assert!(out.status.success(), "{:?}", text(&out));
    let who = text(&out).0;
    assert!(who.contains("system:node:n1"), "{who}");
    assert!(who.contains("system:nodes"), "{who}");

    // A node request the signer cannot honour (not a node's name) is approved by hand and fails.
    let (_, req) = key_and_request(&s.data_dir, "bad", "/O=system:nodes/CN=alice");
    let yaml = csr_yaml(
        "node-csr-bad",
        &req,
        "kubernetes.io/kube-apiserver-client-kubelet",
        &["digital signature", "client auth"],
        "",
    );
    assert!(kubectl_stdin_with(&joiner, &["create", "-f", "-"], &yaml)
        .status
        .success());
    s.kubectl_ok(&["certificate", "approve", "node-csr-bad"]);
    let failed = wait_for("node-csr-bad failed", Duration::from_secs(30), || {
        get_json(&s, &["csr", "node-csr-bad"]).filter(|c| {
            c.pointer("/status/conditions")
                .and_then(Value::as_array)
                .is_some_and(|l| l.iter().any(|c| c["type"] == "Failed"))
        })
    });
    let conds = failed["status"]["conditions"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let f = conds
        .iter()
        .find(|c| c["type"] == "Failed")
        .expect("Failed");
    assert_eq!(f["reason"], "SignerValidationFailure");
    assert_eq!(
        f["message"],
        "subject common name does not begin with system:node:"
    );
    assert!(failed["status"].get("certificate").is_none());
    assert_eq!(condition(&admin, "node-csr-bad"), "Approved,Failed");
}

#[test]
fn expired_unknown_and_foreign_credentials_are_401() {
    let s = Server::start();
    let unknown = token_kubeconfig(&s, "unknown", "abcdef.0123456789abcdef");
    let out = kubectl_with(&unknown, &["get", "pods"]);
    assert!(!out.status.success());
    assert!(
        text(&out)
            .1
            .contains("error: You must be logged in to the server"),
        "{:?}",
        text(&out)
    );

    let token = token_create(&s, "2s");
    let id = token.split('.').next().unwrap_or_default().to_string();
    let expiring = token_kubeconfig(&s, "expiring", &token);
    // Expired: 401; the token cleaner then deletes its Secret.
    wait_for("the token to expire", Duration::from_secs(20), || {
        let out = kubectl_with(&expiring, &["auth", "whoami"]);
        text(&out)
            .1
            .contains("error: You must be logged in to the server")
            .then_some(())
    });
    wait_for(
        "the cleaner to delete the token",
        Duration::from_secs(30),
        || {
            get_json(
                &s,
                &[
                    "secret",
                    "-n",
                    "kube-system",
                    &format!("bootstrap-token-{id}"),
                ],
            )
            .is_none()
            .then_some(())
        },
    );

    // A client certificate from a CA the cluster does not trust: a 401 Status, not a TLS
    // failure.
    let dir = &s.data_dir;
    let (ca_key, ca_crt) = (dir.join("other-ca.key"), dir.join("other-ca.crt"));
    openssl(&[
        "req",
        "-x509",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
        "-keyout",
        ca_key.to_str().unwrap(),
        "-subj",
        "/CN=other-ca",
        "-days",
        "1",
        "-out",
        ca_crt.to_str().unwrap(),
    ]);
    let (key, req) = key_and_request(dir, "outsider", "/CN=outsider/O=system:masters");
    let cert = dir.join("outsider.crt");
    // A v3 certificate (openssl's `x509 -req` writes v1 without extensions).
    let ext = dir.join("outsider.ext");
    std::fs::write(
        &ext,
        "basicConstraints=CA:FALSE\nextendedKeyUsage=clientAuth\n",
    )
    .expect("write");
    openssl(&[
        "x509",
        "-req",
        "-in",
        req.to_str().unwrap(),
        "-CA",
        ca_crt.to_str().unwrap(),
        "-CAkey",
        ca_key.to_str().unwrap(),
        "-CAcreateserial",
        "-days",
        "1",
        "-extfile",
        ext.to_str().unwrap(),
        "-out",
        cert.to_str().unwrap(),
    ]);
    let outsider = cert_kubeconfig(&s, "outsider", &cert, &key);
    let out = kubectl_with(&outsider, &["get", "pods"]);
    assert!(!out.status.success());
    assert!(
        text(&out)
            .1
            .contains("error: You must be logged in to the server"),
        "{:?}",
        text(&out)
    );
}

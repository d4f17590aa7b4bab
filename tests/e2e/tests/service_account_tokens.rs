//! Service-account tokens end to end: `kubectl create token` (TokenRequest), the token as a
//! credential (`auth whoami`, reads), revocation with its ServiceAccount or bound Pod,
//! TokenReview, and — with the node agent — a pod that calls the API with its projected token.

use std::path::PathBuf;
use std::process::{Command, Output};
use std::time::Duration;

use capstan_e2e::{apply, get_json, text, wait_for, Server};
use serde_json::Value;

/// `kubectl.1.27` beside the `kubectl` on the PATH (a dispatcher that picks a version).
fn kubectl_127() -> PathBuf {
    capstan_e2e::kubectl_versions_dir().join("kubectl.1.27")
}

/// kubectl with the kubeconfig's server and CA but `token` as the credential.
fn as_token(s: &Server, bin: &str, token: &str, args: &[&str]) -> Output {
    Command::new(bin)
        .env("KUBECONFIG", s.kubeconfig())
        .env(
            "KUBECACHEDIR",
            capstan_e2e::kubectl_cache_dir(&s.kubeconfig()),
        )
        .arg(format!("--token={token}"))
        .args(args)
        .output()
        .expect("run kubectl")
}

fn namespace_with_default_account(s: &Server, ns: &str) {
    s.kubectl_ok(&["create", "namespace", ns]);
    wait_for(
        "the default service account",
        Duration::from_secs(30),
        || get_json(s, &["serviceaccount", "default", "-n", ns]).map(|_| ()),
    );
}

/// Bind `view` in `ns` to its default service account.
fn view_in_namespace(s: &Server, ns: &str) {
    s.kubectl_ok(&[
        "create",
        "rolebinding",
        "default-view",
        "--clusterrole=view",
        &format!("--serviceaccount={ns}:default"),
        "-n",
        ns,
    ]);
}

fn create_token(s: &Server, ns: &str, extra: &[&str]) -> String {
    let mut args = vec!["create", "token", "default", "-n", ns];
    args.extend_from_slice(extra);
    let token = s.kubectl_ok(&args).trim().to_string();
    assert_eq!(token.split('.').count(), 3, "not a JWT: {token}");
    assert!(token.starts_with("eyJ"), "{token}");
    token
}

fn whoami(s: &Server, token: &str) -> Value {
    let out = as_token(s, "kubectl", token, &["auth", "whoami", "-o", "json"]);
    assert!(out.status.success(), "{:?}", text(&out));
    serde_json::from_slice(&out.stdout).expect("SelfSubjectReview JSON")
}

fn unauthorized(out: &Output) -> bool {
    !out.status.success() && text(out).1.contains("Unauthorized")
}

#[test]
fn a_created_token_is_the_service_account_until_it_is_deleted() {
    let s = Server::start();
    let ns = "tokens-sa";
    namespace_with_default_account(&s, ns);
    let token = create_token(&s, ns, &[]);
    let user = format!("system:serviceaccount:{ns}:default");

    let review = whoami(&s, &token);
    let info = &review["status"]["userInfo"];
    assert_eq!(info["username"], user.as_str(), "{review}");
    let uid =
        get_json(&s, &["serviceaccount", "default", "-n", ns]).unwrap()["metadata"]["uid"].clone();
    assert_eq!(info["uid"], uid, "{review}");
    let groups: Vec<&str> = info["groups"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert_eq!(
        groups,
        [
            "system:serviceaccounts",
            &format!("system:serviceaccounts:{ns}"),
            "system:authenticated"
        ]
    );
    assert!(
        info["extra"]["authentication.kubernetes.io/credential-id"][0]
            .as_str()
            .is_some_and(|c| c.starts_with("JTI=")),
        "{review}"
    );
    // The table form, from today's kubectl and from 1.27's (which asks v1beta1).
    for bin in ["kubectl".into(), kubectl_127().display().to_string()] {
        let out = as_token(&s, &bin, &token, &["auth", "whoami"]);
        let (stdout, stderr) = text(&out);
        assert!(out.status.success(), "{bin}: {stdout}{stderr}");
        assert!(stdout.contains(&user), "{bin}: {stdout}");
        assert!(stdout.contains("system:serviceaccounts"), "{bin}: {stdout}");
    }
    // The admin is k3s's.
    let admin =
        serde_json::from_str::<Value>(&s.kubectl_ok(&["auth", "whoami", "-o", "json"])).unwrap();
    assert_eq!(admin["status"]["userInfo"]["username"], "system:admin");
    assert_eq!(
        admin["status"]["userInfo"]["groups"],
        serde_json::json!(["system:masters", "system:authenticated"])
    );

    // RBAC: the account reads what its binding gives, nothing before.
    let out = as_token(&s, "kubectl", &token, &["get", "pods", "-n", ns]);
    assert!(text(&out).1.contains("Forbidden"), "{:?}", text(&out));
    view_in_namespace(&s, ns);
    let out = as_token(&s, "kubectl", &token, &["get", "pods", "-n", ns]);
    assert!(out.status.success(), "{:?}", text(&out));

    s.kubectl_ok(&["delete", "serviceaccount", "default", "-n", ns]);
    let out = as_token(&s, "kubectl", &token, &["get", "pods", "-n", ns]);
    assert!(unauthorized(&out), "{:?}", text(&out));
    s.kubectl_ok(&["delete", "namespace", ns, "--wait=false"]);
}

#[test]
fn a_pod_bound_token_ends_with_its_pod_and_bad_requests_name_the_field() {
    let s = Server::start();
    let ns = "tokens-pod";
    namespace_with_default_account(&s, ns);
    s.kubectl_ok(&[
        "run",
        "holder",
        "-n",
        ns,
        "--image=busybox",
        "--restart=Never",
    ]);
    let token = create_token(
        &s,
        ns,
        &[
            "--bound-object-kind",
            "Pod",
            "--bound-object-name",
            "holder",
        ],
    );
    let review = whoami(&s, &token);
    let pod_uid = get_json(&s, &["pod", "holder", "-n", ns]).unwrap()["metadata"]["uid"].clone();
    let extra = &review["status"]["userInfo"]["extra"];
    assert_eq!(
        extra["authentication.kubernetes.io/pod-name"][0], "holder",
        "{review}"
    );
    assert_eq!(
        extra["authentication.kubernetes.io/pod-uid"][0], pod_uid,
        "{review}"
    );

    s.kubectl_ok(&["delete", "pod", "holder", "-n", ns, "--wait=false"]);
    wait_for("the pod to go", Duration::from_secs(30), || {
        get_json(&s, &["pod", "holder", "-n", ns])
            .is_none()
            .then_some(())
    });
    let out = as_token(&s, "kubectl", &token, &["get", "pods", "-n", ns]);
    assert!(unauthorized(&out), "{:?}", text(&out));

    // A binding to a pod that is not there, and a lifetime under ten minutes.
    let out = s.kubectl(&[
        "create",
        "token",
        "default",
        "-n",
        ns,
        "--bound-object-kind",
        "Pod",
        "--bound-object-name",
        "absent",
    ]);
    assert!(
        text(&out).1.contains("pods \"absent\" not found"),
        "{:?}",
        text(&out)
    );
    let out = s.kubectl(&["create", "token", "default", "-n", ns, "--duration", "1m"]);
    let (_, stderr) = text(&out);
    assert!(!out.status.success());
    assert!(
        stderr.contains("spec.expirationSeconds: Invalid value: 60: may not specify a duration less than 10 minutes"),
        "{stderr}"
    );
    let out = s.kubectl(&["create", "token", "nobody", "-n", ns]);
    assert!(
        text(&out)
            .1
            .contains("serviceaccounts \"nobody\" not found"),
        "{:?}",
        text(&out)
    );
    s.kubectl_ok(&["delete", "namespace", ns, "--wait=false"]);
}

fn token_review(s: &Server, token: &str, audiences: &[&str]) -> Value {
    let review = serde_json::json!({
        "apiVersion": "authentication.k8s.io/v1",
        "kind": "TokenReview",
        "spec": {"token": token, "audiences": audiences},
    });
    let out = s.kubectl_stdin(&["create", "-f", "-", "-o", "json"], &review.to_string());
    assert!(out.status.success(), "{:?}", text(&out));
    serde_json::from_slice(&out.stdout).expect("TokenReview JSON")
}

#[test]
fn token_review_answers_for_audiences_and_discovery_lists_the_endpoints() {
    let s = Server::start();
    let ns = "tokens-review";
    namespace_with_default_account(&s, ns);
    let token = create_token(&s, ns, &["--duration", "15m"]);
    let review = token_review(&s, &token, &[]);
    assert_eq!(review["status"]["authenticated"], true, "{review}");
    assert_eq!(
        review["status"]["user"]["username"],
        format!("system:serviceaccount:{ns}:default"),
        "{review}"
    );
    assert_eq!(
        review["status"]["audiences"],
        serde_json::json!(["https://kubernetes.default.svc.cluster.local"])
    );

    // A token for another audience is no credential here, but a review for it passes.
    let vault = create_token(&s, ns, &["--audience", "vault"]);
    let out = as_token(&s, "kubectl", &vault, &["get", "pods", "-n", ns]);
    assert!(unauthorized(&out), "{:?}", text(&out));
    let review = token_review(&s, &vault, &["vault", "other"]);
    assert_eq!(review["status"]["authenticated"], true, "{review}");
    assert_eq!(review["status"]["audiences"], serde_json::json!(["vault"]));
    let review = token_review(&s, &vault, &[]);
    assert!(review["status"]["authenticated"].is_null(), "{review}");
    assert!(
        review["status"]["error"]
            .as_str()
            .is_some_and(|e| e.contains("audiences")),
        "{review}"
    );
    let review = token_review(&s, "eyJhbGciOiJFUzI1NiJ9.e30.c2ln", &[]);
    assert!(review["status"]["error"].is_string(), "{review}");

    let core: Value = serde_json::from_str(&s.kubectl_ok(&["get", "--raw", "/api/v1"])).unwrap();
    let token_sub = core["resources"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == "serviceaccounts/token")
        .cloned()
        .expect("serviceaccounts/token in discovery");
    assert_eq!(token_sub["verbs"], serde_json::json!(["create"]));
    assert_eq!(token_sub["kind"], "TokenRequest");
    assert_eq!(token_sub["group"], "authentication.k8s.io");
    let resources = s.kubectl_ok(&[
        "api-resources",
        "--api-group=authentication.k8s.io",
        "-o",
        "wide",
    ]);
    assert!(resources.contains("tokenreviews"), "{resources}");
    assert!(resources.contains("selfsubjectreviews"), "{resources}");
    let out = s.kubectl(&["get", "tokenreviews"]);
    assert!(!out.status.success(), "{:?}", text(&out));
    s.kubectl_ok(&["delete", "namespace", ns, "--wait=false"]);
}

#[test]
fn a_pod_calls_the_api_with_its_projected_token() {
    let s = Server::start_node(&[]);
    let ns = "tokens-agent";
    namespace_with_default_account(&s, ns);
    wait_for("the root CA ConfigMap", Duration::from_secs(30), || {
        get_json(&s, &["configmap", "kube-root-ca.crt", "-n", ns]).map(|_| ())
    });
    // An image with a real in-cluster client: busybox plus a static kubectl, imported while
    // the server runs. busybox's own `wget https://` cannot be the client: its TLS sends no
    // signature_algorithms extension, which rustls requires.
    let archive = capstan_e2e::test_images_dir().join("kubectl.tar");
    let imported = Command::new(capstan_e2e::capstan_bin())
        .args(["images", "import"])
        .arg(&archive)
        .arg("--data-dir")
        .arg(&s.data_dir)
        .output()
        .expect("capstan images import");
    assert!(imported.status.success(), "{:?}", text(&imported));
    view_in_namespace(&s, ns);
    let dir = "/var/run/secrets/kubernetes.io/serviceaccount";
    // kubectl in the pod finds no kubeconfig and so takes client-go's in-cluster config: the
    // projected token, ca.crt (the server's certificate verified against it, by the
    // ClusterIP it names) and namespace, and the API at KUBERNETES_SERVICE_HOST:PORT — the
    // `kubernetes` Service's ClusterIP, which the node's packet rules lead to the API server.
    let script = format!(
        "ls {dir}; echo ns=$(cat {dir}/namespace); head -n 1 {dir}/ca.crt; \
         echo host=$KUBERNETES_SERVICE_HOST; kubectl get pods -o name; kubectl auth whoami; \
         kubectl --server=https://kubernetes.default.svc --token=$(cat {dir}/token) \
         --certificate-authority={dir}/ca.crt get namespace {ns} -o name"
    );
    apply(
        &s,
        &format!(
            r#"
apiVersion: v1
kind: Pod
metadata:
  name: caller
  namespace: {ns}
spec:
  restartPolicy: Never
  containers:
  - name: caller
    image: capstan.test/kubectl:1.0
    env:
    - {{name: HOME, value: /tmp}}
    command: ["sh", "-c", {script:?}]
"#
        ),
    );
    let phase = wait_for("the caller pod to finish", Duration::from_secs(90), || {
        let p = get_json(&s, &["pod", "caller", "-n", ns])?;
        let phase = p["status"]["phase"].as_str()?.to_string();
        matches!(phase.as_str(), "Succeeded" | "Failed").then_some(phase)
    });
    let logs = s.kubectl_ok(&["logs", "caller", "-n", ns]);
    assert_eq!(phase, "Succeeded", "{logs}");
    for file in ["ca.crt", "namespace", "token"] {
        assert!(logs.lines().any(|l| l == file), "{file} missing: {logs}");
    }
    assert!(logs.contains(&format!("ns={ns}")), "{logs}");
    let cluster_ip = get_json(&s, &["service", "kubernetes", "-n", "default"])
        .and_then(|svc| svc["spec"]["clusterIP"].as_str().map(str::to_string))
        .expect("the kubernetes Service's ClusterIP");
    assert!(logs.contains(&format!("host={cluster_ip}")), "{logs}");
    assert!(logs.contains("-----BEGIN CERTIFICATE-----"), "{logs}");
    // By name too: the cluster DNS resolves kubernetes.default.svc (through the search path)
    // to the ClusterIP, and the server's certificate names it.
    assert!(
        logs.lines().any(|l| l == format!("namespace/{ns}")),
        "{logs}"
    );
    // The pod listed itself through the API, as its service account, in its namespace.
    assert!(logs.lines().any(|l| l == "pod/caller"), "{logs}");
    assert!(
        logs.contains(&format!("system:serviceaccount:{ns}:default")),
        "{logs}"
    );
    // Its token is bound to it: the authenticator says which pod holds it.
    assert!(
        logs.lines()
            .any(|l| l.contains("authentication.kubernetes.io/pod-name") && l.contains("[caller]")),
        "{logs}"
    );
    s.kubectl_ok(&["delete", "namespace", ns, "--wait=false"]);
}

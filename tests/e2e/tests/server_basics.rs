//! The server's front door, through the real kubectl: version, health, authentication,
//! and a stable identity (CA, token) across restarts.

use capstan_e2e::Server;

#[test]
fn kubectl_version_reports_1_33() {
    let s = Server::start();
    let out = s.kubectl_ok(&["version", "-o", "json"]);
    assert!(out.contains("\"serverVersion\""), "{out}");
    let server = &out[out.find("\"serverVersion\"").unwrap()..];
    assert!(server.contains("\"minor\": \"33\""), "{server}");
    assert!(server.contains("\"gitVersion\": \"v1.33."), "{server}");
}

#[test]
fn health_endpoints_answer_ok() {
    let s = Server::start();
    for path in ["/readyz", "/livez", "/healthz"] {
        assert_eq!(s.kubectl_ok(&["get", "--raw", path]).trim(), "ok", "{path}");
    }
}

#[test]
fn wrong_token_is_refused_with_401() {
    let s = Server::start();
    let out = s.kubectl(&[
        "--token",
        "not-the-token",
        "get",
        "--raw",
        "/api/v1/namespaces",
    ]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("Unauthorized"),
        "kubectl should report Unauthorized, got: {err}"
    );
}

#[test]
fn unknown_path_is_a_404_status() {
    let s = Server::start();
    let out = s.kubectl(&["get", "--raw", "/apis/no.such.group/v1/things"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("NotFound") || err.contains("could not find the requested resource"),
        "{err}"
    );
}

#[test]
fn restart_keeps_the_cluster_identity() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().to_path_buf();
    let mut first = Server::start_in(&data, 0);
    let port = first.port;
    assert_eq!(first.kubectl_ok(&["get", "--raw", "/readyz"]).trim(), "ok");
    first.kill();
    let kubeconfig_before = std::fs::read_to_string(first.kubeconfig()).unwrap();
    let second = Server::start_in(&data, port);
    let kubeconfig_after = std::fs::read_to_string(second.kubeconfig()).unwrap();
    assert_eq!(
        kubeconfig_before, kubeconfig_after,
        "CA and token must survive a restart"
    );
    assert_eq!(second.kubectl_ok(&["get", "--raw", "/readyz"]).trim(), "ok");
    eprintln!("startup to serving: {:?}", second.startup);
}

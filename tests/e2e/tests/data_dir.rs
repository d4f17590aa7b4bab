//! The data directory as a user meets it: one server at a time, private files, a serving
//! certificate for every name given with --tls-san, and a kubeconfig whose other entries
//! survive restarts.

use std::os::unix::fs::PermissionsExt;
use std::process::Command;

use capstan_e2e::{capstan_bin, text, Server};

fn mode(path: &std::path::Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[test]
fn a_second_server_on_the_same_data_dir_refuses_at_once() {
    let first = Server::start();
    let out = Command::new(capstan_bin())
        .args(["server", "--data-dir"])
        .arg(&first.data_dir)
        .args(["--listen", "127.0.0.1:0"])
        .output()
        .expect("run a second capstan");
    let (stdout, stderr) = text(&out);
    assert!(!out.status.success(), "the second server must not start");
    assert!(stdout.is_empty(), "no KUBECONFIG line: {stdout}");
    let pid = first.pid().unwrap().to_string();
    assert!(
        stderr.contains("is in use by another capstan server") && stderr.contains(&pid),
        "{stderr}"
    );
    // The first one is untouched and keeps serving writes.
    first.kubectl_ok(&["create", "configmap", "still-mine"]);
}

#[test]
fn the_data_dir_and_its_files_are_private_even_when_they_were_not() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    {
        let s = Server::start_in(&data, 0);
        s.kubectl_ok(&["create", "secret", "generic", "s", "--from-literal=k=v"]);
    }
    // As an older capstan left it: world-readable.
    std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o755)).unwrap();
    for f in ["store.db", "admin-token", "kubeconfig"] {
        std::fs::set_permissions(data.join(f), std::fs::Permissions::from_mode(0o644)).unwrap();
    }
    let s = Server::start_in(&data, 0);
    s.kubectl_ok(&["get", "secret", "s"]);
    assert_eq!(mode(&data), 0o700);
    assert_eq!(mode(&data.join("pki")), 0o700);
    let mut seen = Vec::new();
    for dir in [data.clone(), data.join("pki")] {
        for e in std::fs::read_dir(&dir).unwrap() {
            let e = e.unwrap();
            if e.file_type().unwrap().is_file() {
                assert_eq!(mode(&e.path()), 0o600, "{}", e.path().display());
                seen.push(e.file_name().to_string_lossy().into_owned());
            }
        }
    }
    for f in [
        "store.db",
        "store.db-wal",
        "admin-token",
        "kubeconfig",
        "ca.key",
        "server.key",
    ] {
        assert!(seen.iter().any(|s| s == f), "{f} missing from {seen:?}");
    }
}

#[test]
fn tls_san_names_are_verified_by_kubectl_and_re_issued_when_they_change() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let by_name = |s: &Server, name: &str| {
        Command::new("kubectl")
            .env("KUBECONFIG", s.kubeconfig())
            .args(["--tls-server-name", name, "get", "--raw", "/version"])
            .output()
            .unwrap()
    };
    let first = Server::start_in(&data, 0);
    let out = by_name(&first, "api.capstan.test");
    assert!(!out.status.success(), "no such name yet");
    let (_, err) = text(&out);
    assert!(err.contains("certificate"), "{err}");
    let ca_before = std::fs::read(data.join("pki/ca.crt")).unwrap();
    drop(first);
    let second = Server::start_with_args(
        &data,
        &["--tls-san", "api.capstan.test", "--tls-san", "10.11.12.13"],
    );
    let out = by_name(&second, "api.capstan.test");
    assert!(out.status.success(), "{:?}", text(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("gitVersion"));
    // The same CA signed it: kubeconfigs handed out before keep working.
    assert_eq!(std::fs::read(data.join("pki/ca.crt")).unwrap(), ca_before);
    second.kubectl_ok(&["get", "namespaces"]);
}

#[test]
fn the_kubeconfig_keeps_a_users_entries_and_names_each_server_apart() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (dir.path().join("a"), dir.path().join("b"));
    let first = Server::start_in(&a, 0);
    let other = Server::start_in(&b, 0);
    // A user adds a context of their own to the file capstan wrote.
    first.kubectl_ok(&[
        "config",
        "set-context",
        "mine",
        "--cluster",
        "elsewhere",
        "--namespace",
        "team",
    ]);
    let port = first.port;
    let mut first = first;
    first.kill();
    let first = Server::start_in(&a, port);
    let contexts = first.kubectl_ok(&["config", "get-contexts", "-o", "name"]);
    assert!(contexts.lines().any(|l| l == "mine"), "{contexts}");
    first.kubectl_ok(&["get", "namespaces"]);
    // Two servers' kubeconfigs merge without one shadowing the other.
    let merged = format!(
        "{}:{}",
        first.kubeconfig().display(),
        other.kubeconfig().display()
    );
    let out = Command::new("kubectl")
        .env("KUBECONFIG", &merged)
        .args(["config", "get-contexts", "-o", "name"])
        .output()
        .unwrap();
    let names = String::from_utf8_lossy(&out.stdout).into_owned();
    let capstans: Vec<&str> = names
        .lines()
        .filter(|l| l.starts_with("capstan-"))
        .collect();
    assert_eq!(capstans.len(), 2, "{names}");
    for ctx in capstans {
        let out = Command::new("kubectl")
            .env("KUBECONFIG", &merged)
            .args(["--context", ctx, "get", "--raw", "/readyz"])
            .output()
            .unwrap();
        assert!(out.status.success(), "{ctx}: {:?}", text(&out));
    }
    // The path printed is absolute.
    assert!(first.kubeconfig().is_absolute());
}

#[test]
fn sigterm_stops_the_server_quickly_keeping_its_writes_and_freeing_the_data_dir() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let s = Server::start_in(&data, 0);
    s.kubectl_ok(&["create", "configmap", "kept", "--from-literal=k=v"]);
    let pid = s.pid().unwrap();
    let sent = std::time::Instant::now();
    let kill = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    // Exited (a zombie until the harness reaps it) well within two seconds.
    let exited = || {
        std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .map(|st| {
                st.split(") ")
                    .nth(1)
                    .is_some_and(|rest| rest.starts_with('Z'))
            })
            .unwrap_or(true)
    };
    while !exited() {
        assert!(
            sent.elapsed() < std::time::Duration::from_secs(5),
            "still running after SIGTERM"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let took = sent.elapsed();
    drop(s);
    assert!(took < std::time::Duration::from_secs(2), "took {took:?}");
    // The lock went with it, and the write is there.
    let again = Server::start_in(&data, 0);
    let out = again.kubectl_ok(&["get", "configmap", "kept", "-o", "jsonpath={.data.k}"]);
    assert_eq!(out, "v");
}

/// SIGTERM is an expected stop, not a failure: the in-process loops' reads that the shutdown
/// cancels are the store closing (503), and nothing is logged as ERROR (every watch's
/// pending read was an ERROR 500 before).
#[test]
fn sigterm_with_loops_watching_logs_no_errors() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let stderr = std::fs::File::create(dir.path().join("stderr")).unwrap();
    let mut child = Command::new(capstan_bin())
        .args(["server", "--data-dir"])
        .arg(&data)
        .args([
            "--listen",
            "127.0.0.1:0",
            "--no-agent",
            "--simulated-nodes",
            "2",
        ])
        .stdout(std::process::Stdio::null())
        .stderr(stderr)
        .spawn()
        .unwrap();
    let kubeconfig = data.join("kubeconfig");
    capstan_e2e::wait_for(
        "2 Ready simulated nodes",
        std::time::Duration::from_secs(30),
        || {
            if !kubeconfig.exists() {
                return None;
            }
            let out = capstan_e2e::kubectl_command(&kubeconfig)
                .args(["get", "nodes", "--no-headers"])
                .output()
                .unwrap();
            let (stdout, _) = text(&out);
            (stdout.lines().filter(|l| l.contains(" Ready ")).count() == 2).then_some(())
        },
    );
    let kill = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    let status = child.wait().unwrap();
    assert!(status.success(), "{status:?}");
    let log = std::fs::read_to_string(dir.path().join("stderr")).unwrap();
    let errors: Vec<&str> = log.lines().filter(|l| l.contains(" ERROR ")).collect();
    assert!(
        errors.is_empty(),
        "{} ERROR lines: {errors:#?}",
        errors.len()
    );
}

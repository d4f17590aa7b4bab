//! What large CRDs cost the server in memory: ten of them (benches/crd_memory.py's, about
//! 0.4 MB of JSON and four versions each) installed, used and deleted, RSS bounded throughout.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use capstan_e2e::{text, Server};

const CRDS: usize = 10;
/// Generous bounds (the figures measured are in the README): before schemas were kept in
/// one compact form the same CRDs cost over 300 MiB. What stays after deletion is mostly
/// fixed-size caches that fill with whatever was written last (SQLite's page cache, the
/// watch hub's ring of recent events), not the CRDs' schemas.
const INSTALLED_MIB: u64 = 100;
const AFTER_DELETE_MIB: u64 = 60;

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .expect("VmRSS")
}

fn generate(dir: &Path) -> Vec<PathBuf> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../benches/crd_memory.py");
    let out = Command::new("python3")
        .arg(&script)
        .args(["--crds", &CRDS.to_string(), "--emit"])
        .arg(dir)
        .output()
        .expect("run the CRD generator");
    assert!(out.status.success(), "generator: {:?}", text(&out));
    (0..CRDS)
        .map(|i| dir.join(format!("crd-{i}.json")))
        .collect()
}

fn until(what: &str, within: Duration, mut pred: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !pred() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn ten_large_crds_cost_bounded_memory_and_give_it_back() {
    let s = Server::start();
    let pid = s.pid().expect("server pid");
    let dir = tempfile::tempdir().expect("tempdir");
    let crds = generate(dir.path());
    let size: u64 = crds
        .iter()
        .map(|p| std::fs::metadata(p).expect("crd file").len())
        .sum();
    assert!(size > 3_000_000, "the CRDs are large ({size} bytes)");

    // Idle, with the built-in OpenAPI built (as any kubectl apply makes it).
    s.kubectl_ok(&["get", "--raw", "/openapi/v2"]);
    let idle = rss_kib(pid);

    for (i, p) in crds.iter().enumerate() {
        let out = s.kubectl_ok(&["create", "-f", p.to_str().expect("path")]);
        assert_eq!(
            out.trim(),
            format!(
                "customresourcedefinition.apiextensions.k8s.io/loads.load{i}.capstan.test created"
            )
        );
    }
    for i in 0..CRDS {
        let cr = format!(
            r#"{{"apiVersion": "load{i}.capstan.test/v1", "kind": "Load", "metadata": {{"name": "one", "namespace": "default"}}, "spec": {{}}}}"#
        );
        until(
            &format!("a Load in load{i}"),
            Duration::from_secs(30),
            || {
                s.kubectl_stdin(&["create", "-f", "-"], &cr)
                    .status
                    .success()
            },
        );
        let doc = s.kubectl_ok(&[
            "get",
            "--raw",
            &format!("/openapi/v3/apis/load{i}.capstan.test/v1"),
        ]);
        assert!(
            doc.contains(&format!("test.capstan.load{i}.v1.Load")),
            "no Load schema"
        );
    }
    let v2 = s.kubectl_ok(&["get", "--raw", "/openapi/v2"]);
    assert!(
        v2.contains("test.capstan.load9.v1alpha1.Load"),
        "every version in /openapi/v2"
    );
    // The heap is trimmed every few seconds: what the CRDs hold is what stays after that.
    within_bound(pid, idle, INSTALLED_MIB, "with the CRDs installed and used");

    for i in 0..CRDS {
        s.kubectl_ok(&["delete", "crd", &format!("loads.load{i}.capstan.test")]);
    }
    until("the CRDs to go", Duration::from_secs(60), || {
        s.kubectl_ok(&["get", "crd", "-o", "name"])
            .trim()
            .is_empty()
    });
    let v2 = s.kubectl_ok(&["get", "--raw", "/openapi/v2"]);
    assert!(
        !v2.contains("capstan.test"),
        "deleted CRDs left in /openapi/v2"
    );
    within_bound(pid, idle, AFTER_DELETE_MIB, "after deleting the CRDs");
}

/// Wait (30 s at most) for the server's RSS to be within `bound_mib` of `idle_kib`.
fn within_bound(pid: u32, idle_kib: u64, bound_mib: u64, when: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let now = rss_kib(pid);
        let over_mib = now.saturating_sub(idle_kib) / 1024;
        if over_mib <= bound_mib {
            eprintln!(
                "RSS {when}: {} MiB (idle {} MiB)",
                now / 1024,
                idle_kib / 1024
            );
            return;
        }
        assert!(
            Instant::now() < deadline,
            "RSS {when}: {} MiB, {over_mib} MiB over idle ({} MiB); bound {bound_mib} MiB",
            now / 1024,
            idle_kib / 1024
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}

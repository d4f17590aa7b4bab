//! What large CRDs cost the server in memory: ten of them (benches/crd_memory.py's, about
//! 0.4 MB of JSON and four versions each) installed, used and deleted, RSS bounded throughout.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use capstan_e2e::{text, Server};

const CRDS: usize = 10;
/// Generous bounds (the figure measured is in the README): before schemas were kept in one
/// compact form the same CRDs cost over 300 MiB, and deleting them returned little.
const INSTALLED_MIB: u64 = 100;
const AFTER_DELETE_MIB: u64 = 40;

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
    let installed = rss_kib(pid);
    let used_mib = installed.saturating_sub(idle) / 1024;
    eprintln!(
        "RSS idle {} MiB, with {CRDS} CRDs ({size} bytes) {} MiB: +{used_mib} MiB",
        idle / 1024,
        installed / 1024
    );
    assert!(
        used_mib <= INSTALLED_MIB,
        "{CRDS} CRDs of {size} bytes cost {used_mib} MiB (idle {} MiB)",
        idle / 1024
    );

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
    // The heap is trimmed every few seconds; wait for what the CRDs held to go back.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let now = rss_kib(pid);
        let kept_mib = now.saturating_sub(idle) / 1024;
        if kept_mib <= AFTER_DELETE_MIB {
            eprintln!("RSS after deleting them {} MiB", now / 1024);
            break;
        }
        assert!(
            Instant::now() < deadline,
            "deleted CRDs still hold {kept_mib} MiB (RSS {} MiB, idle {} MiB)",
            now / 1024,
            idle / 1024
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}

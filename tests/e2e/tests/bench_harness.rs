//! `capstan bench` against a freshly started capstan, in quick mode: every scenario runs,
//! its consistency checks (no lost update, no missed or duplicated watch event, complete
//! lists) pass, the JSON has the figures, and the tool cleans up its namespace.

use std::process::Command;
use std::time::{Duration, Instant};

use capstan_e2e::{capstan_bin, text, Server};

fn bench(server: &Server, args: &[&str]) -> std::process::Output {
    Command::new(capstan_bin())
        .arg("bench")
        .arg("--kubeconfig")
        .arg(server.kubeconfig())
        .args(args)
        .output()
        .expect("run capstan bench")
}

#[test]
fn quick_bench_runs_every_scenario_and_its_checks_pass() {
    let server = Server::start();
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("run.json");
    let out = bench(&server, &["--quick", "--json", json.to_str().unwrap()]);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "bench failed:\n{stdout}\n{stderr}");
    assert!(stdout.contains("SCENARIO"), "{stdout}");
    assert!(!stdout.contains("FAILED"), "{stdout}");
    assert!(stdout.contains("bench's own CPU:"), "{stdout}");

    let report: serde_json::Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    assert_eq!(report["ok"], true);
    assert!(report["server_version"]
        .as_str()
        .unwrap()
        .starts_with("v1."));
    let cases = report["cases"].as_array().unwrap();
    let case = |scenario: &str, case: &str| {
        cases
            .iter()
            .find(|c| c["scenario"] == scenario && c["case"] == case)
            .unwrap_or_else(|| panic!("no case {scenario}/{case} in {cases:#?}"))
    };
    let create = case("create", "configmap-1KiB c=4");
    assert_eq!(create["count"], 200);
    assert!(create["per_second"].as_f64().unwrap() > 0.0);
    let lat = &create["latency_ms"];
    assert_eq!(lat["samples"], 200);
    let (min, p50, p99, max) = (
        lat["min_ms"].as_f64().unwrap(),
        lat["p50_ms"].as_f64().unwrap(),
        lat["p99_ms"].as_f64().unwrap(),
        lat["max_ms"].as_f64().unwrap(),
    );
    assert!(0.0 < min && min <= p50 && p50 <= p99 && p99 <= max, "{lat}");
    assert_eq!(case("get", "random c=4")["count"], 200);
    // 200 objects in pages of 50: the paged variants follow continue tokens to the end.
    // (Plus the kube-root-ca.crt the root-CA publisher puts in every namespace, as upstream.)
    let paged = case("list", "limit=50 rv=unset");
    let items = paged["figures"]["items"].as_f64().unwrap();
    let pages = paged["figures"]["pages"].as_f64().unwrap();
    assert!(items == 200.0 || items == 201.0, "{paged}");
    assert!(pages == 4.0 || pages == 5.0, "{paged}");
    assert_eq!(case("list", "all rv=0")["figures"]["pages"], 1.0);
    assert!(
        case("list", "all rv=unset")["figures"]["bytes"]
            .as_f64()
            .unwrap()
            > 200.0 * 1000.0
    );
    let contention = case("update-contention", "one object c=4");
    assert_eq!(contention["count"], 200);
    let fanout = case("watch-fanout", "watchers=50 events=50");
    assert_eq!(fanout["count"], 2500);
    assert_eq!(fanout["figures"]["missed"], 0.0);
    assert_eq!(fanout["figures"]["duplicated"], 0.0);
    assert_eq!(case("watch-fanout", "from request sent")["count"], 2500);
    let startup = case("startup", "empty data dir -> readyz");
    assert_eq!(startup["count"], 2);
    assert!(startup["latency_ms"]["max_ms"].as_f64().unwrap() < 10_000.0);
    let rss = &case("startup", "server RSS")["figures"];
    assert!(rss["idle_kib"].as_f64().unwrap() > 1000.0, "{rss}");
    assert!(
        rss["after_create_200_kib"].as_f64().unwrap() > 1000.0,
        "{rss}"
    );

    let checks = report["checks"].as_array().unwrap();
    for name in [
        "no lost update",
        "every event exactly once",
        "limit=50 rv=0",
    ] {
        let c = checks
            .iter()
            .find(|c| c["name"] == name)
            .unwrap_or_else(|| panic!("no check {name}: {checks:#?}"));
        assert_eq!(c["ok"], true, "{c}");
    }
    assert!(report["bench_cpu_seconds"].as_f64().unwrap() > 0.0);

    // The tool's namespace goes away with everything in it.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let ns = server.kubectl_ok(&["get", "namespaces", "-o", "name"]);
        if !ns.contains("capstan-bench-") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "bench namespace left behind:\n{ns}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }

    // A second run compares itself with the first, scenario by scenario.
    let out = bench(
        &server,
        &[
            "--quick",
            "--scenario",
            "get",
            "--compare",
            json.to_str().unwrap(),
        ],
    );
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(stdout.contains("before→after"), "{stdout}");
    assert!(
        stdout
            .lines()
            .any(|l| l.starts_with("get ") && l.contains("random c=4") && l.contains('→')),
        "{stdout}"
    );
}

#[test]
fn bench_refuses_bad_credentials_and_unknown_scenarios() {
    let server = Server::start();
    let out = bench(&server, &["--scenario", "nope"]);
    let (_, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("watch-fanout"),
        "lists the scenarios: {stderr}"
    );

    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("kubeconfig");
    let kc = std::fs::read_to_string(server.kubeconfig()).unwrap();
    let kc: String = kc
        .lines()
        .map(|l| {
            if l.trim_start().starts_with("token:") {
                "    token: not-the-token".to_string()
            } else {
                l.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join("\n");
    std::fs::write(&bad, kc).unwrap();
    let out = Command::new(capstan_bin())
        .args(["bench", "--quick", "--scenario", "create", "--kubeconfig"])
        .arg(&bad)
        .output()
        .unwrap();
    let (_, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("401"), "names the refusal: {stderr}");
}

/// `schedule` needs nodes and a scheduler: it is left out of "every scenario" and, named on a
/// server with no nodes, says what it needs instead of waiting for pods that cannot run.
#[test]
fn the_schedule_scenario_runs_only_when_named_and_needs_nodes() {
    let server = Server::start();
    let out = bench(&server, &["--quick", "--scenario", "schedule"]);
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(2), "{stdout}{stderr}");
    assert!(stderr.contains("schedule needs Ready nodes"), "{stderr}");
    let help = Command::new(capstan_bin())
        .args(["bench", "--help"])
        .output()
        .unwrap();
    assert!(
        text(&help).0.contains("every scenario but schedule"),
        "{:?}",
        text(&help)
    );
}

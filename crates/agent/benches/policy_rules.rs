//! Figure printer for NetworkPolicy rule updates (not a timed test): 100 policies × 100 pods
//! programmed into a scratch nftables table, then one pod relabelled and one policy added and
//! removed at a time. Needs root and `nft`; `POLICY_RULES_BENCH_POLICIES=N` and
//! `POLICY_RULES_BENCH_PODS=N` change the counts.

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use capstan_agent::netfilter::network_policy::{
    remove_table, NamedPort, Objects, PodInfo, PolicyTable,
};
use capstan_agent::netfilter::Protocol;

fn count(var: &str, default: usize) -> usize {
    std::env::var(var)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn pod(j: usize, role: usize) -> PodInfo {
    PodInfo {
        ip: Ipv4Addr::from(0x0ac8_0000 + j as u32 + 2),
        labels: [
            ("app".to_string(), format!("a{}", j % 10)),
            ("role".to_string(), format!("r{role}")),
        ]
        .into(),
        local: true,
        ports: vec![NamedPort {
            name: "http".into(),
            protocol: Protocol::Tcp,
            port: 8080,
        }],
    }
}

fn policy(i: usize) -> k8s_openapi::api::networking::v1::NetworkPolicySpec {
    serde_json::from_value(serde_json::json!({
        "podSelector": {"matchLabels": {"app": format!("a{}", i % 10)}},
        "ingress": [{"from": [{"podSelector": {"matchLabels": {"role": format!("r{}", i % 5)}}},
                              {"ipBlock": {"cidr": "192.168.0.0/16", "except": ["192.168.1.0/24"]}}],
                     "ports": [{"port": 80}, {"port": "http"}, {"port": 9000, "endPort": 9100}]}],
        "egress": [{"to": [{"namespaceSelector": {}}], "ports": [{"port": 53, "protocol": "UDP"}]}]
    }))
    .expect("policy")
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn summary(mut times: Vec<Duration>) -> String {
    times.sort();
    format!(
        "p50 {:.1} ms, max {:.1} ms ({} runs)",
        ms(times[times.len() / 2]),
        ms(times[times.len() - 1]),
        times.len()
    )
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let policies = count("POLICY_RULES_BENCH_POLICIES", 100);
    let pods = count("POLICY_RULES_BENCH_PODS", 100);
    let instance = format!("bench{}", std::process::id());
    let mut table = match PolicyTable::create(&instance).await {
        Ok(t) => t,
        Err(e) => {
            println!("policy_rules: no nftables here ({e}); nothing measured");
            return;
        }
    };
    let mut objects = Objects::default();
    objects
        .namespaces
        .insert("bench".into(), Default::default());
    let ns = objects.pods.entry("bench".into()).or_default();
    for j in 0..pods {
        ns.insert(format!("pod-{j}"), pod(j, j % 5));
    }
    for i in 0..policies {
        objects
            .policies
            .insert(("bench".into(), format!("policy-{i}")), policy(i));
    }

    let started = Instant::now();
    let desired = objects.desired();
    let computed = started.elapsed();
    let result = table.update(desired).await;
    let total = started.elapsed();
    let lines = match result {
        Ok(l) => l,
        Err(e) => {
            let _ = remove_table(&instance).await;
            panic!("full program rejected: {e}");
        }
    };
    println!(
        "policy_rules: full program of {policies} policies x {pods} pods: {lines} script lines, compute {:.1} ms, total {:.1} ms",
        ms(computed),
        ms(total)
    );

    // One pod's role label changes: it leaves some peer sets and joins others.
    let mut times = Vec::new();
    let mut lines = 0;
    for round in 0..20usize {
        let j = (round * 7) % pods;
        let started = Instant::now();
        if let Some(p) = objects
            .pods
            .get_mut("bench")
            .and_then(|p| p.get_mut(&format!("pod-{j}")))
        {
            *p = pod(j, (j + round + 1) % 5);
        }
        let result = table.update(objects.desired()).await;
        times.push(started.elapsed());
        match result {
            Ok(l) => lines = lines.max(l),
            Err(e) => {
                let _ = remove_table(&instance).await;
                panic!("relabel update rejected: {e}");
            }
        }
    }
    println!(
        "policy_rules: one pod relabelled among {pods} under {policies} policies: up to {lines} script lines, {}",
        summary(times)
    );

    // One policy more, then gone again.
    let mut times = Vec::new();
    for round in 0..10usize {
        let key = ("bench".to_string(), format!("extra-{round}"));
        let started = Instant::now();
        objects.policies.insert(key.clone(), policy(round));
        let added = table.update(objects.desired()).await;
        times.push(started.elapsed());
        objects.policies.remove(&key);
        let removed = table.update(objects.desired()).await;
        if let Err(e) = added.and(removed) {
            let _ = remove_table(&instance).await;
            panic!("policy update rejected: {e}");
        }
    }
    println!(
        "policy_rules: one policy added among {policies}: {}",
        summary(times)
    );
    if let Err(e) = remove_table(&instance).await {
        println!("policy_rules: removing the scratch table failed: {e}");
    }
}

//! Figure printer for the Service proxy's rule updates (not a timed test): 1,000 Services ×
//! 10 endpoints programmed into a scratch nftables table at once, then one Service's
//! endpoints changed at a time. Needs root and `nft`; `SERVICE_RULES_BENCH_SERVICES=N`
//! changes the count.

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use capstan_agent::netfilter::service_proxy::{port_rules, proxied_ports, script, Change};
use capstan_agent::netfilter::{remove_table, Netfilter};
use capstan_agent::network::Cidr;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;

fn service(i: u32) -> Service {
    let ip = Ipv4Addr::from(0x0a60_0000 + 10 + i);
    serde_json::from_value(serde_json::json!({
        "metadata": {"name": format!("svc-{i}"), "namespace": "bench"},
        "spec": {"type": "NodePort", "clusterIP": ip.to_string(),
                 "ports": [{"name": "http", "port": 80, "targetPort": 8080, "nodePort": 30000 + i}]}
    }))
    .expect("service")
}

/// Endpoints of Service `i`, the `generation`-th variant (the last address moves).
fn slice(i: u32, endpoints: u32, generation: u32) -> EndpointSlice {
    let eps: Vec<serde_json::Value> = (0..endpoints)
        .map(|e| {
            let n = if e + 1 == endpoints { e + generation } else { e };
            let ip = Ipv4Addr::from(0x0a80_0000 + i * 64 + n);
            serde_json::json!({"addresses": [ip.to_string()], "conditions": {"ready": true}, "nodeName": "n"})
        })
        .collect();
    serde_json::from_value(serde_json::json!({
        "metadata": {"name": format!("svc-{i}-x"), "namespace": "bench",
                     "labels": {"kubernetes.io/service-name": format!("svc-{i}")}},
        "addressType": "IPv4",
        "endpoints": eps,
        "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}]
    }))
    .expect("slice")
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let services: u32 = std::env::var("SERVICE_RULES_BENCH_SERVICES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000);
    let endpoints = 10;
    let instance = format!("bench{}", std::process::id());
    let cidr = Cidr::parse("10.199.0.0/24").expect("cidr");
    let nf = match Netfilter::open(&instance, "capbenchnone", cidr).await {
        Ok(n) => n,
        Err(e) => {
            println!("service_rules: no nftables here ({e}); nothing measured");
            return;
        }
    };

    let started = Instant::now();
    let objects: Vec<(Service, EndpointSlice)> = (0..services)
        .map(|i| (service(i), slice(i, endpoints, 0)))
        .collect();
    let rules: Vec<_> = objects
        .iter()
        .flat_map(|(svc, sl)| proxied_ports(svc, [sl], "n"))
        .map(|p| port_rules(&p))
        .collect();
    let changes: Vec<Change<'_>> = rules
        .iter()
        .map(|r| Change {
            old: None,
            new: Some(r),
        })
        .collect();
    let full = script(nf.table(), &changes);
    let rendered = started.elapsed();
    let applied = Instant::now();
    let result = nf.apply_services(&full).await;
    let full_apply = applied.elapsed();
    if let Err(e) = result {
        let _ = remove_table(&instance).await;
        panic!("full program rejected: {e}");
    }
    println!(
        "service_rules: full program of {services} Services x {endpoints} endpoints: {} script lines, render {:.1} ms, nft apply {:.1} ms",
        full.lines().count(),
        ms(rendered),
        ms(full_apply)
    );

    // One Service's endpoints change (one endpoint replaced), 20 times over Services.
    let mut times = Vec::new();
    let mut lines = 0;
    for round in 0..20u32 {
        let i = (round * 37) % services;
        let started = Instant::now();
        let (svc, _) = &objects[i as usize];
        let new_slice = slice(i, endpoints, round + 1);
        let new_rules: Vec<_> = proxied_ports(svc, [&new_slice], "n")
            .iter()
            .map(port_rules)
            .collect();
        // The previous variant of this Service is what the table holds.
        let old_slice = slice(i, endpoints, previous_generation(i, round, services));
        let old_rules: Vec<_> = proxied_ports(svc, [&old_slice], "n")
            .iter()
            .map(port_rules)
            .collect();
        let change = [Change {
            old: old_rules.first(),
            new: new_rules.first(),
        }];
        let text = script(nf.table(), &change);
        lines = text.lines().count();
        let result = nf.apply_services(&text).await;
        times.push(started.elapsed());
        if let Err(e) = result {
            let _ = remove_table(&instance).await;
            panic!("incremental update rejected: {e}");
        }
    }
    times.sort();
    println!(
        "service_rules: one Service's endpoint replaced among {services}: {lines} script lines, p50 {:.1} ms, max {:.1} ms (render + nft apply, 20 runs)",
        ms(times[times.len() / 2]),
        ms(times[times.len() - 1])
    );
    if let Err(e) = remove_table(&instance).await {
        println!("service_rules: removing the scratch table failed: {e}");
    }
}

/// The generation Service `i` was last programmed with before `round`.
fn previous_generation(i: u32, round: u32, services: u32) -> u32 {
    (0..round)
        .rev()
        .find(|r| (r * 37) % services == i)
        .map(|r| r + 1)
        .unwrap_or(0)
}

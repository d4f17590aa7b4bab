//! Figure printer for response encoding (not a timed test): a list of 1,000 realistic pods
//! written as JSON and as protobuf (the `k8s\0` envelope), size and time per list.
//! `RESPONSE_ENCODING_BENCH_PODS=N` changes the count.

use std::time::{Duration, Instant};

use capstan_apiserver::encoding::protobuf_encode::encode;
use serde_json::{json, Value};

fn pod(i: usize) -> Value {
    json!({
        "metadata": {"name": format!("web-{i}"), "namespace": "bench", "uid": format!("00000000-0000-0000-0000-{i:012}"),
            "resourceVersion": (1000 + i).to_string(), "creationTimestamp": "2026-01-02T03:04:05Z",
            "labels": {"app": "web", "pod-template-hash": "5d4f8c"},
            "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "web-5d4f8c", "uid": "r-1", "controller": true, "blockOwnerDeletion": true}]},
        "spec": {"containers": [{"name": "web", "image": "nginx:1.25", "ports": [{"containerPort": 80, "protocol": "TCP"}],
                "resources": {"requests": {"cpu": "100m", "memory": "64Mi"}, "limits": {"cpu": "500m", "memory": "128Mi"}},
                "readinessProbe": {"httpGet": {"path": "/", "port": 80, "scheme": "HTTP"}, "periodSeconds": 10, "timeoutSeconds": 1, "successThreshold": 1, "failureThreshold": 3},
                "terminationMessagePath": "/dev/termination-log", "terminationMessagePolicy": "File", "imagePullPolicy": "IfNotPresent"}],
            "restartPolicy": "Always", "terminationGracePeriodSeconds": 30, "dnsPolicy": "ClusterFirst",
            "serviceAccountName": "default", "nodeName": "node-1", "schedulerName": "default-scheduler",
            "tolerations": [{"key": "node.kubernetes.io/not-ready", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300}]},
        "status": {"phase": "Running", "podIP": format!("10.42.{}.{}", i / 250, i % 250), "hostIP": "192.168.1.10",
            "startTime": "2026-01-02T03:04:06Z", "qosClass": "Burstable",
            "conditions": [{"type": "Ready", "status": "True", "lastTransitionTime": "2026-01-02T03:04:09Z"}],
            "containerStatuses": [{"name": "web", "ready": true, "restartCount": 0, "image": "nginx:1.25", "imageID": "sha256:abc",
                "containerID": "capstan://abc", "started": true, "state": {"running": {"startedAt": "2026-01-02T03:04:08Z"}}}]}
    })
}

fn per_run(rounds: u32, mut f: impl FnMut() -> usize) -> (Duration, usize) {
    let mut size = f();
    let start = Instant::now();
    for _ in 0..rounds {
        size = f();
    }
    (start.elapsed() / rounds, size)
}

fn main() {
    let n: usize = std::env::var("RESPONSE_ENCODING_BENCH_PODS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000);
    let list = json!({"apiVersion": "v1", "kind": "PodList", "metadata": {"resourceVersion": "5000"},
        "items": (0..n).map(pod).collect::<Vec<_>>()});
    let rounds = 20;
    let (json_t, json_b) = per_run(rounds, || {
        serde_json::to_vec(&list).map(|v| v.len()).unwrap_or(0)
    });
    let (pb_t, pb_b) = per_run(rounds, || encode(&list).map(|v| v.len()).expect("protobuf"));
    // The server re-encodes the JSON it built: parse + encode is what a protobuf client costs.
    let bytes = serde_json::to_vec(&list).expect("json");
    let (re_t, _) = per_run(rounds, || {
        let v: Value = serde_json::from_slice(&bytes).expect("parse");
        encode(&v).map(|v| v.len()).expect("protobuf")
    });
    println!("response_encoding: PodList of {n} pods, mean of {rounds} runs");
    println!(
        "  json      {:>9} bytes  {:>8.2} ms",
        json_b,
        json_t.as_secs_f64() * 1e3
    );
    println!(
        "  protobuf  {:>9} bytes  {:>8.2} ms  ({:.0}% of JSON's size)",
        pb_b,
        pb_t.as_secs_f64() * 1e3,
        100.0 * pb_b as f64 / json_b as f64
    );
    println!(
        "  protobuf from the JSON bytes (the server's path)  {:>8.2} ms",
        re_t.as_secs_f64() * 1e3
    );
}

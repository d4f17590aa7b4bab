"""Figures, not assertions: the node's Service proxy — how soon traffic follows an
EndpointSlice change, and requests/s through a ClusterIP next to the pod IP directly.

Starts `capstan server` (with its node agent), runs 3 busybox httpd pods that answer with
their own name, and a selector-less Service whose EndpointSlice this script writes itself,
so each change is exactly one API write. Then prints:
- programming latency: the slice is pointed at another pod (--changes times, round robin);
  from sending that write until a new connection to the ClusterIP is answered by that pod
  (connections tried back to back): min/p50/p99/max;
- requests/s, one HTTP/1.0 request per new connection, sequential and from --clients
  threads at once: to one pod's IP, to the ClusterIP with that pod its one endpoint, and to
  the ClusterIP with all 3 pods behind it.
The client is this Python process: its own cost is in every figure.

    CAPSTAN_BIN=target/release/capstan python3 benches/service_figures.py [--changes 50] [--seconds 5] [--clients 4]

Needs root (the agent runs containers and programs nftables); `capstan cleanup` removes it.
"""
import argparse
import os
import pathlib
import shutil
import socket
import subprocess
import tempfile
import threading
import time

from kubernetes import client, config

ROOT = pathlib.Path(__file__).resolve().parents[1]
BINARY = os.environ.get("CAPSTAN_BIN", str(ROOT / "target" / "release" / "capstan"))
IMAGES = pathlib.Path(os.environ.get("CAPSTAN_TEST_IMAGES", str(ROOT / "target" / "test-images")))
NS = "default"
PODS = ["web-0", "web-1", "web-2"]


def get(ip, port, timeout=1.0):
    """One HTTP/1.0 GET on a new connection: the body, or None when nothing answered."""
    try:
        with socket.create_connection((ip, port), timeout=timeout) as s:
            s.sendall(b"GET / HTTP/1.0\r\n\r\n")
            data = b""
            while True:
                chunk = s.recv(4096)
                if not chunk:
                    break
                data += chunk
    except OSError:
        return None
    _, _, body = data.partition(b"\r\n\r\n")
    return body.decode(errors="replace").strip()


def pct(samples, p):
    s = sorted(samples)
    return s[min(len(s) - 1, max(0, int(round(p / 100 * len(s) + 0.5)) - 1))]


def slice_body(ip, pod):
    return {
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": "bench-web-manual", "namespace": NS,
                     "labels": {"kubernetes.io/service-name": "bench-web",
                                "endpointslice.kubernetes.io/managed-by": "bench"}},
        "addressType": "IPv4",
        "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
        "endpoints": [{"addresses": [ip], "conditions": {"ready": True},
                       "targetRef": {"kind": "Pod", "name": pod, "namespace": NS}}],
    }


def rate(target, seconds, clients):
    """Requests/s from `clients` threads for `seconds`, each request a new connection."""
    counts = [0] * clients
    failures = [0] * clients
    stop = time.monotonic() + seconds

    def one(i):
        while time.monotonic() < stop:
            if get(*target) is None:
                failures[i] += 1
            else:
                counts[i] += 1
    threads = [threading.Thread(target=one, args=(i,)) for i in range(clients)]
    began = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    took = time.perf_counter() - began
    return sum(counts) / took, sum(failures)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--changes", type=int, default=50)
    ap.add_argument("--seconds", type=float, default=5)
    ap.add_argument("--clients", type=int, default=4)
    args = ap.parse_args()

    data = tempfile.mkdtemp(prefix="capstan-svc-bench-")
    server = None
    try:
        images = pathlib.Path(data, "agent", "images")
        images.mkdir(parents=True)
        shutil.copy(IMAGES / "busybox.tar", images / "busybox.tar")
        server = subprocess.Popen([BINARY, "server", "--data-dir", data, "--listen", "127.0.0.1:0",
                                   "--pod-cidr", "10.252.0.0/24"],
                                  stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        server.stdout.readline()
        api = config.new_client_from_config(config_file=f"{data}/kubeconfig")
        core = client.CoreV1Api(api)
        discovery = client.DiscoveryV1Api(api)
        deadline = time.monotonic() + 120
        while True:
            try:
                core.read_namespaced_service_account("default", NS)
                break
            except client.ApiException:
                if time.monotonic() > deadline:
                    raise SystemExit("the default service account never appeared")
                time.sleep(0.2)
        for name in PODS:
            core.create_namespaced_pod(NS, {
                "apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
                "spec": {"containers": [{"name": "httpd", "image": "busybox", "command": [
                    "sh", "-c", f"mkdir -p /www && echo {name} > /www/index.html && exec httpd -f -p 8080 -h /www"]}]}})
        ips = {}
        while len(ips) < len(PODS):
            if time.monotonic() > deadline:
                raise SystemExit("the pods never ran")
            for name in PODS:
                p = core.read_namespaced_pod(name, NS)
                if p.status.phase == "Running" and p.status.pod_ip and get(p.status.pod_ip, 8080) == name:
                    ips[name] = p.status.pod_ip
            time.sleep(0.1)
        svc = core.create_namespaced_service(NS, {
            "apiVersion": "v1", "kind": "Service", "metadata": {"name": "bench-web"},
            "spec": {"ports": [{"name": "http", "port": 80, "targetPort": 8080}]}})
        vip = svc.spec.cluster_ip
        discovery.create_namespaced_endpoint_slice(NS, slice_body(ips[PODS[0]], PODS[0]))
        while get(vip, 80) != PODS[0]:
            if time.monotonic() > deadline:
                raise SystemExit("the ClusterIP never answered")
            time.sleep(0.05)

        latencies = []
        for i in range(1, args.changes + 1):
            pod = PODS[i % len(PODS)]
            began = time.perf_counter()
            discovery.replace_namespaced_endpoint_slice(
                "bench-web-manual", NS, slice_body(ips[pod], pod))
            while get(vip, 80, timeout=0.5) != pod:
                if time.perf_counter() - began > 10:
                    raise SystemExit(f"change {i}: traffic did not follow to {pod} within 10 s")
            latencies.append((time.perf_counter() - began) * 1000)
        print(f"EndpointSlice write -> new connections reach the new endpoint ({len(latencies)} changes): "
              f"min {min(latencies):.1f} ms, p50 {pct(latencies, 50):.1f} ms, "
              f"p99 {pct(latencies, 99):.1f} ms, max {max(latencies):.1f} ms")

        # The same pod directly and as the Service's one endpoint, then all three behind it.
        discovery.replace_namespaced_endpoint_slice("bench-web-manual", NS, slice_body(ips[PODS[0]], PODS[0]))
        while get(vip, 80) != PODS[0]:
            time.sleep(0.01)
        for clients in (1, args.clients):
            direct, direct_failed = rate((ips[PODS[0]], 8080), args.seconds, clients)
            through, through_failed = rate((vip, 80), args.seconds, clients)
            print(f"requests/s, new connection each, {clients} client(s), one pod: pod IP {direct:,.0f} "
                  f"({direct_failed} failed), ClusterIP {through:,.0f} ({through_failed} failed)")
        body = slice_body(ips[PODS[0]], PODS[0])
        body["endpoints"] = [{"addresses": [ips[p]], "conditions": {"ready": True}} for p in PODS]
        discovery.replace_namespaced_endpoint_slice("bench-web-manual", NS, body)
        seen = set()
        while len(seen) < len(PODS):
            if time.monotonic() > deadline + 60:
                raise SystemExit(f"only {sorted(seen)} answered through the ClusterIP")
            seen.add(get(vip, 80))
            seen.discard(None)
        for clients in (1, args.clients):
            through, through_failed = rate((vip, 80), args.seconds, clients)
            print(f"requests/s, new connection each, {clients} client(s), ClusterIP over 3 pods: "
                  f"{through:,.0f} ({through_failed} failed)")
    finally:
        if server is not None:
            server.kill()
            server.wait()
        subprocess.run([BINARY, "cleanup", "--data-dir", data], capture_output=True)
        shutil.rmtree(data, ignore_errors=True)


if __name__ == "__main__":
    main()

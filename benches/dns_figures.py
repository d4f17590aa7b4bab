"""Figures, not assertions: the cluster DNS (the agent's, behind the kube-dns ClusterIP).

Starts `capstan server` (with its node agent), then from the host sends UDP queries to the
kube-dns ClusterIP, each waiting for its answer, and prints queries/s and p50/p99/max latency
for: a Service name (A), a name that does not exist (NXDOMAIN), and the Service name from
several clients at once. The client is this Python process: its own cost is part of each
figure (read them as a floor on what the server does).

    CAPSTAN_BIN=target/release/capstan python3 benches/dns_figures.py [--queries 20000] [--clients 4]

Needs root (the agent programs the node's Service proxy); `capstan cleanup` removes it.
"""
import argparse
import os
import pathlib
import random
import shutil
import socket
import struct
import subprocess
import tempfile
import threading
import time

from kubernetes import client, config

ROOT = pathlib.Path(__file__).resolve().parents[1]
BINARY = os.environ.get("CAPSTAN_BIN", str(ROOT / "target" / "release" / "capstan"))
IMAGES = pathlib.Path(os.environ.get("CAPSTAN_TEST_IMAGES", str(ROOT / "target" / "test-images")))


def query(name, qid):
    """A DNS query for `name`'s A record, recursion desired."""
    header = struct.pack(">HHHHHH", qid, 0x0100, 1, 0, 0, 0)
    labels = b"".join(bytes([len(p)]) + p.encode() for p in name.rstrip(".").split("."))
    return header + labels + b"\0" + struct.pack(">HH", 1, 1)


def rcode_and_answers(reply):
    _, flags, _, answers, _, _ = struct.unpack(">HHHHHH", reply[:12])
    return flags & 0xF, answers


def run(server_ip, name, count, want_rcode, want_answers=True):
    """Latencies (ms) of `count` sequential queries over one socket."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.settimeout(2)
    sock.connect((server_ip, 53))
    latencies = []
    for i in range(count):
        qid = random.randrange(65536)
        began = time.perf_counter()
        sock.send(query(name, qid))
        while True:
            reply = sock.recv(4096)
            if struct.unpack(">H", reply[:2])[0] == qid:
                break
        latencies.append((time.perf_counter() - began) * 1000)
        rcode, answers = rcode_and_answers(reply)
        if rcode != want_rcode or (want_answers and answers == 0):
            raise SystemExit(f"{name}: rcode {rcode}, {answers} answers (query {i})")
    sock.close()
    return latencies


def pct(samples, p):
    s = sorted(samples)
    return s[min(len(s) - 1, max(0, int(round(p / 100 * len(s) + 0.5)) - 1))]


def report(what, latencies, seconds):
    print(f"{what}: {len(latencies) / seconds:,.0f} queries/s; p50 {pct(latencies, 50) * 1000:.0f} µs, "
          f"p99 {pct(latencies, 99) * 1000:.0f} µs, max {max(latencies):.2f} ms over {len(latencies)} queries")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--queries", type=int, default=20000)
    ap.add_argument("--clients", type=int, default=4)
    args = ap.parse_args()

    data = tempfile.mkdtemp(prefix="capstan-dns-bench-")
    server = None
    try:
        images = pathlib.Path(data, "agent", "images")
        images.mkdir(parents=True)
        shutil.copy(IMAGES / "busybox.tar", images / "busybox.tar")
        server = subprocess.Popen([BINARY, "server", "--data-dir", data, "--listen", "127.0.0.1:0",
                                   "--pod-cidr", "10.251.0.0/24"],
                                  stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        server.stdout.readline()
        core = client.CoreV1Api(config.new_client_from_config(config_file=f"{data}/kubeconfig"))
        dns_ip = core.read_namespaced_service("kube-dns", "kube-system").spec.cluster_ip
        name = "kubernetes.default.svc.cluster.local"
        # The proxy's rules and the DNS listener come up with the node: wait for an answer.
        deadline = time.monotonic() + 60
        while True:
            try:
                run(dns_ip, name, 1, 0)
                break
            except (OSError, SystemExit):
                if time.monotonic() > deadline:
                    raise SystemExit("the cluster DNS never answered")
                time.sleep(0.2)
        run(dns_ip, name, 500, 0)  # warm-up

        began = time.perf_counter()
        lat = run(dns_ip, name, args.queries, 0)
        report(f"A {name}, one client", lat, time.perf_counter() - began)

        began = time.perf_counter()
        lat = run(dns_ip, "nothing-here.default.svc.cluster.local", args.queries, 3, want_answers=False)
        report("NXDOMAIN, one client", lat, time.perf_counter() - began)

        results = [None] * args.clients
        per = args.queries // args.clients

        def one(i):
            try:
                results[i] = run(dns_ip, name, per, 0)
            except (OSError, SystemExit) as e:  # a lost reply times out: say so, not a traceback
                results[i] = e
        threads = [threading.Thread(target=one, args=(i,)) for i in range(args.clients)]
        began = time.perf_counter()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        took = time.perf_counter() - began
        failed = [r for r in results if not isinstance(r, list)]
        if failed:
            raise SystemExit(f"{len(failed)} of {args.clients} clients failed: {failed[0]!r}")
        report(f"A {name}, {args.clients} clients at once", [x for r in results for x in r], took)
    finally:
        if server is not None:
            server.kill()
            server.wait()
        subprocess.run([BINARY, "cleanup", "--data-dir", data], capture_output=True)
        shutil.rmtree(data, ignore_errors=True)


if __name__ == "__main__":
    main()

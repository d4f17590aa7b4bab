"""Figures, not assertions: the garbage collector's memory and speed.

Starts the binary in CAPSTAN_BIN twice on fresh data dirs — once with the garbage collector,
once without (`--controllers=-garbage-collector`) — creates OWNERS ConfigMaps and N
dependent ConfigMaps with ownerReferences in each, and prints the RSS of both (the difference
is what the GC's graph and watches cost). Then, on the server with the GC, creates one owner
with M dependents, deletes the owner (Background, then another with Foreground) and prints
how long until every dependent is gone:

    CAPSTAN_BIN=target/release/capstan python3 benches/gc_figures.py [--objects 10000] [--dependents 1000]
"""
import argparse
import concurrent.futures
import os
import pathlib
import subprocess
import tempfile
import time

from kubernetes import client, config

ROOT = pathlib.Path(__file__).resolve().parents[1]
# Seconds to wait before reading RSS: the server returns free heap pages every 5 s.
SETTLE = 7


def rss_mib(pid):
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def start(data_dir, extra):
    binary = os.environ.get("CAPSTAN_BIN", str(ROOT / "target" / "release" / "capstan"))
    proc = subprocess.Popen([binary, "server", "--no-agent", "--data-dir", data_dir, "--listen", "127.0.0.1:0", *extra],
                            stdout=subprocess.PIPE, text=True)
    proc.stdout.readline()
    api = config.new_client_from_config(config_file=os.path.join(data_dir, "kubeconfig"))
    return proc, client.CoreV1Api(api)


def cm(name, owner=None):
    refs = None
    if owner is not None:
        refs = [client.V1OwnerReference(api_version="v1", kind="ConfigMap", name=owner.metadata.name,
                                        uid=owner.metadata.uid, block_owner_deletion=True)]
    return client.V1ConfigMap(metadata=client.V1ObjectMeta(name=name, owner_references=refs), data={"k": "v"})


def create_all(core, ns, bodies, workers=16):
    with concurrent.futures.ThreadPoolExecutor(workers) as pool:
        list(pool.map(lambda b: core.create_namespaced_config_map(ns, b), bodies))


def populate(core, objects, owners):
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name="bench")))
    made = [core.create_namespaced_config_map("bench", cm(f"owner-{i}")) for i in range(owners)]
    create_all(core, "bench", [cm(f"dep-{i}", made[i % owners]) for i in range(objects)])


def count(core, ns):
    return len(core.list_namespaced_config_map(ns).items)


def timed_delete(core, ns, dependents, policy):
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=ns)))
    owner = core.create_namespaced_config_map(ns, cm("owner"))
    create_all(core, ns, [cm(f"dep-{i}", owner) for i in range(dependents)])
    # kube-root-ca.crt may or may not exist, depending on the controllers running.
    base = count(core, ns) - dependents - 1
    t0 = time.monotonic()
    core.delete_namespaced_config_map("owner", ns, body=client.V1DeleteOptions(propagation_policy=policy))
    while count(core, ns) > base:
        time.sleep(0.02)
    return time.monotonic() - t0


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--objects", type=int, default=10000)
    p.add_argument("--owners", type=int, default=100)
    p.add_argument("--dependents", type=int, default=1000)
    a = p.parse_args()
    rss = {}
    for label, extra in [("without GC", ["--controllers=-garbage-collector"]), ("with GC", [])]:
        with tempfile.TemporaryDirectory() as d:
            proc, core = start(d, extra)
            try:
                time.sleep(SETTLE)
                idle = rss_mib(proc.pid)
                t0 = time.monotonic()
                populate(core, a.objects, a.owners)
                made = time.monotonic() - t0
                time.sleep(SETTLE)
                rss[label] = (idle, rss_mib(proc.pid))
                print(f"{label}: RSS idle {idle:.1f} MiB, with {a.objects} dependents + {a.owners} owners "
                      f"{rss[label][1]:.1f} MiB (created in {made:.1f} s)", flush=True)
                if label == "with GC":
                    for policy in ("Background", "Foreground"):
                        t = timed_delete(core, policy.lower(), a.dependents, policy)
                        print(f"{policy} delete of an owner with {a.dependents} dependents: all gone in {t:.2f} s",
                              flush=True)
            finally:
                proc.kill()
                proc.wait()
    delta = (rss["with GC"][1] - rss["with GC"][0]) - (rss["without GC"][1] - rss["without GC"][0])
    print(f"GC cost for {a.objects + a.owners} objects: {delta:.1f} MiB RSS "
          f"({delta * 1024 * 1024 / (a.objects + a.owners):.0f} bytes per object)")


if __name__ == "__main__":
    main()

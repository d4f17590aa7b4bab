"""Figures, not assertions: the node agent's pod start-up latency and its own cost.

Starts `capstan server --no-agent` and, beside it, a stand-alone `capstan agent` (so its RSS
and CPU are its own) with the busybox test image in its images folder, then prints:
- the agent's RSS and CPU while idle (no pods);
- creation → Running, as a watch sees it, for PODS busybox pods created one after another on
  an otherwise idle node (min/p50/p99/max);
- the time for 110 pods created at once to all be Running, the agent's RSS then and the
  shims' (one per container, PSS), and the time until all 110 are deleted and their shims
  have ended.

    CAPSTAN_BIN=target/release/capstan python3 benches/agent_figures.py [--pods 100] [--burst 110]

Needs root (it runs real containers); `capstan cleanup` removes what the agent made.
"""
import argparse
import concurrent.futures
import os
import pathlib
import shutil
import subprocess
import tempfile
import threading
import time

from kubernetes import client, config, watch

ROOT = pathlib.Path(__file__).resolve().parents[1]
BINARY = os.environ.get("CAPSTAN_BIN", str(ROOT / "target" / "release" / "capstan"))
IMAGES = pathlib.Path(os.environ.get("CAPSTAN_TEST_IMAGES", str(ROOT / "target" / "test-images")))
TICKS = os.sysconf("SC_CLK_TCK")


def rss_mib(pid):
    try:
        for line in open(f"/proc/{pid}/status"):
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except FileNotFoundError:
        pass
    return 0.0


def cpu_seconds(pid):
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def shim_pids():
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                argv = open(f"/proc/{entry}/cmdline", "rb").read().split(b"\0")
            except OSError:
                continue
            if len(argv) > 2 and argv[1] == b"container-shim" and argv[2] == b"run":
                pids.append(int(entry))
    return pids


def wait(what, pred, within=120):
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        got = pred()
        if got:
            return got
        time.sleep(0.1)
    raise SystemExit(f"timed out waiting for {what}")


def pct(samples, p):
    s = sorted(samples)
    return s[min(len(s) - 1, max(0, int(round(p / 100 * len(s) + 0.5)) - 1))]


def pod(name):
    return client.V1Pod(
        metadata=client.V1ObjectMeta(name=name, labels={"bench": "agent"}),
        spec=client.V1PodSpec(
            termination_grace_period_seconds=0,
            containers=[client.V1Container(name="c", image="busybox", command=["sleep", "3600"])],
        ),
    )


class RunningWatch:
    """One watch over the namespace: when each pod was first seen Running."""

    def __init__(self, core, ns):
        self.running = {}
        self.lock = threading.Lock()
        rv = core.list_namespaced_pod(ns).metadata.resource_version
        self.w = watch.Watch()
        self.thread = threading.Thread(target=self._run, args=(core, ns, rv), daemon=True)
        self.thread.start()

    def _run(self, core, ns, rv):
        try:
            for ev in self.w.stream(core.list_namespaced_pod, ns, resource_version=rv, timeout_seconds=3600):
                p = ev["object"]
                if p.status and p.status.phase == "Running":
                    with self.lock:
                        self.running.setdefault(p.metadata.name, time.monotonic())
        except Exception:  # the server goes away at the end
            pass

    def at(self, name):
        with self.lock:
            return self.running.get(name)

    def count(self, names):
        with self.lock:
            return sum(1 for n in names if n in self.running)


def delete_all(core, ns):
    """Seconds until the pods are gone from the API and every container's shim has ended."""
    began = time.monotonic()
    core.delete_collection_namespaced_pod(ns, label_selector="bench=agent")
    wait("the pods to be gone", lambda: not core.list_namespaced_pod(ns, label_selector="bench=agent").items, 300)
    wait("the shims to end", lambda: not shim_pids(), 300)
    return time.monotonic() - began


def pss_mib(pid):
    """Proportional set size: shared pages divided among the processes sharing them."""
    try:
        for line in open(f"/proc/{pid}/smaps_rollup"):
            if line.startswith("Pss:"):
                return int(line.split()[1]) / 1024
    except FileNotFoundError:
        pass
    return 0.0


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--pods", type=int, default=100)
    ap.add_argument("--burst", type=int, default=110)
    ap.add_argument("--idle-seconds", type=int, default=30)
    ap.add_argument("--agent-log", help="write the agent's log here")
    args = ap.parse_args()

    data = tempfile.mkdtemp(prefix="capstan-agent-bench-")
    server = agent = None
    try:
        server = subprocess.Popen([BINARY, "server", "--no-agent", "--data-dir", f"{data}/server", "--listen", "127.0.0.1:0"],
                                  stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        server.stdout.readline()
        kubeconfig = f"{data}/server/kubeconfig"
        images = pathlib.Path(data, "node", "agent", "images")
        images.mkdir(parents=True)
        shutil.copy(IMAGES / "busybox.tar", images / "busybox.tar")
        agent = subprocess.Popen([BINARY, "agent", "--kubeconfig", kubeconfig, "--data-dir", f"{data}/node",
                                  "--node-name", "bench-node", "--pod-cidr", "10.250.0.0/23", "--max-pods", str(max(args.burst, 110))],
                                 stdout=subprocess.DEVNULL, stderr=open(args.agent_log, "w") if args.agent_log else subprocess.DEVNULL)
        core = client.CoreV1Api(config.new_client_from_config(config_file=kubeconfig))

        def ready():
            for n in core.list_node().items:
                for c in n.status.conditions or []:
                    if c.type == "Ready" and c.status == "True":
                        return True
            return False
        wait("the node to be Ready", ready, 60)
        time.sleep(7)  # the agent returns free heap pages every few seconds: let it settle
        cpu0, t0 = cpu_seconds(agent.pid), time.monotonic()
        time.sleep(args.idle_seconds)
        idle_cpu = (cpu_seconds(agent.pid) - cpu0) / (time.monotonic() - t0) * 100
        print(f"agent idle: RSS {rss_mib(agent.pid):.1f} MiB, CPU {idle_cpu:.2f}% of a core over {args.idle_seconds} s")

        ns = "default"
        w = RunningWatch(core, ns)
        latencies = []
        for i in range(args.pods):
            name = f"seq-{i:03}"
            began = time.monotonic()
            core.create_namespaced_pod(ns, pod(name))
            at = wait(f"{name} to run", lambda: w.at(name), 60)
            latencies.append((at - began) * 1000)
        print(f"creation -> Running, {args.pods} pods one after another: min {min(latencies):.0f} ms, "
              f"p50 {pct(latencies, 50):.0f} ms, p99 {pct(latencies, 99):.0f} ms, max {max(latencies):.0f} ms")
        gone = delete_all(core, ns)
        print(f"deleting {args.pods} pods: {gone:.2f} s until all gone")

        names = [f"burst-{i:03}" for i in range(args.burst)]
        began = time.monotonic()
        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            list(pool.map(lambda n: core.create_namespaced_pod(ns, pod(n)), names))
        created = time.monotonic() - began
        wait(f"{args.burst} pods to run", lambda: w.count(names) == len(names), 600)
        took = max(w.at(n) for n in names) - began
        first = min(w.at(n) for n in names) - began
        shims = shim_pids()
        print(f"{args.burst} pods created at once (all created after {created:.2f} s, the first Running after "
              f"{first:.2f} s): all Running after {took:.2f} s; agent RSS "
              f"{rss_mib(agent.pid):.1f} MiB; {len(shims)} shims, {sum(pss_mib(p) for p in shims):.0f} MiB PSS together")
        cpu0, t0 = cpu_seconds(agent.pid), time.monotonic()
        time.sleep(args.idle_seconds)
        busy_cpu = (cpu_seconds(agent.pid) - cpu0) / (time.monotonic() - t0) * 100
        print(f"agent with {args.burst} running pods: CPU {busy_cpu:.2f}% of a core over {args.idle_seconds} s")
        gone = delete_all(core, ns)
        print(f"deleting {args.burst} pods: {gone:.2f} s until all gone")
        w.w.stop()
    finally:
        for proc in (agent, server):
            if proc is not None:
                proc.kill()
                proc.wait()
        subprocess.run([BINARY, "cleanup", "--data-dir", f"{data}/node"], capture_output=True)
        shutil.rmtree(data, ignore_errors=True)


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""Runs every test binary of the workspace, several at once.

`cargo test` runs test binaries one after another; most of capstan's are end-to-end suites
that spend their time waiting on a server and kubectl, so on 2 cores two or three of them
side by side finish in about half the time. Each binary still runs its own tests in
parallel as cargo would, from its package's directory. Output is printed per binary, whole,
as each finishes (the `test result:` lines scripts/test sums), then each failed binary's
`failures:` section again and a list of them.

Usage: scripts/parallel-tests.py [--jobs N] [-- cargo test args…]   ($CAPSTAN_PROFILE: the
cargo profile to build the tests in, release by default; $TEST_JOBS: binaries at once)
"""
import json
import os
import re
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor, as_completed

# Run alone before the pool: the fuzz targets hold each hostile input to a time bound, which
# two other suites on the same 2 cores can push past.
ALONE = ["fuzz_decoders"]

# Suites measured as the longest (seconds, session 17: builtin_types 139, kubectl_core 115,
# agent_pods 113, controllers_house 76, controllers_sets 67, crd_memory 67, crds 62,
# kubectl_versions 54, scheduler 50 …): started first, so the pool's tail is short ones.
LONG_FIRST = [
    "builtin_types", "kubectl_core", "agent_pods", "controllers_house", "controllers_sets",
    "crd_memory", "crds", "kubectl_versions", "scheduler", "controllers_jobs", "rbac",
    "storage", "network_policy", "agent_node", "controllers_workloads", "streaming",
]


def binaries(cargo_args):
    profile = os.environ.get("CAPSTAN_PROFILE", "release")
    cmd = ["cargo", "test", "--profile", profile, "--workspace", "--no-run",
           "--message-format=json-render-diagnostics", *cargo_args]
    out = subprocess.run(cmd, stdout=subprocess.PIPE, check=True, text=True).stdout
    found = []
    for line in out.splitlines():
        try:
            msg = json.loads(line)
        except ValueError:
            continue
        if msg.get("reason") != "compiler-artifact" or not msg.get("executable"):
            continue
        if not msg.get("profile", {}).get("test"):
            continue
        target = msg["target"]
        found.append({
            "exe": msg["executable"],
            "name": target["name"],
            "src": target["src_path"],
            "dir": os.path.dirname(msg["manifest_path"]),
        })
    rank = {n: i for i, n in enumerate(LONG_FIRST)}
    found.sort(key=lambda b: rank.get(b["name"], len(rank)))
    return found


def run(b):
    env = dict(os.environ, CARGO_MANIFEST_DIR=b["dir"])
    start = time.monotonic()
    p = subprocess.run([b["exe"]], cwd=b["dir"], env=env, stdout=subprocess.PIPE,
                       stderr=subprocess.STDOUT, text=True, errors="replace")
    return b, p.returncode, p.stdout, time.monotonic() - start


# A server's log line (`2026-…Z  INFO target: …`): noise in a failure summary.
LOG_LINE = re.compile(r"^\d{4}-\d\d-\d\dT[\d:.]+Z +(TRACE|DEBUG|INFO|WARN|ERROR) ")


def failure_summary(output, limit=120):
    """The libtest `failures:` section (panic messages, assertion values) without server
    logs, so the end of a long CI log still says which test failed and why."""
    at = output.find("\nfailures:\n\n---- ")
    if at < 0:
        at = output.find("\nfailures:\n")
    if at < 0:
        return output.splitlines()[-limit:]
    kept = [l for l in output[at + 1:].splitlines() if not LOG_LINE.match(l)]
    return kept[:limit]


def main():
    args = sys.argv[1:]
    jobs = int(os.environ.get("TEST_JOBS", "3"))
    if args[:1] == ["--jobs"]:
        jobs, args = int(args[1]), args[2:]
    if args[:1] == ["--"]:
        args = args[1:]
    bins = binaries(args)
    print(f"running {len(bins)} test binaries, {jobs} at a time", flush=True)
    failed = []

    def report(result):
        b, code, output, secs = result
        rel = os.path.relpath(b["src"], b["dir"])
        print(f"     Running {rel} ({os.path.basename(b['exe'])}) [{secs:.1f} s]")
        print(output, flush=True)
        if code != 0:
            failed.append((f"{b['name']} ({rel}, exit {code})", output))

    for b in [b for b in bins if b["name"] in ALONE]:
        report(run(b))
    rest = [b for b in bins if b["name"] not in ALONE]
    with ThreadPoolExecutor(max_workers=jobs) as pool:
        for fut in as_completed([pool.submit(run, b) for b in rest]):
            report(fut.result())
    if failed:
        for name, output in failed:
            print(f"\n==== {name}")
            print("\n".join(failure_summary(output)))
        print("failed test binaries:\n  " + "\n  ".join(n for n, _ in failed))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

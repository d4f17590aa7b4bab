"""The Job controller through the official Python client, against a server with simulated
nodes: a Job created with BatchV1Api runs its pods to Complete and reports its counters."""
import os
import pathlib
import subprocess
import time

import pytest
from kubernetes import client, config

ROOT = pathlib.Path(__file__).resolve().parents[2]
WAIT = 30


@pytest.fixture
def batch(tmp_path):
    binary = os.environ.get("CAPSTAN_BIN", str(ROOT / "target" / "release" / "capstan"))
    proc = subprocess.Popen(
        [binary, "server", "--no-agent", "--data-dir", str(tmp_path), "--listen", "127.0.0.1:0",
         "--simulated-nodes", "2"],
        stdout=subprocess.PIPE,
        text=True,
    )
    line = proc.stdout.readline().strip()
    assert line == f"export KUBECONFIG={tmp_path / 'kubeconfig'}", line
    api = config.new_client_from_config(config_file=str(tmp_path / "kubeconfig"))
    yield client.BatchV1Api(api), client.CoreV1Api(api)
    api.close()
    proc.kill()
    proc.wait()


def condition(job, kind):
    conds = (job.status.conditions if job.status else None) or []
    return next((c for c in conds if c.type == kind), None)


def test_job_reaches_complete(batch):
    jobs, core = batch
    jobs.create_namespaced_job("default", {
        "apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "py"},
        "spec": {"completions": 2, "parallelism": 1, "template": {
            "metadata": {"annotations": {"sim.capstan.io/exit-after": "300ms"}},
            "spec": {"restartPolicy": "Never",
                     "containers": [{"name": "main", "image": "busybox"}]}}}})
    deadline = time.monotonic() + WAIT
    while True:
        job = jobs.read_namespaced_job_status("py", "default")
        done = condition(job, "Complete")
        if done and done.status == "True":
            break
        assert time.monotonic() < deadline, f"job never completed: {job.status}"
        time.sleep(0.1)
    assert job.status.succeeded == 2
    assert job.status.active == 0
    assert job.status.completion_time >= job.status.start_time
    assert done.reason == "CompletionsReached"
    pods = core.list_namespaced_pod("default", label_selector="batch.kubernetes.io/job-name=py").items
    assert len(pods) == 2
    assert all(p.status.phase == "Succeeded" for p in pods)
    assert all(p.metadata.owner_references[0].name == "py" for p in pods)

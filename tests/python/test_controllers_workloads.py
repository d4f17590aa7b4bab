"""The Deployment and ReplicaSet loops through the official Python client against a server
with simulated nodes: a Deployment becomes available, scales through /scale, and its
ReplicaSet carries the pod-template-hash and revision."""
import os
import subprocess
import time

import pytest
from kubernetes import client, config

from conftest import ROOT

WAIT = 30


@pytest.fixture
def apps(tmp_path):
    binary = os.environ.get("CAPSTAN_BIN", str(ROOT / "target" / "release" / "capstan"))
    proc = subprocess.Popen(
        [binary, "server", "--no-agent", "--data-dir", str(tmp_path), "--listen", "127.0.0.1:0",
         "--simulated-nodes", "3"],
        stdout=subprocess.PIPE,
        text=True,
    )
    line = proc.stdout.readline().strip()
    assert line == f"export KUBECONFIG={tmp_path / 'kubeconfig'}", line
    api = config.new_client_from_config(config_file=str(tmp_path / "kubeconfig"))
    yield client.AppsV1Api(api)
    api.close()
    proc.kill()
    proc.wait()


def wait_for(what, fn):
    deadline = time.monotonic() + WAIT
    while True:
        value = fn()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def deployment(name, replicas):
    return {
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": name},
        "spec": {"replicas": replicas,
                 "selector": {"matchLabels": {"app": name}},
                 "template": {"metadata": {"labels": {"app": name}},
                              "spec": {"containers": [{"name": "c", "image": "nginx"}]}}},
    }


def test_deployment_becomes_available_and_scales(apps):
    apps.create_namespaced_deployment("default", deployment("py", 3))

    def available(n):
        d = apps.read_namespaced_deployment("py", "default")
        st = d.status
        if st is None:
            return None
        conds = {c.type: c for c in (st.conditions or [])}
        ok = (st.available_replicas == n and st.updated_replicas == n
              and "Available" in conds and conds["Available"].status == "True")
        return d if ok else None

    d = wait_for("3 available replicas", lambda: available(3))
    assert d.status.observed_generation == d.metadata.generation
    assert d.metadata.annotations["deployment.kubernetes.io/revision"] == "1"
    conds = {c.type: c for c in d.status.conditions}
    assert conds["Available"].reason == "MinimumReplicasAvailable"
    assert conds["Progressing"].reason == "NewReplicaSetAvailable"

    rs = apps.list_namespaced_replica_set("default", label_selector="app=py").items
    assert len(rs) == 1
    h = rs[0].metadata.labels["pod-template-hash"]
    assert rs[0].metadata.name == f"py-{h}"
    assert rs[0].metadata.owner_references[0].kind == "Deployment"
    assert rs[0].spec.selector.match_labels == {"app": "py", "pod-template-hash": h}

    # PUT /scale (capstan's /scale does not take the client's strategic-merge PATCH yet).
    apps.replace_namespaced_deployment_scale(
        "py", "default", {"metadata": {"name": "py", "namespace": "default"}, "spec": {"replicas": 5}})
    wait_for("5 available replicas", lambda: available(5))
    scale = apps.read_namespaced_deployment_scale("py", "default")
    assert scale.status.replicas == 5

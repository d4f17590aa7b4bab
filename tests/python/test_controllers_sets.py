"""The statefulset and disruption loops and pods/eviction through the official Python client,
against capstan with a simulated node: a StatefulSet's status, a budget's status, an
eviction refused with 429 while it would break the budget and granted once it would not."""
import json
import os
import subprocess
import time

import pytest
from kubernetes import client, config
from kubernetes.client.rest import ApiException

from conftest import ROOT

WAIT = 30


@pytest.fixture
def sim(tmp_path):
    binary = os.environ.get("CAPSTAN_BIN", str(ROOT / "target" / "release" / "capstan"))
    proc = subprocess.Popen(
        [binary, "server", "--no-agent", "--data-dir", str(tmp_path), "--listen", "127.0.0.1:0",
         "--simulated-nodes", "1"],
        stdout=subprocess.PIPE,
        text=True,
    )
    line = proc.stdout.readline().strip()
    assert line == f"export KUBECONFIG={tmp_path / 'kubeconfig'}", line
    api = config.new_client_from_config(config_file=str(tmp_path / "kubeconfig"))
    yield api
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


def is_ready(pod):
    return pod.metadata.deletion_timestamp is None and any(
        c.type == "Ready" and c.status == "True" for c in (pod.status.conditions or []))


def test_statefulset_status_through_the_python_client(sim):
    apps = client.AppsV1Api(sim)
    core = client.CoreV1Api(sim)
    apps.create_namespaced_stateful_set("default", {
        "apiVersion": "apps/v1", "kind": "StatefulSet", "metadata": {"name": "kv"},
        "spec": {"replicas": 2, "serviceName": "kv", "selector": {"matchLabels": {"app": "kv"}},
                 "template": {"metadata": {"labels": {"app": "kv"}},
                              "spec": {"containers": [{"name": "c", "image": "redis:7"}]}}}})
    st = wait_for("2 ready replicas",
                  lambda: (s := apps.read_namespaced_stateful_set_status("kv", "default").status)
                  and s.ready_replicas == 2 and s)
    assert st.replicas == 2 and st.current_replicas == 2 and st.updated_replicas == 2
    assert st.current_revision == st.update_revision and st.current_revision.startswith("kv-")
    names = sorted(p.metadata.name for p in core.list_namespaced_pod("default", label_selector="app=kv").items)
    assert names == ["kv-0", "kv-1"]
    revs = apps.list_namespaced_controller_revision("default").items
    assert [r.metadata.name for r in revs] == [st.current_revision] and revs[0].revision == 1


def test_eviction_through_the_python_client_respects_the_budget(sim):
    core = client.CoreV1Api(sim)
    policy = client.PolicyV1Api(sim)
    core.create_namespaced_pod("default", {
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "solo", "labels": {"app": "solo"}},
        "spec": {"terminationGracePeriodSeconds": 1,
                 "containers": [{"name": "c", "image": "busybox"}]}})
    wait_for("solo Ready", lambda: is_ready(core.read_namespaced_pod("solo", "default")))
    policy.create_namespaced_pod_disruption_budget("default", {
        "apiVersion": "policy/v1", "kind": "PodDisruptionBudget", "metadata": {"name": "solo"},
        "spec": {"minAvailable": 1, "selector": {"matchLabels": {"app": "solo"}}}})
    st = wait_for("the budget observed",
                  lambda: (s := policy.read_namespaced_pod_disruption_budget("solo", "default").status)
                  and s.observed_generation == 1 and s)
    assert (st.current_healthy, st.desired_healthy, st.expected_pods, st.disruptions_allowed) == (1, 1, 1, 0)

    body = client.V1Eviction(metadata=client.V1ObjectMeta(name="solo", namespace="default"))
    with pytest.raises(ApiException) as refused:
        core.create_namespaced_pod_eviction("solo", "default", body)
    assert refused.value.status == 429
    status = json.loads(refused.value.body)
    assert status["reason"] == "TooManyRequests"
    assert status["message"] == "Cannot evict pod as it would violate the pod's disruption budget."
    assert status["details"]["causes"] == [{
        "reason": "DisruptionBudget",
        "message": "The disruption budget solo needs 1 healthy pods and has 1 currently"}]
    assert core.read_namespaced_pod("solo", "default").metadata.deletion_timestamp is None

    policy.patch_namespaced_pod_disruption_budget("solo", "default", {"spec": {"minAvailable": 0}})
    wait_for("one disruption allowed",
             lambda: policy.read_namespaced_pod_disruption_budget("solo", "default").status.disruptions_allowed == 1)
    core.create_namespaced_pod_eviction("solo", "default", body)

    def gone_or_going():
        try:
            return core.read_namespaced_pod("solo", "default").metadata.deletion_timestamp is not None
        except ApiException as e:
            return e.status == 404
    assert wait_for("solo evicted", gone_or_going)
    st = policy.read_namespaced_pod_disruption_budget("solo", "default").status
    # The eviction spent the disruption at once (or the controller has recounted since).
    assert st.disruptions_allowed == 0

"""The scheduler through the official Python client: placement by nodeSelector and taints,
the upstream-shaped FailedScheduling condition, binding once a node fits, preemption."""
import time

import pytest
from kubernetes import client

WAIT = 30


def add_node(core, name, labels, cpu="4", taints=None):
    core.create_node({"apiVersion": "v1", "kind": "Node",
                      "metadata": {"name": name, "labels": labels},
                      "spec": {"taints": taints or []}})
    res = {"cpu": cpu, "memory": "8Gi", "pods": "110"}
    core.patch_node_status(name, {"status": {"capacity": res, "allocatable": res}})


def pod(name, cpu="100m", **spec):
    body = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
            "spec": {"containers": [{"name": "c", "image": "busybox",
                                     "resources": {"requests": {"cpu": cpu}}}]}}
    body["spec"].update(spec)
    return body


def wait_for(what, fn):
    deadline = time.monotonic() + WAIT
    while True:
        value = fn()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def bound_node(core, name):
    return wait_for(f"{name} bound", lambda: core.read_namespaced_pod(name, "default").spec.node_name)


def scheduled_condition(core, name):
    conds = core.read_namespaced_pod(name, "default").status.conditions or []
    return next((c for c in conds if c.type == "PodScheduled"), None)


@pytest.fixture
def nodes(core):
    add_node(core, "n1", {"zone": "a", "disk": "ssd"})
    add_node(core, "n2", {"zone": "b"})
    add_node(core, "n3", {"zone": "c"}, taints=[{"key": "dedicated", "value": "gpu", "effect": "NoSchedule"}])
    return core


def test_placement_and_unschedulable_report(nodes):
    core = nodes
    core.create_namespaced_pod("default", pod("ssd", nodeSelector={"disk": "ssd"}))
    core.create_namespaced_pod("default", pod("tolerant", nodeSelector={"zone": "c"},
                                              tolerations=[{"key": "dedicated", "operator": "Exists"}]))
    assert bound_node(core, "ssd") == "n1"
    assert bound_node(core, "tolerant") == "n3"
    core.create_namespaced_pod("default", pod("big", cpu="6"))
    expected = ("0/3 nodes are available: 1 node(s) had untolerated taint {dedicated: gpu}, "
                "2 Insufficient cpu. preemption: 0/3 nodes are available: "
                "3 Preemption is not helpful for scheduling.")
    cond = wait_for("the Unschedulable condition", lambda: scheduled_condition(core, "big"))
    assert (cond.status, cond.reason, cond.message) == ("False", "Unschedulable", expected)
    events = core.list_namespaced_event("default", field_selector="involvedObject.name=big").items
    assert any(e.reason == "FailedScheduling" and e.message == expected for e in events)
    add_node(core, "n4", {"zone": "d"}, cpu="8")
    assert bound_node(core, "big") == "n4"


def test_preemption(nodes):
    core = nodes
    sched = client.SchedulingV1Api(core.api_client)
    sched.create_priority_class({"metadata": {"name": "low"}, "value": 1})
    sched.create_priority_class({"metadata": {"name": "high"}, "value": 1000})
    # No node agent runs these nodes: a victim with a grace period would stay Terminating
    # (holding its room), as upstream's would; these end at once.
    for name in ("low-a", "low-b"):
        core.create_namespaced_pod("default", pod(name, cpu="3", priorityClassName="low",
                                                  terminationGracePeriodSeconds=0))
    assert {bound_node(core, "low-a"), bound_node(core, "low-b")} == {"n1", "n2"}
    core.create_namespaced_pod("default", pod("vip", cpu="3", priorityClassName="high"))
    node = bound_node(core, "vip")
    names = {p.metadata.name for p in core.list_namespaced_pod("default").items}
    assert len(names & {"low-a", "low-b"}) == 1
    survivor = (names & {"low-a", "low-b"}).pop()
    assert core.read_namespaced_pod(survivor, "default").spec.node_name != node

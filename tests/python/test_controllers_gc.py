"""The garbage collector through the Python client: a Foreground delete keeps the owner
(deletionTimestamp, the foregroundDeletion finalizer) until its blocking dependent is gone;
a Background delete collects dependents; an Orphan delete leaves them without the reference."""
import time

from kubernetes import client

DEADLINE = 30


def wait_until(what, pred):
    end = time.monotonic() + DEADLINE
    while not pred():
        assert time.monotonic() < end, f"timed out waiting until {what}"
        time.sleep(0.05)


def read(core, name):
    try:
        return core.read_namespaced_config_map(name, "default")
    except client.ApiException as e:
        assert e.status == 404, e
        return None


def cm(name, owner=None, block=True, finalizers=None):
    refs = None
    if owner is not None:
        refs = [client.V1OwnerReference(api_version="v1", kind="ConfigMap", name=owner.metadata.name,
                                        uid=owner.metadata.uid, block_owner_deletion=block)]
    return client.V1ConfigMap(metadata=client.V1ObjectMeta(name=name, owner_references=refs,
                                                           finalizers=finalizers), data={"k": "v"})


def test_foreground_delete_waits_for_blocking_dependent(core):
    owner = core.create_namespaced_config_map("default", cm("owner"))
    core.create_namespaced_config_map("default", cm("held", owner, finalizers=["example.com/hold"]))
    core.delete_namespaced_config_map("owner", "default",
                                      body=client.V1DeleteOptions(propagation_policy="Foreground"))
    wait_until("the dependent is being deleted",
               lambda: read(core, "held").metadata.deletion_timestamp is not None)
    waiting = read(core, "owner")
    assert waiting is not None, "the owner waits for its blocking dependent"
    assert waiting.metadata.deletion_timestamp is not None
    assert waiting.metadata.finalizers == ["foregroundDeletion"]
    core.patch_namespaced_config_map("held", "default", {"metadata": {"finalizers": None}})
    wait_until("the owner is gone", lambda: read(core, "owner") is None)
    assert read(core, "held") is None


def test_background_and_orphan(core):
    a = core.create_namespaced_config_map("default", cm("a"))
    core.create_namespaced_config_map("default", cm("a-dep", a, block=False))
    b = core.create_namespaced_config_map("default", cm("b"))
    core.create_namespaced_config_map("default", cm("b-dep", b))
    core.delete_namespaced_config_map("a", "default",
                                      body=client.V1DeleteOptions(propagation_policy="Background"))
    core.delete_namespaced_config_map("b", "default",
                                      body=client.V1DeleteOptions(propagation_policy="Orphan"))
    wait_until("a's dependent is collected", lambda: read(core, "a-dep") is None)
    wait_until("b is gone", lambda: read(core, "b") is None)
    kept = read(core, "b-dep")
    assert kept is not None and not kept.metadata.owner_references

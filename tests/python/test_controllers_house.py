"""The cluster housekeeping loops through the official Python client: quota refusal (and a
scoped quota's) as an ApiException (403, upstream's message), the default ServiceAccount and
root CA of a new namespace, and a namespace deleted with its contents."""
import json
import time

import pytest
from kubernetes import client
from kubernetes.client.rest import ApiException

WITHIN = 30


def wait_for(what, f, within=WITHIN):
    deadline = time.time() + within
    while True:
        v = f()
        if v:
            return v
        assert time.time() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def pod(name):
    return client.V1Pod(
        metadata=client.V1ObjectMeta(name=name),
        spec=client.V1PodSpec(containers=[client.V1Container(name="c", image="nginx")]),
    )


def test_quota_refuses_the_pod_beyond_it_with_upstreams_message(core):
    core.create_namespaced_resource_quota(
        "default",
        client.V1ResourceQuota(metadata=client.V1ObjectMeta(name="q"), spec=client.V1ResourceQuotaSpec(hard={"pods": "1"})),
    )
    def used_pods():
        status = core.read_namespaced_resource_quota("q", "default").status
        return ((status and status.used) or {}).get("pods")

    wait_for("the quota's status", lambda: used_pods() == "0")
    core.create_namespaced_pod("default", pod("one"))
    with pytest.raises(ApiException) as e:
        core.create_namespaced_pod("default", pod("two"))
    assert e.value.status == 403
    body = json.loads(e.value.body)
    assert body["reason"] == "Forbidden"
    assert body["message"] == 'pods "two" is forbidden: exceeded quota: q, requested: pods=1, used: pods=1, limited: pods=1'
    wait_for("used pods=1", lambda: used_pods() == "1")
    assert core.read_namespaced_resource_quota("q", "default").status.hard == {"pods": "1"}


def test_a_new_namespace_gets_its_account_and_ca_and_goes_when_deleted(core):
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name="py")))

    def present(read):
        try:
            return read()
        except ApiException as e:
            if e.status == 404:
                return None
            raise

    wait_for("the default ServiceAccount", lambda: present(lambda: core.read_namespaced_service_account("default", "py")))
    cm = wait_for("kube-root-ca.crt", lambda: present(lambda: core.read_namespaced_config_map("kube-root-ca.crt", "py")))
    assert cm.data["ca.crt"].startswith("-----BEGIN CERTIFICATE-----")
    core.create_namespaced_config_map("py", client.V1ConfigMap(metadata=client.V1ObjectMeta(name="x"), data={"a": "b"}))
    core.delete_namespace("py")
    wait_for("the namespace to go", lambda: present(lambda: core.read_namespace("py")) is None)


def test_a_scoped_quota_holds_only_the_pods_its_scopes_match(core):
    ns = "scoped"
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=ns)))
    wait_for("the default ServiceAccount", lambda: any(
        sa.metadata.name == "default" for sa in core.list_namespaced_service_account(ns).items))
    core.create_namespaced_resource_quota(
        ns,
        client.V1ResourceQuota(
            metadata=client.V1ObjectMeta(name="be"),
            spec=client.V1ResourceQuotaSpec(hard={"pods": "1"}, scopes=["BestEffort"]),
        ),
    )

    def used_pods():
        status = core.read_namespaced_resource_quota("be", ns).status
        return ((status and status.used) or {}).get("pods")

    wait_for("the quota's status", lambda: used_pods() == "0")
    core.create_namespaced_pod(ns, pod("free1"))
    with pytest.raises(ApiException) as e:
        core.create_namespaced_pod(ns, pod("free2"))
    assert e.value.status == 403
    assert json.loads(e.value.body)["message"] == (
        'pods "free2" is forbidden: exceeded quota: be, requested: pods=1, used: pods=1, limited: pods=1')
    # Not best-effort (it asks for cpu): outside the quota's scope.
    sized = pod("sized")
    sized.spec.containers[0].resources = client.V1ResourceRequirements(requests={"cpu": "100m"})
    core.create_namespaced_pod(ns, sized)
    wait_for("one best-effort pod counted", lambda: used_pods() == "1")
    # A scope the hard resources cannot be counted in is refused at the door.
    with pytest.raises(ApiException) as e:
        core.create_namespaced_resource_quota(
            ns,
            client.V1ResourceQuota(
                metadata=client.V1ObjectMeta(name="bad"),
                spec=client.V1ResourceQuotaSpec(hard={"requests.cpu": "1"}, scopes=["BestEffort"]),
            ),
        )
    assert e.value.status == 422
    causes = json.loads(e.value.body)["details"]["causes"]
    assert causes == [{
        "reason": "FieldValueInvalid",
        "message": 'Invalid value: []core.ResourceQuotaScope{"BestEffort"}: unsupported scope applied to resource',
        "field": "spec.scopes",
    }]

"""Custom resources through the official Python client: a CRD created with
ApiextensionsV1Api, objects through CustomObjectsApi (CRUD, status, scale, 422s, watch)."""
import time

import pytest
from kubernetes import client, watch
from kubernetes.client.rest import ApiException

CRD = {
    "apiVersion": "apiextensions.k8s.io/v1",
    "kind": "CustomResourceDefinition",
    "metadata": {"name": "queues.jobs.example.com"},
    "spec": {
        "group": "jobs.example.com",
        "scope": "Namespaced",
        "names": {"plural": "queues", "singular": "queue", "kind": "Queue"},
        "versions": [{
            "name": "v1", "served": True, "storage": True,
            "subresources": {"status": {}, "scale": {"specReplicasPath": ".spec.workers", "statusReplicasPath": ".status.workers"}},
            "schema": {"openAPIV3Schema": {
                "type": "object",
                "properties": {
                    "spec": {
                        "type": "object",
                        "required": ["capacity"],
                        "x-kubernetes-validations": [{"rule": "self.workers <= self.capacity", "message": "more workers than capacity"}],
                        "properties": {
                            "capacity": {"type": "integer", "minimum": 1},
                            "workers": {"type": "integer", "default": 1},
                        },
                    },
                    "status": {"type": "object", "properties": {"workers": {"type": "integer"}}},
                },
            }},
        }],
    },
}


def established(ext, name):
    for _ in range(50):
        crd = ext.read_custom_resource_definition(name)
        if any(c.type == "Established" and c.status == "True" for c in (crd.status.conditions or [])):
            return crd
        time.sleep(0.1)
    raise AssertionError("CRD never established")


def test_custom_objects_crud_status_scale_and_watch(capstan):
    ext = client.ApiextensionsV1Api(capstan)
    objs = client.CustomObjectsApi(capstan)
    ext.create_custom_resource_definition(CRD)
    crd = established(ext, "queues.jobs.example.com")
    assert crd.status.accepted_names.kind == "Queue"

    q = objs.create_namespaced_custom_object(
        "jobs.example.com", "v1", "default", "queues",
        {"apiVersion": "jobs.example.com/v1", "kind": "Queue", "metadata": {"name": "mail"}, "spec": {"capacity": 4}},
    )
    assert q["spec"] == {"capacity": 4, "workers": 1}
    assert q["metadata"]["generation"] == 1

    with pytest.raises(ApiException) as e:
        objs.create_namespaced_custom_object(
            "jobs.example.com", "v1", "default", "queues",
            {"apiVersion": "jobs.example.com/v1", "kind": "Queue", "metadata": {"name": "bad"}, "spec": {"capacity": 0, "workers": 3}},
        )
    assert e.value.status == 422
    import json
    causes = {(c["field"], c["message"]) for c in json.loads(e.value.body)["details"]["causes"]}
    assert ("spec.capacity", "Invalid value: 0: spec.capacity in body should be greater than or equal to 1") in causes
    assert ("spec", "Invalid value: \"object\": more workers than capacity") in causes

    objs.patch_namespaced_custom_object_status("jobs.example.com", "v1", "default", "queues", "mail", {"status": {"workers": 1}})
    scale = objs.get_namespaced_custom_object_scale("jobs.example.com", "v1", "default", "queues", "mail")
    assert scale["spec"]["replicas"] == 1 and scale["status"]["replicas"] == 1
    objs.patch_namespaced_custom_object_scale("jobs.example.com", "v1", "default", "queues", "mail", {"spec": {"replicas": 3}})
    got = objs.get_namespaced_custom_object("jobs.example.com", "v1", "default", "queues", "mail")
    assert got["spec"]["workers"] == 3 and got["status"]["workers"] == 1 and got["metadata"]["generation"] == 2

    listed = objs.list_namespaced_custom_object("jobs.example.com", "v1", "default", "queues")
    rv = listed["metadata"]["resourceVersion"]
    assert [i["metadata"]["name"] for i in listed["items"]] == ["mail"]
    objs.delete_namespaced_custom_object("jobs.example.com", "v1", "default", "queues", "mail")
    w = watch.Watch()
    seen = []
    for ev in w.stream(objs.list_namespaced_custom_object, "jobs.example.com", "v1", "default", "queues",
                       resource_version=rv, timeout_seconds=2):
        seen.append((ev["type"], ev["object"]["metadata"]["name"]))
        if ev["type"] == "DELETED":
            w.stop()
    assert seen == [("DELETED", "mail")]


def test_apiservices_follow_the_served_group_versions(capstan):
    """ApiregistrationV1Api: a Local, Available APIService per built-in and CRD
    group-version (kube-aggregator's autoregistration), gone with the CRD."""
    reg = client.ApiregistrationV1Api(capstan)
    ext = client.ApiextensionsV1Api(capstan)
    crd = dict(CRD, metadata={"name": "tasks.apisvc.example.com"})
    crd["spec"] = dict(CRD["spec"], group="apisvc.example.com",
                       names={"plural": "tasks", "singular": "task", "kind": "Task"})
    ext.create_custom_resource_definition(crd)
    established(ext, "tasks.apisvc.example.com")

    def registered():
        return {s.metadata.name: s for s in reg.list_api_service().items}

    for _ in range(100):
        services = registered()
        if "v1.apisvc.example.com" in services and services["v1.apisvc.example.com"].status.conditions:
            break
        time.sleep(0.1)
    core = services["v1."]
    assert (core.spec.group, core.spec.version, core.spec.group_priority_minimum) == ("", "v1", 18000)
    mine = services["v1.apisvc.example.com"]
    assert mine.spec.service is None
    assert (mine.spec.group_priority_minimum, mine.spec.version_priority) == (1000, 100)
    available = [c for c in mine.status.conditions if c.type == "Available"]
    assert [(c.status, c.reason) for c in available] == [("True", "Local")]

    with pytest.raises(ApiException) as bad:
        reg.create_api_service({"apiVersion": "apiregistration.k8s.io/v1", "kind": "APIService",
                                "metadata": {"name": "v1.other.example.com"},
                                "spec": {"group": "example.com", "version": "v1",
                                         "groupPriorityMinimum": 100, "versionPriority": 100}})
    assert bad.value.status == 422
    assert "metadata.name" in bad.value.body

    ext.delete_custom_resource_definition("tasks.apisvc.example.com")
    for _ in range(200):
        if "v1.apisvc.example.com" not in registered():
            break
        time.sleep(0.1)
    assert "v1.apisvc.example.com" not in registered()

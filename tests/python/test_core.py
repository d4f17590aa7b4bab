"""The official Python kubernetes client against capstan: CRUD, selectors, conflicts,
errors and the watch.Watch stream."""
import json
import time

import pytest
from kubernetes import client, watch
from kubernetes.client.rest import ApiException


def make_ns(core, name="py"):
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=name)))
    return name


def test_configmap_crud_and_selectors(core):
    ns = make_ns(core)
    for name, app in [("a", "web"), ("b", "db")]:
        core.create_namespaced_config_map(
            ns, client.V1ConfigMap(metadata=client.V1ObjectMeta(name=name, labels={"app": app}), data={"k": name})
        )
    got = core.read_namespaced_config_map("a", ns)
    assert got.data == {"k": "a"}
    assert got.metadata.uid and got.metadata.resource_version and got.metadata.creation_timestamp
    web = core.list_namespaced_config_map(ns, label_selector="app=web")
    assert [i.metadata.name for i in web.items] == ["a"]
    page = core.list_namespaced_config_map(ns, limit=1)
    assert len(page.items) == 1 and page.metadata._continue
    rest = core.list_namespaced_config_map(ns, limit=1, _continue=page.metadata._continue)
    assert [i.metadata.name for i in page.items + rest.items] == ["a", "b"]
    got.data["k"] = "changed"
    updated = core.replace_namespaced_config_map("a", ns, got)
    assert int(updated.metadata.resource_version) > int(got.metadata.resource_version)
    patched = core.patch_namespaced_config_map("a", ns, {"data": {"extra": "1"}})
    assert patched.data == {"k": "changed", "extra": "1"}
    core.delete_namespaced_config_map("a", ns)
    with pytest.raises(ApiException) as e:
        core.read_namespaced_config_map("a", ns)
    assert e.value.status == 404
    status = json.loads(e.value.body)
    assert (status["kind"], status["reason"], status["message"]) == ("Status", "NotFound", 'configmaps "a" not found')


def test_stale_update_is_a_409_and_invalid_is_a_422(core):
    ns = make_ns(core)
    cm = core.create_namespaced_config_map(ns, client.V1ConfigMap(metadata=client.V1ObjectMeta(name="c"), data={"v": "1"}))
    core.patch_namespaced_config_map("c", ns, {"data": {"v": "2"}})
    cm.data["v"] = "stale"
    with pytest.raises(ApiException) as e:
        core.replace_namespaced_config_map("c", ns, cm)
    assert e.value.status == 409
    assert "the object has been modified" in e.value.body
    with pytest.raises(ApiException) as e:
        core.create_namespaced_config_map(ns, client.V1ConfigMap(metadata=client.V1ObjectMeta(name="UPPER"), data={"bad key": "x"}))
    assert e.value.status == 422
    fields = [c["field"] for c in json.loads(e.value.body)["details"]["causes"]]
    assert "metadata.name" in fields and "data[bad key]" in fields


def test_watch_stream_sees_changes(core):
    ns = make_ns(core)
    rv = core.list_namespaced_config_map(ns).metadata.resource_version
    seen = []
    # Made before the watch starts: a watch from rv replays every change after it.
    core.create_namespaced_config_map(ns, client.V1ConfigMap(metadata=client.V1ObjectMeta(name="w"), data={"n": "1"}))
    core.patch_namespaced_config_map("w", ns, {"data": {"n": "2"}})
    core.delete_namespaced_config_map("w", ns)
    w = watch.Watch()
    for event in w.stream(core.list_namespaced_config_map, ns, resource_version=rv, timeout_seconds=10):
        # The root-CA publisher's kube-root-ca.crt appears in every new namespace too.
        if event["object"].metadata.name == "kube-root-ca.crt":
            continue
        seen.append((event["type"], event["object"].metadata.name, (event["object"].data or {}).get("n")))
        if event["type"] == "DELETED":
            w.stop()
    assert seen == [("ADDED", "w", "1"), ("MODIFIED", "w", "2"), ("DELETED", "w", "2")]


def test_selected_watches_and_lists_follow_objects_in_and_out(core):
    ns = make_ns(core, "py-selected")
    rv = core.list_namespaced_config_map(ns).metadata.resource_version

    def cm(name, app):
        return client.V1ConfigMap(metadata=client.V1ObjectMeta(name=name, labels={"app": app}), data={"n": name})

    core.create_namespaced_config_map(ns, cm("x", "a"))
    core.patch_namespaced_config_map("x", ns, {"metadata": {"labels": {"app": "b"}}})
    core.patch_namespaced_config_map("x", ns, {"metadata": {"labels": {"app": "a"}}})
    core.create_namespaced_config_map(ns, cm("y", "b"))
    # A field selector lists by the same parse of the selected fields.
    by_name = core.list_namespaced_config_map(ns, field_selector="metadata.name=y")
    assert [(i.metadata.name, i.data) for i in by_name.items] == [("y", {"n": "y"})]
    assert int(by_name.items[0].metadata.resource_version) > int(rv)
    both = core.list_namespaced_config_map(ns, field_selector="metadata.name!=kube-root-ca.crt", label_selector="app=a")
    assert [i.metadata.name for i in both.items] == ["x"]
    core.delete_namespaced_config_map("x", ns)

    def events(**selectors):
        seen = []
        w = watch.Watch()
        # Everything above happened after rv: the watch replays it, then times out.
        for event in w.stream(core.list_namespaced_config_map, ns, resource_version=rv, timeout_seconds=3, **selectors):
            o = event["object"]
            seen.append((event["type"], o.metadata.name, (o.metadata.labels or {}).get("app")))
            assert o.data == {"n": o.metadata.name}
        return seen

    # Leaving the selection is a DELETED of the object as it now is; coming back an ADDED.
    assert events(label_selector="app=a") == [
        ("ADDED", "x", "a"),
        ("DELETED", "x", "b"),
        ("ADDED", "x", "a"),
        ("DELETED", "x", "a"),
    ]
    assert events(field_selector="metadata.name=x") == [
        ("ADDED", "x", "a"),
        ("MODIFIED", "x", "b"),
        ("MODIFIED", "x", "a"),
        ("DELETED", "x", "a"),
    ]
    assert events(label_selector="app=b") == [("ADDED", "x", "b"), ("DELETED", "x", "a"), ("ADDED", "y", "b")]


def wait_namespace_gone(core, ns, seconds, why):
    deadline = time.time() + seconds
    while time.time() < deadline:
        try:
            core.read_namespace(ns)
        except ApiException as e:
            assert e.status == 404
            return
        time.sleep(0.2)
    pytest.fail(why)


def test_namespace_deletion_cascades(core):
    ns = make_ns(core, "gone")
    core.create_namespaced_secret(ns, client.V1Secret(metadata=client.V1ObjectMeta(name="s"), string_data={"p": "x"}))
    assert core.read_namespaced_secret("s", ns).data == {"p": "eA=="}
    # Like kube-apiserver, the answer is the Namespace now Terminating (the client's
    # declared return type is V1Status, so it hands back the raw dict).
    deleting = core.delete_namespace(ns)
    assert deleting["status"]["phase"] == "Terminating"
    wait_namespace_gone(core, ns, 20, "namespace was not removed")
    assert core.list_secret_for_all_namespaces(field_selector="metadata.namespace=gone").items == []


def test_namespace_deletion_counts_what_remains_past_one_page(core):
    # 1,100 ConfigMaps held by a finalizer: the namespace controller deletes them as a
    # collection and counts what remains a page (500) at a time; every one must be counted,
    # and the namespace must go once the finalizers do.
    ns = make_ns(core, "py-held")
    for i in range(1100):
        core.create_namespaced_config_map(
            ns, client.V1ConfigMap(metadata=client.V1ObjectMeta(name=f"h-{i:04}", finalizers=["example.com/hold"]))
        )
    core.delete_namespace(ns)
    want = "configmaps has 1100 resource instances"
    conds = {}
    deadline = time.time() + 30
    while time.time() < deadline:
        conds = {c.type: c for c in core.read_namespace(ns).status.conditions or []}
        remaining = conds.get("NamespaceContentRemaining")
        if remaining is not None and want in (remaining.message or ""):
            break
        time.sleep(0.2)
    else:
        pytest.fail(f"no count of 1100 remaining: {conds}")
    assert remaining.status == "True" and remaining.reason == "SomeResourcesRemain"
    held = conds["NamespaceFinalizersRemaining"]
    assert held.status == "True"
    assert "example.com/hold in 1100 resource instances" in held.message
    # Every ConfigMap is being deleted (the collection delete reached all three pages).
    items = core.list_namespaced_config_map(ns).items
    assert len(items) == 1100 and all(c.metadata.deletion_timestamp for c in items)
    for c in items:
        core.patch_namespaced_config_map(c.metadata.name, ns, {"metadata": {"finalizers": None}})
    wait_namespace_gone(core, ns, 30, "namespace was not removed after its finalizers went")


def raw(api, method, path, headers, body=None):
    """One request through the client's own transport (TLS, token), with our headers."""
    m, url, h, b, _ = api.param_serialize(
        method=method, resource_path=path, header_params=headers,
        body=None if isinstance(body, bytes) else body, auth_settings=["BearerToken"]
    )
    if isinstance(body, bytes):
        # Exact bytes (the client would re-encode a str as JSON).
        return api.rest_client.pool_manager.request(m, url, body=body, headers=h)
    resp = api.call_api(m, url, header_params=h, body=b)
    resp.read()
    return resp


def test_yaml_in_and_out(capstan, core):
    ns = make_ns(core, "yaml")
    body = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: from-yaml\ndata:\n  k: v\n"
    resp = raw(capstan, "POST", f"/api/v1/namespaces/{ns}/configmaps",
               {"Content-Type": "application/yaml", "Accept": "application/json"}, body)
    assert resp.status == 201
    assert json.loads(resp.data)["data"] == {"k": "v"}
    resp = raw(capstan, "GET", f"/api/v1/namespaces/{ns}/configmaps/from-yaml", {"Accept": "application/yaml"})
    text = resp.data.decode()
    assert resp.getheader("Content-Type") == "application/yaml"
    assert "kind: ConfigMap" in text and "name: from-yaml" in text and "k: v" in text


def test_duplicate_fields_follow_field_validation(capstan, core):
    ns = make_ns(core, "dups")
    # bytes, so the client sends them as they are (it would JSON-encode a str).
    body = b'{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"d"},"data":{"k":"1","k":"2"}}'
    resp = raw(capstan, "POST", f"/api/v1/namespaces/{ns}/configmaps?fieldValidation=Strict",
               {"Content-Type": "application/json", "Accept": "application/json"}, body)
    assert resp.status == 400
    status = json.loads(resp.data)
    assert status["reason"] == "BadRequest" and 'duplicate field "data.k"' in status["message"]
    resp = raw(capstan, "POST", f"/api/v1/namespaces/{ns}/configmaps",
               {"Content-Type": "application/json", "Accept": "application/json"}, body)
    assert resp.status == 201
    assert 'duplicate field \\"data.k\\"' in resp.getheader("Warning")
    assert json.loads(resp.data)["data"] == {"k": "2"}


def test_resource_version_semantics(core):
    ns = make_ns(core, "rv")
    first = core.create_namespaced_config_map(ns, client.V1ConfigMap(metadata=client.V1ObjectMeta(name="a"), data={"v": "1"}))
    core.patch_namespaced_config_map("a", ns, {"data": {"v": "2"}})
    # Exact: the list as it was at that revision.
    old = core.list_namespaced_config_map(ns, resource_version=first.metadata.resource_version, resource_version_match="Exact")
    assert [i.data["v"] for i in old.items if i.metadata.name == "a"] == ["1"]
    assert old.metadata.resource_version == first.metadata.resource_version
    # NotOlderThan (or "0"): at least as new, here the latest.
    assert [i.data["v"] for i in core.list_namespaced_config_map(ns, resource_version="0").items if i.metadata.name == "a"] == ["2"]
    with pytest.raises(ApiException) as e:
        core.list_namespaced_config_map(ns, resource_version="999999", resource_version_match="NotOlderThan")
    assert e.value.status == 504 and "Too large resource version" in json.loads(e.value.body)["message"]


def test_quantities_come_back_canonical_and_wrong_types_are_400(capstan, core):
    ns = make_ns(core, "py-quantities")
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "q"},
           "spec": {"containers": [{"name": "c", "image": "i",
                                    "resources": {"limits": {"cpu": "0.25", "memory": "0.5Gi"}}}]}}
    made = core.create_namespaced_pod(ns, pod)
    limits = made.spec.containers[0].resources.limits
    assert limits == {"cpu": "250m", "memory": "512Mi"}
    assert core.read_namespaced_pod("q", ns).spec.containers[0].resources.requests == limits
    # JSON numbers (what YAML `cpu: 0.5` becomes) are quantities too, and come back as the
    # strings the typed client requires.
    as_numbers = json.dumps({**pod, "metadata": {"name": "n"}}).replace('"0.25"', "0.5").replace('"0.5Gi"', "1000000000")
    resp = raw(capstan, "POST", f"/api/v1/namespaces/{ns}/pods",
               {"Content-Type": "application/json", "Accept": "application/json"}, as_numbers.encode())
    assert resp.status == 201, resp.data
    assert core.read_namespaced_pod("n", ns).spec.containers[0].resources.limits == {"cpu": "500m", "memory": "1G"}
    # A value of the wrong type is refused whole, as upstream's decoder refuses it.
    wrong = json.dumps({**pod, "metadata": {"name": "bad"}}).replace('"name": "c",', '"name": "c", "stdin": "yes",')
    resp = raw(capstan, "POST", f"/api/v1/namespaces/{ns}/pods",
               {"Content-Type": "application/json", "Accept": "application/json"}, wrong.encode())
    assert resp.status == 400, resp.data
    status = json.loads(resp.data)
    assert status["reason"] == "BadRequest"
    assert "cannot unmarshal string into field spec.containers[0].stdin of type bool" in status["message"]


def test_error_bodies_are_upstreams_bytes(core):
    """Clients compare Status bodies byte for byte: upstream's field order, no empty group
    for core types, a trailing newline."""
    with pytest.raises(ApiException) as e:
        core.read_namespaced_config_map("foo", "default")
    body = e.value.body.decode() if isinstance(e.value.body, bytes) else e.value.body
    assert body == ('{"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure",'
                    '"message":"configmaps \\"foo\\" not found","reason":"NotFound",'
                    '"details":{"name":"foo","kind":"configmaps"},"code":404}\n')


def test_delete_collection_pages_through_and_lists_what_it_deleted(core):
    # More than one of the server's internal pages (500), and a selector that keeps some.
    ns = make_ns(core, "py-dc")
    for i in range(1200):
        core.create_namespaced_config_map(
            ns,
            client.V1ConfigMap(
                metadata=client.V1ObjectMeta(name=f"cm-{i:04}", labels={"keep": "yes" if i % 100 == 0 else "no"}),
                data={"i": str(i)},
            ),
        )
    resp = core.delete_collection_namespaced_config_map(ns, label_selector="keep=no", _preload_content=False)
    body = json.loads(resp.data)
    assert body["kind"] == "ConfigMapList" and body["apiVersion"] == "v1"
    assert body["metadata"]["resourceVersion"]
    names = [i["metadata"]["name"] for i in body["items"]]
    assert len(names) == 1188 and len(set(names)) == 1188
    assert all(i["data"]["i"] for i in body["items"])
    left = sorted(c.metadata.name for c in core.list_namespaced_config_map(ns, label_selector="keep").items)
    assert left == [f"cm-{i:04}" for i in range(0, 1200, 100)]

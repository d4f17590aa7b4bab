"""/openapi/v2 through the official Python client: the JSON document (built-in kinds and a
CRD's schema with its group-version-kind), the protobuf form with the same definitions,
and the ETag's 304."""
import json
import time

from kubernetes import client

CRD = {
    "apiVersion": "apiextensions.k8s.io/v1",
    "kind": "CustomResourceDefinition",
    "metadata": {"name": "gadgets.tools.example.com"},
    "spec": {
        "group": "tools.example.com",
        "scope": "Namespaced",
        "names": {"plural": "gadgets", "singular": "gadget", "kind": "Gadget"},
        "versions": [{
            "name": "v1", "served": True, "storage": True,
            "schema": {"openAPIV3Schema": {
                "type": "object",
                "properties": {"spec": {"type": "object", "properties": {
                    "speed": {"type": "integer", "description": "How fast it goes."},
                }}},
            }},
        }],
    },
}

PROTOBUF = "application/com.github.proto-openapi.spec.v2@v1.0+protobuf"


def fetch(api, accept, headers=None):
    """GET /openapi/v2 as the client's generated methods do (param_serialize for the URL
    and credentials, then call_api); the response, read."""
    method, url, header_params, body, post_params = api.param_serialize(
        "GET", "/openapi/v2",
        header_params={"Accept": accept, **(headers or {})},
        auth_settings=["BearerToken"],
    )
    resp = api.call_api(method, url, header_params=header_params, body=body, post_params=post_params)
    resp.read()
    return resp


def varint(buf, i):
    out = shift = 0
    while True:
        b = buf[i]
        i += 1
        out |= (b & 0x7F) << shift
        shift += 7
        if b < 0x80:
            return out, i


def fields(buf):
    """(field number, bytes) of each length-delimited field of a protobuf message."""
    i = 0
    while i < len(buf):
        key, i = varint(buf, i)
        number, wire = key >> 3, key & 7
        if wire == 0:
            _, i = varint(buf, i)
        elif wire == 2:
            n, i = varint(buf, i)
            yield number, buf[i:i + n]
            i += n
        elif wire == 1:
            i += 8
        elif wire == 5:
            i += 4
        else:
            raise AssertionError(f"unexpected wire type {wire}")


def test_openapi_v2_json_protobuf_and_etag(capstan):
    ext = client.ApiextensionsV1Api(capstan)
    ext.create_custom_resource_definition(CRD)
    deadline = time.time() + 20
    while True:
        resp = fetch(capstan, "application/json")
        assert resp.status == 200
        assert resp.headers["Content-Type"] == "application/json"
        doc = json.loads(resp.data)
        gadget = doc["definitions"].get("com.example.tools.v1.Gadget")
        if gadget is not None:
            break
        assert time.time() < deadline, "the CRD never appeared in /openapi/v2"
        time.sleep(0.1)
    assert doc["swagger"] == "2.0"
    assert gadget["x-kubernetes-group-version-kind"] == [
        {"group": "tools.example.com", "kind": "Gadget", "version": "v1"}]
    assert gadget["properties"]["spec"]["properties"]["speed"] == {
        "type": "integer", "description": "How fast it goes."}
    pod = doc["definitions"]["io.k8s.api.core.v1.Pod"]
    assert pod["x-kubernetes-group-version-kind"] == [{"group": "", "kind": "Pod", "version": "v1"}]
    assert "/api/v1/namespaces/{namespace}/pods/{name}" in doc["paths"]

    etag = resp.headers["ETag"]
    unchanged = fetch(capstan, "application/json", {"If-None-Match": etag})
    assert unchanged.status == 304
    assert unchanged.data == b""

    pb = fetch(capstan, PROTOBUF)
    assert pb.status == 200
    assert pb.headers["Content-Type"] == "application/com.github.proto-openapi.spec.v2.v1.0+protobuf"
    assert pb.headers["ETag"] == etag
    top = list(fields(pb.data))
    assert (1, b"2.0") in top  # Document.swagger
    definitions = next(body for number, body in top if number == 9)
    names = set()
    for number, named in fields(definitions):
        assert number == 1  # Definitions.additional_properties
        names.add(next(v for n, v in fields(named) if n == 1).decode())  # NamedSchema.name
    assert names == set(doc["definitions"])

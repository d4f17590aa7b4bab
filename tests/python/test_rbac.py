"""RBAC from the official Python client: a non-admin kubeconfig minted by `capstan kubeconfig`
(a client certificate), allowed what its RoleBinding gives and refused the rest with 403."""
import json
import os
import pathlib
import subprocess

import pytest
from kubernetes import client, config
from kubernetes.client.rest import ApiException

ROOT = pathlib.Path(__file__).resolve().parents[2]


def user_client(data_dir, user, groups):
    binary = os.environ.get("CAPSTAN_BIN", str(ROOT / "target" / "release" / "capstan"))
    args = [binary, "kubeconfig", "--user", user, "--data-dir", str(data_dir)]
    for g in groups:
        args += ["--group", g]
    out = subprocess.run(args, check=True, capture_output=True, text=True).stdout
    path = data_dir / f"{user}.kubeconfig"
    path.write_text(out)
    return config.new_client_from_config(config_file=str(path))


def test_a_certificate_user_is_limited_to_its_binding(capstan, core, tmp_path):
    ns = "py-rbac"
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=ns)))
    client.RbacAuthorizationV1Api(capstan).create_namespaced_role_binding(
        ns,
        client.V1RoleBinding(
            metadata=client.V1ObjectMeta(name="py-alice-view"),
            role_ref=client.V1RoleRef(api_group="rbac.authorization.k8s.io", kind="ClusterRole", name="view"),
            subjects=[client.RbacV1Subject(kind="User", name="py-alice", api_group="rbac.authorization.k8s.io")],
        ),
    )
    alice = user_client(tmp_path, "py-alice", ["dev"])
    try:
        as_alice = client.CoreV1Api(alice)
        assert as_alice.list_namespaced_pod(ns).items == []
        with pytest.raises(ApiException) as e:
            as_alice.list_namespaced_secret(ns)
        assert e.value.status == 403
        status = json.loads(e.value.body)
        assert status["reason"] == "Forbidden"
        assert status["message"] == (
            'secrets is forbidden: User "py-alice" cannot list resource "secrets" '
            f'in API group "" in the namespace "{ns}"'
        )
        assert status["details"] == {"kind": "secrets"}
        with pytest.raises(ApiException) as e:
            as_alice.list_namespaced_pod("default")
        assert e.value.status == 403

        review = client.AuthorizationV1Api(alice).create_self_subject_access_review(
            client.V1SelfSubjectAccessReview(
                spec=client.V1SelfSubjectAccessReviewSpec(
                    resource_attributes=client.V1ResourceAttributes(namespace=ns, verb="list", resource="pods")
                )
            )
        )
        assert review.status.allowed is True
        rules = client.AuthorizationV1Api(alice).create_self_subject_rules_review(
            client.V1SelfSubjectRulesReview(spec=client.V1SelfSubjectRulesReviewSpec(namespace=ns))
        )
        assert any("pods" in r.resources and "list" in r.verbs for r in rules.status.resource_rules)
    finally:
        alice.close()
    core.delete_namespace(ns)

"""Service-account tokens from the official Python client: a TokenRequest through
create_namespaced_service_account_token, then a second client that uses the token."""
import copy
import time

import pytest
from kubernetes import client
from kubernetes.client.rest import ApiException


def wait_for_default_account(core, ns, within=30.0):
    deadline = time.monotonic() + within
    while True:
        try:
            return core.read_namespaced_service_account("default", ns)
        except ApiException as e:
            if e.status != 404 or time.monotonic() > deadline:
                raise
        time.sleep(0.1)


def client_with_token(capstan, token):
    cfg = copy.deepcopy(capstan.configuration)
    # The kubeconfig loader's hook would put the admin token back.
    cfg.refresh_api_key_hook = None
    cfg.api_key = {"BearerToken": "Bearer " + token}
    cfg.api_key_prefix = {}
    return client.ApiClient(cfg)


def test_a_requested_token_authenticates_as_the_service_account(capstan, core):
    ns = "py-tokens"
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=ns)))
    account = wait_for_default_account(core, ns)
    request = client.AuthenticationV1TokenRequest(
        spec=client.V1TokenRequestSpec(audiences=[], expiration_seconds=900)
    )
    issued = core.create_namespaced_service_account_token("default", ns, request)
    assert issued.status.token.count(".") == 2
    assert issued.spec.expiration_seconds == 900
    assert issued.status.expiration_timestamp is not None

    # RBAC: the account may list pods once `view` is bound to it here.
    client.RbacAuthorizationV1Api(capstan).create_namespaced_role_binding(
        ns,
        client.V1RoleBinding(
            metadata=client.V1ObjectMeta(name="default-view"),
            role_ref=client.V1RoleRef(api_group="rbac.authorization.k8s.io", kind="ClusterRole", name="view"),
            subjects=[client.RbacV1Subject(kind="ServiceAccount", name="default", namespace=ns)],
        ),
    )
    as_account = client_with_token(capstan, issued.status.token)
    try:
        pods = client.CoreV1Api(as_account).list_namespaced_pod(ns)
        assert pods.items == []
        who = client.AuthenticationV1Api(as_account).create_self_subject_review(
            client.V1SelfSubjectReview()
        )
        assert who.status.user_info.username == f"system:serviceaccount:{ns}:default"
        assert who.status.user_info.uid == account.metadata.uid
        assert f"system:serviceaccounts:{ns}" in who.status.user_info.groups
    finally:
        as_account.close()

    with pytest.raises(ApiException) as e:
        core.create_namespaced_service_account_token(
            "default",
            ns,
            client.AuthenticationV1TokenRequest(spec=client.V1TokenRequestSpec(audiences=[], expiration_seconds=60)),
        )
    assert e.value.status == 422
    assert "spec.expirationSeconds" in e.value.body
    core.delete_namespace(ns)

"""CertificateSigningRequests from the official Python client: create one (its requester is the
caller, whatever the body says), read it back, approve it through `/approval` and read the
certificate the signer issues."""
import base64
import subprocess
import time

from kubernetes import client


def csr_pem(tmp_path, subject):
    key, req = tmp_path / "key.pem", tmp_path / "req.csr"
    subprocess.run(
        ["openssl", "req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
         "-nodes", "-keyout", str(key), "-subj", subject, "-out", str(req)],
        check=True, capture_output=True,
    )
    return req.read_bytes()


def test_a_csr_is_created_read_approved_and_issued(capstan, tmp_path):
    certs = client.CertificatesV1Api(capstan)
    name = "py-csr-erin"
    created = certs.create_certificate_signing_request(
        client.V1CertificateSigningRequest(
            metadata=client.V1ObjectMeta(name=name),
            spec=client.V1CertificateSigningRequestSpec(
                request=base64.b64encode(csr_pem(tmp_path, "/CN=erin/O=dev")).decode(),
                signer_name="kubernetes.io/kube-apiserver-client",
                usages=["client auth"],
                expiration_seconds=3600,
                username="someone-else",
            ),
        )
    )
    assert created.spec.username == "system:admin"
    assert "system:masters" in created.spec.groups
    read = certs.read_certificate_signing_request(name)
    assert read.spec.signer_name == "kubernetes.io/kube-apiserver-client"
    assert read.spec.usages == ["client auth"]
    assert not (read.status and read.status.conditions)

    read.status.conditions = [
        client.V1CertificateSigningRequestCondition(
            type="Approved", status="True", reason="PythonApprove", message="approved from python"
        )
    ]
    approved = certs.replace_certificate_signing_request_approval(name, read)
    assert [c.type for c in approved.status.conditions] == ["Approved"]
    assert approved.status.conditions[0].last_update_time is not None

    deadline = time.monotonic() + 30
    while True:
        got = certs.read_certificate_signing_request(name)
        if got.status.certificate:
            break
        assert time.monotonic() < deadline, "no certificate issued"
        time.sleep(0.1)
    pem = base64.b64decode(got.status.certificate)
    assert pem.startswith(b"-----BEGIN CERTIFICATE-----")
    subject = subprocess.run(
        ["openssl", "x509", "-noout", "-subject"], input=pem, check=True, capture_output=True
    ).stdout.decode()
    assert "CN" in subject and "erin" in subject and "dev" in subject
    certs.delete_certificate_signing_request(name)

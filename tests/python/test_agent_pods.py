"""The node agent through the official Python client: a pod created with CoreV1Api runs as a
real container from the busybox test image, its log is read back, and deleting it stops the
container and removes the pod."""
import os
import pathlib
import shutil
import subprocess
import time

import pytest
from kubernetes import client, config

ROOT = pathlib.Path(__file__).resolve().parents[2]
WAIT = 60


def wait(what, pred, within=WAIT):
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        got = pred()
        if got:
            return got
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture
def node(tmp_path):
    binary = os.environ.get("CAPSTAN_BIN", str(ROOT / "target" / "release" / "capstan"))
    images = os.environ.get("CAPSTAN_TEST_IMAGES", str(ROOT / "target" / "test-images"))
    (tmp_path / "agent" / "images").mkdir(parents=True)
    shutil.copy(pathlib.Path(images) / "busybox.tar", tmp_path / "agent" / "images" / "busybox.tar")
    proc = subprocess.Popen(
        [binary, "server", "--data-dir", str(tmp_path), "--listen", "127.0.0.1:0"],
        stdout=subprocess.PIPE,
        text=True,
    )
    line = proc.stdout.readline().strip()
    assert line == f"export KUBECONFIG={tmp_path / 'kubeconfig'}", line
    api = config.new_client_from_config(config_file=str(tmp_path / "kubeconfig"))
    core = client.CoreV1Api(api)
    yield core
    api.close()
    proc.kill()
    proc.wait()
    # Containers outlive the server: `capstan cleanup` stops them and removes the agent's
    # mounts, cgroups and links.
    subprocess.run([binary, "cleanup", "--data-dir", str(tmp_path)], check=True, capture_output=True)


def test_pod_runs_logs_and_deletes(node):
    core = node
    core.create_namespaced_pod("default", {
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "py"},
        "spec": {"restartPolicy": "Never", "containers": [{
            "name": "py", "image": "busybox",
            "command": ["sh", "-c", "echo line one; echo line two; sleep 3600"]}]},
    })
    wait("the pod to run", lambda: core.read_namespaced_pod("py", "default").status.phase == "Running")
    logs = wait("both lines", lambda: (lambda l: "line two" in l and l)(
        core.read_namespaced_pod_log("py", "default")))
    assert logs == "line one\nline two\n"
    assert core.read_namespaced_pod_log("py", "default", tail_lines=1) == "line two\n"
    st = core.read_namespaced_pod("py", "default").status.container_statuses[0]
    assert st.ready and st.state.running and st.restart_count == 0
    core.delete_namespaced_pod("py", "default", grace_period_seconds=1)

    def gone():
        try:
            core.read_namespaced_pod("py", "default")
            return False
        except client.ApiException as e:
            return e.status == 404
    wait("the pod to be deleted by its node", gone, within=30)


def test_grpc_readiness_probe_follows_the_health_service(node):
    """A real gRPC server (grpcio's health service) answers the agent's grpc probe: the pod
    is Ready while the service is SERVING and not once it is NOT_SERVING."""
    from concurrent import futures

    import grpc
    from grpc_health.v1 import health, health_pb2, health_pb2_grpc

    core = node
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    servicer = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    port = server.add_insecure_port("0.0.0.0:0")
    server.start()
    try:
        servicer.set("capstan", health_pb2.HealthCheckResponse.SERVING)
        # Host network: the probe dials the node's address, where this test's server listens.
        core.create_namespaced_pod("default", {
            "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "grpc"},
            "spec": {"hostNetwork": True, "terminationGracePeriodSeconds": 1, "containers": [{
                "name": "c", "image": "busybox", "command": ["sleep", "3600"],
                "readinessProbe": {"grpc": {"port": port, "service": "capstan"},
                                   "periodSeconds": 1, "failureThreshold": 1}}]},
        })

        def ready():
            p = core.read_namespaced_pod("grpc", "default")
            return next((c.status for c in p.status.conditions or [] if c.type == "Ready"), None)
        wait("the pod to be Ready", lambda: ready() == "True")
        servicer.set("capstan", health_pb2.HealthCheckResponse.NOT_SERVING)
        wait("the pod to be not Ready", lambda: ready() == "False")

        def unhealthy():
            events = core.list_namespaced_event("default", field_selector="involvedObject.name=grpc").items
            return [e.message for e in events if e.reason == "Unhealthy"]
        messages = wait("an Unhealthy event", unhealthy)
        assert any('service unhealthy (responded with "NOT_SERVING")' in m for m in messages), messages
    finally:
        server.stop(0)

"""Exec through the official Python client's `stream()` (WebSocket, v4.channel.k8s.io): output
of both streams, the exit code from the error channel's Status, and input on stdin."""
import pytest
from kubernetes.stream import stream

from test_agent_pods import node, wait  # noqa: F401  (the node fixture)


@pytest.fixture
def running_pod(node):  # noqa: F811
    core = node
    core.create_namespaced_pod("default", {
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "py-exec"},
        "spec": {"containers": [{"name": "c", "image": "busybox", "command": ["sleep", "3600"]}]},
    })
    wait("the pod to run", lambda: core.read_namespaced_pod("py-exec", "default").status.phase == "Running")
    return core


def test_stream_exec_prints_output_and_reports_exit_codes(running_pod):
    core = running_pod
    out = stream(core.connect_get_namespaced_pod_exec, "py-exec", "default",
                 command=["sh", "-c", "echo hello from $0"],
                 stderr=True, stdin=False, stdout=True, tty=False)
    assert out == "hello from sh\n"

    resp = stream(core.connect_get_namespaced_pod_exec, "py-exec", "default",
                  command=["sh", "-c", "echo out; echo err >&2; exit 3"],
                  stderr=True, stdin=False, stdout=True, tty=False, _preload_content=False)
    resp.run_forever(timeout=30)
    assert resp.read_stdout() == "out\n"
    assert resp.read_stderr() == "err\n"
    assert resp.returncode == 3


def test_stream_exec_reads_stdin(running_pod):
    core = running_pod
    resp = stream(core.connect_get_namespaced_pod_exec, "py-exec", "default",
                  command=["sh", "-c", "read line; echo got $line"],
                  stderr=True, stdin=True, stdout=True, tty=False, _preload_content=False)
    resp.write_stdin("ping\n")
    got = ""
    for _ in range(100):
        resp.update(timeout=1)
        got += resp.read_stdout() if resp.peek_stdout() else ""
        if "got ping" in got or not resp.is_open():
            break
    assert "got ping" in got
    resp.close()

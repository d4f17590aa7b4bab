"""Starts the built capstan binary on a free port with a fresh data dir for each test."""
import os
import pathlib
import socket
import subprocess

import pytest
from kubernetes import client, config

ROOT = pathlib.Path(__file__).resolve().parents[2]


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def capstan(tmp_path):
    binary = os.environ.get("CAPSTAN_BIN", str(ROOT / "target" / "release" / "capstan"))
    proc = subprocess.Popen(
        [binary, "server", "--data-dir", str(tmp_path), "--listen", f"127.0.0.1:{_free_port()}"],
        stdout=subprocess.PIPE,
        text=True,
    )
    line = proc.stdout.readline().strip()
    assert line == f"export KUBECONFIG={tmp_path / 'kubeconfig'}", line
    api = config.new_client_from_config(config_file=str(tmp_path / "kubeconfig"))
    yield api
    api.close()
    proc.kill()
    proc.wait()


@pytest.fixture
def core(capstan):
    return client.CoreV1Api(capstan)

"""Starts the built capstan binary with a fresh data dir for each test; it picks its own
port (listen on :0) and writes it into the kubeconfig the client reads."""
import os
import pathlib
import subprocess

import pytest
from kubernetes import client, config

ROOT = pathlib.Path(__file__).resolve().parents[2]


@pytest.fixture
def capstan(tmp_path):
    binary = os.environ.get("CAPSTAN_BIN", str(ROOT / "target" / "release" / "capstan"))
    proc = subprocess.Popen(
        [binary, "server", "--no-agent", "--data-dir", str(tmp_path), "--listen", "127.0.0.1:0"],
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

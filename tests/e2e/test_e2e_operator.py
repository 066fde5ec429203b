"""The operator against a real cluster: set KAUDIT_E2E_KUBECONFIG (e.g. a kind cluster) to run.

    kind create cluster --name kaudit-e2e
    KAUDIT_E2E_KUBECONFIG=$(kind get kubeconfig-path --name kaudit-e2e 2>/dev/null || echo ~/.kube/config) \\
        python -m pytest tests/e2e -m e2e

Each test installs the CRD, runs `kaudit run --standalone` as a subprocess, and deletes what it
created (the AuditCollection, its namespace) afterwards.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

KUBECONFIG = os.environ.get("KAUDIT_E2E_KUBECONFIG")
ROOT = Path(__file__).resolve().parents[2]
pytestmark = [pytest.mark.e2e,
              pytest.mark.skipif(not KUBECONFIG, reason="set KAUDIT_E2E_KUBECONFIG to run against a real cluster")]


def kubectl(*args: str, check: bool = True, stdin: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(["kubectl", "--kubeconfig", KUBECONFIG, *args], input=stdin, text=True,
                          capture_output=True, check=check)


@pytest.fixture(scope="module")
def operator():
    kubectl("apply", "-f", str(ROOT / "crds" / "auditcollections.kaudit.dev.yaml"))
    kubectl("create", "namespace", "kaudit-e2e", check=False)
    env = {**os.environ, "KUBECONFIG": KUBECONFIG, "POD_NAMESPACE": "kaudit-e2e"}
    process = subprocess.Popen([sys.executable, "-m", "kaudit", "run", "--standalone", "--liveness-port", "0",
                                "--metrics-port", "0"], env=env)
    try:
        yield process
    finally:
        kubectl("delete", "auditcollection", "--all", "--wait=true", "--timeout=60s", check=False)
        process.terminate()
        process.wait(timeout=30)
        kubectl("delete", "namespace", "kaudit-e2e", "--wait=false", check=False)


def wait_for(predicate, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("timed out")
        time.sleep(1)


def test_policy_only_collection_becomes_ready_and_is_repaired(operator):
    manifest = {"apiVersion": "kaudit.dev/v1alpha1", "kind": "AuditCollection", "metadata": {"name": "e2e"},
                "spec": {"agent": {"mode": "None"}}}
    kubectl("apply", "-f", "-", stdin=json.dumps(manifest))
    kubectl("wait", "--for=condition=Ready", "ac/e2e", "--timeout=120s")
    kubectl("delete", "configmap", "-n", "kaudit-e2e", "kaudit-e2e-policy")
    wait_for(lambda: kubectl("get", "configmap", "-n", "kaudit-e2e", "kaudit-e2e-policy", check=False).returncode == 0)

"""The operator against a real cluster. Opt-in: set KAUDIT_E2E_KUBECONFIG, e.g. with kind:

    kind create cluster --name kaudit-e2e
    kind get kubeconfig --name kaudit-e2e > /tmp/kaudit-e2e.kubeconfig
    KAUDIT_E2E_KUBECONFIG=/tmp/kaudit-e2e.kubeconfig python -m pytest tests/e2e -m e2e

The module installs the CRD, runs ``kaudit run --standalone`` as a subprocess with that
kubeconfig, and deletes what it created (the AuditCollections, its namespaces) at the end; the CRD
stays (other AuditCollections may use it). It needs ``kubectl`` on PATH. Policy installation is
off (``spec.apiServer.installPolicy: false``): the installer image is not in a kind cluster.
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
OPERATOR_NAMESPACE = "kaudit-e2e"
AGENT_NAMESPACE = "kaudit-e2e-agent"
pytestmark = [pytest.mark.e2e,
              pytest.mark.skipif(not KUBECONFIG, reason="set KAUDIT_E2E_KUBECONFIG to run against a real cluster")]


def kubectl(*args: str, check: bool = True, stdin: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(["kubectl", "--kubeconfig", str(KUBECONFIG), *args], input=stdin, text=True,
                          capture_output=True, check=check)


def get(*args: str) -> dict:
    return json.loads(kubectl("get", *args, "-o", "json").stdout)


def wait_for(predicate, timeout: float = 90.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("timed out")
        time.sleep(1)


def collection(name: str, agent: dict) -> str:
    return json.dumps({"apiVersion": "kaudit.dev/v1alpha1", "kind": "AuditCollection", "metadata": {"name": name},
                       "spec": {"apiServer": {"installPolicy": False}, "agent": agent}})


@pytest.fixture(scope="module")
def operator():
    kubectl("apply", "-f", str(ROOT / "crds" / "auditcollections.kaudit.dev.yaml"))
    kubectl("wait", "--for=condition=Established", "crd/auditcollections.kaudit.dev", "--timeout=60s")
    for namespace in (OPERATOR_NAMESPACE, AGENT_NAMESPACE):
        kubectl("create", "namespace", namespace, check=False)
    env = {**os.environ, "KUBECONFIG": str(KUBECONFIG), "POD_NAMESPACE": OPERATOR_NAMESPACE}
    process = subprocess.Popen([sys.executable, "-m", "kaudit", "run", "--standalone", "--liveness-port", "0",
                                "--metrics-port", "0", "--resync-seconds", "10"], env=env)
    try:
        yield process
    finally:
        kubectl("delete", "auditcollection", "--all", "--wait=true", "--timeout=60s", check=False)
        process.terminate()
        process.wait(timeout=30)
        for namespace in (OPERATOR_NAMESPACE, AGENT_NAMESPACE):
            kubectl("delete", "namespace", namespace, "--wait=false", check=False)


def test_policy_only_collection_becomes_ready_is_repaired_and_quiet(operator):
    kubectl("apply", "-f", "-", stdin=collection("e2e-policy", {"mode": "None"}))
    kubectl("wait", "--for=condition=Ready", "ac/e2e-policy", "--timeout=120s")
    # Events: the API server accepted them (in "default"), and kubectl describe shows them.
    wait_for(lambda: "Reconciled" in kubectl("describe", "ac", "e2e-policy").stdout, 30)
    name = "kaudit-e2e-policy-policy"
    # Drift: a deleted child comes back from the watch, well before the resync.
    kubectl("delete", "configmap", "-n", OPERATOR_NAMESPACE, name)
    wait_for(lambda: kubectl("get", "configmap", "-n", OPERATOR_NAMESPACE, name, check=False).returncode == 0, 30)
    # Quiet: nothing changes, so the object's resourceVersion stays through two resyncs.
    version = get("configmap", "-n", OPERATOR_NAMESPACE, name)["metadata"]["resourceVersion"]
    time.sleep(25)
    assert get("configmap", "-n", OPERATOR_NAMESPACE, name)["metadata"]["resourceVersion"] == version
    kubectl("delete", "ac", "e2e-policy", "--wait=true", "--timeout=60s")


def test_daemonset_mode_patches_and_hands_back_exactly(operator):
    user_tolerations = [{"key": "dedicated", "operator": "Equal", "value": "gpu", "effect": "NoSchedule"}]
    daemon_set = {
        "apiVersion": "apps/v1", "kind": "DaemonSet",
        "metadata": {"name": "datadog-agent", "namespace": AGENT_NAMESPACE},
        "spec": {"selector": {"matchLabels": {"app": "e2e-agent"}}, "template": {
            "metadata": {"labels": {"app": "e2e-agent"}},
            "spec": {"tolerations": user_tolerations, "containers": [{
                "name": "agent", "image": "registry.k8s.io/pause:3.9",
                "env": [{"name": "DD_LOGS_ENABLED", "value": "true"}]}]}}},
    }
    kubectl("apply", "--server-side", "--field-manager", "e2e-user", "-f", "-", stdin=json.dumps(daemon_set))
    before = get("daemonset", "-n", AGENT_NAMESPACE, "datadog-agent")
    agent = {"mode": "DaemonSet", "namespace": AGENT_NAMESPACE,
             "daemonSet": {"name": "datadog-agent", "container": "agent"}}
    kubectl("apply", "-f", "-", stdin=collection("e2e-ds", agent))
    wait_for(lambda: any(c["type"] == "AgentConfigured" and c["status"] == "True"
                         for c in get("ac", "e2e-ds").get("status", {}).get("conditions", [])))
    patched = get("daemonset", "-n", AGENT_NAMESPACE, "datadog-agent")
    assert patched["metadata"]["labels"]["kaudit.dev/collection"] == "e2e-ds"
    assert len(patched["spec"]["template"]["spec"]["tolerations"]) > len(user_tolerations)
    assert any(m["manager"] == "kaudit" and m["operation"] == "Apply" for m in patched["metadata"]["managedFields"])

    kubectl("delete", "ac", "e2e-ds", "--wait=true", "--timeout=90s")
    after = get("daemonset", "-n", AGENT_NAMESPACE, "datadog-agent")
    assert "kaudit.dev/collection" not in (after["metadata"].get("labels") or {})
    # kaudit applies nothing any more; the restored tolerations are recorded as an Update by kaudit.
    managers = {(m["manager"], m["operation"]) for m in after["metadata"].get("managedFields") or []}
    assert ("kaudit", "Apply") not in managers
    # The pod template is the user's again, field for field.
    assert after["spec"]["template"]["spec"]["tolerations"] == user_tolerations
    assert after["spec"]["template"]["spec"]["containers"] == before["spec"]["template"]["spec"]["containers"]
    assert (after["spec"]["template"]["metadata"].get("annotations") or {}) == \
        (before["spec"]["template"]["metadata"].get("annotations") or {})

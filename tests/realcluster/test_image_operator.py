"""The operator image on the real control plane: a Managed collection from create to Ready.

kaudit is installed with ``kubectl apply -k manifests/`` (the session's ``kaudit_installed``). The
operator is the image tests/image_support.py builds, run by podman as the installed Deployment
runs it: its arguments and environment, its pod and container security context (user 65532,
read-only root, no capability, only the /tmp emptyDir writable), under its ServiceAccount's token
from a kubeconfig mounted read-only, on the host network so it reaches the plane on loopback. The
policy installer of each control-plane node is a real ``kaudit install-policy`` process, as in
test_managed.py. A collection name of its own, removed with its children at the end, keeps this
module out of the way of the others.
"""

from __future__ import annotations

import base64
import json
import urllib.request
from pathlib import Path

import pytest

import kaudit_harness as kh
from image_support import container_flags, operator_container, operator_image  # noqa: F401  (fixture)
from plane import free_port, wait_for

from kaudit.render import render

NAME = "image"
KUBECONFIG = "/var/run/kaudit/kubeconfig"  # where the container finds its credentials


def collection() -> dict:
    return {"apiVersion": "kaudit.dev/v1alpha1", "kind": "AuditCollection", "metadata": {"name": NAME},
            "spec": {"policy": {"profile": "Default"},
                     "agent": {"mode": "Managed", "namespace": kh.AGENT_NAMESPACE,
                               "managed": {"apiKeySecretRef": {"name": "datadog-secret", "key": "api-key"}}}}}


def self_contained_kubeconfig(plane, installation, path):
    """The ServiceAccount's kubeconfig with the CA inline: the container sees this one file only."""
    config = json.loads(plane.kubeconfig_for_service_account(installation.namespace,
                                                             installation.service_account).read_text())
    for cluster in config["clusters"]:
        ca_file = cluster["cluster"].pop("certificate-authority")
        cluster["cluster"]["certificate-authority-data"] = base64.b64encode(Path(ca_file).read_bytes()).decode()
    path.write_text(json.dumps(config))
    path.chmod(0o644)  # as a Secret volume's default mode: readable by the operator's user
    return path


def container_run(deployment: dict, namespace: str, ports: dict[str, int]) -> tuple[list[str], list[str], dict]:
    """podman flags, ``kaudit`` arguments and env of the Deployment's operator container."""
    pod, container = operator_container(deployment)
    args = [arg for arg in container["args"] if not arg.startswith(kh.PORT_FLAGS)]
    args += [f"{flag}={ports[flag]}" for flag in kh.PORT_FLAGS]  # free ports: the host network is shared
    env = {e["name"]: e["value"] for e in container["env"] if "value" in e}
    env.update({e["name"]: namespace for e in container["env"]
                if e.get("valueFrom", {}).get("fieldRef", {}).get("fieldPath") == "metadata.namespace"})
    return container_flags(pod, container, host_paths={}), args, env


@pytest.fixture(scope="module")
def image_operator(control_plane, kaudit_installed, operator_image, tmp_path_factory):  # noqa: F811
    plane, installation = control_plane, kaudit_installed
    home = tmp_path_factory.mktemp("image-operator")
    if plane.get_or_none("secret", "-n", kh.AGENT_NAMESPACE, "datadog-secret") is None:
        plane.kubectl("create", "secret", "generic", "-n", kh.AGENT_NAMESPACE, "datadog-secret",
                      "--from-literal=api-key=x")
    deployment = plane.get("deployment", "-n", installation.namespace, installation.deployment)
    ports = {flag: free_port() for flag in kh.PORT_FLAGS}
    flags, args, env = container_run(deployment, installation.namespace, ports)
    kubeconfig = self_contained_kubeconfig(plane, installation, home / "kubeconfig")
    env["KUBECONFIG"] = KUBECONFIG
    name = f"kaudit-operator-{free_port()}"
    log = (home / "operator.log").open("w")
    process = operator_image.podman.popen(
        "run", "--rm", "--name", name, "--network", "host", *flags, "--volume", f"{kubeconfig}:{KUBECONFIG}:ro",
        *[f"--env={key}={value}" for key, value in env.items()], operator_image.tag, *args)
    state = {"mark": plane.audit_mark(), "ports": ports, "env": env, "installers": [], "log": home / "operator.log"}
    try:
        wait_for(lambda: _answers(ports["--liveness-port"], "/healthz") or _exited(process, state), 120,
                 "the image's operator to answer /healthz")
        plane.apply(collection())
        state["installers"] = plane.start_installers(
            collection=NAME, namespace=installation.namespace,
            policy_dir=lambda node: tmp_path_factory.mktemp(f"image-policy-{node}"))
        yield state
    finally:
        kh.delete_collection(plane, NAME)
        for installer in state["installers"]:
            installer.stop()
        operator_image.podman("stop", "--time", "10", name, check=False)
        try:
            process.wait(30)
        finally:
            process.kill()
            log.close()
        # The garbage collector removes the children; later modules start from an empty cluster.
        wait_for(lambda: not [o for o in kh.children(plane, NAME) if o["kind"] != "Lease"], 60,
                 f"the children of {NAME} to be garbage collected")


def _answers(port: int, path: str) -> str | None:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=2) as response:
            return response.read().decode() if response.status == 200 else None
    except OSError:
        return None


def _exited(process, state) -> None:
    if process.poll() is not None:
        raise AssertionError(f"the operator container exited {process.returncode}:\n{state['log'].read_text()[-3000:]}")


def test_create_becomes_ready_with_the_installers_in_the_loop(control_plane, kaudit_installed, image_operator):
    plane = control_plane
    done = plane.kubectl("wait", "--for=condition=Ready", f"ac/{NAME}", "--timeout=120s", check=False)
    assert done.returncode == 0, f"{done.stderr}\noperator log:\n{image_operator['log'].read_text()[-3000:]}"
    status = plane.get("ac", NAME)["status"]
    assert status["observedGeneration"] == 1
    conditions = kh.conditions(plane, NAME)
    assert {t: conditions[t]["status"] for t in ("PolicyValid", "AgentConfigured", "PolicyInstalled", "Ready")} == {
        "PolicyValid": "True", "AgentConfigured": "True", "PolicyInstalled": "True", "Ready": "True"}
    reported = {node["name"]: node["installedHash"] for node in status["nodes"]}
    assert sorted(reported) == sorted(plane.control_plane_nodes)
    assert all(value.startswith(status["policy"]["hash"]) for value in reported.values()), reported
    for installer in image_operator["installers"]:
        assert installer.target.read_text() == installer.source.read_text()


def test_it_applied_what_kaudit_render_shows(control_plane, kaudit_installed, image_operator):
    # The packaged operator applies the objects the sources render for the same collection and image.
    expected = render(collection(), namespace=kaudit_installed.namespace,
                      image=image_operator["env"]["KAUDIT_IMAGE"]).objects
    live = [o for o in kh.children(control_plane, NAME) if o["kind"] != "Lease"]
    assert sorted((o["kind"], o["metadata"]["namespace"], o["metadata"]["name"]) for o in live) == sorted(
        (o["kind"], o["metadata"].get("namespace"), o["metadata"]["name"]) for o in expected)
    by_name = {(o["kind"], o["metadata"]["name"]): o for o in live}
    for obj in expected:
        if obj["kind"] == "DaemonSet":
            applied = by_name[("DaemonSet", obj["metadata"]["name"])]["spec"]["template"]["spec"]["containers"]
            assert [c["image"] for c in applied] == [c["image"] for c in obj["spec"]["template"]["spec"]["containers"]]


def test_writes_came_from_its_service_account_and_were_allowed(control_plane, kaudit_installed, image_operator):
    writes = control_plane.requests_since(image_operator["mark"], user=kaudit_installed.user())
    assert writes, "the operator in the image sent no write under its ServiceAccount"
    everything = control_plane.requests_since(image_operator["mark"], user=kaudit_installed.user(), verbs=None)
    assert kh.permission_problems(everything, kaudit_installed.namespace) == []


def test_liveness_and_metrics_endpoints_answer(image_operator):
    ports = image_operator["ports"]
    assert _answers(ports["--liveness-port"], "/healthz") is not None
    metrics = _answers(ports["--metrics-port"], "/metrics")
    assert metrics is not None
    reconciles = [float(line.rsplit(" ", 1)[1]) for line in metrics.splitlines()
                  if line.startswith("kaudit_reconciles_total")]
    assert reconciles and sum(reconciles) >= 1, metrics[:2000]

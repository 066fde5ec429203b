"""The install commands in README.md work as written (run offline: helm --dry-run, kubectl kustomize)."""

from __future__ import annotations

import re
import shlex
import subprocess

from helmtools import CRDS, REPO, helm, k8s_tools, kubectl, load_documents, validation_errors  # noqa: F401


def install_section_commands() -> list[list[str]]:
    readme = (REPO / "README.md").read_text()
    section = readme.split("<!-- section: install -->", 1)[1].split("<!-- section:", 1)[0]
    blocks = re.findall(r"```sh\n(.*?)```", section, flags=re.S)
    return [shlex.split(line) for block in blocks for line in block.splitlines() if line.strip()]


def run_in_repo(binary, args: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(binary.binary), *args], cwd=REPO, env=binary.env,
                          capture_output=True, text=True, timeout=120)


def test_readme_shows_both_install_lines():
    commands = [" ".join(c[:3]) for c in install_section_commands()]
    assert "helm install kaudit" in commands
    assert "kubectl apply -k" in commands


def test_readme_helm_install_line_renders_a_valid_release(helm):
    command = next(c for c in install_section_commands() if c[:2] == ["helm", "install"])
    # The line as written, plus a client-side dry run: no cluster needed, same chart resolution,
    # same values and schema checks, same templates.
    done = run_in_repo(helm, [*command[1:], "--dry-run=client"])
    assert done.returncode == 0, done.stderr
    manifest = done.stdout.split("MANIFEST:", 1)[1].split("NOTES:", 1)[0]
    objects = load_documents(manifest)
    assert {o["kind"] for o in objects} >= {"Deployment", "ClusterRole", "ServiceAccount"}
    assert all(o["metadata"].get("namespace", "kaudit-system") == "kaudit-system"
               for o in objects if o["kind"] in ("Deployment", "ServiceAccount"))
    # Helm's dry run leaves crds/ out of the manifest; custom resources are checked against them.
    crds = [doc for path in CRDS.glob("*.yaml") for doc in load_documents(path.read_text())]
    assert validation_errors(objects, crds) == []


def test_readme_kubectl_apply_k_line_builds(kubectl):
    command = next(c for c in install_section_commands() if c[:3] == ["kubectl", "apply", "-k"])
    # `kubectl apply -k DIR` builds DIR with the kustomize compiled into kubectl, as here.
    done = run_in_repo(kubectl, ["kustomize", command[3]])
    assert done.returncode == 0, done.stderr
    kinds = {o["kind"] for o in load_documents(done.stdout)}
    assert {"CustomResourceDefinition", "Namespace", "Deployment"} <= kinds


# --- every other helm/kubectl line of README.md ---------------------------------------------------
# The lines above need nothing but the repository. The rest act on a cluster (create, apply -f,
# wait, get); they are checked offline against what they rely on: kubectl's own client-side
# handling where it has one, otherwise the CRD, the examples and the operator's condition types.

def readme_tool_lines() -> list[list[str]]:
    readme = (REPO / "README.md").read_text()
    blocks = re.findall(r"```sh\n(.*?)```", readme, flags=re.S)
    lines = [re.sub(r"\\\n\s*", "", block) for block in blocks]
    commands = [shlex.split(line, comments=True) for block in lines for line in block.splitlines()]
    return [c for c in commands if c and c[0] in ("helm", "kubectl")]


def example(name: str) -> dict:
    return load_documents((REPO / "examples" / name).read_text())[0]


def collection_crd() -> dict:
    return load_documents((CRDS / "auditcollections.kaudit.dev.yaml").read_text())[0]


def check_secret(kubectl, command: list[str]) -> None:
    # kubectl builds the Secret client-side with --dry-run=client: no cluster needed.
    done = run_in_repo(kubectl, [*command[1:], "--dry-run=client", "-o", "json"])
    assert done.returncode == 0, done.stderr
    secret = load_documents(done.stdout)[0]
    ref = example("managed.yaml")["spec"]["agent"]["managed"]["apiKeySecretRef"]
    # The Secret the Managed example points at, in the agent's namespace (docs/api.md: datadog).
    assert secret["metadata"]["name"] == ref["name"] and ref["key"] in secret["data"]
    assert secret["metadata"]["namespace"] == example("managed.yaml")["spec"]["agent"].get("namespace", "datadog")


def check_apply_file(command: list[str]) -> None:
    path = REPO / command[command.index("-f") + 1]
    assert validation_errors(load_documents(path.read_text()), [collection_crd()]) == []


def check_wait(command: list[str]) -> None:
    from kaudit.reconcile.status import CONDITION_TYPES

    condition = next(a for a in command if a.startswith("--for=condition="))[len("--for=condition="):]
    kind, _, name = next(a for a in command[2:] if "/" in a).partition("/")
    assert condition in CONDITION_TYPES
    names = collection_crd()["spec"]["names"]
    assert kind in {names["plural"], names["singular"], *names.get("shortNames", ())}
    assert name == example("managed.yaml")["metadata"]["name"]


def check_get_jsonpath(command: list[str]) -> None:
    names = collection_crd()["spec"]["names"]
    assert command[2] in {names["plural"], names["singular"], *names.get("shortNames", ())}
    path = re.fullmatch(r"\{\.status\.(\w+)\}", command[command.index("-o") + 1].split("=", 1)[1]).group(1)
    status = collection_crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["status"]
    assert path in status["properties"]


def test_every_readme_helm_and_kubectl_line_is_checked(kubectl):
    unchecked = []
    for command in readme_tool_lines():
        if command[:2] == ["helm", "install"] or command[:3] == ["kubectl", "apply", "-k"]:
            continue  # the tests above
        if command[:4] == ["kubectl", "create", "secret", "generic"]:
            check_secret(kubectl, command)
        elif command[:3] == ["kubectl", "apply", "-f"]:
            check_apply_file(command)
        elif command[:2] == ["kubectl", "wait"]:
            check_wait(command)
        elif command[:2] == ["kubectl", "get"] and "-o" in command:
            check_get_jsonpath(command)
        else:
            unchecked.append(" ".join(command))
    assert unchecked == [], "README.md shows a helm/kubectl line no test checks: add a check here"

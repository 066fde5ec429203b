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

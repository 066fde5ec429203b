"""Static checks of the Dockerfile and .dockerignore.

These tests check what can be read from the files (base tags, user, entry point, labels, the build
context), and that the chart and the rendered installer agree with the image; tests/test_image.py
builds the image and runs it (where podman is installed).
"""

from __future__ import annotations

import fnmatch
import re
import shlex
from pathlib import Path

import yaml

from helmtools import CHART, REPO

DOCKERFILE = REPO / "Dockerfile"


def instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    result = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            result.append((word.upper(), rest.strip()))
    return result


def stages() -> list[list[tuple[str, str]]]:
    found: list[list[tuple[str, str]]] = []
    for instruction in instructions():
        if instruction[0] == "FROM":
            found.append([])
        if found:
            found[-1].append(instruction)
    return found


def global_args() -> dict[str, str]:
    args = {}
    for word, rest in instructions():
        if word == "FROM":
            break
        if word == "ARG" and "=" in rest:
            name, value = rest.split("=", 1)
            args[name] = value
    return args


def resolve(image: str) -> str:
    return re.sub(r"\$\{(\w+)\}|\$(\w+)", lambda m: global_args()[m.group(1) or m.group(2)], image)


def test_multi_stage_on_a_pinned_slim_python_base():
    bases = [resolve(stage[0][1].split()[0]) for stage in stages()]
    assert len(bases) >= 2, "expected a build stage and a runtime stage"
    for base in bases:
        name, _, tag = base.partition(":")
        assert name.endswith("python") and tag, f"{base}: use a tagged Python base"
        assert tag != "latest" and "slim" in tag, f"{base}: pin a slim tag, never latest"


def test_runtime_stage_runs_kaudit_run_as_a_numeric_non_root_user():
    runtime = stages()[-1]
    users = [rest for word, rest in runtime if word == "USER"]
    assert users, "the runtime stage must set USER"
    uid, _, gid = users[-1].partition(":")
    assert uid.isdigit() and int(uid) > 0, "numeric, so runAsNonRoot can be checked without /etc/passwd"
    assert gid.isdigit() and int(gid) > 0
    entrypoint = next(rest for word, rest in reversed(runtime) if word == "ENTRYPOINT")
    cmd = next(rest for word, rest in reversed(runtime) if word == "CMD")
    assert yaml.safe_load(entrypoint) + yaml.safe_load(cmd) == ["kaudit", "run"]  # exec form (JSON)

    # The chart's pod security context names the same user.
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    assert values["podSecurityContext"]["runAsUser"] == int(uid)
    assert values["podSecurityContext"]["runAsGroup"] == int(gid)


def test_runtime_stage_is_read_only_root_filesystem_friendly():
    runtime = stages()[-1]
    env = " ".join(rest for word, rest in runtime if word == "ENV")
    assert "PYTHONDONTWRITEBYTECODE=1" in env  # no __pycache__ writes at run time
    assert "HOME=/tmp" in env and "TMPDIR=/tmp" in env  # /tmp is the pod's emptyDir
    build = stages()[0]
    assert any(word == "RUN" and "compileall" in rest for word, rest in build), "precompile bytecode at build time"
    # The runtime stage copies the built environment only, never the sources or the context.
    copies = [rest for word, rest in runtime if word == "COPY"]
    assert copies and all(rest.startswith("--from=") for rest in copies)


def test_oci_labels():
    labels = " ".join(rest for word, rest in stages()[-1] if word == "LABEL")
    for key in ("title", "description", "version", "revision", "created", "licenses"):
        assert f"org.opencontainers.image.{key}=" in labels


def test_every_variable_a_stage_uses_is_declared_in_that_stage():
    # Docker's rule (Dockerfile reference, "Understand how ARG and FROM interact"): an ARG declared
    # before the first FROM serves FROM lines only; inside a stage it expands to "" unless the
    # stage declares it again with ARG. ENV in the stage also defines it.
    for stage in stages():
        declared: set[str] = set()
        for word, rest in stage[1:]:
            if word == "ARG":
                declared.add(rest.split("=", 1)[0])
            # A name starts with a letter or _: $1 in a RUN line is the shell's positional parameter.
            used = re.findall(r"\$\{([A-Za-z_]\w*)\}|\$([A-Za-z_]\w*)", rest)
            for name in {a or b for a, b in used} - {"PATH"}:
                assert name in declared, f"{word} {rest[:40]}...: ${{{name}}} is empty in this stage"
            if word == "ENV":
                declared.update(re.findall(r"(\w+)=", rest))


def dockerignore_keeps(path: str, patterns: list[str]) -> bool:
    """Docker's rule, for the patterns used here: the last matching pattern decides."""
    keep = True
    for pattern in patterns:
        negate = pattern.startswith("!")
        pattern = pattern.lstrip("!").rstrip("/")
        parts = path.split("/")
        prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
        if pattern == "**" or any(fnmatch.fnmatch(prefix, pattern) for prefix in prefixes):
            keep = negate
    return keep


def test_build_context_holds_what_the_build_copies_and_nothing_else():
    patterns = [line.strip() for line in (REPO / ".dockerignore").read_text().splitlines()
                if line.strip() and not line.startswith("#")]
    # The build stage copies the wheels scripts/build-image makes, and nothing else of the context.
    copied = [source.rstrip("/") for word, rest in stages()[0] if word == "COPY"
              for source in shlex.split(rest)[:-1]]
    assert copied == ["dist/image/wheels"]
    assert 'WHEELS=dist/image/wheels' in (REPO / "scripts" / "build-image").read_text()
    assert dockerignore_keeps("dist/image/wheels/kaudit-0.1.0-py3-none-any.whl", patterns)
    # No file of the checkout reaches a layer: no sources, tests, caches, virtual environments or
    # git metadata (wheels are built outside the build, from a clean copy of the sources).
    files = [p.relative_to(REPO).as_posix() for p in REPO.rglob("*") if p.is_file() and ".git/" not in p.as_posix()]
    assert {f for f in files if dockerignore_keeps(f, patterns)} <= {f for f in files if f.startswith("dist/image/wheels/")}
    for path in ("operator/kaudit/__init__.py", "pyproject.toml", ".venv/bin/python", ".cache/k8s/x", "tests/x.py",
                 "dist/image/pip-install-report.json"):
        assert not dockerignore_keeps(path, patterns), path


def test_build_installs_wheels_only_offline_into_a_venv_without_pip():
    build = " ".join(rest for word, rest in stages()[0] if word == "RUN")
    assert "--no-index" in build and "--find-links /wheels" in build
    assert "venv --without-pip" in build
    assert "--invalidation-mode unchecked-hash" in build  # .pyc files independent of file times


def test_installer_runs_the_same_image_as_root_through_its_pod_security_context():
    from kaudit.render import render

    collection = {"apiVersion": "kaudit.dev/v1alpha1", "kind": "AuditCollection",
                  "metadata": {"name": "cluster"}, "spec": {"agent": {"mode": "None"}}}
    rendered = render(collection, namespace="kaudit-system", image="kaudit/kaudit:1.0.0")
    installer = next(o for o in rendered.objects if o["kind"] == "DaemonSet"
                     and o["metadata"]["labels"]["app.kubernetes.io/component"] == "policy-installer")
    pod = installer["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert container["image"] == "kaudit/kaudit:1.0.0"
    # The image's ENTRYPOINT is kaudit; the installer picks its sub-command.
    assert container["command"] == ["kaudit"] and container["args"][0] == "install-policy"
    assert pod["securityContext"]["runAsUser"] == 0  # overrides the image's USER 65532
    assert container["securityContext"]["readOnlyRootFilesystem"] is True

"""Every `kaudit ...` command shown in README.md works as written, so the examples cannot rot.

The ``sh`` code blocks of README.md are read line by line (a trailing backslash continues a line).
Commands that need no cluster and no input from outside this repository run in order, in one
scratch directory that holds ``examples/`` and ``bench/``, through a shell (the README's redirections
and comments included) with ``kaudit`` meaning this interpreter's installed package; each must exit
0. Commands that need a cluster (``kaudit run``) are parsed with kaudit's own argument parser
instead. The one command that writes under ``/etc`` runs with that prefix moved into the scratch
directory. helm and kubectl lines are covered by tests/test_chart_readme_commands.py.

The links in README.md are checked too: each relative link names an existing file, and each
``#anchor`` a heading of that file.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
# The one system path a README command writes to; it is moved into the scratch directory.
SYSTEM_PREFIX = "/etc/kubernetes/audit-policies"
# Lines that prepare input for the kaudit commands after them (a generated sample audit log).
PREPARATION = ("python bench/gen_events.py ",)


def shell_lines(markdown: str) -> list[str]:
    """The command lines of every ```sh block, continuation lines joined."""
    lines: list[str] = []
    for block in re.findall(r"```sh\n(.*?)```", markdown, flags=re.S):
        for line in re.sub(r"\\\n\s*", "", block).splitlines():
            if line.strip() and not line.lstrip().startswith("#"):
                lines.append(line.strip())
    return lines


def words(line: str) -> list[str]:
    return shlex.split(line, comments=True)


def kaudit_argv(line: str) -> list[str] | None:
    """The kaudit arguments of a line (after any VAR=value prefix), or None for other programs."""
    argv = words(line)
    while argv and re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*=.*", argv[0]):
        argv = argv[1:]
    return argv[1:] if argv and argv[0] == "kaudit" else None


def needs_cluster(argv: list[str]) -> bool:
    return argv[:1] == ["run"]


def readme_lines() -> list[str]:
    return shell_lines(README.read_text())


def offline_lines() -> list[str]:
    return [line for line in readme_lines()
            if line.startswith(PREPARATION)
            or ((argv := kaudit_argv(line)) is not None and not needs_cluster(argv))]


def cluster_lines() -> list[str]:
    return [line for line in readme_lines() if (argv := kaudit_argv(line)) is not None and needs_cluster(argv)]


@pytest.fixture(scope="module")
def results(tmp_path_factory) -> dict[str, subprocess.CompletedProcess[str]]:
    """Runs the offline lines once, in README order (later lines read files earlier ones wrote)."""
    work = tmp_path_factory.mktemp("readme")
    for name in ("examples", "bench"):
        (work / name).symlink_to(ROOT / name)
    (work / SYSTEM_PREFIX.lstrip("/")).mkdir(parents=True)
    shim = work / "bin"
    shim.mkdir()
    # `kaudit` is the package installed for this interpreter, and `python` this interpreter, whatever
    # else is on PATH (scripts rather than symlinks: a symlinked venv python would leave its venv).
    for name, command in (("kaudit", f'{shlex.quote(sys.executable)} -m kaudit'),
                          ("python", shlex.quote(sys.executable))):
        (shim / name).write_text(f'#!/bin/sh\nexec {command} "$@"\n')
        (shim / name).chmod(0o755)
    env = {**os.environ, "PATH": f"{shim}{os.pathsep}{os.environ.get('PATH', '')}"}
    env.pop("POD_NAMESPACE", None)
    env.pop("KAUDIT_IMAGE", None)
    done = {}
    for line in offline_lines():
        command = line.replace(SYSTEM_PREFIX, str(work / SYSTEM_PREFIX.lstrip("/")))
        done[line] = subprocess.run(["bash", "-eo", "pipefail", "-c", command], cwd=work, env=env,
                                    capture_output=True, text=True, timeout=120)
    return done


def test_the_readme_shows_every_offline_command():
    # If the extraction broke, the parametrised test below would pass on nothing.
    shown = {" ".join(argv[:2]) for line in offline_lines() if (argv := kaudit_argv(line))}
    assert {"render -f", "policy render", "policy validate", "policy lint", "policy eval", "policy simulate",
            "install-policy --from"} <= shown


def line_id(line: str) -> str:
    return " ".join(words(line))


@pytest.mark.parametrize("line", offline_lines(), ids=line_id)
def test_offline_command_exits_0(results, line):
    done = results[line]
    assert done.returncode == 0, f"{line}\n{done.stderr}"
    assert "Traceback" not in done.stderr


@pytest.mark.parametrize("line", cluster_lines(), ids=line_id)
def test_cluster_command_parses(line):
    from kaudit.cli import build_parser

    args = build_parser().parse_args(kaudit_argv(line))  # argparse exits 2 on an unknown option or value
    assert callable(args.func)


def test_the_readme_shows_the_operator_command():
    assert cluster_lines(), "README.md should show how to run the operator"


def test_the_readme_e2e_command_names_what_the_e2e_tests_read():
    line = next(line for line in readme_lines() if "tests/e2e" in line)
    variable = words(line)[0].split("=", 1)[0]
    assert variable
    argv = words(line)
    marker = argv[len(argv) - 1 - argv[::-1].index("-m") + 1]  # pytest's -m, not python's
    e2e_sources = "".join(p.read_text() for p in (ROOT / "tests" / "e2e").glob("test_*.py"))
    assert f'os.environ.get("{variable}")' in e2e_sources
    assert f"pytest.mark.{marker}" in e2e_sources


# --- links ----------------------------------------------------------------------------------------

def github_anchor(heading: str) -> str:
    """The id GitHub gives a Markdown heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def anchors(markdown: str) -> set[str]:
    without_code = re.sub(r"```.*?```", "", markdown, flags=re.S)
    return {github_anchor(h) for h in re.findall(r"^#{1,6} (.+)$", without_code, flags=re.M)}


def relative_links(markdown: str) -> list[str]:
    without_code = re.sub(r"```.*?```", "", markdown, flags=re.S)
    return [target for target in re.findall(r"\]\(([^)\s]+)\)", without_code)
            if not re.match(r"[a-z]+:", target)]


def test_github_anchor_matches_githubs_rule():
    # GitHub drops backticks and parentheses and keeps hyphens: "## The operator (`kaudit run`)".
    assert github_anchor("The operator (`kaudit run`)") == "the-operator-kaudit-run"
    assert github_anchor("CRDs and upgrades") == "crds-and-upgrades"


@pytest.mark.parametrize("target", relative_links(README.read_text()))
def test_readme_link_resolves(target):
    path, _, anchor = target.partition("#")
    file = (ROOT / path) if path else README
    assert file.exists(), f"{target}: no such file"
    if anchor and file.suffix == ".md":
        assert anchor in anchors(file.read_text()), f"{target}: no heading with that anchor"

"""The simulate examples printed in README.md and docs/simulate.md are real output of this code.

Each documented example names the generated log it ran on (``bench/gen_events.py --size-mb 1
--seed 7``: the same seed gives the same file) and shows the command after ``$ ``. The test
regenerates that log, runs each command as a user would and compares the output line by line, so
a change of the estimates or of the table layout that is not reflected in the docs fails here.
"""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCUMENTS = ("README.md", "docs/simulate.md")
GENERATOR = ROOT / "bench" / "gen_events.py"
# The log the examples say they ran on.
LOG_NAME, LOG_MB, LOG_SEED = "small.log", "1", "7"
_EXAMPLE = re.compile(r"```text\n\$ (kaudit policy simulate [^\n]*)\n(.*?)```", re.S)


def examples() -> list[tuple[str, str, str]]:
    found = []
    for name in DOCUMENTS:
        text = (ROOT / name).read_text()
        found += [(name, command, output) for command, output in _EXAMPLE.findall(text)]
    return found


def test_every_document_shows_an_example():
    assert {name for name, _, _ in examples()} == set(DOCUMENTS)


@pytest.fixture(scope="module")
def log_directory(tmp_path_factory) -> Path:
    directory = tmp_path_factory.mktemp("examples")
    subprocess.run([sys.executable, str(GENERATOR), "--size-mb", LOG_MB, "--out", LOG_NAME, "--seed", LOG_SEED],
                   cwd=directory, check=True, capture_output=True, timeout=120)
    return directory


@pytest.mark.parametrize("document, command, shown", [
    pytest.param(*example, id=f"{example[0]}#{number}") for number, example in enumerate(examples(), 1)
])
def test_the_documented_output_is_what_the_command_prints(log_directory, document, command, shown):
    args = shlex.split(command)
    assert args[:3] == ["kaudit", "policy", "simulate"] and LOG_NAME in args
    result = subprocess.run([sys.executable, "-m", "kaudit", *args[1:]], cwd=log_directory,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    # Trailing blanks are not visible in a document; every other character is compared.
    printed = [row.rstrip() for row in result.stdout.rstrip("\n").splitlines()]
    documented = [row.rstrip() for row in shown.rstrip("\n").splitlines()]
    assert documented == printed, f"{document}: regenerate the example of `{command}`"

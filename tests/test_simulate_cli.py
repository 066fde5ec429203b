"""``kaudit policy simulate`` as a user runs it: a subprocess, its output and exit code."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from simulate_support import EVERYTHING_METADATA, POLICY, line, scenario, written_size


def kaudit(*args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "kaudit", "policy", "simulate", *args],
                          input=stdin, capture_output=True, timeout=120)


@pytest.fixture
def files(tmp_path):
    log = tmp_path / "audit.log"
    log.write_bytes(b"".join(line(ev) for ev in scenario()))
    policy = tmp_path / "policy.yaml"
    policy.write_text(POLICY)
    baseline = tmp_path / "baseline.yaml"
    baseline.write_text(EVERYTHING_METADATA)
    return {"log": str(log), "policy": str(policy), "baseline": str(baseline)}


def test_json_output_and_quiet_stderr(files):
    result = kaudit("--policy", files["policy"], "--events", files["log"], "-o", "json")
    assert result.returncode == 0, result.stderr
    # Not a terminal: no progress line on stderr.
    assert result.stderr == b""
    doc = json.loads(result.stdout)
    assert doc["kind"] == "PolicySimulation" and doc["version"] == 1
    assert doc["input"]["events"] == 8
    assert doc["policy"]["source"] == files["policy"]


def test_stdin(files):
    with open(files["log"], "rb") as handle:
        data = handle.read()
    result = kaudit("--policy", files["policy"], "--events", "-", "-o", "json", stdin=data)
    assert result.returncode == 0, result.stderr
    doc = json.loads(result.stdout)
    assert doc["input"]["files"][0]["name"] == "<stdin>"
    assert doc["input"]["events"] == 8


def test_table_and_markdown_carry_the_same_figures(files):
    table = kaudit("--policy", files["policy"], "--events", files["log"]).stdout.decode()
    markdown = kaudit("--policy", files["policy"], "--events", files["log"], "-o", "markdown").stdout.decode()
    for text in (table, markdown):
        assert "8 events" in text
        assert "bob" in text and "configmaps" in text
        assert "would log bodies of sensitive resources" in text
    assert markdown.startswith("# Audit policy simulation")
    assert "| level | events | bytes | share | under-recorded |" in markdown


def test_fail_if_increase(files):
    events = scenario()
    # POLICY writes e2..e5 (see test_simulate_core); EVERYTHING_METADATA all eight at Metadata,
    # which is more: 3752 against 2308 bytes with these events, +62.56 %.
    selective = (written_size(events[1], "Metadata") + written_size(events[2], "RequestResponse")
                 + written_size(events[3], "RequestResponse", omit_managed_fields=True)
                 + written_size(events[4], "Request"))
    everything = sum(written_size(ev, "Metadata") for ev in events)
    assert (selective, everything) == (2308, 3752)
    common = ("--events", files["log"], "-o", "json")
    widen = ("--policy", files["baseline"], "--baseline", files["policy"])
    above = kaudit(*widen, "--fail-if-increase", "62.5", *common)
    assert above.returncode == 3
    assert above.stderr.decode() == (
        "error: estimated volume rises from 2308 to 3752 bytes, more than the allowed 62.5%\n")
    assert json.loads(above.stdout)["comparison"]["bytes"]["changePercent"] == 62.56
    assert kaudit(*widen, "--fail-if-increase", "62.6", *common).returncode == 0
    # Narrowing never fails, even with a zero threshold.
    narrow = kaudit("--policy", files["policy"], "--baseline", files["baseline"], "--fail-if-increase", "0", *common)
    assert narrow.returncode == 0, narrow.stderr


def test_fail_if_increase_needs_a_baseline(files):
    result = kaudit("--policy", files["policy"], "--events", files["log"], "--fail-if-increase", "20")
    assert result.returncode == 1
    assert result.stderr.decode().strip() == (
        "error: --fail-if-increase: needs --baseline or --baseline-profile to compare with")


def test_profile_with_options(files):
    result = kaudit("--profile", "Default", "--omit-read-only", "--baseline-profile", "Default",
                    "--events", files["log"], "-o", "json")
    assert result.returncode == 0, result.stderr
    doc = json.loads(result.stdout)
    assert doc["policy"]["source"] == "profile Default"
    assert doc["baseline"]["source"] == "profile Default"
    # omit-read-only adds rules before the profile's: the two policies differ.
    assert doc["policy"]["hash"] != doc["baseline"]["hash"]


@pytest.mark.parametrize("args, message", [
    (["--events", "MISSING"], "MISSING: no such file"),
    (["--events", "LOG", "--omit-read-only"], "--policy: --rules, --omit-read-only, --omit-stages, "
                                              "--keep-managed-fields, --operator-namespace, --collection and "
                                              "--no-audit-kaudit apply to --profile only"),
    # A typo must not silently mean "the newest version" (which accepts more than older ones).
    (["--events", "LOG", "--kubernetes-version", "1,33"],
     "--kubernetes-version: expected a version such as \"1.33\", got '1,33'"),
])
def test_bad_input_is_one_line_exit_1(files, tmp_path, args, message):
    args = [a.replace("LOG", files["log"]).replace("MISSING", str(tmp_path / "missing.log")) for a in args]
    message = message.replace("MISSING", str(tmp_path / "missing.log"))
    result = kaudit("--policy", files["policy"], *args)
    assert result.returncode == 1
    assert result.stderr.decode() == f"error: {message}\n"
    assert b"Traceback" not in result.stderr


def test_invalid_policy_file_names_the_field(files, tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("apiVersion: audit.k8s.io/v1\nkind: Policy\nrules:\n- level: Loud\n")
    result = kaudit("--policy", str(bad), "--events", files["log"])
    assert result.returncode == 1
    err = result.stderr.decode()
    assert err.startswith(f"error: {bad}:4:3: rules[0].level") and err.count("\n") == 1
    assert result.stdout == b""

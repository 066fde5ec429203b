"""`kaudit run`: options map onto kopf.operator() as documented (no cluster: kopf.operator is stubbed)."""

from __future__ import annotations

import subprocess
import sys

import kopf
import pytest

import kaudit.cli.run
from kaudit.cli import main


@pytest.fixture
def operator_calls(monkeypatch):
    # `kaudit run` blocks a not-yet-imported kubernetes package for kopf's sake (a None entry in
    # sys.modules); in this shared test process the entry goes again with the test.
    monkeypatch.setitem(sys.modules, "kubernetes", sys.modules.get("kubernetes"))

    calls = []

    async def fake_operator(**kwargs):
        calls.append(kwargs)

    async def no_problem(peering):
        return None  # credentials and peering object: tested in test_input_contract.py and test_operator_peering.py

    monkeypatch.setattr(kopf, "operator", fake_operator)
    monkeypatch.setattr(kopf, "configure", lambda **_: None)
    monkeypatch.setattr(kaudit.cli.run, "_preflight", no_problem)
    return calls


def test_standalone_runs_without_peering(operator_calls):
    assert main(["run", "--standalone", "--metrics-port", "0", "--liveness-port", "8081"]) == 0
    [call] = operator_calls
    assert call["clusterwide"] is True and call["standalone"] is True
    assert "peering_name" not in call  # a peering name would make kopf wait for the peering CRD
    assert "identity" not in call
    assert call["liveness_endpoint"] == "http://0.0.0.0:8081/healthz"


def test_replicas_peer_with_a_random_priority_by_default(operator_calls):
    main(["run", "--metrics-port", "0"])
    main(["run", "--metrics-port", "0"])
    assert [c["peering_name"] for c in operator_calls] == ["kaudit", "kaudit"]
    assert operator_calls[0]["priority"] != operator_calls[1]["priority"]  # 1 in 2**31 to collide
    # kaudit names this replica in the peering object itself, to read kopf's verdict from it.
    assert operator_calls[0]["identity"] != operator_calls[1]["identity"]
    main(["run", "--metrics-port", "0", "--priority", "7", "--peering", "other"])
    assert (operator_calls[2]["peering_name"], operator_calls[2]["priority"]) == ("other", 7)


def test_detection_sync_settings_reach_the_reconciler_and_missing_keys_stop_the_start(operator_calls, monkeypatch,
                                                                                     capsys):
    monkeypatch.delenv("DD_API_KEY", raising=False)
    monkeypatch.delenv("DD_APP_KEY", raising=False)
    assert main(["run", "--standalone", "--detection-sync"]) == 1 and operator_calls == []
    assert capsys.readouterr().err.splitlines() == [
        "error: DD_API_KEY and DD_APP_KEY: not set (the Datadog API and application keys, for --detection-sync)"]
    monkeypatch.setenv("DD_API_KEY", "api")
    monkeypatch.setenv("DD_APP_KEY", "app")
    assert main(["run", "--standalone", "--metrics-port", "0", "--detection-sync", "--detection-sync-site",
                 "datadoghq.eu", "--detection-sync-cluster", "prod-eu", "--detection-sync-dry-run"]) == 0
    [call] = operator_calls
    sync = call["memo"].options.config.detection_sync
    assert (sync.site, sync.cluster, sync.owner, sync.dry_run) == ("datadoghq.eu", "prod-eu", "", True)
    assert (sync.credentials.api_key, sync.credentials.app_key) == ("api", "app")
    assert "app" not in repr(sync)  # the keys never reach a log line


def test_run_help_is_there_and_the_command_module_stays_light():
    out = subprocess.run([sys.executable, "-m", "kaudit", "run", "--help"], capture_output=True, text=True)
    assert out.returncode == 0 and "--standalone" in out.stdout and "/metrics" in out.stdout
    # Registering the command must not import kopf: other commands start fast.
    code = "import sys, kaudit.cli.run; print('kopf' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout.strip() == "False"


LOGGING_RUN = """
import logging, sys, kopf
async def fake_operator(**_):
    logging.getLogger("kaudit.operator").info("reconciled %s", "cluster")
    logging.getLogger("kopf.objects").warning("a kopf message")
kopf.operator = fake_operator
import kaudit.cli.run
async def no_problem(peering):
    return None
kaudit.cli.run._preflight = no_problem
from kaudit.cli import main
sys.exit(main(["run", "--standalone", "--metrics-port", "0", "--liveness-port", "0"] + sys.argv[1:]))
"""


def run_logging(*args: str) -> list[str]:
    out = subprocess.run([sys.executable, "-c", LOGGING_RUN, *args], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return [line for line in (out.stdout + out.stderr).splitlines() if line.strip()]


def test_logs_are_one_json_object_per_line_by_default():
    import json

    records = [json.loads(line) for line in run_logging()]  # fails on any line that is not JSON
    messages = {r.get("message") for r in records}
    assert {"reconciled cluster", "a kopf message"} <= messages  # kaudit's own logger and kopf's
    assert all(r.get("severity") and r.get("timestamp") for r in records)  # kopf's JSON formatter fields


def test_text_logs_on_request():
    lines = run_logging("--log-format", "text")
    assert any("reconciled cluster" in line and not line.startswith("{") for line in lines)

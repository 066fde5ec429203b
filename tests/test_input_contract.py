"""The input contract of every command (docs/cli.md), table-driven: every command that reads a file
× every kind of bad input. Each case asserts the exit code, exactly one line on stderr in the form
``error: <file>[:<line>:<col>]: ...`` naming the file (or the option), no traceback, nothing on
standard output and, for install-policy, the installed file untouched.

The cases run in-process through ``main([...])`` (fast, and a regression shows as a plain failure),
except those a crash could turn into a dead pytest (deeply nested YAML, guarded against libyaml's
recursive composer) and those that need a process of their own (``kaudit run``'s credentials).
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from kaudit.cli import main
from kaudit.documents import MAX_BYTES
from render_support import EXAMPLES, ROOT

POLICY = "apiVersion: audit.k8s.io/v1\nkind: Policy\nomitStages: [RequestReceived]\nrules:\n- level: Metadata\n"
EVENT = {"kind": "Event", "apiVersion": "audit.k8s.io/v1", "level": "Metadata", "stage": "ResponseComplete",
         "verb": "get", "requestURI": "/api/v1/namespaces/a/pods/p", "user": {"username": "u"},
         "objectRef": {"resource": "pods", "namespace": "a", "name": "p", "apiVersion": "v1"},
         "responseStatus": {"code": 200}}
SECRET = "SECRET-TOKEN-5f2b9c"  # appears in bad input; must never appear in what kaudit prints

# The kinds of bad input, as bytes (None: the kind is a path, made by the fixture).
KINDS = {
    "empty": b"",
    "binary": bytes(range(256)) * 8,
    "huge": b"# padding line\n" * (MAX_BYTES // 15 + 1),  # just over the limit
    "deep": b"[" * 100_000 + b"]" * 100_000 + b"\n",
    "invalid-yaml": f"token: {SECRET}\nrules: [\n  - level: None\n".encode(),
    "not-a-mapping": b"- a\n- list\n",
    "wrong-kind": None,  # the other kind of kaudit document
    "missing": None,
    "directory": None,
}


@dataclass(frozen=True)
class Reader:
    """One file argument of one command: how to build the argv, and what it expects to read."""

    name: str
    argv: tuple[str, ...]  # IN stands for the bad input; LOG, POLICY, TARGET for good files
    reads: str  # collection, existing, policy, rules or log

    def __str__(self) -> str:
        return self.name


READERS = [
    Reader("render -f", ("render", "-f", "IN"), "collection"),
    Reader("render --existing", ("render", "-f", str(EXAMPLES / "daemonset.yaml"), "--existing", "IN"), "existing"),
    Reader("policy validate", ("policy", "validate", "IN"), "policy"),
    Reader("policy lint", ("policy", "lint", "IN"), "policy"),
    Reader("policy eval --policy", ("policy", "eval", "--policy", "IN", "--events", "LOG"), "policy"),
    Reader("policy eval --events", ("policy", "eval", "--policy", "POLICY", "--events", "IN"), "log"),
    Reader("policy render --rules", ("policy", "render", "--profile", "Default", "--rules", "IN"), "rules"),
    Reader("policy simulate --policy", ("policy", "simulate", "--policy", "IN", "--events", "LOG"), "policy"),
    Reader("policy simulate --baseline",
           ("policy", "simulate", "--profile", "Default", "--baseline", "IN", "--events", "LOG"), "policy"),
    Reader("policy simulate --rules", ("policy", "simulate", "--profile", "Default", "--rules", "IN", "--events", "LOG"),
           "rules"),
    Reader("policy simulate --events", ("policy", "simulate", "--profile", "Default", "--events", "IN"), "log"),
    Reader("policy simulate --fail-if-increase",
           ("policy", "simulate", "--profile", "Default", "--baseline-profile", "Default", "--fail-if-increase", "1",
            "--events", "IN"), "log"),
    Reader("install-policy --from", ("install-policy", "--from", "IN", "--to", "TARGET", "--once"), "policy"),
    Reader("rules check --policy", ("rules", "check", "--policy", "IN", "--fail-on", "never"), "policy"),
    Reader("rules check --rules", ("rules", "check", "--profile", "Default", "--rules", "IN"), "rule-json"),
    Reader("rules sync --rules", ("rules", "sync", "--owner", "fleet", "--dry-run", "--rules", "IN"), "rule-json"),
    Reader("rules check -f", ("rules", "check", "-f", "IN"), "collection"),
    Reader("policy simulate --detections",
           ("policy", "simulate", "--profile", "Default", "--events", "LOG", "--detections", "IN"), "rule-json"),
]

YAML_READERS = ("collection", "existing", "policy", "rules")
NO_EVENT = "no audit event"
# What the one line says, by (what the argument reads, kind of input). A kind missing here is not
# bad input for that argument (an empty --rules file means no custom rules) or, for --existing,
# belongs to the choice of the live object (its own tests).
EXPECTED = {
    **{(reads, "binary"): "binary data, not a YAML or JSON text" for reads in YAML_READERS},
    **{(reads, "huge"): "too large: over the 4 MiB limit" for reads in YAML_READERS},
    **{(reads, "deep"): "nested too deeply (more than 64 levels)" for reads in YAML_READERS},
    **{(reads, "invalid-yaml"): ":3:3: not valid YAML" for reads in YAML_READERS},
    **{(reads, "missing"): ": no such file" for reads in YAML_READERS + ("log", "rule-json")},
    **{(reads, "directory"): ": is a directory, not a file" for reads in YAML_READERS + ("rule-json",)},
    # Detection rules are JSON (Datadog API or Terraform JSON), read by their own loader.
    **{("rule-json", kind): "not JSON" for kind in ("empty", "binary", "huge", "deep", "invalid-yaml",
                                                    "not-a-mapping", "wrong-kind")},
    ("collection", "empty"): "expected one AuditCollection document, the file is empty",
    ("collection", "not-a-mapping"): "expected an AuditCollection object, got array",
    ("collection", "wrong-kind"): "kind: this is an audit Policy (audit.k8s.io/v1), not an AuditCollection",
    ("policy", "empty"): "the file is empty: a policy needs at least one rule",
    ("policy", "not-a-mapping"): "the document is a list, not a mapping",
    ("policy", "wrong-kind"): "kind: this is an AuditCollection (kaudit.dev/v1alpha1), not an audit Policy",
    ("rules", "wrong-kind"): "kind: this is an AuditCollection (kaudit.dev/v1alpha1), not an audit Policy",
    ("log", "empty"): f"{NO_EVENT}: the input is empty",
    # Logs are streamed, so size is no limit for them ("huge" is not bad input there).
    **{("log", kind): NO_EVENT for kind in ("binary", "deep", "invalid-yaml", "not-a-mapping", "wrong-kind")},
}
# libyaml's composer recurses per level: a regression of the depth guard would kill the process.
SUBPROCESS_KINDS = {"deep"}

CASES = [(reader, kind) for reader in READERS for kind in KINDS if (reader.reads, kind) in EXPECTED]


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> dict[str, str]:
    """Every kind of bad input as a path, and the good files the commands need besides."""
    root = tmp_path_factory.mktemp("inputs")
    paths = {}
    for kind, data in KINDS.items():
        if data is not None:
            (root / kind).write_bytes(data)
            paths[kind] = str(root / kind)
    paths["missing"] = str(root / "does-not-exist.yaml")
    (root / "a-directory").mkdir()
    paths["directory"] = str(root / "a-directory")
    (root / "policy.yaml").write_text(POLICY)
    paths["POLICY"] = str(root / "policy.yaml")
    (root / "audit.log").write_text(json.dumps(EVENT) + "\n")
    paths["LOG"] = str(root / "audit.log")
    return paths


def wrong_kind_path(reader: Reader, inputs: dict[str, str]) -> str:
    """An audit Policy where an AuditCollection belongs, an AuditCollection anywhere else."""
    return inputs["POLICY"] if reader.reads == "collection" else str(EXAMPLES / "managed.yaml")


@pytest.fixture
def target(tmp_path) -> Path:
    """An installed policy that no failed install-policy may touch."""
    path = tmp_path / "installed" / "policy.yaml"
    path.parent.mkdir()
    path.write_text(POLICY.replace("Metadata", "Request"))
    os.chmod(path, 0o600)
    return path


def argv_for(reader: Reader, bad: str, inputs: dict[str, str], target: Path) -> list[str]:
    names = {"IN": bad, "LOG": inputs["LOG"], "POLICY": inputs["POLICY"], "TARGET": str(target)}
    return [names.get(arg, arg) for arg in reader.argv]


def run_in_process(argv: list[str], capsys, monkeypatch, stdin: bytes = b"") -> tuple[int, str, str]:
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(stdin)))
    try:
        code = main(argv)
    except SystemExit as exc:  # argparse's usage errors
        code = exc.code
    out, err = capsys.readouterr()
    return code, out, err


def run_process(argv: list[str], stdin: bytes = b"", env: dict | None = None) -> tuple[int, str, str]:
    result = subprocess.run([sys.executable, "-m", "kaudit", *argv], input=stdin, capture_output=True,
                            timeout=60, cwd=ROOT, env=env)
    return result.returncode, result.stdout.decode(errors="replace"), result.stderr.decode(errors="replace")


def snapshot(target: Path) -> tuple:
    st = os.stat(target)
    return target.read_bytes(), st.st_mtime_ns, st.st_ino, sorted(os.listdir(target.parent))


def assert_one_error_line(code: int, out: str, err: str, *fragments: str, exit_code: int = 1) -> str:
    assert code == exit_code, err
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("error: "), err
    assert "Traceback" not in err and SECRET not in err and SECRET not in out
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    assert out == "", out  # nothing written
    return lines[0]


@pytest.mark.parametrize("reader, kind", CASES, ids=[f"{r}-{k}" for r, k in CASES])
def test_bad_input_is_one_line_naming_the_file_and_nothing_is_written(reader, kind, inputs, target, capsys,
                                                                      monkeypatch):
    bad = wrong_kind_path(reader, inputs) if kind == "wrong-kind" else inputs[kind]
    argv = argv_for(reader, bad, inputs, target)
    before = snapshot(target)
    if kind in SUBPROCESS_KINDS:
        code, out, err = run_process(argv)
    else:
        code, out, err = run_in_process(argv, capsys, monkeypatch)
    expected = EXPECTED[reader.reads, kind]
    if reader.reads == "log" and kind == "directory":
        expected = "a directory without *.log" if "simulate" in argv else "is a directory, not a file"
    line = assert_one_error_line(code, out, err, expected)
    assert line.startswith(f"error: {bad}"), line  # the file first, as the user named it
    assert snapshot(target) == before


# --- standard input -------------------------------------------------------------------------------

STDIN_READERS = [reader for reader in READERS if reader.reads != "existing" and "install-policy" not in reader.argv]


@pytest.mark.parametrize("reader", STDIN_READERS, ids=str)
def test_binary_data_on_standard_input_is_named_as_such(reader, inputs, target, capsys, monkeypatch):
    argv = argv_for(reader, "-", inputs, target)
    code, out, err = run_in_process(argv, capsys, monkeypatch, stdin=KINDS["binary"])
    expected = {"log": NO_EVENT, "rule-json": "not JSON"}.get(reader.reads, "binary data, not a YAML or JSON text")
    assert_one_error_line(code, out, err, "error: <stdin>", expected)


@pytest.mark.parametrize("argv, option", [
    (["render", "-f", "-", "--existing", "-"], "--existing"),
    (["policy", "validate", "-", "-"], "FILE"),
    (["policy", "eval", "--policy", "-", "--events", "-"], "--events"),
    (["policy", "simulate", "--policy", "-", "--events", "-"], "--events"),
    (["policy", "simulate", "--profile", "Default", "--rules", "-", "--events", "-"], "--events"),
    (["policy", "simulate", "--profile", "Default", "--events", "-", "-"], "--events"),
    (["rules", "check", "--policy", "-", "--rules", "-"], "--rules"),
], ids=lambda value: " ".join(value) if isinstance(value, list) else value)
def test_standard_input_given_twice_is_refused_before_reading(argv, option, capsys, monkeypatch):
    code, out, err = run_in_process(argv, capsys, monkeypatch, stdin=POLICY.encode())
    assert_one_error_line(code, out, err, f"error: {option}: standard input ('-') ")
    assert sys.stdin.read() == POLICY  # not one byte was read


def test_standard_input_that_is_closed_is_one_line(capsys, monkeypatch):
    monkeypatch.setattr(sys, "stdin", None)  # as under a service manager that gives none
    code = main(["policy", "validate", "-"])
    out, err = capsys.readouterr()
    assert_one_error_line(code, out, err, "error: <stdin>: cannot read")


# --- the issue's own cases ----------------------------------------------------------------------

def test_a_huge_auditcollection_is_refused_before_parsing(tmp_path, capsys, monkeypatch):
    # 50 MB of rules took 137 s and 4.2 GB before the limit; now only MAX_BYTES + 1 bytes are read.
    path = tmp_path / "huge.yaml"
    rule = b"    - {level: Metadata, users: [someone]}\n"
    with open(path, "wb") as handle:
        handle.write(b"apiVersion: kaudit.dev/v1alpha1\nkind: AuditCollection\nmetadata: {name: c}\n"
                     b"spec:\n  policy:\n    rules:\n")
        handle.write(rule * (50_000_000 // len(rule)))
    code, out, err = run_in_process(["render", "-f", str(path)], capsys, monkeypatch)
    assert_one_error_line(code, out, err, f"error: {path}: too large: over the 4 MiB limit")


def test_duplicate_keys_in_an_auditcollection_are_refused_with_their_position(tmp_path, capsys, monkeypatch):
    path = tmp_path / "dup.yaml"
    path.write_text("apiVersion: kaudit.dev/v1alpha1\nkind: AuditCollection\nmetadata: {name: c}\n"
                    "spec:\n  agent: {mode: None}\n  agent: {mode: Managed}\n")
    code, out, err = run_in_process(["render", "-f", str(path)], capsys, monkeypatch)
    # Line 6, column 3: the second "agent", the one a YAML decoder would silently keep.
    assert_one_error_line(code, out, err, f'error: {path}:6:3: spec.agent: duplicate field "agent"')


def test_unknown_auditcollection_fields_get_a_did_you_mean_and_never_echo_the_value(tmp_path, capsys, monkeypatch):
    path = tmp_path / "typo.yaml"
    path.write_text("apiVersion: kaudit.dev/v1alpha1\nkind: AuditCollection\nmetadata: {name: c}\n"
                    f"spec:\n  agnet: {{mode: None}}\n  apiKey: {SECRET}\n")
    code, out, err = run_in_process(["render", "-f", str(path)], capsys, monkeypatch)
    assert code == 1 and out == "" and SECRET not in err
    assert err.splitlines() == [
        f'error: {path}:5:3: spec.agnet: unknown field "agnet"; did you mean "agent"?',
        f'error: {path}:6:3: spec.apiKey: unknown field "apiKey"',
    ]


@pytest.mark.parametrize("events", ["empty", "wrong-kind", "binary"])
def test_fail_if_increase_fails_closed_on_input_without_an_event(events, inputs, capsys, monkeypatch):
    path = inputs["POLICY"] if events == "wrong-kind" else inputs[events]
    argv = ["policy", "simulate", "--profile", "AllRequestBodies", "--baseline-profile", "None",
            "--fail-if-increase", "0", "--events", path]
    code, out, err = run_in_process(argv, capsys, monkeypatch)
    assert_one_error_line(code, out, err, f"error: {path}: {NO_EVENT}")  # 1, not 0 (pass) or 3 (report)


def test_eval_gives_up_on_a_long_run_of_lines_without_an_event(inputs, tmp_path, capsys, monkeypatch):
    import kaudit.cli.policy

    monkeypatch.setattr(kaudit.cli.policy, "HOLD_LINES", 5000)  # 100,000 in use; smaller here for speed
    log = tmp_path / "garbage.log"
    log.write_text("not an event\n" * 200_000 + json.dumps(EVENT) + "\n")  # 2.6 MB: more than one batch
    code, out, err = run_in_process(["policy", "eval", "--policy", inputs["POLICY"], "--events", str(log)],
                                    capsys, monkeypatch)
    # Held lines stay bounded: it stops at the first batch past the bound, having written nothing.
    line = assert_one_error_line(code, out, err, f"error: {log}: no audit event: none of its first ")
    assert 5000 <= int(line.split("none of its first ")[1].split()[0]) < 200_000, line


def test_eval_writes_nothing_until_a_line_is_an_event(inputs, tmp_path, capsys, monkeypatch):
    # Malformed lines before the first event are held back, then written in order: nothing is lost.
    log = tmp_path / "late.log"
    log.write_text("not json\n\n" + json.dumps(EVENT) + "\n")
    code, out, err = run_in_process(["policy", "eval", "--policy", inputs["POLICY"], "--events", str(log)],
                                    capsys, monkeypatch)
    assert (code, err) == (0, "")
    assert [set(json.loads(line)) for line in out.splitlines()] == [
        {"error"}, {"error"}, {"level", "omitStages", "omitManagedFields", "rule"}]


# --- one lint verdict, whichever command reads the policy ------------------------------------------

NESTED_VERBS = ("apiVersion: audit.k8s.io/v1\nkind: Policy\nomitStages: [RequestReceived]\nrules:\n"
                "- level: RequestResponse\n  resources:\n  - group: ''\n    resources: [pods]\n    verbs: [create]\n"
                "- level: Metadata\n")
VERDICT = ("rules[0].resources[0].verbs: unknown field: 'verbs' belongs on the rule, not inside a resources entry; "
           "kube-apiserver drops it silently, so this rule matches every verb")


def test_one_lint_verdict_whichever_command_reads_the_policy(tmp_path, inputs, capsys, monkeypatch):
    path = tmp_path / "nested.yaml"
    path.write_text(NESTED_VERBS)
    rules = tmp_path / "rules.yaml"
    rules.write_text("- level: RequestResponse\n  resources:\n  - group: ''\n    resources: [pods]\n"
                     "    verbs: [create]\n")
    target = tmp_path / "installed.yaml"
    warning = f"warning: {path}: {VERDICT}"
    for argv, code in ((["policy", "validate", str(path)], 0), (["policy", "lint", str(path)], 1),
                       (["install-policy", "--from", str(path), "--to", str(target), "--once"], 0)):
        got, _, err = run_in_process(argv, capsys, monkeypatch)
        assert (got, err.splitlines()) == (code, [warning]), argv
    # policy render --rules: the same words, naming the rules file.
    _, _, err = run_in_process(["policy", "render", "--profile", "None", "--rules", str(rules)], capsys, monkeypatch)
    assert f"warning: {rules}: {VERDICT}" in err.splitlines()
    # simulate: among the report's warnings, for the candidate (JSON: the same list).
    code, out, _ = run_in_process(["policy", "simulate", "--policy", str(path), "--events", inputs["LOG"], "-o", "json"],
                                  capsys, monkeypatch)
    assert code == 0 and f"candidate: {path}: {VERDICT}" in json.loads(out)["warnings"]


def test_install_policy_reports_the_lints_in_its_log_and_its_node_report(tmp_path, caplog):
    from kaudit.installer.follow import policy_validator, policy_warnings, run_round
    from kaudit.installer.lease import ANNOTATION_WARNINGS, Identity
    from kaudit.installer.reports import parse_report
    from kaudit.installer.service import Reporter, log_outcome

    source, target = tmp_path / "policy.yaml", tmp_path / "installed.yaml"
    source.write_text(NESTED_VERBS)
    outcome = run_round(NESTED_VERBS.encode(), target, policy_validator(source),
                        lint=lambda content: policy_warnings(source, content))
    assert outcome.warnings == (f"{source}: {VERDICT}",)
    with caplog.at_level("WARNING", logger="kaudit.installer"):
        log_outcome(outcome)
    assert [r.getMessage() for r in caplog.records if r.levelname == "WARNING"] == [f"{source}: {VERDICT}"]

    class Sender:
        bodies: list = []

        def send(self, body):
            self.bodies.append(body)
            return True

    sender = Sender()
    Reporter(sender, Identity("cluster", "cp-1", "kaudit-system"), target, heartbeat=60).record(outcome)
    [body] = sender.bodies
    assert body["metadata"]["annotations"][ANNOTATION_WARNINGS] == f"{source}: {VERDICT}"
    assert parse_report(body).warnings == (f"{source}: {VERDICT}",)


# --- success says so ------------------------------------------------------------------------------

def test_validate_and_lint_say_something_on_success(inputs, capsys, monkeypatch):
    path = inputs["POLICY"]
    assert run_in_process(["policy", "validate", path], capsys, monkeypatch) == (
        0, f"{path}: valid: kube-apiserver would load it (1 rule)\n", "")
    assert run_in_process(["policy", "lint", path], capsys, monkeypatch) == (0, f"{path}: no findings (1 rule)\n", "")


# --- bad usage: one line, exit 2 --------------------------------------------------------------------

@pytest.mark.parametrize("argv, prog", [
    ([], "kaudit"),
    (["policy"], "kaudit policy"),
    (["rules"], "kaudit rules"),
    (["rules", "check", "--fail-on", "sometimes", "--profile", "Default"], "kaudit rules check"),
    (["render"], "kaudit render"),
    (["render", "-f", "x", "-o", "xml"], "kaudit render"),
    (["policy", "validate"], "kaudit policy validate"),
    (["policy", "eval", "--events", "x"], "kaudit policy eval"),
    (["policy", "simulate", "--events", "x"], "kaudit policy simulate"),
    (["policy", "simulate", "--profile", "Default", "--events", "x", "--top", "many"], "kaudit policy simulate"),
    (["install-policy", "--from", "x"], "kaudit install-policy"),
    (["install-policy", "--from", "x", "--to", "y", "--interval", "0"], "kaudit install-policy"),
    (["run", "--liveness-port", "http"], "kaudit run"),
    (["render", "-f", "x", "--no-such-option"], "kaudit"),
], ids=lambda value: " ".join(value) if isinstance(value, list) else None)
def test_bad_usage_is_one_line_pointing_at_help_and_exit_2(argv, prog, capsys, monkeypatch):
    code, out, err = run_in_process(argv, capsys, monkeypatch)
    line = assert_one_error_line(code, out, err, f"error: {prog}: ", exit_code=2)
    assert line.endswith(f"(see '{prog} --help')"), line


# --- kaudit run: credentials ------------------------------------------------------------------------

KUBECONFIG = """apiVersion: v1
kind: Config
current-context: c
contexts: [{name: c, context: {cluster: k, user: u}}]
clusters: [{name: k, cluster: {server: "https://127.0.0.1:1"}}]
users: [{name: u, user: {token: %s}}]
""" % SECRET


@pytest.mark.parametrize("kubeconfig, expected", [
    ("/nonexistent", "error: KUBECONFIG: /nonexistent: no such file"),
    (None, "error: no Kubernetes credentials: not in a pod"),
    ("not-yaml", "not a valid kubeconfig (not YAML)"),
    ("no-context", "the current context refers to 'elsewhere', which the file does not define"),
    ("unreachable", "error: cannot reach the Kubernetes API server at https://127.0.0.1:1"),
], ids=["missing-file", "no-credentials", "not-yaml", "unknown-context", "unreachable"])
def test_run_with_missing_or_broken_credentials_is_one_line_and_exit_1(kubeconfig, expected, tmp_path):
    files = {"not-yaml": f"users: [{{user: {{token: {SECRET}}}\n", "no-context": KUBECONFIG.replace("current-context: c", "current-context: elsewhere"),
             "unreachable": KUBECONFIG}
    env = {k: v for k, v in os.environ.items() if k not in ("KUBECONFIG", "KUBERNETES_SERVICE_HOST")}
    env["HOME"] = str(tmp_path)  # no ~/.kube/config
    if kubeconfig in files:
        (tmp_path / "kubeconfig").write_text(files[kubeconfig])
        env["KUBECONFIG"] = str(tmp_path / "kubeconfig")
    elif kubeconfig is not None:
        env["KUBECONFIG"] = kubeconfig
    code, out, err = run_process(["run", "--standalone", "--liveness-port", "0", "--metrics-port", "0"], env=env)
    assert_one_error_line(code, out, err, expected)


def test_run_names_credentials_the_api_server_refuses():
    import asyncio

    import kopf
    from aiohttp import web

    from kaudit.reconcile.preflight import api_problem

    async def scenario() -> str | None:
        app = web.Application()
        app.router.add_get("/version", lambda request: web.Response(status=401, text="Unauthorized"))
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]
        try:
            return await api_problem(kopf.ConnectionInfo(server=f"http://127.0.0.1:{port}", token=SECRET))
        finally:
            await runner.cleanup()

    problem = asyncio.run(scenario())
    assert problem is not None and "refuses these credentials (HTTP 401)" in problem and SECRET not in problem


# --- the examples say what they do ------------------------------------------------------------------

def test_policy_only_example_installs_nothing_on_the_nodes(capsys, monkeypatch):
    import yaml

    code, out, _ = run_in_process(["render", "-f", str(EXAMPLES / "policy-only.yaml")], capsys, monkeypatch)
    kinds = [doc["kind"] for doc in yaml.safe_load_all(out) if doc]
    assert code == 0 and "ConfigMap" in kinds and "DaemonSet" not in kinds  # no installer, no agent
    assert "installPolicy: false" in (EXAMPLES / "policy-only.yaml").read_text()


def test_datadogagent_example_omit_read_only_keeps_secret_reads(capsys, monkeypatch):
    from kaudit.api.spec import parse_collection
    from kaudit.policy import PolicyOptions, compose_policy, load_policy
    from kaudit.policy.evaluate import Evaluator

    import yaml

    spec = parse_collection(yaml.safe_load((EXAMPLES / "datadogagent.yaml").read_text())).policy
    document = compose_policy(PolicyOptions(profile=spec.profile, rules=spec.rules, omit_read_only=spec.omit_read_only))
    evaluator = Evaluator(load_policy(document.text).policy)

    def level(verb: str, resource: str) -> str:
        return evaluator.evaluate_event({"verb": verb, "user": {"username": "u"},
                                         "objectRef": {"resource": resource, "namespace": "a", "apiVersion": "v1"}}).level

    # What the example's comments say: reads gone except secrets (metadata), writes with bodies,
    # secrets' bodies never.
    assert (level("get", "pods"), level("get", "secrets"), level("create", "pods"), level("create", "secrets")) == (
        "None", "Metadata", "RequestResponse", "Metadata")


# --- README's promise, word for word ----------------------------------------------------------------

def readme_bad_input_examples() -> list[tuple[str, list[str]]]:
    """(command, output lines) of the ``$`` lines in README's bad-input example block."""
    import re

    block = re.search(r"<!-- bad-input-examples -->\n```text\n(.*?)```", (ROOT / "README.md").read_text(), re.S)
    assert block, "README.md lost its bad-input examples"
    examples: list[tuple[str, list[str]]] = []
    for line in block.group(1).splitlines():
        if line.startswith("$ "):
            examples.append((line[2:], []))
        else:
            examples[-1][1].append(line)
    return examples


def test_readme_bad_input_examples_are_what_the_commands_print(tmp_path):
    shim = tmp_path / "kaudit"  # `kaudit` is this interpreter's package, whatever is on PATH
    shim.write_text(f'#!/bin/sh\nexec {sys.executable} -m kaudit "$@"\n')
    shim.chmod(0o755)
    env = {**os.environ, "PATH": f"{tmp_path}{os.pathsep}{os.environ.get('PATH', '')}"}
    examples = readme_bad_input_examples()
    assert len(examples) == 3
    for command, shown in examples:
        done = subprocess.run(["bash", "-c", command], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
        usage = shown[0].endswith("--help')")
        assert done.returncode == (2 if usage else 1), command  # the exit codes README promises
        assert (done.stdout, done.stderr.splitlines()) == ("", shown), command

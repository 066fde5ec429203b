"""The `kaudit policy` command group: exit codes, stderr formats, eval output, bad input."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from kaudit.cli import main
from test_policy_lint import DATADOG_PAGE_POLICY

VALID = "apiVersion: audit.k8s.io/v1\nkind: Policy\nomitStages: [RequestReceived]\nrules:\n- level: None\n  nonResourceURLs: ['/healthz*']\n- level: Metadata\n"


@pytest.fixture
def write(tmp_path):
    def _write(name: str, content: str | bytes):
        path = tmp_path / name
        path.write_bytes(content if isinstance(content, bytes) else content.encode())
        return str(path)
    return _write


def run(capsys, *argv, stdin=None, monkeypatch=None):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_validate_ok_says_so_on_stdout(capsys, write):
    path = write("p.yaml", VALID)
    assert run(capsys, "policy", "validate", path) == (0, f"{path}: valid: kube-apiserver would load it (2 rules)\n", "")


def test_validate_reports_errors_per_file_and_fails(capsys, write):
    good = write("good.yaml", VALID)
    bad = write("bad.yaml", VALID.replace("level: Metadata", "level: Everything"))
    code, out, err = run(capsys, "policy", "validate", good, bad)
    assert code == 1
    assert err.splitlines() == [f'error: {bad}:7:3: rules[1].level: Unsupported value: "Everything": supported values: '
                                '"None", "Metadata", "Request", "RequestResponse"']
    assert out == f"{good}: valid: kube-apiserver would load it (2 rules)\n"  # the bad one is not called valid


def test_validate_warnings_and_strict(capsys, write):
    path = write("p.yaml", VALID.replace("- level: Metadata", "- level: Metadata\n  verb: [get]"))
    code, _, err = run(capsys, "policy", "validate", path)
    assert code == 0
    assert err.startswith(f"warning: {path}: rules[1].verb: unknown field")
    assert run(capsys, "policy", "validate", "--strict", path)[0] == 1


def test_lint_exit_codes(capsys, write):
    clean = write("clean.yaml", VALID)
    assert run(capsys, "policy", "lint", clean) == (0, f"{clean}: no findings (2 rules)\n", "")
    path = write("p.yaml", VALID.replace("omitStages: [RequestReceived]\n", ""))
    code, out, err = run(capsys, "policy", "lint", path)
    assert code == 1 and out == "" and err.startswith(f"warning: {path}: omitStages: RequestReceived is not omitted")
    code, _, err = run(capsys, "policy", "lint", write("broken.yaml", "kind: Policy\n"))
    assert code == 1 and "warning" not in err


def test_eval_writes_one_result_per_line_in_order(capsys, write):
    policy = write("p.yaml", VALID.replace("- level: Metadata\n", "- level: Metadata\n  verbs: [create]\n  omitManagedFields: true\n"))
    events = [
        {"kind": "Event", "apiVersion": "audit.k8s.io/v1", "verb": "get", "requestURI": "/healthz?verbose",
         "user": {"username": "kubelet"}},
        "this is not json",
        {"verb": "create", "requestURI": "/api/v1/namespaces/a/pods", "user": {"username": "u"},
         "objectRef": {"resource": "pods", "namespace": "a", "apiVersion": "v1"}},
        {"verb": "get", "requestURI": "/api/v1/namespaces/a/pods/p", "objectRef": {"resource": "pods", "name": "p"}},
        ["not", "an", "object"],
    ]
    lines = [e if isinstance(e, str) else json.dumps(e) for e in events]
    code, out, err = run(capsys, "policy", "eval", "--policy", policy, "--events", write("audit.log", "\n".join(lines) + "\n"))
    assert code == 0 and err == ""
    results = [json.loads(line) for line in out.splitlines()]
    assert len(results) == len(events)
    assert results[0] == {"level": "None", "omitStages": ["RequestReceived"], "omitManagedFields": False, "rule": 0}
    assert set(results[1]) == {"error"}
    assert results[2] == {"level": "Metadata", "omitStages": ["RequestReceived"], "omitManagedFields": True, "rule": 1}
    assert results[3] == {"level": "None", "omitStages": ["RequestReceived"], "omitManagedFields": False, "rule": None}
    assert set(results[4]) == {"error"}


def test_eval_sorts_omit_stages(capsys, write):
    policy = write("p.yaml", VALID.replace("- level: Metadata\n", "- level: Metadata\n  omitStages: [ResponseStarted, Panic]\n"))
    _, out, _ = run(capsys, "policy", "eval", "--policy", policy, "--events", write("e", '{"verb": "get", "requestURI": "/x"}\n'))
    assert json.loads(out)["omitStages"] == ["Panic", "RequestReceived", "ResponseStarted"]


def test_eval_refuses_a_policy_that_would_not_load(capsys, write):
    policy = write("p.yaml", "apiVersion: audit.k8s.io/v1beta1\nkind: Policy\nrules: [{level: None}]\n")
    code, out, err = run(capsys, "policy", "eval", "--policy", policy, "--events", write("e", "{}\n"))
    assert code == 1 and out == "" and err.startswith(f"error: {policy}:1:1: apiVersion: Unsupported value")


def test_render_prints_the_profile(capsys):
    code, out, err = run(capsys, "policy", "render", "--profile", "Datadog")
    assert code == 0 and err == ""
    assert "kind: Policy" in out and "Profile: Datadog" in out


def test_render_with_bad_custom_rules(capsys, write):
    rules = write("rules.yaml", "- level: Loud\n")
    code, out, err = run(capsys, "policy", "render", "--profile", "Default", "--rules", rules)
    assert code == 1 and out == ""
    # The problem in the --rules file names that file (the rules are numbered as in the composed policy).
    assert err.strip() == (f'error: {rules}: rules[0].level: Unsupported value: "Loud": supported values: "None", '
                           '"Metadata", "Request", "RequestResponse"')


def test_render_takes_custom_rules_from_a_list_or_a_policy(capsys, write):
    listed = write("rules.yaml", "- {level: RequestResponse, users: [ci-bot]}\n")
    code, out, _ = run(capsys, "policy", "render", "--profile", "None", "--rules", listed)
    assert code == 0 and "users: [ci-bot]" in out and "custom rules: 1" in out
    whole = write("policy.yaml", VALID)
    code, out, _ = run(capsys, "policy", "render", "--profile", "None", "--rules", whole)
    assert code == 0 and "custom rules: 2" in out


def _cli(*args, stdin: bytes | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "kaudit", *args], input=stdin, capture_output=True, timeout=60)


@pytest.mark.parametrize(
    "content, fragment",
    [
        ("apiVersion: audit.k8s.io/v1\nkind: Policy\nrules: [\n  - level: None\n", "bad.yaml:4:3: not valid YAML"),
        ("- a\n- list\n", "not a mapping"),
        (b"\x7fELF\x02\x01\x01\x00\xff\xfe" * 100, "binary data"),
        ("# padding\n" * (1024 * 1024), "too large"),  # 10 MB
        ("[" * 100_000 + "]" * 100_000, "nested too deeply"),  # would crash libyaml's composer
        ("rules:\n" + "".join("  " * i + "- \n" for i in range(1, 2000)), "nested too deeply"),
    ],
    ids=["malformed-yaml", "non-mapping", "binary", "10MB", "deep-flow", "deep-block"],
)
def test_bad_input_gives_one_line_and_exit_1(write, content, fragment):
    path = write("bad.yaml", content)
    for command in (("policy", "validate", path), ("policy", "lint", path), ("policy", "eval", "--policy", path)):
        proc = _cli(*command, stdin=b"")
        err = proc.stderr.decode()
        assert proc.returncode == 1, err
        assert "Traceback" not in err and len(err.splitlines()) == 1 and fragment in err, err


def test_missing_file_and_stdin(write):
    proc = _cli("policy", "validate", "/nonexistent/policy.yaml")
    assert proc.returncode == 1 and proc.stderr.decode().strip() == "error: /nonexistent/policy.yaml: no such file"
    assert _cli("policy", "validate", "-", stdin=VALID.encode()).returncode == 0
    proc = _cli("policy", "eval", "--policy", write("p.yaml", VALID), stdin=b'{"verb": "get", "requestURI": "/healthz"}\n\xff\n')
    assert proc.returncode == 0
    assert [json.loads(line).get("rule", "error") for line in proc.stdout.decode().splitlines()] == [0, "error"]


@pytest.mark.parametrize("kind", ["empty", "directory"])
def test_empty_file_or_directory_as_policy_is_one_line_and_exit_1(tmp_path, write, kind):
    path = write("empty.yaml", "") if kind == "empty" else str(tmp_path)
    for command in (("policy", "validate", path), ("policy", "lint", path), ("policy", "eval", "--policy", path)):
        proc = _cli(*command, stdin=b"")
        err = proc.stderr.decode()
        assert proc.returncode == 1 and "Traceback" not in err and len(err.splitlines()) == 1, err
        assert err.startswith(f"error: {path}: "), err


def test_validate_on_the_datadog_page_policy_loads_but_warns_about_the_nested_verbs(capsys, write):
    # facts 1 and 10: kube-apiserver loads the file (exit 0) after dropping the nested key, so the
    # problem is a warning with the key's field path; --strict turns it into a failure.
    path = write("datadog.yaml", DATADOG_PAGE_POLICY)
    code, out, err = run(capsys, "policy", "validate", path)
    assert code == 0 and out == f"{path}: valid: kube-apiserver would load it (5 rules, 1 warning(s))\n"
    assert err.splitlines() == [
        f"warning: {path}: rules[3].resources[0].verbs: unknown field: 'verbs' belongs on the rule, not inside "
        "a resources entry; kube-apiserver drops it silently, so this rule matches every verb"]
    assert run(capsys, "policy", "validate", "--strict", path)[0] == 1
    # As loaded, the pods rule logs reads too (the dropped verbs no longer limit it).
    events = write("e.log", json.dumps({"verb": "get", "user": {"username": "u"},
                                        "objectRef": {"resource": "pods", "namespace": "a", "name": "p"}}) + "\n")
    _, out, _ = run(capsys, "policy", "eval", "--policy", path, "--events", events)
    assert json.loads(out) == {"level": "RequestResponse", "omitStages": ["RequestReceived"],
                               "omitManagedFields": False, "rule": 3}


def test_read_custom_rules_takes_a_list_or_a_policys_rules(write):
    from kaudit.cli.shared import read_custom_rules
    from kaudit.errors import InvalidInput

    assert read_custom_rules(None) == ()
    assert read_custom_rules(write("none.yaml", "")) == ()
    assert read_custom_rules(write("list.yaml", "- {level: None, users: [a]}\n")) == ({"level": "None", "users": ["a"]},)
    assert read_custom_rules(write("p.yaml", VALID))[1] == {"level": "Metadata"}
    for content, fragment in (("level: None\n", "must be a list of audit policy rules"), ("[", "not valid YAML"),
                              ("kind: AuditCollection\n", "this is an AuditCollection")):
        path = write("bad.yaml", content)
        with pytest.raises(InvalidInput) as caught:
            read_custom_rules(path)
        [error] = caught.value.errors
        assert error.file == path and fragment in error.message
    with pytest.raises(InvalidInput):
        read_custom_rules(write("missing", "x") + ".absent")


@pytest.mark.parametrize("subcommand, mentions", [
    ("validate", ["--strict", "--kubernetes-version", "warning: FILE: FIELD: MESSAGE"]),
    ("lint", ["FILE", "Exit 1 when there is any finding"]),
    ("eval", ["--policy FILE", "--events FILE", '{"error": "..."}']),
    ("render", ["--profile", "--rules FILE", "--omit-read-only", "--omit-stages", "--keep-managed-fields"]),
])
def test_every_policy_subcommand_has_help_a_user_can_act_on(subcommand, mentions):
    proc = _cli("policy", subcommand, "--help")
    out = " ".join(proc.stdout.decode().split())  # argparse wraps lines
    assert proc.returncode == 0
    for text in mentions:
        assert " ".join(text.split()) in out, text


@pytest.mark.parametrize("command", [["validate", "P"], ["lint", "P"], ["eval", "--policy", "P", "--events", "E"],
                                     ["render", "--profile", "Default"]])
def test_an_unreadable_kubernetes_version_is_refused_not_taken_as_the_newest(capsys, write, command):
    # It decides what loads (group "*" needs 1.36), so a typo must not silently mean "newest".
    path = write("p.yaml", VALID)
    events = write("e.log", '{"verb": "get", "requestURI": "/healthz"}\n')
    argv = ["policy", *[{"P": path, "E": events}.get(a, a) for a in command], "--kubernetes-version", "one.thirty"]
    code, out, err = run(capsys, *argv)
    assert (code, out) == (1, "")
    assert err == "error: --kubernetes-version: expected a version such as \"1.33\", got 'one.thirty'\n"
    assert run(capsys, *argv[:-1], "v1.33.2")[0] == 0

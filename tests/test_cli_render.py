"""``kaudit render``: output shape, determinism, --existing, and one-line errors with exit 1."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import yaml

from kaudit.cli import main
from render_support import DATADOG_AGENT, EXAMPLES, HELM_DAEMONSET, ROOT

MANAGED = str(EXAMPLES / "managed.yaml")


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_yaml_output_is_documents_after_a_flag_header(capsys):
    code, out, err = run(capsys, "render", "-f", MANAGED)
    assert code == 0 and err == ""
    header = out.split("\n---\n", 1)[0]
    for flag in ("--audit-policy-file=", "--audit-log-path=", "--audit-log-maxsize=100",
                 "--audit-log-maxbackup=10", "--audit-log-maxage=30"):
        assert f"#   {flag}" in header
    assert all(line.startswith("#") for line in header.splitlines())
    documents = [d for d in yaml.safe_load_all(out) if d]
    names = [(d["kind"], d["metadata"]["name"]) for d in documents]
    assert names[0] == ("ConfigMap", "kaudit-cluster-policy")
    assert names[-3:] == [("ConfigMap", "kaudit-cluster-agent-config"), ("ServiceAccount", "kaudit-cluster-agent"),
                          ("DaemonSet", "kaudit-cluster-agent")]
    policy = next(d for d in documents if d["metadata"]["name"] == "kaudit-cluster-policy")
    assert yaml.safe_load(policy["data"]["policy.yaml"])["kind"] == "Policy"


def test_output_is_byte_identical_across_runs(capsys):
    first = run(capsys, "render", "-f", MANAGED)
    second = run(capsys, "render", "-f", MANAGED)
    assert first == second


def test_json_output_is_a_list_with_the_header_on_stderr(capsys):
    code, out, err = run(capsys, "render", "-f", MANAGED, "-o", "json", "--namespace", "ops")
    assert code == 0
    document = json.loads(out)
    assert document["kind"] == "List" and document["apiVersion"] == "v1"
    policy = next(i for i in document["items"] if i["metadata"]["name"] == "kaudit-cluster-policy")
    assert policy["metadata"]["namespace"] == "ops"
    assert "--audit-log-maxage=30" in err


def test_existing_daemon_set_gives_a_patch_document(capsys):
    code, out, _ = run(capsys, "render", "-f", str(EXAMPLES / "daemonset.yaml"), "--existing", str(HELM_DAEMONSET))
    assert code == 0
    documents = [d for d in yaml.safe_load_all(out) if d]
    patch = documents[-1]
    assert patch["kind"] == "DaemonSet" and patch["metadata"]["name"] == "datadog-agent"
    assert "kubectl apply --server-side --field-manager=kaudit" in out


def test_existing_datadog_agent(capsys):
    code, out, _ = run(capsys, "render", "-f", str(EXAMPLES / "datadogagent.yaml"), "--existing", str(DATADOG_AGENT))
    assert code == 0
    assert [d for d in yaml.safe_load_all(out) if d][-1]["kind"] == "DatadogAgent"


@pytest.mark.parametrize("example, kind", [("daemonset.yaml", "DaemonSet"), ("datadogagent.yaml", "DatadogAgent")])
def test_without_existing_the_agent_change_is_left_out_and_said_so(capsys, example, kind):
    # The change to a user's agent depends on its live spec (pointdir mount, tolerations), so an
    # offline preview prints only what kaudit owns and says how to see the rest.
    code, out, _ = run(capsys, "render", "-f", str(EXAMPLES / example))
    assert code == 0
    documents = [d for d in yaml.safe_load_all(out) if d]
    assert not [d for d in documents if d["metadata"].get("namespace") == "datadog" and d["kind"] == kind]
    assert any(d["kind"] == "ConfigMap" and d["metadata"]["namespace"] == "datadog" for d in documents)
    assert f"the change to {kind} datadog/" in out and "--existing" in out


def test_existing_without_the_target_is_refused(capsys, tmp_path):
    other = tmp_path / "other.yaml"
    other.write_text("apiVersion: apps/v1\nkind: DaemonSet\nmetadata: {name: something-else, namespace: datadog}\n")
    code, out, err = run(capsys, "render", "-f", str(EXAMPLES / "daemonset.yaml"), "--existing", str(other))
    assert code == 1 and out == ""
    assert err.startswith("error: TargetNotFound: ")
    assert "--existing" in err and len(err.strip().splitlines()) == 1


def test_invalid_input_is_one_line_per_field_path(capsys, tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "apiVersion: kaudit.dev/v1alpha1\nkind: AuditCollection\nmetadata: {name: cluster}\n"
        "spec:\n  agent: {mode: Foo}\n  apiServer: {logMaxSizeMB: -1}\n"
    )
    code, out, err = run(capsys, "render", "-f", str(bad))
    assert code == 1 and out == ""
    # file:line:column of the key (1-based), then the field path.
    assert err.splitlines() == [
        f"error: {bad}:6:15: spec.apiServer.logMaxSizeMB: Invalid value: -1: must be greater than or equal to 1",
        f'error: {bad}:5:11: spec.agent.mode: Unsupported value: "Foo": supported values: "Managed", "DaemonSet", '
        '"DatadogAgent", "None"',
    ]


@pytest.mark.parametrize("content, expected", [
    ("a: [unclosed\n", "not valid YAML"),
    ("", "expected one AuditCollection document, the file is empty"),
    ("kind: A\n---\nkind: B\n", "expected one AuditCollection document, found 2"),
])
def test_unreadable_input_is_one_line(capsys, tmp_path, content, expected):
    path = tmp_path / "input.yaml"
    path.write_text(content)
    code, out, err = run(capsys, "render", "-f", str(path))
    assert code == 1 and out == ""
    assert len(err.splitlines()) == 1 and expected in err and str(path) in err


def test_missing_file_is_one_line(capsys, tmp_path):
    code, _, err = run(capsys, "render", "-f", str(tmp_path / "nope.yaml"))
    assert code == 1 and err == f"error: {tmp_path / 'nope.yaml'}: no such file\n"


def test_whole_process_never_prints_a_traceback(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("apiVersion: kaudit.dev/v1alpha1\nkind: AuditCollection\nmetadata: {name: Bad_Name}\n")
    result = subprocess.run([sys.executable, "-m", "kaudit", "render", "-f", str(bad)],
                            capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 1 and result.stdout == ""
    assert "Traceback" not in result.stderr
    assert result.stderr.startswith(f'error: {bad}:3:12: metadata.name: Invalid value: "Bad_Name"')


def test_help_describes_every_option():
    result = subprocess.run([sys.executable, "-m", "kaudit", "render", "--help"],
                            capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 0
    for option in ("-f FILE", "--existing FILE", "-o {yaml,json}", "--namespace NS", "--image IMAGE", "examples:"):
        assert option in result.stdout


def test_header_shows_the_static_pod_changes(capsys):
    _, out, _ = run(capsys, "render", "-f", MANAGED)
    header = out.split("\n---\n", 1)[0]
    assert "#   spec:" in header and "#       - --audit-log-maxage=30" in header
    assert "#         path: /var/log/kubernetes/apiserver" in header


def test_existing_can_come_from_standard_input():
    result = subprocess.run(
        [sys.executable, "-m", "kaudit", "render", "-f", str(EXAMPLES / "daemonset.yaml"), "--existing", "-"],
        input=HELM_DAEMONSET.read_text(), capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 0, result.stderr
    assert [d for d in yaml.safe_load_all(result.stdout) if d][-1]["metadata"]["name"] == "datadog-agent"


@pytest.mark.parametrize("option", ["-f", "--existing"])
@pytest.mark.parametrize("content, expected", [
    ("a: " + "[" * 200_000 + "]" * 200_000 + "\n", "nested too deeply"),  # libyaml's composer would segfault
    ("".join("{a: " for _ in range(100_000)) + "1" + "}" * 100_000 + "\n", "nested too deeply"),
    ("- a\n- b\n", "expected an AuditCollection object, got array"),
    ("\x00\x01", "binary data"),
], ids=["deep-list", "deep-map", "list", "binary"])
def test_hostile_input_is_one_line_in_a_whole_process(tmp_path, option, content, expected):
    # Run as a separate process: a crash in the YAML library would otherwise take pytest down.
    bad = tmp_path / "bad.yaml"
    bad.write_text(content)
    args = ["-f", str(bad)] if option == "-f" else ["-f", str(EXAMPLES / "daemonset.yaml"), "--existing", str(bad)]
    result = subprocess.run([sys.executable, "-m", "kaudit", "render", *args],
                            capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert result.returncode == 1 and result.stdout == "", result.stderr
    assert "Traceback" not in result.stderr and len(result.stderr.splitlines()) == 1, result.stderr
    if option == "-f" or "nested" in expected:
        assert expected in result.stderr, result.stderr


def test_version_and_top_level_help_in_a_whole_process():
    from kaudit import __version__

    result = subprocess.run([sys.executable, "-m", "kaudit", "--version"], capture_output=True, text=True, cwd=ROOT)
    assert (result.returncode, result.stdout) == (0, f"kaudit {__version__}\n")
    result = subprocess.run([sys.executable, "-m", "kaudit", "--help"], capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 0
    for command in ("render", "policy", "run", "install-policy"):
        assert f"    {command}" in result.stdout
    # No command: one line pointing at --help and exit 2, like any other usage error.
    result = subprocess.run([sys.executable, "-m", "kaudit"], capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 2
    assert result.stderr == "error: kaudit: a command is required: render, policy, rules, run, install-policy (see 'kaudit --help')\n"


def test_the_kaudit_console_script_is_declared():
    from importlib.metadata import entry_points

    [script] = [e for e in entry_points(group="console_scripts") if e.name == "kaudit"]
    assert script.value == "kaudit.cli:main"


def test_bad_namespace_and_image_options_are_refused_by_name(capsys):
    # They end up in the rendered objects, which would then be invalid.
    code, out, err = run(capsys, "render", "-f", MANAGED, "--namespace", "Bad NS", "--image", "kaudit/kaudit: 1")
    assert (code, out) == (1, "")
    assert err.splitlines() == [
        'error: --namespace: Invalid value: "Bad NS": must be a DNS label: at most 63 lowercase letters, digits '
        "and '-', starting and ending alphanumeric",
        'error: --image: Invalid value: "kaudit/kaudit: 1": must be a container image reference without whitespace',
    ]
    assert run(capsys, "render", "-f", MANAGED, "--image", "")[0] == 1
    code, out, _ = run(capsys, "render", "-f", MANAGED, "--namespace", "audit-ops", "--image", "team/kaudit:9")
    assert code == 0 and "namespace: audit-ops" in out and "image: team/kaudit:9" in out


# --- --existing with what users have at hand (issue 11) --------------------------------------------

CHART_FIXTURES = ROOT / "tests" / "fixtures" / "datadog-chart"
WHOLE_RELEASE = CHART_FIXTURES / "helm-template-default.yaml"  # `helm template` of the chart: 31 objects


def agent_patch(out: str) -> dict:
    [patch] = [d for d in yaml.safe_load_all(out)
               if d and d["kind"] == "DaemonSet" and not d["metadata"]["name"].startswith("kaudit-")]
    return patch


def test_existing_accepts_helm_template_output_and_picks_the_named_agent(capsys):
    kinds = {d["kind"] for d in yaml.safe_load_all(WHOLE_RELEASE.read_text()) if d}
    assert {"DaemonSet", "Deployment", "ConfigMap", "Secret", "ClusterRole"} <= kinds
    code, out, err = run(capsys, "render", "-f", str(EXAMPLES / "daemonset.yaml"), "--existing", str(WHOLE_RELEASE))
    assert code == 0 and err == ""
    alone = run(capsys, "render", "-f", str(EXAMPLES / "daemonset.yaml"),
                "--existing", str(CHART_FIXTURES / "default.yaml"))
    assert alone == (code, out, err)  # the same as with the DaemonSet alone


def test_existing_accepts_a_kubectl_list_of_several_daemon_sets(capsys, tmp_path):
    agent = yaml.safe_load((CHART_FIXTURES / "logs.yaml").read_text())
    other = yaml.safe_load((CHART_FIXTURES / "other-release.yaml").read_text())
    other["metadata"]["namespace"] = "datadog"
    listing = tmp_path / "ds.yaml"
    listing.write_text(yaml.safe_dump({"apiVersion": "v1", "kind": "List", "metadata": {"resourceVersion": ""},
                                       "items": [other, agent]}))
    code, out, _ = run(capsys, "render", "-f", str(EXAMPLES / "daemonset.yaml"), "--existing", str(listing))
    assert code == 0 and agent_patch(out)["metadata"]["name"] == "datadog-agent"


def test_an_agent_absent_from_the_files_is_one_line_naming_them_and_what_they_hold(capsys, tmp_path):
    moved = tmp_path / "release.yaml"
    moved.write_text(WHOLE_RELEASE.read_text().replace("namespace: datadog\n", "namespace: monitoring\n"))
    code, out, err = run(capsys, "render", "-f", str(EXAMPLES / "daemonset.yaml"), "--existing", str(moved))
    assert code == 1 and out == ""
    [line] = err.strip().splitlines()
    assert line.startswith("error: TargetNotFound: DaemonSet datadog/datadog-agent is not in --existing ")
    assert str(moved) in line and "it holds DaemonSet monitoring/datadog-agent" in line
    assert "kubectl get daemonset -n datadog datadog-agent -o yaml" in line


def test_an_agent_there_twice_is_one_line_naming_both_places(capsys):
    code, out, err = run(capsys, "render", "-f", str(EXAMPLES / "daemonset.yaml"),
                         "--existing", str(WHOLE_RELEASE), "--existing", str(CHART_FIXTURES / "logs.yaml"))
    assert code == 1 and out == ""
    [line] = err.strip().splitlines()
    assert "DaemonSet datadog/datadog-agent is there 2 times" in line
    assert f"of {WHOLE_RELEASE}" in line and f"object 1 of {CHART_FIXTURES / 'logs.yaml'}" in line

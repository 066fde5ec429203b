"""Agent DaemonSets rendered by the real Datadog Helm chart, committed as test fixtures.

``../shared/datadog/datadog-3.240.0`` (next to the repository) is the Datadog Agent chart
3.240.0 with its dependencies, offline. MATRIX lists values users really set; each case is
rendered with the suite's real helm (tests/helmtools.py) and its agent DaemonSet is written to
``tests/fixtures/datadog-chart/<case>.yaml``, headed by the exact command that made it.
``examples/existing/datadog-agent-daemonset.yaml`` is the ``default`` case (the chart's default
values, release ``datadog-agent`` as in Datadog's install guide).

Regenerate (after a chart or helm change), then review the diff:

    python tests/datadog_chart.py

tests/test_datadog_chart_fixtures.py fails when a committed file differs from what this
produces, so the fixtures cannot drift from the chart.
"""

from __future__ import annotations

import json
import os
import re
import shlex
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
CHART_VERSION = "3.240.0"
# Relative to the repository, as in the header of every fixture; KAUDIT_DATADOG_CHART overrides it.
CHART_RELATIVE = f"../shared/datadog/datadog-{CHART_VERSION}"
FIXTURES = REPO / "tests" / "fixtures" / "datadog-chart"
EXAMPLE = REPO / "examples" / "existing" / "datadog-agent-daemonset.yaml"
EXAMPLE_CASE = "default"
# A placeholder key: the chart then renders its own Secret (as `--set datadog.apiKey=...` does).
# Every case fixes the Cluster Agent token too: the chart otherwise makes a random one, and its
# checksum in the pod template would change the fixture on every run.
TOKEN = ("--set", "clusterAgent.token=fedcba9876543210fedcba9876543210")
API_KEY = (*TOKEN, "--set", "datadog.apiKey=0123456789abcdef0123456789abcdef")
LOGS_ON = ("--set", "datadog.logs.enabled=true")
CONTROL_PLANE_TOLERATIONS = [
    {"key": "node-role.kubernetes.io/control-plane", "operator": "Exists", "effect": "NoSchedule"},
    {"key": "node-role.kubernetes.io/master", "operator": "Exists", "effect": "NoSchedule"},
]
AUDIT_DIR = "/var/log/kubernetes/apiserver"


def _json(name: str, value: object) -> tuple[str, str]:
    return "--set-json", f"{name}={json.dumps(value, separators=(',', ':'))}"


@dataclass(frozen=True)
class Case:
    name: str
    what: str  # why users have this set-up, for the fixture header
    args: tuple[str, ...]
    release: str = "datadog-agent"
    namespace: str = "datadog"
    whole: bool = False  # every object of the release (what `helm get manifest` shows), not the DaemonSet alone
    subchart: str = ""  # a dependency chart under charts/ instead of the chart itself

    @property
    def daemon_set(self) -> str:
        # The chart's datadog.fullname: the release name when it contains "datadog".
        return self.release if "datadog" in self.release else f"{self.release}-datadog"

    @property
    def path(self) -> Path:
        return FIXTURES / f"{self.name}.yaml"


MATRIX: tuple[Case, ...] = (
    Case("default", "the chart's default values: log collection off", API_KEY),
    Case("logs", "log collection on (datadog.logs.enabled=true)", (*API_KEY, *LOGS_ON)),
    Case("logs-collect-all", "log collection on for every container",
         (*API_KEY, *LOGS_ON, "--set", "datadog.logs.containerCollectAll=true")),
    Case("collect-all-logs-off", "container collection asked for while log collection stays off",
         (*API_KEY, "--set", "datadog.logs.containerCollectAll=true")),
    Case("control-plane-tolerations", "agents.tolerations already tolerating the control plane",
         (*API_KEY, *LOGS_ON, *_json("agents.tolerations", CONTROL_PLANE_TOLERATIONS))),
    Case("audit-volumes", "the audit log directory mounted by hand (agents.volumes/volumeMounts)",
         (*API_KEY, *LOGS_ON,
          *_json("agents.volumes", [{"name": "auditlogs", "hostPath": {"path": AUDIT_DIR}}]),
          *_json("agents.volumeMounts", [{"name": "auditlogs", "mountPath": AUDIT_DIR, "readOnly": True}]))),
    Case("confd", "an integration configured with datadog.confd",
         (*API_KEY, *LOGS_ON, *_json("datadog.confd", {
             "redisdb.yaml": "init_config:\ninstances:\n  - host: redis.cache.svc\n    port: 6379\n"}))),
    Case("host-network", "the agent on the host network (agents.useHostNetwork)",
         (*API_KEY, *LOGS_ON, "--set", "agents.useHostNetwork=true")),
    Case("other-release", "another release name and namespace", (*API_KEY, *LOGS_ON),
         release="monitoring", namespace="observability"),
    Case("existing-secret-eu", "the API key from an existing Secret, the EU site",
         (*TOKEN, *LOGS_ON, "--set", "datadog.apiKeyExistingSecret=datadog-secret", "--set", "datadog.site=datadoghq.eu")),
    Case("agent-env", "extra environment on the agent container (agents.containers.agent.env)",
         (*API_KEY, *LOGS_ON, *_json("agents.containers.agent.env", [
             {"name": "DD_KUBELET_TLS_VERIFY", "value": "false"}, {"name": "DD_ENV", "value": "prod"}]))),
)
# The whole release for `kaudit render --existing` (many kinds in one file), not a matrix entry.
WHOLE_RELEASE = Case("helm-template-default", "every object of a release with the default values", API_KEY,
                     whole=True)
# The Datadog Operator's DatadogAgent CRD, from the chart's datadog-crds dependency.
DATADOG_AGENT_CRD = Case("datadogagents-crd", "the DatadogAgent CRD (dependency datadog-crds)",
                         ("--set", "crds.datadogAgents=true"), release="datadog", whole=True,
                         subchart="charts/datadog-crds")
GENERATED = (*MATRIX, WHOLE_RELEASE, DATADOG_AGENT_CRD)
BY_NAME = {case.name: case for case in GENERATED}


def chart_dir() -> Path | None:
    """The chart next to the repository (or $KAUDIT_DATADOG_CHART), None when it is not there."""
    path = Path(os.environ.get("KAUDIT_DATADOG_CHART") or (REPO / CHART_RELATIVE))
    return path if (path / "Chart.yaml").is_file() else None


def missing_reason() -> str:
    return (f"the Datadog chart is not at {CHART_RELATIVE} (relative to the repository) nor in "
            f"$KAUDIT_DATADOG_CHART; the committed fixtures are still checked by the other tests")


def template_args(case: Case, chart: str = CHART_RELATIVE) -> list[str]:
    """helm's arguments for one case: the agent DaemonSet only."""
    only = () if case.whole else ("--show-only", "templates/daemonset.yaml")
    source = f"{chart}/{case.subchart}" if case.subchart else chart
    return ["template", case.release, source, "--namespace", case.namespace, *only, *case.args]


def fixture_text(case: Case, helm_output: str, helm_version: str) -> str:
    header = [
        f"# {'Objects' if case.whole else 'The agent DaemonSet'} of the Datadog Helm chart "
        f"{CHART_VERSION}: {case.what}.",
        "# GENERATED by tests/datadog_chart.py with the suite's helm "
        f"({helm_version}); do not edit, regenerate:",
        "#   " + shlex.join(["helm", *template_args(case)]),
    ]
    return "\n".join(header) + "\n" + helm_output


def render_case(helm, case: Case, chart: Path) -> str:
    """The fixture text for ``case``; ``helm`` is a tests/helmtools.py Runner."""
    done = helm.run(*template_args(case, str(chart)))
    version = helm.run("version", "--template", "{{.Version}}").stdout.strip()
    return fixture_text(case, done.stdout, f"helm {version}")


# The chart's kpi-telemetry ConfigMap holds a random install_id and the time of the rendering:
# the only parts of its output that differ between runs (the DaemonSets only refer to them).
_RANDOM = re.compile(r'^(  install_(?:id|time): ).*$', re.MULTILINE)


def comparable(text: str) -> str:
    """``text`` with the chart's per-run values blanked out, for comparing two renderings."""
    return _RANDOM.sub(r'\1"<per run>"', text)


def load_case(case: Case) -> dict:
    import yaml

    return yaml.safe_load(case.path.read_text())


if __name__ == "__main__":
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from helmtools import CACHE, Runner, _helm_env, fetch_tools

    chart = chart_dir()
    if chart is None:
        sys.exit(missing_reason())
    runner = Runner(fetch_tools().helm, _helm_env(CACHE / "helm-home"))
    FIXTURES.mkdir(parents=True, exist_ok=True)
    for case in GENERATED:
        text = render_case(runner, case, chart)
        case.path.write_text(text)
        print(f"wrote {case.path.relative_to(REPO)}")
        if case.name == EXAMPLE_CASE:
            EXAMPLE.write_text(text)
            print(f"wrote {EXAMPLE.relative_to(REPO)}")

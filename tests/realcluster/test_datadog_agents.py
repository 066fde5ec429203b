"""DaemonSet and DatadogAgent modes on the agents people run, on a real kube-apiserver.

DaemonSet mode: the Datadog chart 3.240.0 (../shared/datadog) installed with the real
``helm install`` over entries of tests/datadog_chart.py's matrix; kaudit's apply is accepted,
an edit is repaired, a ``helm upgrade`` of the release succeeds (Helm 4 applies server-side
without force, so a field kaudit kept owning over Helm's value would make it fail with a conflict)
and kaudit restores its fields at once, and deleting the AuditCollection gives Helm's DaemonSet
back exactly. DatadogAgent mode: the chart's real DatadogAgent CRD on the plane, a DatadogAgent
with overrides of its own, kaudit's apply accepted by the CRD's schema and handed back exactly.

The operator is a real ``kaudit run --standalone`` process with admin credentials, one for the
module; each test creates and deletes its own AuditCollection (a cluster has one at a time).
"""

from __future__ import annotations

import copy
import json
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path

import pytest
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from datadog_chart import BY_NAME, DATADOG_AGENT_CRD, MATRIX, chart_dir, load_case, missing_reason  # noqa: E402
from plane import REPO, wait_for  # noqa: E402

OPERATOR_NAMESPACE = "kaudit-agents"
RESTORE_SECONDS = 10.0  # "within seconds": the DaemonSet watch triggers the repair at once
# What the API server and controllers maintain, not the user or kaudit.
VOLATILE_METADATA = ("resourceVersion", "uid", "creationTimestamp", "generation", "managedFields")
VOLATILE_ANNOTATIONS = ("deprecated.daemonset.template.generation",)


def stable(obj: dict) -> dict:
    """``obj`` without what the server changes on every write: what the user (and Helm) declared."""
    obj = copy.deepcopy(obj)
    obj.pop("status", None)
    meta = obj["metadata"]
    for key in VOLATILE_METADATA:
        meta.pop(key, None)
    annotations = meta.get("annotations") or {}
    for key in VOLATILE_ANNOTATIONS:
        annotations.pop(key, None)
    if not annotations:
        meta.pop("annotations", None)
    return obj


@pytest.fixture(scope="module")
def operator(control_plane):
    control_plane.kubectl("apply", "--server-side", "-f", str(REPO / "crds" / "auditcollections.kaudit.dev.yaml"))
    control_plane.wait_established("auditcollections.kaudit.dev")
    control_plane.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": OPERATOR_NAMESPACE}})
    process = control_plane.start_operator("--standalone", "--log-format", "text",
                                           kubeconfig=control_plane.admin_kubeconfig, namespace=OPERATOR_NAMESPACE,
                                           name="agents-operator")
    yield process
    process.stop()


def collection(name: str, agent: dict) -> dict:
    return {"apiVersion": "kaudit.dev/v1alpha1", "kind": "AuditCollection", "metadata": {"name": name},
            "spec": {"policy": {"profile": "Default"}, "apiServer": {"installPolicy": False}, "agent": agent}}


def condition(plane, name: str, type_: str) -> dict:
    found = plane.get_or_none("auditcollection", name) or {}
    return next((c for c in (found.get("status") or {}).get("conditions") or [] if c["type"] == type_), {})


def wait_configured(plane, operator, name: str) -> dict:
    wait_for(lambda: condition(plane, name, "AgentConfigured").get("status") == "True", 30,
             f"AgentConfigured of {name} (operator log:\n{operator.tail()})")
    return plane.get("auditcollection", name)


def delete_collection(plane, name: str) -> None:
    plane.kubectl("delete", "auditcollection", name, "--wait=true", "--timeout=60s")


def agent_container(ds: dict) -> dict:
    return next(c for c in ds["spec"]["template"]["spec"]["containers"] if c["name"] == "agent")


def kaudits_fields_in_place(ds: dict) -> bool:
    pod = ds["spec"]["template"]["spec"]
    agent = agent_container(ds)
    env = {e["name"]: e.get("value") for e in agent.get("env") or []}
    mounts = {m["mountPath"] for m in agent.get("volumeMounts") or []}
    keys = {t.get("key") for t in pod.get("tolerations") or []}
    return (env.get("DD_LOGS_ENABLED") == "true"
            and {"/etc/datadog-agent/conf.d/kubernetes_audit.d", "/var/log/kubernetes/apiserver"} <= mounts
            and {"node-role.kubernetes.io/control-plane", "node-role.kubernetes.io/master"} <= keys)


# --- DaemonSet mode on Helm-installed agents --------------------------------------------------------

# Matrix entries, each installed as its own release, in its own namespace and under its own release
# name (None: the entry's own), so that all install at once: the chart's cluster-scoped objects
# (ClusterRoles, the Datadog Operator subchart's, ...) are named after the release, and two releases of
# one name in two namespaces each claim the other's. Server-side apply let that pass when both
# installs raced past Helm's ownership check, and failed when one finished first.
CASES: dict[str, tuple[str | None, str | None]] = {
    "default": ("datadog", None),
    "control-plane-tolerations": ("datadog-tolerations", "datadog-tolerations"),
    "other-release": (None, None),
}


def release_of(case_name: str) -> str:
    return CASES[case_name][1] or BY_NAME[case_name].release


def daemon_set_of(case_name: str) -> str:
    # The chart's datadog.fullname: the release name when it contains "datadog" (tests/datadog_chart.py).
    return replace(BY_NAME[case_name], release=release_of(case_name)).daemon_set


def install_args(case_name: str) -> tuple[str, list[str]]:
    case = BY_NAME[case_name]
    namespace = CASES[case_name][0] or case.namespace
    return namespace, ["--namespace", namespace, "--create-namespace", *case.args]


@pytest.fixture(scope="module")
def releases(control_plane):
    """The Datadog chart installed with helm install for each case (in parallel: helm is mostly waiting)."""
    chart = chart_dir()
    if chart is None:
        pytest.skip(missing_reason())

    def install(case_name: str) -> None:
        namespace, args = install_args(case_name)
        control_plane.helm("install", release_of(case_name), str(chart), *args)

    def uninstall(case_name: str) -> None:
        namespace, _ = install_args(case_name)
        control_plane.helm("uninstall", release_of(case_name), "--namespace", namespace, check=False)

    with ThreadPoolExecutor(len(CASES)) as pool:
        list(pool.map(install, CASES))
    yield chart
    with ThreadPoolExecutor(len(CASES)) as pool:
        list(pool.map(uninstall, CASES))


@pytest.mark.parametrize("case_name", list(CASES))
def test_daemonset_mode_on_a_helm_installed_agent(control_plane, operator, releases, case_name):
    plane, chart = control_plane, releases
    namespace, install = install_args(case_name)
    name = f"agents-{case_name}"
    ds_args = ("daemonset", daemon_set_of(case_name), "-n", namespace)
    helms = stable(plane.get(*ds_args))
    try:
        plane.apply(collection(name, {"mode": "DaemonSet", "namespace": namespace,
                                      "daemonSet": {"name": daemon_set_of(case_name)}}))
        status = wait_configured(plane, operator, name)["status"]
        live = plane.get(*ds_args)
        assert kaudits_fields_in_place(live)  # accepted by the real API server: a valid pod template
        assert [c for c in live["spec"]["template"]["spec"]["containers"] if c["name"] != "agent"] == [
            c for c in helms["spec"]["template"]["spec"]["containers"] if c["name"] != "agent"]
        if case_name == "default":  # the chart's logs off: turned on, said in status and in an Event
            assert any("DD_LOGS_ENABLED=true" in w for w in status["warnings"])
            assert any("datadog.logs.enabled=true" in s and "Helm release 'datadog-agent'" in s
                       for s in status["nextSteps"])
            events = plane.get("events", "-n", "default",  # a cluster-scoped object's Events
                               "--field-selector", f"involvedObject.name={name}")["items"]
            assert "LogCollectionEnabled" in {e["reason"] for e in events}

        # Drift: someone removes kaudit's mounts and tolerations; kaudit puts them back.
        plane.kubectl("patch", *ds_args, "--type=json", "-p", json.dumps([
            {"op": "remove", "path": "/spec/template/spec/tolerations"},
            {"op": "replace", "path": "/spec/template/spec/containers/0/volumeMounts",
             "value": helms["spec"]["template"]["spec"]["containers"][0]["volumeMounts"]}]))
        wait_for(lambda: kaudits_fields_in_place(plane.get(*ds_args)), RESTORE_SECONDS, "drift repaired")

        # A helm upgrade of the release puts the chart's values back, and must not fail.
        upgraded = plane.helm("upgrade", release_of(case_name), str(chart), *install, check=False)
        assert upgraded.returncode == 0, upgraded.stderr
        started = time.monotonic()
        wait_for(lambda: kaudits_fields_in_place(plane.get(*ds_args)), RESTORE_SECONDS, "restored after helm upgrade")
        print(f"{case_name}: kaudit's fields back {time.monotonic() - started:.1f} s after helm upgrade")

        delete_collection(plane, name)
        assert stable(plane.get(*ds_args)) == helms  # Helm's DaemonSet, exactly
    finally:
        plane.kubectl("delete", "auditcollection", name, "--ignore-not-found", "--wait=true", "--timeout=60s")


# --- Every other matrix entry: the chart's committed DaemonSet, applied as Helm 4 applies it -------

# The entries above go through helm install; the rest are the committed fixtures (the chart's own
# output, tests/datadog_chart.py), applied server-side with Helm's field manager, each in its own
# namespace: kaudit meets a Helm-owned DaemonSet without a release per entry.
APPLIED_CASES = [case.name for case in MATRIX if case.name not in CASES]


def must_refuse(ds: dict) -> bool:
    """Turning DD_LOGS_ENABLED on would also ship every container's logs (container collection on)."""
    env = {e["name"]: e.get("value") for e in agent_container(ds).get("env") or []}
    return env.get("DD_LOGS_ENABLED") != "true" and env.get("DD_LOGS_CONFIG_CONTAINER_COLLECT_ALL") == "true"


@pytest.mark.parametrize("case_name", APPLIED_CASES)
def test_daemonset_mode_on_every_other_chart_fixture(control_plane, operator, case_name):
    plane = control_plane
    ds = load_case(BY_NAME[case_name])
    namespace = name = f"fx-{case_name}"
    ds["metadata"]["namespace"] = namespace
    plane.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}})
    plane.kubectl("apply", "--server-side", "--field-manager=helm", "-f", "-", input=json.dumps(ds))
    ds_args = ("daemonset", ds["metadata"]["name"], "-n", namespace)
    helms = stable(plane.get(*ds_args))
    try:
        plane.apply(collection(name, {"mode": "DaemonSet", "namespace": namespace,
                                      "daemonSet": {"name": ds["metadata"]["name"]}}))
        if must_refuse(ds):
            wait_for(lambda: condition(plane, name, "AgentConfigured").get("status") == "False", 30,
                     f"AgentConfigured=False of {name} (operator log:\n{operator.tail()})")
            refused = condition(plane, name, "AgentConfigured")
            assert refused["reason"] == "LogCollectionDisabled", refused
            assert "datadog.logs.containerCollectAll" in refused["message"]  # the Helm value to change
            assert stable(plane.get(*ds_args)) == helms  # nothing of kaudit's on the user's agent
            return
        wait_configured(plane, operator, name)
        live = plane.get(*ds_args)
        assert kaudits_fields_in_place(live)  # accepted by the real API server: a valid pod template
        mounts = [m["mountPath"] for m in agent_container(live)["volumeMounts"]]
        assert len(mounts) == len(set(mounts))
        pointerdir = [m["name"] for m in agent_container(live)["volumeMounts"]
                      if m["mountPath"] == "/opt/datadog-agent/run"]
        assert pointerdir == [m["name"] for m in agent_container(helms)["volumeMounts"]
                              if m["mountPath"] == "/opt/datadog-agent/run"]  # the chart's own, reused
        assert [c for c in live["spec"]["template"]["spec"]["containers"] if c["name"] != "agent"] == [
            c for c in helms["spec"]["template"]["spec"]["containers"] if c["name"] != "agent"]
        # Drift: the tolerations removed; kaudit puts them back.
        plane.kubectl("patch", *ds_args, "--type=json", "-p", json.dumps([
            {"op": "remove", "path": "/spec/template/spec/tolerations"}]))
        wait_for(lambda: kaudits_fields_in_place(plane.get(*ds_args)), RESTORE_SECONDS, "drift repaired")
        delete_collection(plane, name)
        assert stable(plane.get(*ds_args)) == helms  # the chart's DaemonSet, exactly
    finally:
        plane.kubectl("delete", "auditcollection", name, "--ignore-not-found", "--wait=true", "--timeout=60s")
        plane.kubectl("delete", "namespace", namespace, "--wait=false")


# --- DatadogAgent mode on the real CRD --------------------------------------------------------------


def test_datadogagent_mode_on_the_real_crd(control_plane, operator):
    plane = control_plane
    plane.kubectl("apply", "--server-side", "-f", str(DATADOG_AGENT_CRD.path))
    wait_for(lambda: any(c["type"] == "Established" and c["status"] == "True" for c in (
        plane.get("crd", "datadogagents.datadoghq.com").get("status") or {}).get("conditions") or []),
        60, "the DatadogAgent CRD established")
    users = yaml.safe_load((REPO / "examples" / "existing" / "datadogagent.yaml").read_text())
    users["metadata"]["namespace"] = namespace = "dda-agents"
    plane.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}})
    name = "agents-datadogagent"
    wait_for(lambda: plane.kubectl("apply", "-f", "-", input=json.dumps(users), check=False).returncode == 0,
             30, "DatadogAgent accepted (discovery lags the CRD a moment)")
    try:
        theirs = stable(plane.get("datadogagent", "datadog", "-n", namespace))
        plane.apply(collection(name, {"mode": "DatadogAgent", "namespace": namespace,
                                      "datadogAgent": {"name": "datadog"}}))
        wait_configured(plane, operator, name)
        # The API server prunes fields its schema lacks without a word: all of kaudit's must be there.
        node_agent = plane.get("datadogagent", "datadog", "-n", namespace)["spec"]["override"]["nodeAgent"]
        assert set(node_agent["extraConfd"]["configDataMap"]) == {"http_check.yaml", "kubernetes_audit.yaml"}
        assert 'source: "kubernetes.audit"' in node_agent["extraConfd"]["configDataMap"]["kubernetes_audit.yaml"]
        assert [v["name"] for v in node_agent["volumes"]] == ["app-logs", "kaudit-audit-logs"]
        assert {m["mountPath"] for m in node_agent["containers"]["agent"]["volumeMounts"]} == {
            "/var/log/apps", "/var/log/kubernetes/apiserver"}
        assert {t["key"] for t in node_agent["tolerations"]} == {
            "dedicated", "node-role.kubernetes.io/control-plane", "node-role.kubernetes.io/master"}
        assert "kaudit.dev/config-hash" in node_agent["annotations"]

        delete_collection(plane, name)
        assert stable(plane.get("datadogagent", "datadog", "-n", namespace)) == theirs
    finally:
        plane.kubectl("delete", "auditcollection", name, "--ignore-not-found", "--wait=true", "--timeout=60s")
        plane.kubectl("delete", "namespace", namespace, "--wait=false")

"""DaemonSet mode on every agent DaemonSet the real Datadog Helm chart renders (tests/datadog_chart.py).

Render level: the committed fixtures are what the chart renders today; kaudit's body, merged
into each, gives a pod that is valid for Kubernetes 1.29-1.37 with no duplicate mountPath, the
chart's pointerdir reused, the other containers untouched; and the hand-back reproduces the
chart's DaemonSet exactly. tests/realcluster/ does the same on a real API server.
"""

from __future__ import annotations

import copy

import pytest

from datadog_chart import BY_NAME, EXAMPLE, EXAMPLE_CASE, GENERATED, MATRIX, chart_dir, comparable, load_case, missing_reason, render_case
from helmtools import helm, k8s_tools, validation_errors  # noqa: F401 (fixtures)
from kaudit.errors import Refused
from kaudit.reconcile import plan
from kaudit.render import render
from render_support import (
    apply_json_patch,
    apply_merge_patch,
    apply_ssa_merge,
    container,
    daemonset_mode,
    mounts_by_path,
    remove_applied,
    volumes_by_name,
    without_the_charts_newer_fields,
    without_nulls,
)

POINTDIR = "/opt/datadog-agent/run"
REFUSED = {"collect-all-logs-off"}  # item 3: turning logs on would ship every container's logs
ACCEPTED = [case for case in MATRIX if case.name not in REFUSED]


def collection_for(case) -> dict:
    return daemonset_mode(namespace=case.namespace, daemonSet={"name": case.daemon_set})


def rendered_for(case):
    return render(collection_for(case), existing=[load_case(case)])


def desired_for(case, live: dict) -> dict:
    """The body the operator sends: the renderer's, with kaudit's bookkeeping annotations."""
    [body] = render(collection_for(case), existing=[plan.user_view(live)]).patches
    return plan.stamp(plan.record_replaced_values(plan.record_added_items(body, live), live))


def pod_of(ds: dict) -> dict:
    return ds["spec"]["template"]["spec"]


# --- the fixtures are the chart's -----------------------------------------------------------------


def test_committed_fixtures_are_what_the_chart_renders(helm):
    chart = chart_dir()
    if chart is None:
        pytest.skip(missing_reason())
    for case in GENERATED:
        assert comparable(case.path.read_text()) == comparable(render_case(helm, case, chart)), (
            f"{case.path.name} differs from the chart's rendering: run python tests/datadog_chart.py")
    assert EXAMPLE.read_text() == BY_NAME[EXAMPLE_CASE].path.read_text()


def test_every_fixture_is_a_helm_agent_with_the_operator_lookalike_label():
    # The label that made kaudit take every chart agent for the Datadog Operator's (issue 11).
    for case in MATRIX:
        labels = load_case(case)["metadata"]["labels"]
        assert labels["agent.datadoghq.com/component"] == "agent"
        assert labels["app.kubernetes.io/managed-by"] == "Helm"


# --- DaemonSet mode on each fixture ---------------------------------------------------------------


@pytest.mark.parametrize("case", ACCEPTED, ids=lambda c: c.name)
def test_patched_agent_is_valid_with_unique_mounts_and_other_containers_untouched(case):
    live = load_case(case)
    [body] = rendered_for(case).patches
    merged = apply_ssa_merge(live, body)
    assert validation_errors([without_the_charts_newer_fields(merged)]) == []
    for kind in ("containers", "initContainers"):
        for item in pod_of(merged).get(kind) or []:
            paths = [m["mountPath"] for m in item.get("volumeMounts") or []]
            assert len(paths) == len(set(paths)), f"{item['name']}: duplicate mountPath"
    names = [v["name"] for v in pod_of(merged)["volumes"]]
    assert len(names) == len(set(names))
    assert pod_of(merged)["initContainers"] == pod_of(live)["initContainers"]
    others = [c for c in pod_of(live)["containers"] if c["name"] != "agent"]
    assert others and [c for c in pod_of(merged)["containers"] if c["name"] != "agent"] == others


@pytest.mark.parametrize("case", ACCEPTED, ids=lambda c: c.name)
def test_the_charts_pointdir_mount_is_reused(case):
    live = load_case(case)
    [body] = rendered_for(case).patches
    chart_mount = mounts_by_path(container(pod_of(live), "agent"))[POINTDIR]
    assert POINTDIR not in mounts_by_path(body["spec"]["template"]["spec"]["containers"][0])
    merged = container(pod_of(apply_ssa_merge(live, body)), "agent")
    assert [m["name"] for m in merged["volumeMounts"] if m["mountPath"] == POINTDIR] == [chart_mount["name"]]


@pytest.mark.parametrize("case", ACCEPTED, ids=lambda c: c.name)
def test_the_agent_tolerates_the_control_plane_and_reads_the_log_and_config(case):
    live = load_case(case)
    [body] = rendered_for(case).patches
    merged = pod_of(apply_ssa_merge(live, body))
    tolerated = {(t.get("key"), t.get("effect")) for t in merged["tolerations"]}
    assert {("node-role.kubernetes.io/control-plane", "NoSchedule"), ("node-role.kubernetes.io/master", "NoSchedule")} <= tolerated
    agent = container(merged, "agent")
    mounts = mounts_by_path(agent)
    volumes = volumes_by_name(merged)
    assert volumes[mounts["/var/log/kubernetes/apiserver"]["name"]]["hostPath"]["path"] == "/var/log/kubernetes/apiserver"
    assert volumes[mounts["/etc/datadog-agent/conf.d/kubernetes_audit.d"]["name"]]["configMap"]["name"] == \
        "kaudit-cluster-agent-config"
    assert [e["value"] for e in agent["env"] if e["name"] == "DD_LOGS_ENABLED"] == ["true"]


@pytest.mark.parametrize("case", ACCEPTED, ids=lambda c: c.name)
def test_rendering_again_against_the_patched_agent_gives_the_same_body(case):
    live = load_case(case)
    first = desired_for(case, live)
    assert desired_for(case, apply_ssa_merge(live, first)) == first


@pytest.mark.parametrize("case", ACCEPTED, ids=lambda c: c.name)
def test_hand_back_reproduces_the_charts_daemonset(case):
    live = load_case(case)
    desired = desired_for(case, live)
    patched = apply_ssa_merge(live, desired)
    release = plan.release_of(patched)
    restored = apply_merge_patch(patched, release.restore) if release.restore else patched
    operations = plan.restore_values_patch(restored, release.values)
    restored = apply_json_patch(restored, operations) if operations else restored
    handed_back = remove_applied(restored, desired, live)
    handed_back["metadata"].pop("resourceVersion", None)
    assert without_nulls(handed_back) == without_nulls(live)


def test_reused_log_directory_and_confd_and_host_network_keep_their_own_volumes():
    [body] = rendered_for(BY_NAME["audit-volumes"]).patches
    assert "/var/log/kubernetes/apiserver" not in mounts_by_path(body["spec"]["template"]["spec"]["containers"][0])
    merged = pod_of(apply_ssa_merge(load_case(BY_NAME["confd"]), rendered_for(BY_NAME["confd"]).patches[0]))
    assert "confd" in volumes_by_name(merged)
    merged = pod_of(apply_ssa_merge(load_case(BY_NAME["host-network"]),
                                    rendered_for(BY_NAME["host-network"]).patches[0]))
    assert merged["hostNetwork"] is True


def test_control_plane_tolerations_already_there_are_kept_as_they_are():
    case = BY_NAME["control-plane-tolerations"]
    [body] = rendered_for(case).patches
    assert body["spec"]["template"]["spec"]["tolerations"] == pod_of(load_case(case))["tolerations"]
    steps = " ".join(rendered_for(case).next_steps)
    assert "agents.tolerations" not in steps and "Helm release" not in steps


# --- logs off on the chart's default values (item 3) --------------------------------------------


def test_default_values_turn_log_collection_on_and_say_so():
    case = BY_NAME["default"]
    rendered = rendered_for(case)
    [body] = rendered.patches
    agent = body["spec"]["template"]["spec"]["containers"][0]
    assert {"name": "DD_LOGS_ENABLED", "value": "true"} in agent["env"]
    [(reason, message)] = rendered.events
    assert reason == "LogCollectionEnabled" and "'false'" in message
    assert any(w.message == message for w in rendered.warnings)
    # The chart's emptyDir at the pointdir stays (a second mount is invalid); kaudit says so.
    assert any("not a hostPath" in w.message for w in rendered.warnings)


def test_helm_agents_are_told_which_values_make_kaudits_changes_permanent():
    case = BY_NAME["default"]
    installed = load_case(case)  # as helm install leaves it: the release in two annotations
    installed["metadata"]["annotations"] = {"meta.helm.sh/release-name": "datadog-agent",
                                            "meta.helm.sh/release-namespace": "datadog"}
    rendered = render(collection_for(case), existing=[installed])
    [step] = [s for s in rendered.next_steps if "Helm release" in s]
    assert "installed by Helm release 'datadog-agent' (namespace datadog)" in step
    assert [s for s in rendered_for(case).next_steps if "installed by a Helm release" in s]
    assert "datadog.logs.enabled=true" in step
    assert "agents.tolerations" in step and "node-role.kubernetes.io/control-plane" in step
    # With logs on and the tolerations there already, nothing is left to make permanent.
    assert not [s for s in rendered_for(BY_NAME["control-plane-tolerations"]).next_steps if "Helm release" in s]


def test_turning_logs_on_where_every_container_would_be_collected_is_refused():
    with pytest.raises(Refused) as caught:
        rendered_for(BY_NAME["collect-all-logs-off"])
    assert caught.value.reason == "LogCollectionDisabled"
    assert "DD_LOGS_CONFIG_CONTAINER_COLLECT_ALL" in caught.value.message
    assert "datadog.logs.enabled=true" in caught.value.message


def test_the_users_value_is_recorded_and_seen_again_after_kaudits_apply():
    live = load_case(BY_NAME["default"])
    desired = desired_for(BY_NAME["default"], live)
    path = ("spec", "template", "spec", "containers", "agent", "env", "DD_LOGS_ENABLED", "value")
    assert plan.replaced_values(desired) == [(path, "false")]
    view = plan.user_view(apply_ssa_merge(live, desired))
    assert [e["value"] for e in container(pod_of(view), "agent")["env"] if e["name"] == "DD_LOGS_ENABLED"] == ["false"]
    # The trace-agent's own DD_LOGS_ENABLED is the chart's: kaudit changes the agent container only.
    trace = container(pod_of(apply_ssa_merge(live, desired)), "trace-agent")
    assert [e["value"] for e in trace["env"] if e["name"] == "DD_LOGS_ENABLED"] == ["false"]


# --- who owns the DaemonSet (item 2) ----------------------------------------------------------------


@pytest.mark.parametrize("meta_change, refused", [
    ({"labels": {"app.kubernetes.io/managed-by": "datadog-operator"}}, True),
    ({"ownerReferences": [{"apiVersion": "datadoghq.com/v2alpha1", "kind": "DatadogAgent", "name": "datadog",
                           "uid": "u1"}]}, True),
    ({"ownerReferences": [{"apiVersion": "datadoghq.com/v1alpha1", "kind": "DatadogAgentInternal",
                           "name": "datadog", "uid": "u2"}]}, True),
    ({"ownerReferences": [{"apiVersion": "example.com/v1", "kind": "DatadogAgent", "name": "x", "uid": "u3"}]}, False),
    ({"labels": {"agent.datadoghq.com/provider": "gke-autopilot"}}, False),
], ids=["managed-by-label", "datadogagent-owner", "datadogagentinternal-owner", "other-group-owner", "agent-label"])
def test_only_the_operators_label_or_owner_means_the_datadog_operator(meta_change, refused):
    live = load_case(BY_NAME["logs"])
    for key, value in meta_change.items():
        if isinstance(value, dict):
            live["metadata"].setdefault(key, {}).update(value)
        else:
            live["metadata"][key] = copy.deepcopy(value)
    if refused:
        with pytest.raises(Refused) as caught:
            render(collection_for(BY_NAME["logs"]), existing=[live])
        assert caught.value.reason == "ManagedByDatadogOperator"
    else:
        assert render(collection_for(BY_NAME["logs"]), existing=[live]).patches

"""DaemonSet mode: the server-side-apply body for the user's agent DaemonSet."""

from __future__ import annotations

import copy

import pytest

from kaudit.errors import InvalidInput, Refused
from kaudit.render import render
from kaudit.render.common import tolerates
from render_support import (
    apply_ssa_merge,
    collection,
    container,
    daemonset_mode,
    helm_daemonset,
    mounts_by_path,
    volumes_by_name,
)

CONFD = "/etc/datadog-agent/conf.d/kubernetes_audit.d"


def patch_for(live: dict, **agent) -> tuple[dict, tuple]:
    rendered = render(daemonset_mode(**agent), existing=[live])
    [body] = rendered.patches
    return body, rendered.warnings


def pod_after(live: dict, body: dict) -> dict:
    return apply_ssa_merge(live, body)["spec"]["template"]["spec"]


def test_body_names_only_what_kaudit_adds():
    live = helm_daemonset()
    body, _ = patch_for(live)
    assert body["apiVersion"] == "apps/v1" and body["kind"] == "DaemonSet"
    assert body["metadata"] == {"name": "datadog-agent", "namespace": "datadog",
                                "labels": {"kaudit.dev/collection": "cluster"}}
    template = body["spec"]["template"]
    assert set(body["spec"]) == {"template"}
    assert set(template["metadata"]) == {"annotations"}
    assert set(template["metadata"]["annotations"]) == {"kaudit.dev/config-hash"}
    assert set(template["spec"]) == {"containers", "volumes", "tolerations"}
    [agent] = template["spec"]["containers"]
    assert set(agent) == {"name", "env", "volumeMounts"}
    # Never the user's own labels (Helm's managed-by label must stay "Helm").
    assert "app.kubernetes.io/managed-by" not in body["metadata"]["labels"]


def test_helm_pointerdir_is_reused_and_no_second_pointdir_mount_appears():
    live = helm_daemonset()
    body, warnings = patch_for(live)
    [agent] = body["spec"]["template"]["spec"]["containers"]
    assert "/opt/datadog-agent/run" not in mounts_by_path(agent)
    pod = pod_after(live, body)
    run_mounts = [m for m in container(pod, "agent")["volumeMounts"] if m["mountPath"] == "/opt/datadog-agent/run"]
    assert [m["name"] for m in run_mounts] == ["pointerdir"]  # facts 4
    assert warnings == ()


def test_pointdir_is_added_as_a_host_directory_when_the_agent_has_none():
    live = helm_daemonset()
    pod = live["spec"]["template"]["spec"]
    container(pod, "agent")["volumeMounts"] = [
        m for m in container(pod, "agent")["volumeMounts"] if m["mountPath"] != "/opt/datadog-agent/run"]
    body, _ = patch_for(live)
    merged = pod_after(live, body)
    mount = mounts_by_path(container(merged, "agent"))["/opt/datadog-agent/run"]
    assert volumes_by_name(merged)[mount["name"]]["hostPath"] == {
        "path": "/opt/datadog-agent/run", "type": "DirectoryOrCreate"}


def test_an_empty_dir_pointdir_is_kept_but_warned_about():
    live = helm_daemonset()
    pointerdir = volumes_by_name(live["spec"]["template"]["spec"])["pointerdir"]
    del pointerdir["hostPath"]
    pointerdir["emptyDir"] = {}
    body, warnings = patch_for(live)
    assert "/opt/datadog-agent/run" not in mounts_by_path(body["spec"]["template"]["spec"]["containers"][0])
    assert [w.path for w in warnings] == ["spec.agent.daemonSet"]
    assert "not a hostPath" in warnings[0].message


def test_config_is_mounted_where_the_agent_reads_it_and_log_dir_read_only():
    live = helm_daemonset()
    body, _ = patch_for(live)
    merged = pod_after(live, body)
    mounts = mounts_by_path(container(merged, "agent"))
    volumes = volumes_by_name(merged)
    assert volumes[mounts[CONFD]["name"]]["configMap"]["name"] == "kaudit-cluster-agent-config"
    assert not any(path.startswith("/conf.d") for path in mounts)  # facts 2
    assert mounts["/var/log/kubernetes/apiserver"]["readOnly"] is True
    assert volumes[mounts["/var/log/kubernetes/apiserver"]["name"]]["hostPath"]["path"] == "/var/log/kubernetes/apiserver"
    paths = [m["mountPath"] for m in container(merged, "agent")["volumeMounts"]]
    assert len(paths) == len(set(paths))


def test_tolerations_are_the_full_list_because_the_field_is_atomic():
    # k8s.io/api core/v1 PodSpec.Tolerations is +listType=atomic: an apply body replaces it whole,
    # so it must carry the user's tolerations too.
    live = helm_daemonset()
    live["spec"]["template"]["spec"]["tolerations"] = [
        {"key": "dedicated", "operator": "Equal", "value": "gpu", "effect": "NoSchedule"}]
    body, _ = patch_for(live)
    tolerations = body["spec"]["template"]["spec"]["tolerations"]
    assert tolerations[0] == live["spec"]["template"]["spec"]["tolerations"][0]
    for key in ("node-role.kubernetes.io/control-plane", "node-role.kubernetes.io/master"):
        assert tolerates(tolerations, {"key": key, "effect": "NoSchedule"})
    assert len(tolerations) == 3


def test_tolerations_already_present_are_not_duplicated():
    live = helm_daemonset()
    live["spec"]["template"]["spec"]["tolerations"] = [{"operator": "Exists"}]
    body, _ = patch_for(live)
    assert body["spec"]["template"]["spec"]["tolerations"] == [{"operator": "Exists"}]


def test_rendering_against_the_already_patched_object_gives_the_same_body():
    # The operator renders against the live object, which holds kaudit's earlier additions; a field
    # missing from the next apply body would be removed, so the body must not change.
    live = helm_daemonset()
    body, _ = patch_for(live)
    again, _ = patch_for(apply_ssa_merge(live, body))
    assert again == body


def test_logs_enabled_is_added_when_absent_and_kept_when_true():
    live = helm_daemonset()
    agent = container(live["spec"]["template"]["spec"], "agent")
    agent["env"] = [e for e in agent["env"] if e["name"] != "DD_LOGS_ENABLED"]
    body, _ = patch_for(live)
    assert body["spec"]["template"]["spec"]["containers"][0]["env"] == [{"name": "DD_LOGS_ENABLED", "value": "true"}]


def test_logs_disabled_by_the_user_is_turned_on_when_container_collection_is_off():
    live = helm_daemonset()
    agent = container(live["spec"]["template"]["spec"], "agent")
    next(e for e in agent["env"] if e["name"] == "DD_LOGS_ENABLED")["value"] = "false"
    body, warnings = patch_for(live)
    assert {"name": "DD_LOGS_ENABLED", "value": "true"} in body["spec"]["template"]["spec"]["containers"][0]["env"]
    assert any("it was 'false'" in w.message for w in warnings)


@pytest.mark.parametrize("collect_all", [{"value": "true"}, {"value": "True"},
                                         {"valueFrom": {"configMapKeyRef": {"name": "c", "key": "k"}}}])
def test_logs_disabled_is_refused_where_turning_it_on_would_collect_every_container(collect_all):
    live = helm_daemonset()
    agent = container(live["spec"]["template"]["spec"], "agent")
    next(e for e in agent["env"] if e["name"] == "DD_LOGS_ENABLED")["value"] = "false"
    entry = next(e for e in agent["env"] if e["name"] == "DD_LOGS_CONFIG_CONTAINER_COLLECT_ALL")
    entry.pop("value")
    entry.update(collect_all)
    with pytest.raises(Refused) as caught:
        patch_for(live)
    assert caught.value.reason == "LogCollectionDisabled"
    assert "datadog.logs.enabled" in caught.value.message


def test_datadog_operator_daemon_set_is_refused_pointing_to_datadog_agent_mode():
    live = helm_daemonset()
    live["metadata"]["labels"]["app.kubernetes.io/managed-by"] = "datadog-operator"
    with pytest.raises(Refused) as caught:
        patch_for(live)
    assert caught.value.reason == "ManagedByDatadogOperator"
    assert "DatadogAgent" in caught.value.message


def test_missing_target_or_container_is_refused_with_how_to_supply_it():
    with pytest.raises(Refused) as caught:
        render(daemonset_mode(), existing=[])
    assert caught.value.reason == "TargetNotFound"
    assert "kubectl get daemonset -n datadog datadog-agent -o yaml" in caught.value.message
    other_namespace = helm_daemonset()
    other_namespace["metadata"]["namespace"] = "monitoring"
    with pytest.raises(Refused):
        render(daemonset_mode(), existing=[other_namespace])
    with pytest.raises(Refused) as caught:
        render(daemonset_mode(daemonSet={"container": "datadog"}), existing=[helm_daemonset()])
    assert caught.value.reason == "TargetNotFound" and "'datadog'" in caught.value.message


def test_target_is_found_inside_a_list():
    listing = {"apiVersion": "v1", "kind": "List", "items": [{"kind": "ConfigMap", "apiVersion": "v1"},
                                                            helm_daemonset()]}
    assert render(daemonset_mode(), existing=[listing]).patches[0]["metadata"]["name"] == "datadog-agent"


def test_conflicting_mounts_are_refused_and_a_manual_conf_d_mount_is_warned_about():
    live = helm_daemonset()
    agent = container(live["spec"]["template"]["spec"], "agent")
    agent["volumeMounts"].append({"name": "dd-agent-config", "mountPath": "/conf.d/kubernetes_audit.d"})
    _, warnings = patch_for(live)
    assert any("collected twice" in w.message for w in warnings)

    conflicting = copy.deepcopy(live)
    container(conflicting["spec"]["template"]["spec"], "agent")["volumeMounts"].append(
        {"name": "mine", "mountPath": CONFD})
    with pytest.raises(Refused) as caught:
        patch_for(conflicting)
    assert caught.value.reason == "MountConflict"


def test_an_existing_mount_of_the_log_directory_is_reused_if_it_is_the_same_host_directory():
    live = helm_daemonset()
    pod = live["spec"]["template"]["spec"]
    container(pod, "agent")["volumeMounts"].append({"name": "auditdir", "mountPath": "/var/log/kubernetes/apiserver"})
    pod["volumes"].append({"name": "auditdir", "hostPath": {"path": "/var/log/kubernetes/apiserver"}})
    body, _ = patch_for(live)
    assert "/var/log/kubernetes/apiserver" not in mounts_by_path(body["spec"]["template"]["spec"]["containers"][0])
    pod["volumes"][-1]["hostPath"]["path"] = "/somewhere/else"
    with pytest.raises(Refused) as caught:
        patch_for(live)
    assert caught.value.reason == "MountConflict"


def test_non_root_agent_is_warned_about():
    live = helm_daemonset()
    live["spec"]["template"]["spec"]["securityContext"] = {"runAsNonRoot": True, "runAsUser": 1000}
    _, warnings = patch_for(live)
    assert any("0600" in w.message for w in warnings)


def test_bad_policy_rules_fail_with_spec_policy_paths():
    with pytest.raises(InvalidInput) as caught:
        render(collection({"policy": {"rules": [{"level": "Loud"}]}}))
    assert [e.path for e in caught.value.errors] == ["spec.policy.rules[0].level"]


def test_an_agent_configured_by_another_collection_is_refused():
    live = helm_daemonset()
    live["metadata"]["labels"]["kaudit.dev/collection"] = "other"
    with pytest.raises(Refused) as caught:
        patch_for(live)
    assert caught.value.reason == "TargetClaimed" and "'other'" in caught.value.message

"""DatadogAgent mode: the change to a Datadog Operator DatadogAgent (datadoghq.com/v2alpha1)."""

from __future__ import annotations

import pytest

from kaudit.errors import Refused
from kaudit.render import render
from kaudit.render.common import tolerates
from render_support import datadog_agent, datadogagent_mode, one


def node_agent_of(live: dict, **agent) -> tuple[dict, dict]:
    rendered = render(datadogagent_mode(**agent), existing=[live])
    [body] = rendered.patches
    return body, body["spec"]["override"]["nodeAgent"]


def without_extra_confd() -> dict:
    live = datadog_agent()
    del live["spec"]["override"]["nodeAgent"]["extraConfd"]
    return live


def test_body_enables_logs_and_points_extra_confd_at_kaudits_config_map():
    body, node_agent = node_agent_of(without_extra_confd())
    assert body["apiVersion"] == "datadoghq.com/v2alpha1" and body["kind"] == "DatadogAgent"
    assert body["metadata"] == {"name": "datadog", "namespace": "datadog",
                                "labels": {"kaudit.dev/collection": "cluster"}}
    assert body["spec"]["features"] == {"logCollection": {"enabled": True}}
    # facts 5: name + items, the item path lands below conf.d.
    assert node_agent["extraConfd"] == {"configMap": {
        "name": "kaudit-cluster-agent-config",
        "items": [{"key": "conf.yaml", "path": "kubernetes_audit.d/conf.yaml"}],
    }}
    assert set(node_agent) == {"annotations", "extraConfd", "volumes", "containers", "tolerations"}


def test_log_directory_is_a_read_only_host_directory_on_the_agent_container():
    _, node_agent = node_agent_of(datadog_agent())
    [volume] = node_agent["volumes"]
    [mount] = node_agent["containers"]["agent"]["volumeMounts"]
    assert volume["hostPath"]["path"] == "/var/log/kubernetes/apiserver"
    assert mount == {"name": volume["name"], "mountPath": "/var/log/kubernetes/apiserver", "readOnly": True}
    # The Operator mounts /opt/datadog-agent/run itself (facts 4): kaudit adds no second one.
    assert all(m["mountPath"] != "/opt/datadog-agent/run" for m in node_agent["containers"]["agent"]["volumeMounts"])


def test_tolerations_carry_the_users_list_plus_the_control_plane_ones():
    # The datadog-operator v2alpha1 types mark override tolerations +listType=atomic.
    live = datadog_agent()
    _, node_agent = node_agent_of(live)
    tolerations = node_agent["tolerations"]
    assert tolerations[0] == live["spec"]["override"]["nodeAgent"]["tolerations"][0]
    for key in ("node-role.kubernetes.io/control-plane", "node-role.kubernetes.io/master"):
        assert tolerates(tolerations, {"key": key, "effect": "NoSchedule"})


def test_config_hash_annotation_matches_the_config_map():
    rendered = render(datadogagent_mode(), existing=[datadog_agent()])
    cm = one(rendered.objects, "ConfigMap", "agent-config")
    assert rendered.patches[0]["spec"]["override"]["nodeAgent"]["annotations"] == {
        "kaudit.dev/config-hash": cm["metadata"]["annotations"]["kaudit.dev/config-hash"]}


def test_extra_confd_pointing_elsewhere_is_a_conflict():
    live = datadog_agent()
    live["spec"]["override"]["nodeAgent"]["extraConfd"] = {"configMap": {"name": "my-checks"}}
    with pytest.raises(Refused) as caught:
        render(datadogagent_mode(), existing=[live])
    assert caught.value.reason == "ExtraConfdConflict" and "my-checks" in caught.value.message


def test_a_users_config_data_map_gets_kaudits_file_beside_theirs():
    live = datadog_agent()
    body, node_agent = node_agent_of(live)
    # configDataMap is a map: each key is a file in conf.d, and an apply merges kaudit's key with theirs.
    assert list(node_agent["extraConfd"]) == ["configDataMap"]
    assert set(node_agent["extraConfd"]["configDataMap"]) == {"kubernetes_audit.yaml"}
    text = node_agent["extraConfd"]["configDataMap"]["kubernetes_audit.yaml"]
    cm = one(render(datadogagent_mode(), existing=[live]).objects, "ConfigMap", "agent-config")
    assert text == cm["data"]["conf.yaml"]  # the same log configuration as the other modes


def test_rendering_against_the_already_configured_resource_gives_the_same_body():
    live = datadog_agent()
    body, node_agent = node_agent_of(live)
    live["metadata"]["labels"] = body["metadata"]["labels"]
    live["spec"]["override"]["nodeAgent"].update(node_agent)
    again, _ = node_agent_of(live)
    assert again == body


def test_log_collection_turned_off_by_the_user_is_refused():
    live = datadog_agent()
    live["spec"]["features"]["logCollection"]["enabled"] = False
    with pytest.raises(Refused) as caught:
        render(datadogagent_mode(), existing=[live])
    assert caught.value.reason == "LogCollectionDisabled"


def test_missing_datadog_agent_is_refused():
    with pytest.raises(Refused) as caught:
        render(datadogagent_mode(datadogAgent={"name": "other"}), existing=[datadog_agent()])
    assert caught.value.reason == "TargetNotFound"
    assert "kubectl get datadogagent -n datadog other -o yaml" in caught.value.message

"""Managed mode and what every mode shares: policy ConfigMap, flags, agent config, determinism."""

from __future__ import annotations

import json

import yaml

from kaudit.render import render
from kaudit.render.common import CONTROL_PLANE_TOLERATIONS, tolerates
from render_support import collection, container, mounts_by_path, one, volumes_by_name

# Fixed by the team's shared decisions.
KAUDIT_LABELS = {
    "app.kubernetes.io/managed-by": "kaudit",
    "app.kubernetes.io/part-of": "kaudit",
    "app.kubernetes.io/name": "kaudit",
    "app.kubernetes.io/instance": "cluster",
    "kaudit.dev/collection": "cluster",
}


def managed_daemon_set(spec: dict | None = None) -> dict:
    return one(render(collection(spec)).objects, "DaemonSet", "agent")


def test_policy_config_map_holds_the_composed_policy_in_the_operator_namespace():
    rendered = render(collection(), namespace="audit-ops")
    cm = one(rendered.objects, "ConfigMap", "policy")
    assert cm["metadata"]["name"] == "kaudit-cluster-policy"
    assert cm["metadata"]["namespace"] == "audit-ops"
    assert cm["data"]["policy.yaml"] == rendered.policy.text
    assert cm["metadata"]["annotations"]["kaudit.dev/policy-hash"] == rendered.policy.hash
    policy = yaml.safe_load(rendered.policy.text)
    assert policy["apiVersion"] == "audit.k8s.io/v1" and policy["kind"] == "Policy"


def test_api_server_flags_are_all_explicit_including_rotation():
    # Rotation defaults changed in 1.36, so all three rotation flags are always set (facts 12).
    rendered = render(collection({"apiServer": {
        "policyFile": "/etc/kubernetes/audit/p.yaml", "logFile": "/var/log/kube-audit/a.log",
        "logMaxSizeMB": 50, "logMaxBackups": 0, "logMaxAgeDays": 7}}))
    assert rendered.api_server_flags == (
        "--audit-policy-file=/etc/kubernetes/audit/p.yaml",
        "--audit-log-path=/var/log/kube-audit/a.log",
        "--audit-log-maxsize=50",
        "--audit-log-maxbackup=0",
        "--audit-log-maxage=7",
    )
    steps = " ".join(rendered.next_steps)
    assert all(flag in steps for flag in rendered.api_server_flags)
    assert "/etc/kubernetes/audit" in steps and "/var/log/kube-audit" in steps and "hostPath" in steps


def test_agent_config_is_the_log_file_the_api_server_writes():
    rendered = render(collection({"apiServer": {"logFile": "/var/log/kube-audit/audit.json"},
                                  "logs": {"source": "kubernetes.audit", "service": "k8s-audit",
                                           "tags": ["env:prod", 'odd"quote']}}))
    cm = one(rendered.objects, "ConfigMap", "agent-config")
    assert cm["metadata"]["name"] == "kaudit-cluster-agent-config"
    assert cm["metadata"]["namespace"] == "datadog"
    config = yaml.safe_load(cm["data"]["conf.yaml"])
    assert config == {"logs": [{
        "type": "file", "path": "/var/log/kube-audit/audit.json", "source": "kubernetes.audit",
        "service": "k8s-audit", "tags": ["env:prod", 'odd"quote'],
    }]}


def test_every_owned_object_carries_the_shared_labels_and_a_deterministic_name():
    for obj in render(collection()).objects:
        labels = obj["metadata"]["labels"]
        assert KAUDIT_LABELS.items() <= labels.items(), obj["metadata"]["name"]
        assert obj["metadata"]["name"] == f"kaudit-cluster-{labels['app.kubernetes.io/component']}"


def test_output_is_byte_identical_for_the_same_input_whatever_the_key_order():
    spec = {"logs": {"tags": ["a:b"], "service": "s"}, "agent": {"managed": {"site": "datadoghq.eu"}}}
    reordered = {"agent": {"managed": {"site": "datadoghq.eu"}}, "logs": {"service": "s", "tags": ["a:b"]}}
    first, second, third = render(collection(spec)), render(collection(spec)), render(collection(reordered))
    dump = lambda r: json.dumps([r.objects, r.patches, r.api_server_flags, r.next_steps])  # noqa: E731
    assert dump(first) == dump(second) == dump(third)
    assert list(first.objects[0])[:3] == ["apiVersion", "kind", "metadata"]


def test_managed_daemon_set_runs_on_control_plane_nodes_of_either_label():
    ds = managed_daemon_set()
    pod = ds["spec"]["template"]["spec"]
    terms = pod["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"]
    # Terms are ORed: a node with either role label qualifies (legacy clusters only have "master").
    assert terms == [
        {"matchExpressions": [{"key": "node-role.kubernetes.io/control-plane", "operator": "Exists"}]},
        {"matchExpressions": [{"key": "node-role.kubernetes.io/master", "operator": "Exists"}]},
    ]
    assert "nodeSelector" not in pod
    for key in ("node-role.kubernetes.io/control-plane", "node-role.kubernetes.io/master"):
        assert tolerates(pod["tolerations"], {"key": key, "effect": "NoSchedule"})


def test_managed_node_selector_and_tolerations_replace_the_defaults():
    ds = managed_daemon_set({"agent": {"managed": {
        "nodeSelector": {"kaudit.dev/audit": "yes"},
        "tolerations": [{"operator": "Exists"}],
        "priorityClassName": "system-node-critical"}}})
    pod = ds["spec"]["template"]["spec"]
    assert pod["nodeSelector"] == {"kaudit.dev/audit": "yes"} and "affinity" not in pod
    assert pod["tolerations"] == [{"operator": "Exists"}]
    assert pod["priorityClassName"] == "system-node-critical"


def test_managed_tolerations_without_control_plane_ones_are_warned_about():
    rendered = render(collection({"agent": {"managed": {"tolerations": [{"key": "gpu", "operator": "Exists"}]}}}))
    assert [w.path for w in rendered.warnings] == ["spec.agent.managed.tolerations"] * 2
    assert "control-plane" in str(rendered.warnings[0]) and "master" in str(rendered.warnings[1])


def test_managed_agent_env_reads_the_key_from_the_secret_and_enables_logs():
    ds = managed_daemon_set({"agent": {"managed": {"apiKeySecretRef": {"name": "dd", "key": "k"},
                                                   "site": "datadoghq.eu"}}})
    env = {e["name"]: e for e in container(ds["spec"]["template"]["spec"], "agent")["env"]}
    assert env["DD_API_KEY"] == {"name": "DD_API_KEY", "valueFrom": {"secretKeyRef": {"name": "dd", "key": "k"}}}
    assert env["DD_LOGS_ENABLED"]["value"] == "true"
    assert env["DD_SITE"]["value"] == "datadoghq.eu"
    assert all("value" not in e or isinstance(e["value"], str) for e in env.values())


def test_managed_agent_mounts_config_dir_log_dir_and_a_host_pointdir():
    ds = managed_daemon_set({"apiServer": {"logFile": "/var/log/kube-audit/audit.log"}})
    pod = ds["spec"]["template"]["spec"]
    mounts = mounts_by_path(container(pod, "agent"))
    volumes = volumes_by_name(pod)
    # facts 2: the directory the agent reads itself, never /conf.d.
    config = mounts["/etc/datadog-agent/conf.d/kubernetes_audit.d"]
    assert volumes[config["name"]]["configMap"]["name"] == "kaudit-cluster-agent-config"
    assert volumes[config["name"]]["configMap"]["items"] == [{"key": "conf.yaml", "path": "conf.yaml"}]
    assert not any(path.startswith("/conf.d") for path in mounts)
    # facts 8: the log directory, read-only, as a hostPath directory (not the file).
    logs = mounts["/var/log/kube-audit"]
    assert logs.get("readOnly") is True
    assert volumes[logs["name"]]["hostPath"] == {"path": "/var/log/kube-audit", "type": "DirectoryOrCreate"}
    # facts 8: the pointdir survives restarts: a hostPath, created if absent.
    pointdir = volumes[mounts["/opt/datadog-agent/run"]["name"]]
    assert pointdir["hostPath"]["type"] == "DirectoryOrCreate"
    # facts 4: one mount per path.
    paths = [m["mountPath"] for m in container(pod, "agent")["volumeMounts"]]
    assert len(paths) == len(set(paths))


def test_managed_agent_runs_as_root_with_everything_else_locked_down():
    pod = managed_daemon_set()["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsUser"] == 0  # facts 7: the log is root's, mode 0600
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert pod["automountServiceAccountToken"] is False
    for c in pod["containers"] + pod["initContainers"]:
        sc = c["securityContext"]
        assert sc["runAsUser"] == 0
        assert sc["capabilities"] == {"drop": ["ALL"]}
        assert sc["allowPrivilegeEscalation"] is False
        assert sc["readOnlyRootFilesystem"] is True
        writable = {m["mountPath"] for m in c["volumeMounts"] if not m.get("readOnly")}
        if c["name"] == "agent":
            # What the agent writes, as the Datadog Helm chart provides it.
            assert {"/etc/datadog-agent", "/opt/datadog-agent/run", "/var/log/datadog", "/tmp"} <= writable


def test_config_hash_annotation_follows_the_agent_config():
    first = managed_daemon_set()
    changed = managed_daemon_set({"logs": {"service": "other"}})
    key = "kaudit.dev/config-hash"
    h1 = first["spec"]["template"]["metadata"]["annotations"][key]
    h2 = changed["spec"]["template"]["metadata"]["annotations"][key]
    assert len(h1) == 64 and h1 != h2
    cm = one(render(collection()).objects, "ConfigMap", "agent-config")
    assert cm["metadata"]["annotations"][key] == h1


def test_managed_selector_is_a_stable_subset_of_the_pod_labels():
    ds = managed_daemon_set()
    selector = ds["spec"]["selector"]["matchLabels"]
    assert selector.items() <= ds["spec"]["template"]["metadata"]["labels"].items()
    assert "app.kubernetes.io/part-of" not in selector


def test_service_account_of_the_managed_agent_has_no_token():
    sa = one(render(collection()).objects, "ServiceAccount", "agent")
    assert sa["metadata"]["name"] == "kaudit-cluster-agent" and sa["metadata"]["namespace"] == "datadog"
    assert sa["automountServiceAccountToken"] is False
    assert one(render(collection()).objects, "DaemonSet", "agent")["spec"]["template"]["spec"][
        "serviceAccountName"] == "kaudit-cluster-agent"


def test_policy_only_mode_renders_no_agent_objects():
    rendered = render(collection({"agent": {"mode": "None"}, "apiServer": {"installPolicy": False}}))
    assert [(o["kind"], o["metadata"]["labels"]["app.kubernetes.io/component"]) for o in rendered.objects] == [
        ("ConfigMap", "policy")]
    assert rendered.patches == ()
    assert any("Copy key policy.yaml" in s for s in rendered.next_steps)


def test_control_plane_tolerations_constant_matches_kubeadm_taints():
    # kubeadm taints control-plane nodes node-role.kubernetes.io/control-plane:NoSchedule; clusters
    # from before 1.24 use node-role.kubernetes.io/master:NoSchedule (facts 6).
    assert {(t["key"], t["effect"]) for t in CONTROL_PLANE_TOLERATIONS} == {
        ("node-role.kubernetes.io/control-plane", "NoSchedule"), ("node-role.kubernetes.io/master", "NoSchedule")}


def test_api_server_path_warnings_reach_the_rendered_result():
    rendered = render(collection({"apiServer": {"logFile": "/etc/kubernetes/manifests/audit.log"}}))
    assert "spec.apiServer.logFile" in [w.path for w in rendered.warnings]


def test_policy_and_log_in_one_directory_need_one_api_server_volume():
    rendered = render(collection({"apiServer": {"policyFile": "/var/log/kube-audit/policy.yaml",
                                                "logFile": "/var/log/kube-audit/audit.log"}}))
    assert any("a hostPath volume for /var/log/kube-audit" in s for s in rendered.next_steps)


def test_policy_installer_objects_follow_install_policy_and_live_in_the_operator_namespace():
    with_installer = render(collection(), namespace="ops", image="example/kaudit:1")
    installer = one(with_installer.objects, "DaemonSet", "policy-installer")
    assert installer["metadata"]["namespace"] == "ops"
    assert installer["metadata"]["name"] == "kaudit-cluster-policy-installer"
    assert {c["image"] for c in installer["spec"]["template"]["spec"]["containers"]} == {"example/kaudit:1"}
    without = render(collection({"apiServer": {"installPolicy": False}}))
    assert not [o for o in without.objects
                if o["metadata"]["labels"]["app.kubernetes.io/component"] == "policy-installer"]


def test_policy_engine_warnings_are_placed_under_spec_policy():
    # "gets" is not a Kubernetes verb, so the rule never matches; the engine warns about it (a
    # misspelt key, by contrast, is an error of the spec model: test_api_spec).
    rendered = render(collection({"policy": {"rules": [{"level": "None", "verbs": ["gets"]}]}}))
    assert "spec.policy.rules[0].verbs[0]" in [w.path for w in rendered.warnings]

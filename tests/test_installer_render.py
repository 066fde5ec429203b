"""The installer's DaemonSet and RBAC, and the kube-apiserver next step (static pod, kubeadm)."""

from __future__ import annotations

import copy

import kubernetes_validate
import pytest

from kaudit.api.spec import parse_collection
from kaudit.render.apiserver import (
    KUBEADM_V1BETA3,
    apiserver_warnings,
    kubeadm_cluster_configuration,
    snippet_yaml,
    static_pod_changes,
)
from kaudit.render.installer import installer_objects

VERSIONS = [f"1.{minor}" for minor in range(29, 38)]
IMAGE = "kaudit/kaudit:0.1.0"


def collection(name: str = "cluster", **api_server) -> object:
    return parse_collection({
        "apiVersion": "kaudit.dev/v1alpha1",
        "kind": "AuditCollection",
        "metadata": {"name": name},
        "spec": {"apiServer": api_server, "agent": {"mode": "None"}},
    })


def objects(**api_server) -> dict[str, dict]:
    rendered = installer_objects(collection(**api_server), namespace="kaudit-system", image=IMAGE)
    return {o["kind"]: o for o in rendered}


SPECS = [
    {},
    {"policyFile": "/srv/audit/p.yaml", "logFile": "/srv/audit-log/a.log", "kubernetesVersion": "1.33"},
]


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("spec", SPECS, ids=["defaults", "custom-paths"])
def test_every_installer_object_validates_strictly(version, spec):
    for obj in objects(**spec).values():
        kubernetes_validate.validate(obj, version, strict=True)


def test_objects_carry_the_team_labels_and_deterministic_names():
    for obj in objects().values():
        meta = obj["metadata"]
        assert meta["name"] == "kaudit-cluster-policy-installer"
        assert meta["namespace"] == "kaudit-system"
        assert meta["labels"] == {
            "app.kubernetes.io/managed-by": "kaudit", "app.kubernetes.io/part-of": "kaudit",
            "app.kubernetes.io/name": "kaudit", "app.kubernetes.io/component": "policy-installer",
            "app.kubernetes.io/instance": "cluster", "kaudit.dev/collection": "cluster",
        }


def pod_spec() -> dict:
    return objects()["DaemonSet"]["spec"]["template"]["spec"]


def test_it_runs_on_control_plane_nodes_only_and_tolerates_their_taints():
    spec = pod_spec()
    terms = spec["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"]
    assert [t["matchExpressions"][0]["key"] for t in terms] == [
        "node-role.kubernetes.io/control-plane", "node-role.kubernetes.io/master"]
    assert {(t["key"], t["effect"], t["operator"]) for t in spec["tolerations"]} == {
        ("node-role.kubernetes.io/control-plane", "NoSchedule", "Exists"),
        ("node-role.kubernetes.io/master", "NoSchedule", "Exists"),
    }


def test_it_mounts_only_the_policy_directory_and_the_policy_configmap():
    spec = pod_spec()
    volumes = {v["name"]: v for v in spec["volumes"]}
    assert set(volumes) == {"policy-source", "policy-dir"}
    assert volumes["policy-dir"]["hostPath"] == {"path": "/etc/kubernetes/audit-policies", "type": "DirectoryOrCreate"}
    config_map = volumes["policy-source"]["configMap"]
    assert config_map["name"] == "kaudit-cluster-policy"
    assert config_map["items"] == [{"key": "policy.yaml", "path": "policy.yaml"}]
    (container,) = spec["containers"]
    # No subPath: a subPath mount of a ConfigMap never receives updates.
    assert all("subPath" not in m for m in container["volumeMounts"])
    assert {m["mountPath"]: m.get("readOnly", False) for m in container["volumeMounts"]} == {
        "/etc/kaudit/policy": True, "/etc/kubernetes/audit-policies": False}
    assert not any(spec.get(k) for k in ("hostNetwork", "hostPID", "hostIPC"))


def test_it_keeps_root_but_no_capability_and_nothing_else():
    spec = pod_spec()
    (container,) = spec["containers"]
    sc = container["securityContext"]
    assert sc == {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]},
                  "readOnlyRootFilesystem": True}  # in particular no "add" and no "privileged: true"
    assert spec["securityContext"] == {"runAsUser": 0, "runAsGroup": 0, "runAsNonRoot": False,
                                       "seccompProfile": {"type": "RuntimeDefault"}}
    assert container["resources"]["requests"] and container["resources"]["limits"]["memory"]


def test_its_command_follows_the_configmap_and_reports_with_downward_api_identity():
    (container,) = pod_spec()["containers"]
    assert container["image"] == IMAGE
    assert container["command"] == ["kaudit"]
    assert container["args"] == ["install-policy", "--from", "/etc/kaudit/policy/policy.yaml",
                                 "--to", "/etc/kubernetes/audit-policies/policy.yaml",
                                 "--collection", "cluster", "--report"]
    assert "--once" not in container["args"]
    env = {e["name"]: e["valueFrom"]["fieldRef"]["fieldPath"] for e in container["env"]}
    assert env == {"NODE_NAME": "spec.nodeName", "POD_NAMESPACE": "metadata.namespace",
                   "POD_NAME": "metadata.name", "POD_UID": "metadata.uid"}


def test_the_target_version_reaches_the_installers_validation():
    (container,) = objects(kubernetesVersion="1.33")["DaemonSet"]["spec"]["template"]["spec"]["containers"]
    assert container["args"][-2:] == ["--kubernetes-version", "1.33"]


def test_no_config_hash_annotation_so_a_policy_change_does_not_restart_the_installer():
    template = objects()["DaemonSet"]["spec"]["template"]
    assert "kaudit.dev/config-hash" not in (template["metadata"].get("annotations") or {})


def test_rbac_is_create_and_patch_on_leases_in_its_namespace_only():
    rendered = objects()
    assert rendered["Role"]["rules"] == [
        {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "verbs": ["create", "patch"]}]
    binding = rendered["RoleBinding"]
    assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role",
                                  "name": "kaudit-cluster-policy-installer"}
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "kaudit-cluster-policy-installer",
                                    "namespace": "kaudit-system"}]
    assert "ClusterRole" not in rendered


def test_rendering_is_deterministic():
    assert installer_objects(collection(), namespace="n", image=IMAGE) == installer_objects(
        collection(), namespace="n", image=IMAGE)


# --- the kube-apiserver next step ------------------------------------------------------------

# A trimmed kube-apiserver static pod as kubeadm writes it (fields from kubeadm's manifest:
# command with flags, the pki/ca-certificates hostPath volumes). Written for this test.
KUBEADM_APISERVER = {
    "apiVersion": "v1",
    "kind": "Pod",
    "metadata": {"name": "kube-apiserver", "namespace": "kube-system",
                 "labels": {"component": "kube-apiserver", "tier": "control-plane"}},
    "spec": {
        "hostNetwork": True,
        "priorityClassName": "system-node-critical",
        "containers": [{
            "name": "kube-apiserver",
            "image": "registry.k8s.io/kube-apiserver:v1.33.0",
            "command": ["kube-apiserver", "--advertise-address=10.0.0.10", "--secure-port=6443"],
            "volumeMounts": [
                {"name": "ca-certs", "mountPath": "/etc/ssl/certs", "readOnly": True},
                {"name": "k8s-certs", "mountPath": "/etc/kubernetes/pki", "readOnly": True},
            ],
        }],
        "volumes": [
            {"name": "ca-certs", "hostPath": {"path": "/etc/ssl/certs", "type": "DirectoryOrCreate"}},
            {"name": "k8s-certs", "hostPath": {"path": "/etc/kubernetes/pki", "type": "DirectoryOrCreate"}},
        ],
    },
}


def apply_changes(manifest: dict, changes: dict) -> dict:
    pod = copy.deepcopy(manifest)
    (add,) = changes["spec"]["containers"]
    (container,) = pod["spec"]["containers"]
    container["command"] += add["command"]
    container["volumeMounts"] += add["volumeMounts"]
    pod["spec"]["volumes"] += changes["spec"]["volumes"]
    return pod


@pytest.mark.parametrize("version", VERSIONS)
def test_the_static_pod_changes_give_a_valid_kube_apiserver_pod(version):
    pod = apply_changes(KUBEADM_APISERVER, static_pod_changes(collection()))
    kubernetes_validate.validate(pod, version, strict=True)
    paths = [m["mountPath"] for m in pod["spec"]["containers"][0]["volumeMounts"]]
    assert len(paths) == len(set(paths))  # "mountPath must be unique" (facts 4's trap, apiserver side)


def test_the_static_pod_changes_come_from_the_resources_own_settings():
    changes = static_pod_changes(collection(policyFile="/srv/audit/p.yaml", logFile="/srv/log/a.log",
                                            logMaxSizeMB=50, logMaxBackups=3, logMaxAgeDays=7))
    (container,) = changes["spec"]["containers"]
    assert container["command"] == [
        "--audit-policy-file=/srv/audit/p.yaml", "--audit-log-path=/srv/log/a.log",
        "--audit-log-maxsize=50", "--audit-log-maxbackup=3", "--audit-log-maxage=7"]
    assert container["volumeMounts"] == [
        {"name": "kaudit-audit-policy", "mountPath": "/srv/audit", "readOnly": True},
        {"name": "kaudit-audit-log", "mountPath": "/srv/log"}]
    assert [v["hostPath"]["path"] for v in changes["spec"]["volumes"]] == ["/srv/audit", "/srv/log"]


def test_one_volume_when_policy_and_log_share_a_directory():
    changes = static_pod_changes(collection(policyFile="/srv/audit/p.yaml", logFile="/srv/audit/a.log"))
    assert changes["spec"]["containers"][0]["volumeMounts"] == [
        {"name": "kaudit-audit-log", "mountPath": "/srv/audit"}]


def test_kubeadm_v1beta4_uses_a_list_of_name_value_extra_args():
    # v1beta4 (kubeadm >= 1.31) replaced the string map with structured {name, value} arguments.
    config = kubeadm_cluster_configuration(collection())
    assert config["apiVersion"] == "kubeadm.k8s.io/v1beta4" and config["kind"] == "ClusterConfiguration"
    assert config["apiServer"]["extraArgs"][0] == {
        "name": "audit-policy-file", "value": "/etc/kubernetes/audit-policies/policy.yaml"}
    assert [a["name"] for a in config["apiServer"]["extraArgs"]] == [
        "audit-policy-file", "audit-log-path", "audit-log-maxsize", "audit-log-maxbackup", "audit-log-maxage"]
    assert all(isinstance(a["value"], str) for a in config["apiServer"]["extraArgs"])
    assert config["apiServer"]["extraVolumes"] == [
        {"name": "kaudit-audit-policy", "hostPath": "/etc/kubernetes/audit-policies",
         "mountPath": "/etc/kubernetes/audit-policies", "readOnly": True, "pathType": "DirectoryOrCreate"},
        {"name": "kaudit-audit-log", "hostPath": "/var/log/kubernetes/apiserver",
         "mountPath": "/var/log/kubernetes/apiserver", "readOnly": False, "pathType": "DirectoryOrCreate"},
    ]


def test_kubeadm_v1beta3_uses_a_map():
    config = kubeadm_cluster_configuration(collection(), KUBEADM_V1BETA3)
    assert config["apiServer"]["extraArgs"]["audit-log-maxbackup"] == "10"
    with pytest.raises(ValueError):
        kubeadm_cluster_configuration(collection(), "kubeadm.k8s.io/v1beta2")


def test_the_snippet_is_yaml_that_reads_back_identically():
    import yaml

    config = kubeadm_cluster_configuration(collection())
    text = snippet_yaml(config)
    assert yaml.safe_load(text) == config
    assert "value: '100'" in text  # a flag value stays a string


@pytest.mark.parametrize(
    ("policy_file", "words"),
    [
        ("/etc/kubernetes/manifests/policy.yaml", "static pod manifests"),
        ("/etc/kubernetes/policy.yaml", "shared system directory"),
        ("/etc/kubernetes/pki/audit/policy.yaml", "kubeadm already mounts"),
    ],
)
def test_risky_policy_directories_are_warned_about(policy_file, words):
    warnings = apiserver_warnings(collection(policyFile=policy_file))
    assert [w.path for w in warnings] == ["spec.apiServer.policyFile"]
    assert words in warnings[0].message


def test_the_default_paths_raise_no_warning():
    assert apiserver_warnings(collection()) == []



def _yaml_blocks(text: str) -> list:
    import re

    import yaml

    return [yaml.safe_load(block) for block in re.findall(r"```yaml\n(.*?)```", text, flags=re.S)]


def test_the_documented_snippets_are_what_kaudit_renders_for_the_defaults():
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    default = collection()
    docs = _yaml_blocks((root / "docs" / "delivery.md").read_text())
    assert kubeadm_cluster_configuration(default) in docs
    assert static_pod_changes(default) in docs
    readme = (root / "README.md").read_text()
    delivery_section = readme.split("<!-- section: delivery -->")[1].split("<!-- section:")[0]
    assert kubeadm_cluster_configuration(default) in _yaml_blocks(delivery_section)

"""manifests/: built by a real `kubectl kustomize`, validated strictly for Kubernetes 1.29-1.37."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import yaml

from helmtools import (  # noqa: F401  (helm, kubectl and k8s_tools are pytest fixtures)
    CRDS,
    GENERATED_MANIFESTS,
    MANIFESTS,
    helm,
    helm_template,
    k8s_tools,
    kubectl,
    kustomize,
    load_documents,
    objects_of_kind,
    one,
    render_manifests,
    validation_errors,
)


@pytest.fixture(scope="module")
def ha_objects(kubectl, tmp_path_factory) -> list[dict]:
    """The base plus the manifests/ha component, through an overlay the way the component's header shows."""
    overlay = tmp_path_factory.mktemp("overlay")
    base = os.path.relpath(MANIFESTS, overlay)  # kustomize wants relative paths
    (overlay / "kustomization.yaml").write_text(yaml.safe_dump({
        "apiVersion": "kustomize.config.k8s.io/v1beta1", "kind": "Kustomization",
        "resources": [base], "components": [f"{base}/ha"]}))
    return kustomize(kubectl, overlay)


def test_kustomize_builds_and_every_object_validates(kubectl):
    objects = kustomize(kubectl)
    kinds = sorted({obj["kind"] for obj in objects})
    assert kinds == sorted({"ClusterRole", "ClusterRoleBinding", "CustomResourceDefinition", "Deployment",
                            "Namespace", "Role", "RoleBinding", "ServiceAccount"})
    assert validation_errors(objects) == []


def test_ha_component_builds_and_every_object_validates(ha_objects):
    kinds = {obj["kind"] for obj in ha_objects}
    assert {"ClusterKopfPeering", "PodDisruptionBudget"} <= kinds
    assert validation_errors(ha_objects) == []


def without_helm_labels(obj: dict) -> dict:
    text = yaml.safe_dump(obj)
    return yaml.safe_load("\n".join(l for l in text.splitlines()
                                    if "helm.sh/chart:" not in l and "managed-by: Helm" not in l))


def test_ha_component_deploys_what_the_chart_deploys_by_default(ha_objects, helm):
    chart = helm_template(helm, include_crds=False)
    for kind in ("Deployment", "ClusterKopfPeering", "PodDisruptionBudget"):
        assert one(ha_objects, kind) == without_helm_labels(one(chart, kind)), kind


def test_base_runs_one_standalone_replica(kubectl):
    # No peering object in the base: it would be applied together with its CRD, which fails on a
    # fresh cluster. One replica, --standalone, no PDB (it would block drains), no overlap.
    objects = kustomize(kubectl)
    deployment = one(objects, "Deployment")
    assert deployment["spec"]["replicas"] == 1
    assert deployment["spec"]["strategy"] == {"type": "Recreate"}
    assert "--standalone" in deployment["spec"]["template"]["spec"]["containers"][0]["args"]
    assert not list(objects_of_kind(objects, "ClusterKopfPeering"))


def test_the_crd_is_the_top_level_file_not_a_copy(kubectl):
    # No CRD may live under manifests/: it comes from ../crds through crds/Kustomization.
    for path in MANIFESTS.rglob("*.yaml"):
        assert "CustomResourceDefinition" not in {d.get("kind") for d in load_documents(path.read_text())}, path
    assert "../crds" in yaml.safe_load((MANIFESTS / "kustomization.yaml").read_text())["resources"]

    built = list(objects_of_kind(kustomize(kubectl), "CustomResourceDefinition"))
    top_level = [doc for path in sorted(CRDS.glob("*.yaml")) for doc in load_documents(path.read_text())]
    key = lambda crd: crd["metadata"]["name"]  # noqa: E731
    assert sorted(built, key=key) == sorted(top_level, key=key)  # kustomize adds and changes nothing


def test_every_crd_file_is_listed_in_the_crds_kustomization():
    listed = yaml.safe_load((CRDS / "Kustomization").read_text())["resources"]
    assert sorted(listed) == sorted(p.name for p in CRDS.glob("*.yaml"))


def test_generated_manifests_match_the_chart(helm):
    expected = render_manifests(helm)
    assert sorted(expected) == sorted(GENERATED_MANIFESTS)
    for name, text in expected.items():
        actual = (MANIFESTS / name).read_text()
        assert actual == text, f"manifests/{name} is stale: run `python tests/helmtools.py`"


def test_namespaced_objects_land_in_the_operator_namespace(kubectl):
    objects = kustomize(kubectl)
    namespace = one(objects, "Namespace")["metadata"]["name"]
    assert namespace == "kaudit-system"  # the operator's default POD_NAMESPACE
    for kind in ("Deployment", "ServiceAccount", "PodDisruptionBudget"):
        for obj in objects_of_kind(objects, kind):
            assert obj["metadata"]["namespace"] == namespace
    subjects = {o["metadata"]["name"]: o["subjects"] for o in objects_of_kind(objects, "ClusterRoleBinding")}
    assert subjects == {
        "kaudit": [{"kind": "ServiceAccount", "name": "kaudit", "namespace": namespace}],
        # the policy installers' approval read (get AuditCollections): the namespace's service accounts
        "kaudit-policy-approval": [{"kind": "Group", "apiGroup": "rbac.authorization.k8s.io",
                                    "name": f"system:serviceaccounts:{namespace}"}],
    }


def test_operator_namespace_admits_the_policy_installer(kubectl):
    # The installer pod mounts a hostPath and runs as root: Pod Security "baseline" refuses both.
    labels = one(kustomize(kubectl), "Namespace")["metadata"]["labels"]
    assert labels["pod-security.kubernetes.io/enforce"] == "privileged"


def test_ha_deployment_follows_the_peering_design(ha_objects):
    deployment = one(ha_objects, "Deployment")
    assert deployment["spec"]["replicas"] == 2
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    peering = one(ha_objects, "ClusterKopfPeering")["metadata"]["name"]
    assert f"--peering={peering}" in container["args"] and "--standalone" not in container["args"]
    assert deployment["spec"]["strategy"]["type"] == "RollingUpdate"
    # Standby replicas: spread them over nodes, and keep one through voluntary disruptions.
    affinity = deployment["spec"]["template"]["spec"]["affinity"]["podAntiAffinity"]
    term = affinity["preferredDuringSchedulingIgnoredDuringExecution"][0]["podAffinityTerm"]
    assert term["topologyKey"] == "kubernetes.io/hostname"
    assert term["labelSelector"]["matchLabels"] == deployment["spec"]["selector"]["matchLabels"]
    pdb = one(ha_objects, "PodDisruptionBudget")
    assert pdb["spec"]["selector"] == deployment["spec"]["selector"]
    assert pdb["spec"]["maxUnavailable"] == 1

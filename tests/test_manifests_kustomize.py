"""manifests/: built by a real `kubectl kustomize`, validated strictly for Kubernetes 1.29-1.37."""

from __future__ import annotations

import yaml

from helmtools import (  # noqa: F401  (helm, kubectl and k8s_tools are pytest fixtures)
    CRDS,
    GENERATED_MANIFESTS,
    MANIFESTS,
    helm,
    k8s_tools,
    kubectl,
    kustomize,
    load_documents,
    objects_of_kind,
    one,
    render_manifests,
    validation_errors,
)


def test_kustomize_builds_and_every_object_validates(kubectl):
    objects = kustomize(kubectl)
    kinds = sorted({obj["kind"] for obj in objects})
    assert kinds == sorted({"ClusterRole", "ClusterRoleBinding", "CustomResourceDefinition", "Deployment",
                            "Namespace", "PodDisruptionBudget", "Role", "RoleBinding", "ServiceAccount"})
    assert validation_errors(objects) == []


def test_the_crd_is_the_top_level_file_not_a_copy(kubectl):
    # No CRD may live under manifests/: it comes from ../crds through crds/Kustomization.
    for path in MANIFESTS.glob("*.yaml"):
        assert "CustomResourceDefinition" not in {d.get("kind") for d in load_documents(path.read_text())}, path
    assert "../crds" in yaml.safe_load((MANIFESTS / "kustomization.yaml").read_text())["resources"]

    built = list(objects_of_kind(kustomize(kubectl), "CustomResourceDefinition"))
    top_level = [doc for path in sorted(CRDS.glob("*.yaml")) for doc in load_documents(path.read_text())]
    assert built == top_level  # kustomize adds and changes nothing


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
    binding = one(objects, "ClusterRoleBinding")
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "kaudit", "namespace": namespace}]


def test_operator_namespace_admits_the_policy_installer(kubectl):
    # The installer pod mounts a hostPath and runs as root: Pod Security "baseline" refuses both.
    labels = one(kustomize(kubectl), "Namespace")["metadata"]["labels"]
    assert labels["pod-security.kubernetes.io/enforce"] == "privileged"


def test_deployment_follows_the_peering_design(kubectl):
    objects = kustomize(kubectl)
    deployment = one(objects, "Deployment")
    replicas = deployment["spec"]["replicas"]
    pdbs = list(objects_of_kind(objects, "PodDisruptionBudget"))
    if replicas > 1:
        # Standby replicas: spread them, and keep one through voluntary disruptions.
        affinity = deployment["spec"]["template"]["spec"]["affinity"]["podAntiAffinity"]
        term = affinity["preferredDuringSchedulingIgnoredDuringExecution"][0]["podAffinityTerm"]
        assert term["topologyKey"] == "kubernetes.io/hostname"
        assert term["labelSelector"]["matchLabels"] == deployment["spec"]["selector"]["matchLabels"]
        assert len(pdbs) == 1 and pdbs[0]["spec"]["selector"] == deployment["spec"]["selector"]
    else:
        assert pdbs == []  # a PDB over one replica blocks every drain

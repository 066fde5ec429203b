"""Installing kaudit on the real control plane as the README says: ``kubectl apply -k manifests/`` and
``helm install`` / ``upgrade`` / ``uninstall`` of charts/kaudit, and running the operator as installed."""

from __future__ import annotations

import json

import kaudit_harness as kh
from plane import REPO, load_yaml_documents, wait_for

RELEASE = "kaudit-helm"  # its own release name and namespace: no clash with the session's kustomize install
RELEASE_NS = "kaudit-helm"
CHART = REPO / "charts" / "kaudit"
HELM_VALUES = ("--set", "operator.resyncSeconds=300")


def object_ref(obj: dict) -> tuple[str, str, str | None, str]:
    meta = obj["metadata"]
    return obj["apiVersion"], obj["kind"], meta.get("namespace"), meta["name"]


def live(plane, ref: tuple[str, str, str | None, str]) -> dict | None:
    api_version, kind, namespace, name = ref
    group = api_version.split("/")[0] if "/" in api_version else ""
    resource = f"{kind.lower()}.{group}" if group else kind.lower()
    args = ["-n", namespace] if namespace else []
    return plane.get_or_none(resource, name, *args)


def test_kubectl_apply_k_installs_every_object_and_the_operator_is_scheduled(control_plane, kaudit_installed):
    plane = control_plane
    wanted = load_yaml_documents(plane.kubectl("kustomize", str(REPO / "manifests")).stdout)
    missing = [ref for ref in map(object_ref, wanted) if live(plane, ref) is None]
    assert missing == []
    # Pod Security admission, the ServiceAccount and the scheduler let the operator pod in (on the
    # worker: it does not tolerate the control-plane taint).
    plane.kubectl("rollout", "status", "-n", kaudit_installed.namespace, f"deployment/{kaudit_installed.deployment}",
                  "--timeout=60s")
    pods = plane.get("pods", "-n", kaudit_installed.namespace, "-l", "app.kubernetes.io/component=operator")["items"]
    assert [p["spec"]["nodeName"] for p in pods] == list(plane.worker_nodes)


def helm_objects(plane) -> list[dict]:
    text = plane.helm("template", RELEASE, str(CHART), "--namespace", RELEASE_NS, *HELM_VALUES).stdout
    return load_yaml_documents(text)


def test_helm_install_runs_upgrade_and_uninstall_leaves_only_what_helm_keeps(control_plane):
    plane = control_plane
    kh.ensure_namespace(plane, kh.AGENT_NAMESPACE)
    plane.helm("install", RELEASE, str(CHART), "--namespace", RELEASE_NS, "--create-namespace", *HELM_VALUES,
               "--wait", "--timeout=90s")
    objects = helm_objects(plane)
    refs = [object_ref(obj) for obj in objects]
    assert [ref for ref in refs if live(plane, ref) is None] == []
    assert ("kopf.dev/v1", "ClusterKopfPeering", None, RELEASE) in refs  # two replicas: peering

    # The operator as the chart runs it (its arguments, its ServiceAccount's token) works with peering.
    installation = kh.KauditInstall(plane, release=RELEASE, namespace=RELEASE_NS, agent_namespace=kh.AGENT_NAMESPACE,
                                    deployment=RELEASE)
    mark = plane.audit_mark()
    operator = installation.start_chart_operator(name="helm-operator")
    name = "helm-check"
    try:
        plane.apply({"apiVersion": "kaudit.dev/v1alpha1", "kind": "AuditCollection", "metadata": {"name": name},
                     "spec": {"apiServer": {"installPolicy": False}, "agent": {"mode": "None"}}})
        plane.kubectl("wait", "--for=condition=Ready", f"ac/{name}", "--timeout=60s")
        assert plane.get_or_none("configmap", f"kaudit-{name}-policy", "-n", RELEASE_NS) is not None
    finally:
        kh.delete_collection(plane, name)  # a cluster has one collection: never leave it to the next test
        operator.stop()
    requests = plane.requests_since(mark, user=installation.user(), verbs=None)
    assert requests and kh.permission_problems(requests, RELEASE_NS) == []

    plane.helm("upgrade", RELEASE, str(CHART), "--namespace", RELEASE_NS, "--set", "operator.resyncSeconds=120",
               "--wait", "--timeout=90s")
    deployment = plane.get("deployment", RELEASE, "-n", RELEASE_NS)
    assert "--resync-seconds=120" in deployment["spec"]["template"]["spec"]["containers"][0]["args"]
    assert json.loads(plane.helm("status", RELEASE, "-n", RELEASE_NS, "-o", "json").stdout)["version"] == 2

    plane.helm("uninstall", RELEASE, "--namespace", RELEASE_NS, "--wait", "--timeout=90s")
    crds = {ref for ref in refs if ref[1] == "CustomResourceDefinition"}
    left = [ref for ref in refs if ref not in crds and live(plane, ref) is not None]
    assert left == []
    # Helm keeps CRDs (from crds/) by design; the AuditCollection CRD must still be there.
    assert plane.get_or_none("crd", kh.CRD) is not None
    # Nothing else carries the release's instance label either, in any namespace.
    kinds = "deployments,replicasets,pods,serviceaccounts,configmaps,roles,rolebindings,services,poddisruptionbudgets"
    wait_for(lambda: plane.get(kinds, "-A", "-l", f"app.kubernetes.io/instance={RELEASE}")["items"] == [], 60,
             "the release's pods and ReplicaSets to go")
    for kind in ("clusterroles", "clusterrolebindings", "clusterkopfpeerings.kopf.dev"):
        assert plane.get(kind, "-l", f"app.kubernetes.io/instance={RELEASE}")["items"] == [], kind
    plane.kubectl("delete", "namespace", RELEASE_NS, "--wait=false")

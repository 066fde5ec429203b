"""The Helm chart, rendered and linted by a real helm binary, validated against Kubernetes 1.29-1.37."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from helmtools import (  # noqa: F401  (helm and kubectl are pytest fixtures)
    CHART,
    CRDS,
    helm,
    helm_template,
    k8s_tools,
    load_documents,
    objects_of_kind,
    one,
    validation_errors,
    write_values,
)

# One case per documented option in values.yaml: the values to set, and a check that the rendered
# objects show the option's effect. test_every_documented_option_has_a_case keeps this list complete.
OPTION_CASES: dict[str, tuple[dict, object]] = {}


def option(name: str, values: dict):
    def register(check):
        OPTION_CASES[name] = (values, check)
        return check
    return register


def operator_container(objects: list[dict]) -> dict:
    return one(objects, "Deployment")["spec"]["template"]["spec"]["containers"][0]


def pod_spec(objects: list[dict]) -> dict:
    return one(objects, "Deployment")["spec"]["template"]["spec"]


@option("image.repository", {"image": {"repository": "example.org/team/kaudit", "tag": "1.2.3"}})
def _(objects):
    assert operator_container(objects)["image"] == "example.org/team/kaudit:1.2.3"


@option("image.tag", {"image": {"tag": "9.9.9"}})
def _(objects):
    container = operator_container(objects)
    assert container["image"] == "kaudit/kaudit:9.9.9"
    # The installer DaemonSet the operator renders must use the same image.
    assert {"name": "KAUDIT_IMAGE", "value": "kaudit/kaudit:9.9.9"} in container["env"]


@option("image.digest", {"image": {"digest": "sha256:" + "ab" * 32}})
def _(objects):
    assert operator_container(objects)["image"] == "kaudit/kaudit@sha256:" + "ab" * 32


@option("image.pullPolicy", {"image": {"pullPolicy": "Always"}})
def _(objects):
    assert operator_container(objects)["imagePullPolicy"] == "Always"


@option("imagePullSecrets", {"imagePullSecrets": [{"name": "regcred"}]})
def _(objects):
    assert pod_spec(objects)["imagePullSecrets"] == [{"name": "regcred"}]


@option("replicaCount", {"replicaCount": 1})
def _(objects):
    deployment = one(objects, "Deployment")
    assert deployment["spec"]["replicas"] == 1
    # One replica: no peering (and no peering object), never two pods at once, and no PDB (over a
    # single replica it would block every node drain).
    assert "--standalone" in operator_container(objects)["args"]
    assert not list(objects_of_kind(objects, "ClusterKopfPeering"))
    assert deployment["spec"]["strategy"] == {"type": "Recreate"}
    assert not list(objects_of_kind(objects, "PodDisruptionBudget"))


@option("serviceAccount.annotations", {"serviceAccount": {"annotations": {"example.com/role": "kaudit"}}})
def _(objects):
    assert one(objects, "ServiceAccount")["metadata"]["annotations"] == {"example.com/role": "kaudit"}


@option("serviceAccount.awsRoleArn", {"serviceAccount": {"awsRoleArn": "arn:aws:iam::123456789012:role/kaudit",
                                                         "annotations": {"example.com/role": "kaudit"}}})
def _(objects):
    # IRSA: EKS's webhook reads this annotation; the user's own annotations stay beside it
    assert one(objects, "ServiceAccount")["metadata"]["annotations"] == {
        "eks.amazonaws.com/role-arn": "arn:aws:iam::123456789012:role/kaudit", "example.com/role": "kaudit"}


@option("rbac.agentNamespaces", {"rbac": {"agentNamespaces": ["datadog", "monitoring"]}})
def _(objects):
    agent_roles = {r["metadata"]["namespace"] for r in objects_of_kind(objects, "Role")
                   if r["metadata"]["name"].endswith("-agent")}
    bindings = {b["metadata"]["namespace"] for b in objects_of_kind(objects, "RoleBinding")
                if b["metadata"]["name"].endswith("-agent")}
    assert agent_roles == bindings == {"datadog", "monitoring"}


@option("operator.logFormat", {"operator": {"logFormat": "text"}})
def _(objects):
    assert "--log-format=text" in operator_container(objects)["args"]


@option("operator.verbose", {"operator": {"verbose": True}})
def _(objects):
    assert "--verbose" in operator_container(objects)["args"]


@option("operator.resyncSeconds", {"operator": {"resyncSeconds": 60}})
def _(objects):
    assert "--resync-seconds=60" in operator_container(objects)["args"]


@option("operator.livenessPort", {"operator": {"livenessPort": 8181}})
def _(objects):
    container = operator_container(objects)
    assert "--liveness-port=8181" in container["args"]
    assert {"name": "health", "containerPort": 8181, "protocol": "TCP"} in container["ports"]
    assert container["livenessProbe"]["httpGet"]["port"] == "health"


@option("operator.metricsPort", {"operator": {"metricsPort": 9191}, "metrics": {"service": True}})
def _(objects):
    assert "--metrics-port=9191" in operator_container(objects)["args"]
    assert {"name": "metrics", "containerPort": 9191, "protocol": "TCP"} in operator_container(objects)["ports"]
    assert one(objects, "Service")["spec"]["ports"][0]["port"] == 9191


@option("operator.extraArgs", {"operator": {"extraArgs": ["--priority=100"]}})
def _(objects):
    assert operator_container(objects)["args"][-1] == "--priority=100"


@option("extraEnv", {"extraEnv": [{"name": "HTTPS_PROXY", "value": "http://proxy:3128"}]})
def _(objects):
    assert {"name": "HTTPS_PROXY", "value": "http://proxy:3128"} in operator_container(objects)["env"]


@option("resources", {"resources": {"requests": {"cpu": "10m", "memory": "64Mi"}, "limits": {"memory": "100Mi"}}})
def _(objects):
    assert operator_container(objects)["resources"] == {
        "requests": {"cpu": "10m", "memory": "64Mi"}, "limits": {"memory": "100Mi"}}


@option("podSecurityContext", {"podSecurityContext": {"runAsNonRoot": True, "runAsUser": 10001, "fsGroup": 10001}})
def _(objects):
    assert pod_spec(objects)["securityContext"]["runAsUser"] == 10001


@option("securityContext", {"securityContext": {"runAsNonRoot": True, "capabilities": None}})
def _(objects):
    # Helm merges user maps into the defaults; null removes a default key.
    assert operator_container(objects)["securityContext"] == {
        "allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True, "runAsNonRoot": True}


@option("nodeSelector", {"nodeSelector": {"kubernetes.io/os": "linux"}})
def _(objects):
    assert pod_spec(objects)["nodeSelector"] == {"kubernetes.io/os": "linux"}


@option("tolerations", {"tolerations": [{"key": "dedicated", "operator": "Equal", "value": "ops",
                                         "effect": "NoSchedule"}]})
def _(objects):
    assert pod_spec(objects)["tolerations"][0]["key"] == "dedicated"


@option("affinity", {"affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
    "nodeSelectorTerms": [{"matchExpressions": [{"key": "pool", "operator": "In", "values": ["ops"]}]}]}}}})
def _(objects):
    affinity = pod_spec(objects)["affinity"]
    assert "nodeAffinity" in affinity and "podAntiAffinity" not in affinity  # replaces the default


@option("priorityClassName", {"priorityClassName": "system-cluster-critical"})
def _(objects):
    assert pod_spec(objects)["priorityClassName"] == "system-cluster-critical"


@option("podAnnotations", {"podAnnotations": {"example.com/team": "platform"}})
def _(objects):
    template = one(objects, "Deployment")["spec"]["template"]
    assert template["metadata"]["annotations"] == {"example.com/team": "platform"}


@option("podLabels", {"podLabels": {"team": "platform"}})
def _(objects):
    deployment = one(objects, "Deployment")
    assert deployment["spec"]["template"]["metadata"]["labels"]["team"] == "platform"
    assert "team" not in deployment["spec"]["selector"]["matchLabels"]  # selectors are immutable


@option("podDisruptionBudget.enabled", {"podDisruptionBudget": {"enabled": False}})
def _(objects):
    assert not list(objects_of_kind(objects, "PodDisruptionBudget"))


@option("metrics.service", {"metrics": {"service": True}})
def _(objects):
    service = one(objects, "Service")
    assert service["spec"]["ports"][0]["targetPort"] == "metrics"
    assert service["spec"]["selector"] == one(objects, "Deployment")["spec"]["selector"]["matchLabels"]


@option("auditCollection.create", {"auditCollection": {"create": True}})
def _(objects):
    collection = one(objects, "AuditCollection")
    assert collection["metadata"]["name"] == "cluster"
    assert "namespace" not in collection["metadata"]  # cluster-scoped


@option("auditCollection.name", {"auditCollection": {"create": True, "name": "audit"}})
def _(objects):
    assert one(objects, "AuditCollection")["metadata"]["name"] == "audit"


@option("auditCollection.spec", {"auditCollection": {"create": True, "spec": {"agent": {"namespace": "datadog"}}}})
def _(objects):
    assert one(objects, "AuditCollection")["spec"] == {"agent": {"namespace": "datadog"}}


SYNC = {"enabled": True, "keysSecret": {"name": "datadog-keys"}}


def sync_env(objects: list[dict]) -> dict[str, dict]:
    return {e["name"]: e["valueFrom"]["secretKeyRef"] for e in operator_container(objects)["env"]
            if e["name"] in ("DD_API_KEY", "DD_APP_KEY")}


@option("detectionSync.enabled", {"detectionSync": SYNC})
def _(objects):
    args = operator_container(objects)["args"]
    assert "--detection-sync" in args and "--detection-sync-site=datadoghq.com" in args
    assert sync_env(objects) == {"DD_API_KEY": {"name": "datadog-keys", "key": "api-key"},
                                 "DD_APP_KEY": {"name": "datadog-keys", "key": "app-key"}}


@option("detectionSync.site", {"detectionSync": dict(SYNC, site="datadoghq.eu")})
def _(objects):
    assert "--detection-sync-site=datadoghq.eu" in operator_container(objects)["args"]


@option("detectionSync.cluster", {"detectionSync": dict(SYNC, cluster="prod-eu")})
def _(objects):
    assert "--detection-sync-cluster=prod-eu" in operator_container(objects)["args"]


@option("detectionSync.owner", {"detectionSync": dict(SYNC, owner="fleet")})
def _(objects):
    assert "--detection-sync-owner=fleet" in operator_container(objects)["args"]


@option("detectionSync.dryRun", {"detectionSync": dict(SYNC, dryRun=True)})
def _(objects):
    assert "--detection-sync-dry-run" in operator_container(objects)["args"]


@option("detectionSync.keysSecret.name", {"detectionSync": {"enabled": True, "keysSecret": {"name": "dd"}}})
def _(objects):
    assert {ref["name"] for ref in sync_env(objects).values()} == {"dd"}


@option("detectionSync.keysSecret.apiKeyKey", {"detectionSync": {"enabled": True, "keysSecret": {
    "name": "dd", "apiKeyKey": "api"}}})
def _(objects):
    assert sync_env(objects)["DD_API_KEY"]["key"] == "api"


@option("detectionSync.keysSecret.appKeyKey", {"detectionSync": {"enabled": True, "keysSecret": {
    "name": "dd", "appKeyKey": "app"}}})
def _(objects):
    assert sync_env(objects)["DD_APP_KEY"]["key"] == "app"


def test_detection_sync_is_off_by_default_and_needs_its_secret(default_objects, helm, tmp_path):
    assert sync_env(default_objects) == {}
    assert not any(a.startswith("--detection-sync") for a in operator_container(default_objects)["args"])
    with pytest.raises(Exception) as caught:
        helm_template(helm, "-f", str(write_values(tmp_path, {"detectionSync": {"enabled": True}})))
    assert "detectionSync.keysSecret.name is required with detectionSync.enabled" in str(caught.value)


def documented_keys() -> set[str]:
    """Dotted paths of the options in values.yaml, stopping at Kubernetes objects given whole."""
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    whole = {"resources", "podSecurityContext", "securityContext", "nodeSelector", "affinity",
             "podAnnotations", "podLabels", "auditCollection.spec", "serviceAccount.annotations"}
    keys: set[str] = set()

    def walk(prefix: str, node: object) -> None:
        if isinstance(node, dict) and node and prefix not in whole:
            for key, value in node.items():
                walk(f"{prefix}.{key}" if prefix else key, value)
        else:
            keys.add(prefix)

    walk("", values)
    return keys


def test_every_documented_option_has_a_case():
    assert documented_keys() == set(OPTION_CASES)


def test_every_option_in_values_yaml_has_a_comment():
    # "Documented line by line": each key of the first two levels is preceded by a comment line,
    # except a mapping header whose own keys are all commented.
    lines = (CHART / "values.yaml").read_text().splitlines()
    undocumented = []
    for index, line in enumerate(lines):
        match = re.match(r"^( {0,2})([A-Za-z][\w-]*):(.*)$", line)
        if not match:
            continue
        previous = lines[index - 1].strip() if index else ""
        is_header = match.group(3).strip() == "" and index + 1 < len(lines) and \
            lines[index + 1].startswith(match.group(1) + "  ")
        if not previous.startswith("#") and not is_header:
            undocumented.append(line.strip())
    assert undocumented == []


@pytest.fixture(scope="module")
def default_objects(helm) -> list[dict]:
    return helm_template(helm)


def test_default_render_validates_for_kubernetes_1_29_to_1_37(default_objects):
    kinds = sorted(obj["kind"] for obj in default_objects)
    assert "CustomResourceDefinition" in kinds and "Deployment" in kinds and "ClusterRole" in kinds
    assert validation_errors(default_objects) == []


def test_default_render_runs_replicas_with_kopf_peering(default_objects):
    # kaudit run: "--peering NAME" (default kaudit) waits for a ClusterKopfPeering of that name.
    deployment = one(default_objects, "Deployment")
    assert deployment["spec"]["replicas"] > 1
    peering = one(default_objects, "ClusterKopfPeering")
    assert f"--peering={peering['metadata']['name']}" in operator_container(default_objects)["args"]
    assert "clusterkopfpeerings.kopf.dev" in {o["metadata"]["name"] for o in objects_of_kind(
        default_objects, "CustomResourceDefinition")}
    assert one(default_objects, "PodDisruptionBudget")["spec"]["maxUnavailable"] == 1


def kaudit_run_accepts(args: list[str]) -> None:
    """The real `kaudit` argument parser accepts the container's args (argparse exits otherwise)."""
    from kaudit.cli import build_parser

    parsed = build_parser().parse_args(args)
    assert parsed.command == "run" and parsed.func is not None


def test_default_render_runs_the_operator_safely(default_objects):
    spec = pod_spec(default_objects)
    container = operator_container(default_objects)
    assert container["args"][0] == "run"
    kaudit_run_accepts(container["args"])
    assert spec["securityContext"]["runAsNonRoot"] is True
    assert spec["securityContext"]["runAsUser"] > 0
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    assert container["securityContext"]["capabilities"]["drop"] == ["ALL"]
    assert {"name": "tmp", "mountPath": "/tmp"} in container["volumeMounts"]
    pod_namespace = next(e for e in container["env"] if e["name"] == "POD_NAMESPACE")
    assert pod_namespace["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.namespace"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["resources"]["limits"]["memory"]
    seccomp = (container["securityContext"].get("seccompProfile") or spec["securityContext"].get("seccompProfile"))
    assert seccomp == {"type": "RuntimeDefault"}
    # The probes reach the port `kaudit run` serves /healthz on (its parsed --liveness-port).
    from kaudit.cli import build_parser

    liveness_port = build_parser().parse_args(container["args"]).liveness_port
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    for probe in ("livenessProbe", "readinessProbe"):
        port = container[probe]["httpGet"]["port"]
        assert ports.get(port, port) == liveness_port, probe


@pytest.mark.parametrize("name", sorted(OPTION_CASES))
def test_documented_option_renders_validates_and_takes_effect(helm, tmp_path, name):
    values, check = OPTION_CASES[name]
    objects = helm_template(helm, "-f", str(write_values(tmp_path, values)))
    assert validation_errors(objects) == []
    check(objects)
    kaudit_run_accepts(operator_container(objects)["args"])


def test_helm_lint_strict(helm, tmp_path):
    helm.run("lint", "--strict", str(CHART))
    everything = {"auditCollection": {"create": True}, "metrics": {"service": True}}
    helm.run("lint", "--strict", str(CHART), "-f", str(write_values(tmp_path, everything)))


def test_chart_crds_are_identical_to_the_top_level_crds():
    # The chart cannot reference files outside itself, so it carries a copy; this keeps the copy
    # exact. To resync: python tests/helmtools.py (copies crds/*.yaml, regenerates manifests/).
    top = {p.name: p.read_bytes() for p in CRDS.glob("*.yaml")}
    chart = {p.name: p.read_bytes() for p in (CHART / "crds").glob("*.yaml")}
    assert "auditcollections.kaudit.dev.yaml" in top
    assert sorted(chart) == sorted(top)
    for name in top:
        assert chart[name] == top[name], \
            f"charts/kaudit/crds/{name} differs from crds/{name}: run `python tests/helmtools.py`"


def test_crds_are_not_templated(default_objects, helm):
    # Helm installs crds/ before templates and never upgrades or deletes them; make sure they come
    # from crds/ (installed on install) and not from templates/.
    without = helm_template(helm, include_crds=False)
    assert not list(objects_of_kind(without, "CustomResourceDefinition"))


def test_notes_give_the_next_step(helm, tmp_path):
    done = helm.run("install", "kaudit", str(CHART), "--dry-run=client", "--namespace", "kaudit-system")
    assert "kubectl wait --for=condition=Ready auditcollection/cluster" in done.stdout
    assert "kind: AuditCollection" in done.stdout  # how to create one when the chart did not


def test_artifacthub_annotations_match_the_chart():
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    annotations = chart["annotations"]
    crd_files = [doc for p in sorted(CRDS.glob("*.yaml")) for doc in load_documents(p.read_text())]
    listed = {c["name"] for c in yaml.safe_load(annotations["artifacthub.io/crds"])}
    assert listed == {crd["metadata"]["name"] for crd in crd_files}
    images = yaml.safe_load(annotations["artifacthub.io/images"])
    assert images[0]["image"] == f"kaudit/kaudit:{chart['appVersion']}"
    # The example shown on Artifact Hub must be a valid AuditCollection: CRD schema and kaudit's parser.
    from kaudit.api import parse_collection

    examples = yaml.safe_load(annotations["artifacthub.io/crdsExamples"])
    assert validation_errors(examples, crd_files) == []
    for example in examples:
        parse_collection(example)

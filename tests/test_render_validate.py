"""Every built-in object the renderer emits validates against the official Kubernetes schemas
(kubernetes-validate, strict: unknown fields are errors) for every supported minor version."""

from __future__ import annotations

import pytest

kubernetes_validate = pytest.importorskip("kubernetes_validate")

from kaudit.render import render  # noqa: E402
from render_support import (  # noqa: E402
    apply_ssa_merge,
    collection,
    daemonset_mode,
    datadog_agent,
    datadogagent_mode,
    helm_daemonset,
    without_the_charts_newer_fields,
)

VERSIONS = [f"1.{minor}" for minor in range(29, 38)]


def rendered_objects() -> list[tuple[str, dict]]:
    full = collection({
        "agent": {"managed": {
            "resources": {"requests": {"cpu": "50m", "memory": "128Mi"}, "limits": {"memory": "1Gi"}},
            "nodeSelector": {"node-role.kubernetes.io/control-plane": ""},
            "tolerations": [{"key": "node-role.kubernetes.io/control-plane", "operator": "Exists",
                             "effect": "NoSchedule"},
                            {"key": "x", "operator": "Equal", "value": "y", "effect": "NoExecute",
                             "tolerationSeconds": 30}],
            "priorityClassName": "system-node-critical"}},
        "logs": {"tags": ["env:prod"]},
    })
    objects = []
    for label, resource, existing in [
        ("managed-defaults", collection(), []),
        ("managed-full", full, []),
        ("daemonset", daemonset_mode(), [helm_daemonset()]),
        ("datadogagent", datadogagent_mode(), [datadog_agent()]),
        ("none", collection({"agent": {"mode": "None"}}), []),
    ]:
        rendered = render(resource, existing=existing)
        objects += [(f"{label}:{o['kind']}/{o['metadata']['name']}", o) for o in rendered.objects]
        if label == "daemonset":
            # The body alone is a partial object by design; what must be valid is the DaemonSet
            # it produces once merged into the live one.
            # (Minus the chart's own 1.30+ field on a container kaudit does not touch.)
            objects.append(("daemonset:merged", without_the_charts_newer_fields(
                apply_ssa_merge(helm_daemonset(), rendered.patches[0]))))
    return objects


OBJECTS = rendered_objects()


def test_objects_cover_every_built_in_kind_kaudit_renders():
    kinds = {obj["kind"] for _, obj in OBJECTS}
    assert {"ConfigMap", "ServiceAccount", "DaemonSet"} <= kinds


@pytest.mark.parametrize("version", VERSIONS)
def test_rendered_objects_validate_strictly(version):
    for label, obj in OBJECTS:
        try:
            kubernetes_validate.validate(obj, version, strict=True)
        except kubernetes_validate.ValidationError as exc:  # pragma: no cover - the failure message
            pytest.fail(f"{label} is invalid for Kubernetes {version}: {exc.message} at {list(exc.path)}")


def test_validation_would_catch_an_unknown_field():
    # Guards the test above: strict mode must reject a misspelt field in a rendered object.
    _, daemon_set = next((label, o) for label, o in OBJECTS if o["kind"] == "DaemonSet")
    broken = {**daemon_set, "spec": {**daemon_set["spec"], "tolerationz": []}}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, "1.33", strict=True)

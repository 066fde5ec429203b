"""Builders shared by the renderer's tests (tests/test_render_*.py, test_cli_render*.py, ...)."""

from __future__ import annotations

import copy
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
CRD_PATH = ROOT / "crds" / "auditcollections.kaudit.dev.yaml"
HELM_DAEMONSET = EXAMPLES / "existing" / "datadog-agent-daemonset.yaml"  # the chart's defaults (logs off)
# The chart's agent with datadog.logs.enabled=true (tests/datadog_chart.py): its pointerdir hostPath.
HELM_LOGS_DAEMONSET = ROOT / "tests" / "fixtures" / "datadog-chart" / "logs.yaml"
DATADOG_AGENT = EXAMPLES / "existing" / "datadogagent.yaml"


def collection(spec: dict | None = None, name: str = "cluster") -> dict:
    return {
        "apiVersion": "kaudit.dev/v1alpha1",
        "kind": "AuditCollection",
        "metadata": {"name": name},
        "spec": copy.deepcopy(spec) if spec is not None else {},
    }


def load_one(path: Path) -> dict:
    return yaml.safe_load(path.read_text())


def helm_daemonset() -> dict:
    return load_one(HELM_LOGS_DAEMONSET)


def datadog_agent() -> dict:
    return load_one(DATADOG_AGENT)


def daemonset_mode(**agent) -> dict:
    return collection({"agent": {"mode": "DaemonSet", **agent}})


def datadogagent_mode(**agent) -> dict:
    return collection({"agent": {"mode": "DatadogAgent", **agent}})


def by_kind(objects, kind: str) -> list[dict]:
    return [o for o in objects if o["kind"] == kind]


def one(objects, kind: str, component: str | None = None) -> dict:
    found = [o for o in by_kind(objects, kind)
             if component is None or o["metadata"]["labels"].get("app.kubernetes.io/component") == component]
    assert len(found) == 1, f"expected one {kind} {component or ''}, found {len(found)}"
    return found[0]


def container(pod_spec: dict, name: str) -> dict:
    return next(c for c in pod_spec["containers"] if c["name"] == name)


def mounts_by_path(container_spec: dict) -> dict[str, dict]:
    return {m["mountPath"]: m for m in container_spec.get("volumeMounts", [])}


def volumes_by_name(pod_spec: dict) -> dict[str, dict]:
    return {v["name"]: v for v in pod_spec.get("volumes", [])}


def apply_ssa_merge(live: dict, body: dict) -> dict:
    """A small model of server-side apply for a DaemonSet body: maps merge; containers, env and
    volumes merge by name, volumeMounts by mountPath; tolerations (atomic) are replaced whole.
    Enough to check the pod a patched DaemonSet would produce; not a full implementation."""
    keys = {"containers": "name", "initContainers": "name", "env": "name", "volumes": "name",
            "volumeMounts": "mountPath"}

    def merge(a, b, field=None):
        if isinstance(a, dict) and isinstance(b, dict):
            out = dict(a)
            for k, v in b.items():
                out[k] = merge(a[k], v, k) if k in a else copy.deepcopy(v)
            return out
        if isinstance(a, list) and isinstance(b, list) and field in keys:
            key = keys[field]
            out = [copy.deepcopy(x) for x in a]
            index = {x.get(key): i for i, x in enumerate(out)}
            for item in b:
                if item.get(key) in index:
                    out[index[item[key]]] = merge(out[index[item[key]]], item, None)
                else:
                    out.append(copy.deepcopy(item))
            return out
        return copy.deepcopy(b)

    return merge(live, body)


# --- small models of what the API server does with kaudit's hand-back requests --------------------
# Independent of kaudit's own code, so a test that uses them checks kaudit against a second opinion.


def apply_merge_patch(target, patch):
    """RFC 7386 JSON merge patch."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    out = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        else:
            out[key] = apply_merge_patch(out.get(key), value)
    return out


def apply_json_patch(target: dict, operations: list[dict]) -> dict:
    """RFC 6902 JSON patch, the operations kaudit sends (test, add, replace, remove)."""
    out = copy.deepcopy(target)
    for op in operations:
        *parents, last = [p.replace("~1", "/").replace("~0", "~") for p in op["path"].split("/")[1:]]
        node = out
        for part in parents:
            node = node[int(part)] if isinstance(node, list) else node[part]
        key = int(last) if isinstance(node, list) else last
        if op["op"] == "test":
            assert node[key] == op["value"], f"test failed at {op['path']}"
        elif op["op"] in ("add", "replace"):
            node[key] = copy.deepcopy(op["value"])
        elif op["op"] == "remove":
            del node[key]
    return out


_LIST_KEYS = {"containers": "name", "initContainers": "name", "env": "name", "volumes": "name",
              "volumeMounts": "mountPath"}


def remove_applied(live, body, original, field=None):
    """What an empty apply by kaudit removes: every field of ``body`` the ``original`` did not have.

    (Server-side apply drops the fields only the applier managed; the user's manager managed the
    original's.) Atomic lists kaudit replaced are restored before, by a patch: left as they are.
    """
    if isinstance(body, dict) and isinstance(live, dict):
        out = dict(live)
        for key, value in body.items():
            if key not in out:
                continue
            if not isinstance(original, dict) or key not in original:
                del out[key]
            else:
                out[key] = remove_applied(out[key], value, original[key], key)
        return out
    if isinstance(body, list) and isinstance(live, list) and field in _LIST_KEYS:
        key = _LIST_KEYS[field]
        theirs = {item.get(key): item for item in original or [] if isinstance(item, dict)}
        wanted = {item.get(key): item for item in body if isinstance(item, dict)}
        out = []
        for item in live:
            name = item.get(key)
            if name in wanted and name not in theirs:
                continue
            out.append(remove_applied(item, wanted[name], theirs[name]) if name in wanted else item)
        return out
    return live


def without_nulls(value):
    """The object as the API server stores it: null fields are not kept."""
    if isinstance(value, dict):
        return {k: without_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [without_nulls(v) for v in value]
    return value


def without_the_charts_newer_fields(ds: dict) -> dict:
    """The DaemonSet minus what the chart itself sets that Kubernetes 1.29 does not know.

    The chart gives its system-probe container securityContext.appArmorProfile (a field since
    1.30); kaudit never touches that container, and the field would hide any problem of kaudit's
    behind the chart's own in 1.29's schema (kubernetes-validate reports the first error only).
    """
    ds = without_nulls(ds)
    for item in ds["spec"]["template"]["spec"]["containers"]:
        if item["name"] != "agent":
            (item.get("securityContext") or {}).pop("appArmorProfile", None)
    return ds

"""Builders shared by the renderer's tests (tests/test_render_*.py, test_cli_render*.py, ...)."""

from __future__ import annotations

import copy
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
CRD_PATH = ROOT / "crds" / "auditcollections.kaudit.dev.yaml"
HELM_DAEMONSET = EXAMPLES / "existing" / "datadog-agent-daemonset.yaml"
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
    return load_one(HELM_DAEMONSET)


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

"""Agent rollout figures on control-plane nodes: pure functions over nodes, pods and a DaemonSet.

The audit log exists only on control-plane nodes, so what matters is how many agent pods run and
are ready there, and whether the agent can be scheduled there at all (taints, node selector).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from kaudit.render.common import CONTROL_PLANE_ROLE_LABELS, tolerates

CONTROL_PLANE_SELECTORS = CONTROL_PLANE_ROLE_LABELS  # label keys, used as "exists" selectors


@dataclass(frozen=True)
class AgentFigures:
    desired: int  # control-plane nodes the agent can run on
    ready: int  # ready agent pods on control-plane nodes
    control_plane_nodes: int
    message: str
    warning: str | None = None

    def as_status(self) -> dict[str, Any]:
        return {
            "desired": self.desired,
            "ready": self.ready,
            "controlPlaneNodes": self.control_plane_nodes,
            "message": self.message,
        }


def is_control_plane(node: dict[str, Any]) -> bool:
    labels = (node.get("metadata") or {}).get("labels") or {}
    return any(label in labels for label in CONTROL_PLANE_ROLE_LABELS)


def can_schedule(pod_spec: dict[str, Any], node: dict[str, Any]) -> bool:
    """Whether a pod with ``pod_spec`` may land on ``node`` (taints and nodeSelector only)."""
    labels = (node.get("metadata") or {}).get("labels") or {}
    selector = pod_spec.get("nodeSelector") or {}
    if any(labels.get(key) != value for key, value in selector.items()):
        return False
    tolerations = pod_spec.get("tolerations") or []
    for taint in (node.get("spec") or {}).get("taints") or []:
        if taint.get("effect") in ("NoSchedule", "NoExecute") and not tolerates(tolerations, taint):
            return False
    return True


def pod_ready(pod: dict[str, Any]) -> bool:
    conditions = (pod.get("status") or {}).get("conditions") or []
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)


def selects(selector: dict[str, Any], pod: dict[str, Any]) -> bool:
    match = (selector or {}).get("matchLabels") or {}
    labels = (pod.get("metadata") or {}).get("labels") or {}
    return bool(match) and all(labels.get(k) == v for k, v in match.items())


def agent_figures(daemon_set: dict[str, Any] | None, nodes: list[dict[str, Any]], pods: list[dict[str, Any]]) -> AgentFigures:
    control_plane = [node for node in nodes if is_control_plane(node)]
    names = {(node.get("metadata") or {}).get("name") for node in control_plane}
    if daemon_set is None:
        return AgentFigures(0, 0, len(control_plane), "The agent DaemonSet does not exist yet.")
    template = ((daemon_set.get("spec") or {}).get("template") or {}).get("spec") or {}
    schedulable = [node for node in control_plane if can_schedule(template, node)]
    selector = (daemon_set.get("spec") or {}).get("selector") or {}
    ours = [pod for pod in pods if selects(selector, pod) and (pod.get("spec") or {}).get("nodeName") in names]
    ready = sum(1 for pod in ours if pod_ready(pod))
    ds_name = (daemon_set.get("metadata") or {}).get("name")
    warning = None
    if not control_plane:
        message = ("No control-plane node is visible: on a managed control plane (EKS, GKE, AKS) the audit log"
                   " is not on any node; use the provider's audit logging instead.")
        warning = message
    elif not schedulable:
        message = (f"DaemonSet {ds_name} cannot be scheduled on any of the {len(control_plane)} control-plane"
                   " nodes (taints not tolerated or nodeSelector does not match).")
        warning = message
    else:
        message = f"{ready}/{len(schedulable)} agent pods ready on control-plane nodes."
    return AgentFigures(len(schedulable), ready, len(control_plane), message, warning)

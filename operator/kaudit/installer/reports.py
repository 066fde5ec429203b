"""Turn node reports and kube-apiserver mirror pods into status: pure, for the operator.

    from kaudit.installer.reports import aggregate
    summary = aggregate(leases, apiserver_pods, desired_hash, nodes=control_plane_node_names)
    status["nodes"] = summary.nodes            # [{name, installedHash, installedAt, ...}]
    conditions.append(summary.condition)        # type PolicyInstalled (no lastTransitionTime)

``leases``: the Leases labelled ``kaudit.dev/collection=<name>`` in the operator namespace (see
:mod:`kaudit.installer.lease`). ``apiserver_pods``: the pods in ``kube-system`` labelled
``component=kube-apiserver`` (kubeadm's mirror pods of the static pod). ``nodes``: the control-plane
nodes, each of which must report before the policy counts as installed everywhere (a node whose
installer has not reported yet is "waiting", not forgotten).

When did kube-apiserver read the policy? At its process start. The mirror pod's
``status.startTime`` is when the kubelet first saw the pod and does not move when the container
restarts (a crash, ``crictl stop``), so it would say "restart required" after a restart that did
happen. The container's ``state.running.startedAt`` moves with every start of the process, so it
is the one used. Both it and the installer's ``installedAt`` (the policy file's mtime) come from
the same node's clock, so comparing them is not affected by clock skew between machines.
``startedAt`` has one-second precision: a start in the same second as the install may have read
either file, so it counts as "restart required" — only a start in a later second proves the new
policy is loaded.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any, Iterable, Mapping

from kaudit.installer.lease import (
    ANNOTATION_ERROR,
    ANNOTATION_HASH,
    ANNOTATION_INSTALLED_AT,
    ANNOTATION_NODE,
    ANNOTATION_REFUSED_AT,
    ANNOTATION_REFUSED_HASH,
    ANNOTATION_REFUSED_REASON,
    ANNOTATION_WARNINGS,
)

CONDITION_TYPE = "PolicyInstalled"
APISERVER_CONTAINER = "kube-apiserver"
UNKNOWN = "unknown"


@dataclass(frozen=True)
class NodeReport:
    node: str
    installed_hash: str
    installed_at: datetime | None
    error: str = ""
    renewed_at: datetime | None = None
    lease_seconds: int = 0
    refused_hash: str = ""  # a candidate the AuditCollection does not approve, while it stands
    refused_reason: str = ""
    refused_at: datetime | None = None
    warnings: tuple[str, ...] = ()  # lint warnings of the installed policy


@dataclass(frozen=True)
class Summary:
    nodes: list[dict[str, Any]]
    condition: dict[str, Any]


def parse_time(value: object) -> datetime | None:
    """An RFC 3339 timestamp (with or without fraction, ``Z`` or offset) as an aware datetime."""
    if not isinstance(value, str) or not value:
        return None
    text = value.strip()
    if text.endswith(("Z", "z")):
        text = text[:-1] + "+00:00"
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)


def format_time(moment: datetime | None) -> str | None:
    """metav1.Time's format: RFC 3339, UTC, seconds."""
    if moment is None:
        return None
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_report(lease: Mapping[str, Any]) -> NodeReport | None:
    """The report a Lease carries, or None when it is not a kaudit node report."""
    metadata = lease.get("metadata") or {}
    annotations = metadata.get("annotations") or {}
    spec = lease.get("spec") or {}
    node = annotations.get(ANNOTATION_NODE) or spec.get("holderIdentity")
    if not node:
        return None
    return NodeReport(
        node=str(node),
        installed_hash=str(annotations.get(ANNOTATION_HASH) or ""),
        installed_at=parse_time(annotations.get(ANNOTATION_INSTALLED_AT)),
        error=str(annotations.get(ANNOTATION_ERROR) or ""),
        refused_hash=str(annotations.get(ANNOTATION_REFUSED_HASH) or ""),
        refused_reason=str(annotations.get(ANNOTATION_REFUSED_REASON) or ""),
        refused_at=parse_time(annotations.get(ANNOTATION_REFUSED_AT)),
        renewed_at=parse_time(spec.get("renewTime")),
        lease_seconds=int(spec.get("leaseDurationSeconds") or 0),
        warnings=tuple(line for line in str(annotations.get(ANNOTATION_WARNINGS) or "").splitlines() if line),
    )


@dataclass(frozen=True)
class ApiServer:
    node: str
    started_at: datetime | None
    waiting_reason: str = ""


def _apiserver_of(pod: Mapping[str, Any]) -> ApiServer | None:
    node = (pod.get("spec") or {}).get("nodeName")
    labels = (pod.get("metadata") or {}).get("labels") or {}
    if not node or labels.get("component") != "kube-apiserver":
        return None
    statuses = (pod.get("status") or {}).get("containerStatuses") or []
    status = next((s for s in statuses if s.get("name") == APISERVER_CONTAINER), statuses[0] if statuses else {})
    state = status.get("state") or {}
    started = parse_time((state.get("running") or {}).get("startedAt"))
    waiting = (state.get("waiting") or {}).get("reason") or ("terminated" if state.get("terminated") else "")
    return ApiServer(str(node), started, str(waiting))


def apiservers_by_node(pods: Iterable[Mapping[str, Any]]) -> dict[str, ApiServer]:
    """One kube-apiserver per node: a running one before a stopped one, then the latest start."""
    found: dict[str, ApiServer] = {}
    for pod in pods:
        server = _apiserver_of(pod)
        if server is None:
            continue
        known = found.get(server.node)
        if known is None or _start_key(server) > _start_key(known):
            found[server.node] = server
    return found


def _start_key(server: ApiServer) -> tuple[bool, datetime]:
    return (server.started_at is not None, server.started_at or datetime.min.replace(tzinfo=timezone.utc))


def restart_required(report: NodeReport | None, server: ApiServer | None, desired_hash: str) -> bool | str:
    """True/False when the running kube-apiserver's start can be compared with the install."""
    if report is None or report.installed_hash != desired_hash or report.installed_at is None:
        return UNKNOWN
    if server is None or server.started_at is None:
        return UNKNOWN
    # startedAt is truncated to the second; only a later second proves the start came after.
    return not server.started_at > report.installed_at


def _node_message(report: NodeReport | None, server: ApiServer | None, desired_hash: str,
                  restart: bool | str, now: datetime | None) -> str:
    if report is None:
        return "no report from the policy installer on this node"
    if report.refused_hash:
        return refusal_text(report)
    if report.error:
        return f"install failed: {report.error}"
    if report.installed_hash != desired_hash:
        return f"waiting for policy {desired_hash[:12]} (has {report.installed_hash[:12] or 'none'})"
    parts = []
    if server is None:
        parts.append("no kube-apiserver mirror pod on this node: restart state unknown")
    elif server.started_at is None:
        parts.append(f"kube-apiserver is not running ({server.waiting_reason or 'no start time'})")
    elif restart is True:
        parts.append("kube-apiserver started before the install and still runs the previous policy: restart it")
    else:
        parts.append("kube-apiserver runs this policy")
    if now and report.renewed_at and report.lease_seconds:
        if now - report.renewed_at > timedelta(seconds=report.lease_seconds):
            parts.append(f"report last renewed {format_time(report.renewed_at)} (stale)")
    return "; ".join(parts)


def node_entries(reports: Iterable[NodeReport], servers: Mapping[str, ApiServer], desired_hash: str,
                 now: datetime | None = None, nodes: Iterable[str] = ()) -> list[dict[str, Any]]:
    by_node = {r.node: r for r in reports}
    entries = []
    for node in sorted(set(by_node) | set(servers) | set(nodes)):
        report, server = by_node.get(node), servers.get(node)
        restart = restart_required(report, server, desired_hash)
        entry: dict[str, Any] = {"name": node}
        if report and report.installed_hash:
            entry["installedHash"] = report.installed_hash
        if report and report.installed_at:
            entry["installedAt"] = format_time(report.installed_at)
        if server and server.started_at:
            entry["apiServerStartedAt"] = format_time(server.started_at)
        if report and report.refused_hash:
            entry["refusedHash"] = report.refused_hash
        entry["restartRequired"] = restart
        entry["message"] = _node_message(report, server, desired_hash, restart, now)
        entries.append(entry)
    return entries


def _names(entries: list[dict[str, Any]]) -> str:
    return ", ".join(e["name"] for e in entries)


def refusal_text(report: NodeReport) -> str:
    """What a node refused, why, and what it kept: one sentence for status and the Event."""
    since = f" since {format_time(report.refused_at)}" if report.refused_at else ""
    kept = report.installed_hash[:12] or "no policy"
    return (f"refused policy {report.refused_hash[:12]}{since}: {report.refused_reason}; "
            f"kept {kept} installed")


def installed_condition(entries: list[dict[str, Any]], failed: Mapping[str, str], desired_hash: str,
                        refused: Mapping[str, str] | None = None) -> dict[str, Any]:
    """The PolicyInstalled condition (type, status, reason, message) for these node entries.

    ``refused``: node -> the refusal sentence, for nodes that refuse an unapproved candidate.
    A refusal comes first: someone changed what reaches the nodes outside the AuditCollection.
    """
    short = desired_hash[:12]

    def condition(status: str, reason: str, message: str) -> dict[str, Any]:
        return {"type": CONDITION_TYPE, "status": status, "reason": reason, "message": message}

    if not desired_hash:
        return condition("Unknown", "NoPolicy", "there is no valid policy to install")
    if not entries:
        return condition("Unknown", "NoReports",
                         "no report from the policy installer yet and no kube-apiserver mirror pod found")
    if refused:
        node, text = sorted(refused.items())[0]
        more = f" (and {len(refused) - 1} more node(s))" if len(refused) > 1 else ""
        return condition("False", "PolicyRefused", f"node {node} {text}{more}")
    if failed:
        node, error = sorted(failed.items())[0]
        more = f" (and {len(failed) - 1} more node(s))" if len(failed) > 1 else ""
        return condition("False", "InstallFailed", f"node {node}: {error}{more}")
    pending = [e for e in entries if e.get("installedHash") != desired_hash]
    if pending:
        done = len(entries) - len(pending)
        return condition("False", "Installing",
                         f"policy {short} installed on {done} of {len(entries)} node(s); waiting for {_names(pending)}")
    restart = [e for e in entries if e["restartRequired"] is True]
    if restart:
        # The file is in place (True), but these kube-apiservers read the previous one at start.
        return condition("True", "RestartRequired",
                         f"policy {short} installed on all {len(entries)} node(s); kube-apiserver on "
                         f"{_names(restart)} started before the install: restart it to load the policy")
    unknown = [e for e in entries if e["restartRequired"] == UNKNOWN]
    tail = f"; restart state unknown on {_names(unknown)} (no running kube-apiserver mirror pod)" if unknown else ""
    return condition("True", "Installed", f"policy {short} installed on all {len(entries)} node(s){tail}")


def aggregate(leases: Iterable[Mapping[str, Any]], apiserver_pods: Iterable[Mapping[str, Any]], desired_hash: str,
              now: datetime | None = None, nodes: Iterable[str] = ()) -> Summary:
    reports = [r for r in (parse_report(lease) for lease in leases) if r is not None]
    servers = apiservers_by_node(apiserver_pods)
    entries = node_entries(reports, servers, desired_hash, now, nodes)
    failed = {r.node: r.error for r in reports if r.error}
    refused = {r.node: refusal_text(r) for r in reports if r.refused_hash}
    # Nodes known only from the node list, none heard from: NoReports says more than "0 of N".
    heard_from = entries if reports or servers else []
    return Summary(entries, installed_condition(heard_from, failed, desired_hash, refused))

"""What the renderer hands to the operator and to ``kaudit render``."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from kaudit.api.spec import AgentTarget, AuditCollection
from kaudit.errors import FieldError
from kaudit.policy.document import PolicyDocument

JSON = dict[str, Any]


@dataclass(frozen=True)
class Rendered:
    """Everything kaudit applies for one AuditCollection, with its parts named.

    ``objects`` and ``patches`` are what is applied, in order; the named parts say what some of
    them are, so no consumer has to find them again by their labels.
    """

    spec: AuditCollection  # what was rendered (the status reports its profile and auditKaudit)
    # Objects kaudit owns, complete, in the order they should be applied. No ownerReferences:
    # the operator adds them (it knows the live owner's uid; the offline CLI does not).
    objects: tuple[JSON, ...]
    # Server-side-apply bodies for objects kaudit does not own (the user's agent DaemonSet, a
    # DatadogAgent): apiVersion, kind, metadata.name/namespace and only the fields kaudit adds.
    patches: tuple[JSON, ...]
    policy: PolicyDocument
    api_server_flags: tuple[str, ...]  # e.g. "--audit-policy-file=/etc/kubernetes/audit-policies/policy.yaml"
    # The node-side policy installer's objects (among ``objects``); () when
    # spec.apiServer.installPolicy is false, so nothing reports installs either.
    installer: tuple[JSON, ...] = ()
    # The agent DaemonSet kaudit runs itself (Managed mode; among ``objects``), else None.
    agent_daemon_set: JSON | None = None
    # The user's object ``patches`` change (DaemonSet and DatadogAgent modes), else None.
    agent_target: AgentTarget | None = None
    next_steps: tuple[str, ...] = field(default_factory=tuple)  # what the user must still do, as sentences
    warnings: tuple[FieldError, ...] = field(default_factory=tuple)  # lints and adaptation notes, with paths
    # (reason, message) of changes to the user's agent worth an Event of their own (kaudit turned
    # a setting of theirs on); the operator posts them when it applies the patch.
    events: tuple[tuple[str, str], ...] = field(default_factory=tuple)

    @property
    def installs_policy(self) -> bool:
        return bool(self.installer)


@dataclass
class AgentPatch:
    """What a renderer of the user's agent object returns: the apply body and what to tell about it."""

    body: JSON
    warnings: list[FieldError] = field(default_factory=list)
    steps: list[str] = field(default_factory=list)
    events: list[tuple[str, str]] = field(default_factory=list)

"""What the renderer hands to the operator and to ``kaudit render``."""

from __future__ import annotations

from dataclasses import dataclass, field

from kaudit.errors import FieldError
from kaudit.policy.document import PolicyDocument


@dataclass(frozen=True)
class Rendered:
    # Objects kaudit owns, complete, in the order they should be applied. No ownerReferences:
    # the operator adds them (it knows the live owner's uid; the offline CLI does not).
    objects: tuple[dict, ...]
    # Server-side-apply bodies for objects kaudit does not own (the user's agent DaemonSet, a
    # DatadogAgent): apiVersion, kind, metadata.name/namespace and only the fields kaudit adds.
    patches: tuple[dict, ...]
    policy: PolicyDocument
    api_server_flags: tuple[str, ...]  # e.g. "--audit-policy-file=/etc/kubernetes/audit-policies/policy.yaml"
    next_steps: tuple[str, ...] = field(default_factory=tuple)  # what the user must still do, as sentences
    warnings: tuple[FieldError, ...] = field(default_factory=tuple)  # lints and adaptation notes, with paths
    # (reason, message) of changes to the user's agent worth an Event of their own (kaudit turned
    # a setting of theirs on); the operator posts them when it applies the patch.
    events: tuple[tuple[str, str], ...] = field(default_factory=tuple)


@dataclass
class AgentPatch:
    """What a renderer of the user's agent object returns: the apply body and what to tell about it."""

    body: dict
    warnings: list[FieldError] = field(default_factory=list)
    steps: list[str] = field(default_factory=list)
    events: list[tuple[str, str]] = field(default_factory=list)

"""An AuditCollection as the operator reads it from the cluster: metadata, the parsed spec, status.

:func:`parse_resource` is where the operator's handlers turn kopf's body into typed values, once
per reconcile; nothing after it reads the raw spec. An invalid spec is not an exception here: the
operator reports it in status, so the result carries the errors instead of a spec.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

from kaudit.api.spec import AGENT_MODES, API_VERSION, PLATFORMS, KIND, AgentSpec, AuditCollection, parse_collection
from kaudit.errors import InvalidInput

JSON = dict[str, Any]


@dataclass(frozen=True)
class ObjectMeta:
    """What the operator needs of an AuditCollection's metadata (who it is, which version)."""

    name: str
    uid: str = ""
    generation: int = 0
    resource_version: str = ""
    creation_timestamp: str = ""
    deletion_timestamp: str = ""

    @property
    def deleting(self) -> bool:
        return bool(self.deletion_timestamp)

    def reference(self) -> JSON:
        """The object as an owner reference or an Event's involvedObject names it."""
        return {"apiVersion": API_VERSION, "kind": KIND,
                "metadata": {"name": self.name, "uid": self.uid, "resourceVersion": self.resource_version}}


@dataclass(frozen=True)
class CollectionResource:
    """One live AuditCollection: ``spec`` is None exactly when ``invalid`` says why."""

    meta: ObjectMeta
    spec: AuditCollection | None
    invalid: InvalidInput | None = None
    # kaudit's own last status, as read (JSON; the reconciler compares it with what it would write)
    status: Mapping[str, Any] = field(default_factory=dict)
    # spec.agent.mode even when another field is invalid: deleting such a collection must still
    # hand the user's object back
    agent_mode: str = AgentSpec().mode
    # spec.platform as declared (EKS: deleting removes the subscription filter kaudit made on AWS)
    platform: str = "SelfManaged"

    @property
    def patches_user_object(self) -> bool:
        """DaemonSet and DatadogAgent modes change a user's object, and on EKS kaudit makes objects on
        AWS that no garbage collector removes: deleting needs a finalizer."""
        return AgentSpec(mode=self.agent_mode).target is not None or self.platform == "EKS"


def object_meta(body: Mapping[str, Any]) -> ObjectMeta:
    meta = body.get("metadata") or {}
    return ObjectMeta(
        name=str(meta.get("name") or ""),
        uid=str(meta.get("uid") or ""),
        generation=int(meta.get("generation") or 0),
        resource_version=str(meta.get("resourceVersion") or ""),
        creation_timestamp=str(meta.get("creationTimestamp") or ""),
        deletion_timestamp=str(meta.get("deletionTimestamp") or ""),
    )


def parse_resource(body: Mapping[str, Any]) -> CollectionResource:
    """The typed view of a live AuditCollection body (kopf's, or a read's)."""
    resource = dict(body)
    status = resource.get("status")
    status = dict(status) if isinstance(status, Mapping) else {}
    try:
        spec = parse_collection(resource)
    except InvalidInput as exc:
        return CollectionResource(object_meta(resource), None, exc, status, _declared_mode(resource),
                                  _declared_platform(resource))
    return CollectionResource(object_meta(resource), spec, None, status, spec.agent.mode, spec.platform)


def _declared_platform(resource: Mapping[str, Any]) -> str:
    spec = resource.get("spec")
    platform = spec.get("platform") if isinstance(spec, Mapping) else None
    return platform if isinstance(platform, str) and platform in PLATFORMS else "SelfManaged"


def _declared_mode(resource: Mapping[str, Any]) -> str:
    """spec.agent.mode of a spec that failed to parse, if it names one (else the default)."""
    spec = resource.get("spec")
    agent = spec.get("agent") if isinstance(spec, Mapping) else None
    mode = agent.get("mode") if isinstance(agent, Mapping) else None
    return mode if isinstance(mode, str) and mode in AGENT_MODES else AgentSpec().mode

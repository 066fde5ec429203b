"""A collection on a managed control plane (spec.platform EKS, GKE, AKS): its conditions and status.

The Reconciler calls :func:`reconcile_managed` instead of rendering node-side objects: on EKS it
runs :func:`kaudit.platforms.eks.reconcile.reconcile` against AWS in a worker thread (boto3 is
synchronous; a converged reconcile makes four reads), on GKE and AKS it reports the steps kaudit
cannot take. Nothing here writes to Kubernetes; the Reconciler reports what it returns.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any, Callable

from kaudit.api.spec import AuditCollection
from kaudit.conditions import TRUE, UNKNOWN, Condition
from kaudit.platforms.eks.aws import EksCloud
from kaudit.platforms.eks.plan import Memory

CloudFactory = Callable[[str], EksCloud]  # region -> the AWS calls in that region


def boto3_cloud(region: str) -> EksCloud:
    from kaudit.platforms.eks.aws import Boto3Cloud

    return Boto3Cloud(region)


@dataclass
class ManagedOutcome:
    ready: Condition
    conditions: list[Condition]
    parts: dict[str, Any]  # status fields: eks, nextSteps, warnings
    events: list[tuple[str, str]] = field(default_factory=list)  # Normal Events: (reason, message)
    requeue_after: float | None = None
    failed_attempt: bool = False  # a retryable AWS error: the next attempt backs off further


class Clouds:
    """One EksCloud per region, made on first use; and each collection's run of retryable failures."""

    def __init__(self, factory: CloudFactory = boto3_cloud):
        self._factory = factory
        self._clouds: dict[str, EksCloud] = {}
        self.attempts: dict[str, int] = {}

    def get(self, region: str) -> EksCloud:
        if region not in self._clouds:
            self._clouds[region] = self._factory(region)
        return self._clouds[region]


async def reconcile_managed(spec: AuditCollection, status: Any, clouds: Clouds) -> ManagedOutcome:
    if spec.platform == "EKS":
        return await _reconcile_eks(spec, status, clouds)
    from kaudit.platforms.steps import manual_steps

    steps = manual_steps(spec)
    message = (f"kaudit cannot reach {spec.platform}'s audit logging from the cluster: take the steps in "
               "status.nextSteps (kaudit render prints them with their commands).")
    condition = Condition("AuditLogConfigured", UNKNOWN, "ManualSetup", message)
    return ManagedOutcome(ready=Condition("Ready", TRUE, "ManualSetup", message), conditions=[condition],
                          parts={"nextSteps": list(steps), "warnings": []})


async def _reconcile_eks(spec: AuditCollection, status: Any, clouds: Clouds) -> ManagedOutcome:
    from kaudit.platforms.eks.reconcile import reconcile

    assert spec.eks is not None  # parse_collection: platform EKS has spec.eks
    attempt = clouds.attempts.get(spec.name, 0)
    cloud = clouds.get(spec.eks.region)
    result = await asyncio.to_thread(reconcile, cloud, spec.eks, spec.name, Memory.from_status(status, spec.eks),
                                     now_ms=int(time.time() * 1000), attempt=attempt, cloud_for=clouds.get)
    failed = result.retry_after is not None and any(c.reason in RETRY_REASONS for c in result.conditions)
    clouds.attempts[spec.name] = attempt + 1 if failed else 0
    ready, *others = result.conditions
    return ManagedOutcome(ready=ready, conditions=others,
                          parts={"eks": result.status, "nextSteps": [], "warnings": list(result.warnings)},
                          events=[(c.reason, c.message) for c in result.changes], requeue_after=result.retry_after,
                          failed_attempt=failed)


RETRY_REASONS = frozenset({"Throttled", "AwsUnreachable", "AwsUnavailable", "UpdateInProgress", "NoCredentials"})


async def release_managed(spec: AuditCollection, status: Any, clouds: Clouds) -> list[tuple[str, str]]:
    """Remove what kaudit created on the platform (EKS); the Normal Events to post. Raises AwsError."""
    if spec.platform != "EKS" or spec.eks is None:
        return []
    from kaudit.platforms.eks.reconcile import release

    changes = await asyncio.to_thread(release, clouds.get(spec.eks.region), spec.eks, spec.name,
                                      Memory.from_status(status, spec.eks), clouds.get)
    return [(c.reason, c.message) for c in changes]


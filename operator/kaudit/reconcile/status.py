"""The AuditCollection status: conditions (kstatus conventions) and the minimal patch to reach it.

``Ready`` is the summary condition ``kubectl wait --for=condition=Ready`` and Argo CD / Flux health
checks read; every condition carries ``observedGeneration`` so a reader can tell a stale ``True``
from a current one. ``lastTransitionTime`` changes only when a condition's status changes, so
recomputing an unchanged status yields an identical dict and no write.
"""

from __future__ import annotations

from typing import Any, Iterable

from kaudit.conditions import FALSE, TRUE, Condition

CONDITION_TYPES = ("Ready", "PolicyValid", "PolicyInstalled", "AgentConfigured",
                   # platform EKS (kaudit.platforms.eks.plan), and GKE/AKS (kaudit.platforms.steps)
                   "AuditLogEnabled", "Forwarding", "LogsFlowing", "AuditLogConfigured",
                   # spec.detection (kaudit.reconcile.detection)
                   "DetectionCoverage", "DetectionRulesSynced")
# Conditions that inform and never decide Ready: DetectionCoverage reports what the policy does to
# the required detection rules; in Refuse mode the refusal itself is PolicyValid's (BlindingPolicyRefused).
# DetectionRulesSynced reports the sync of those rules to Datadog (kaudit run --detection-sync).
INFORMATIONAL_TYPES = frozenset({"DetectionCoverage", "DetectionRulesSynced"})

# --- the reason vocabulary ------------------------------------------------------------------------
# Every reason the operator writes into a condition, grouped by what it means for a reader. GitOps
# health checks (docs/argocd-health.lua, the Flux expressions in docs/gitops.md) classify Ready by
# these sets, and tests/test_status_reasons.py keeps both checks and the code in step with them.
#
# Ready copies the reason of the first condition that is not True, so each set below holds reasons
# of the other conditions too.

# Ready=True: "Reconciled", or a True condition the user should still read (NOTICE_REASONS).
READY_REASON = "Reconciled"
# True, but with a step left to the user: the policy file is on every node and kube-apiserver must
# be restarted to load it. Ready stays True (Healthy, with this message): kaudit never restarts
# kube-apiserver, so a GitOps sync that waited for it would wait on a person, possibly forever.
NOTICE_REASONS = frozenset({"RestartRequired",
                            # GKE and AKS: kaudit cannot reach their audit logging; status.nextSteps lists the steps
                            "ManualSetup"})
# Reasons of the other conditions when they are True.
TRUE_REASONS = frozenset({"Valid", "Applied", "NoAgent", "Installed",
                          # platform EKS (kaudit.platforms.eks.plan)
                          "Enabled", "InPlace", "AuditEventsArriving"}) | NOTICE_REASONS
# Ready=False while the operator is still on its way and gets there without anyone acting:
# waiting for the policy installers' node reports (watched: each one reconciles at once).
PROGRESSING_REASONS = frozenset({"NoReports", "Installing",
                                 # platform EKS: AWS applying an update or creating the log group, a
                                 # throttled or unreachable AWS API (retried with backoff), no audit log yet
                                 "Enabling", "ClusterNotActive", "UpdateInProgress", "LogGroupPending",
                                 "Throttled", "AwsUnreachable", "AwsUnavailable", "NoAuditLog"})
# Ready=False because something needs a person: a refused spec or target, a conflict, an apply
# the API server refused, a failed install, an agent that cannot run on control-plane nodes.
FAILURE_REASONS = frozenset({
    "InvalidPolicy", "InvalidSpec", "Conflict", "ApplyFailed", "NotSchedulable", "InstallFailed", "NoPolicy",
    # a policy installer refused a candidate the AuditCollection does not approve (docs/security.md)
    "PolicyRefused",
    # spec.detection.mode Refuse: the policy would blind a required detection rule (docs/detection.md)
    "BlindingPolicyRefused",
    # kaudit.render refusals (kaudit.errors.Refused reasons)
    "ManagedByDatadogOperator", "TargetNotFound", "TargetClaimed", "LogCollectionDisabled", "MountConflict",
    "ExtraConfdConflict",
    # platform EKS: kaudit.platforms.eks (AWS errors and what only a person can settle)
    "ClusterNotFound", "AccessDenied", "NoCredentials", "FilterLimitReached", "LambdaPermissionMissing",
    "DestinationNotFound", "DestinationRefused", "AwsError", "NoAuditEvents", "AuditEventsStale",
})


def summarise(conditions: Iterable[Condition]) -> Condition:
    """Ready: True when every other condition is True; otherwise the first one that is not.

    A True condition with a notice (a kube-apiserver restart left to the user) lends Ready its
    reason and message, so ``kubectl get`` and GitOps tools show it while Ready stays True.
    """
    conditions = [c for c in conditions if c.type not in INFORMATIONAL_TYPES]
    for condition in conditions:
        if condition.status != TRUE:
            return Condition("Ready", FALSE, condition.reason, condition.message)
    for condition in conditions:
        if condition.reason in NOTICE_REASONS:
            return Condition("Ready", TRUE, condition.reason, condition.message)
    return Condition("Ready", TRUE, READY_REASON, "The audit policy and the agent configuration are in place.")


def render_conditions(
    conditions: Iterable[Condition], *, previous: Iterable[dict[str, Any]], generation: int, now: str
) -> list[dict[str, Any]]:
    before = {c.get("type"): c for c in previous if isinstance(c, dict)}
    result = []
    for condition in conditions:
        old = before.get(condition.type) or {}
        changed = old.get("status") != condition.status
        result.append({
            "type": condition.type,
            "status": condition.status,
            "reason": condition.reason,
            "message": condition.message,
            "observedGeneration": generation,
            "lastTransitionTime": now if changed or not old.get("lastTransitionTime") else old["lastTransitionTime"],
        })
    return result


def status_patch(live: dict[str, Any] | None, desired: dict[str, Any]) -> dict[str, Any] | None:
    """A JSON merge patch for ``status`` that turns ``live`` into ``desired``; None if equal.

    Keys kaudit does not manage (kopf's own ``status.kopf``) are left alone.
    """
    live = live or {}
    patch: dict[str, Any] = {}
    for key, value in desired.items():
        if live.get(key) != value:
            patch[key] = _replacing(live.get(key), value)
    for key in MANAGED_STATUS_KEYS:
        if key in live and key not in desired:
            patch[key] = None
    return {"status": patch} if patch else None


def _replacing(old: Any, new: Any) -> Any:
    """``new`` as a merge patch value that replaces ``old``: a merge patch merges objects, so a
    member ``old`` has and ``new`` lacks (status.eks.updateId once the update is done) is sent as
    null, at every depth; anything else is sent as it is."""
    if not isinstance(old, dict) or not isinstance(new, dict):
        return new
    replaced = {key: _replacing(old.get(key), value) for key, value in new.items()}
    replaced.update({key: None for key in old if key not in new})
    return replaced


MANAGED_STATUS_KEYS = ("observedGeneration", "conditions", "policy", "apiServerFlags", "warnings",
                       "nextSteps", "agent", "nodes", "eks")


def condition_changes(previous: Iterable[dict[str, Any]], current: list[dict[str, Any]], *,
                      restate: frozenset[str] = frozenset()) -> list[dict[str, Any]]:
    """Conditions whose status or reason differ from before: what deserves an Event.

    A condition whose reason is in ``restate`` also counts when only its message changed: a new
    refusal (another field path) under the same reason is news to the user, while a changing
    progress message (pods becoming ready) is not.
    """
    before = {c.get("type"): c for c in previous if isinstance(c, dict)}

    def changed(c: dict[str, Any]) -> bool:
        old = before.get(c["type"]) or {}
        if old.get("status") != c["status"] or old.get("reason") != c["reason"]:
            return True
        return c["reason"] in restate and old.get("message") != c["message"]

    return [c for c in current if changed(c)]


def is_progress(live: dict[str, Any] | None, desired: dict[str, Any]) -> bool:
    """Whether turning status ``live`` into ``desired`` only reports a step on the way: Ready keeps
    its status and reason (a first status counts as not Ready), no failure is new, and the observed
    generation is the one already reported (a first status reports its first one).

    Such a change can wait a moment for the next one, so that a create or a rollout writes its
    status once instead of once per step (agent pods getting ready, nodes reporting one by one);
    becoming Ready, leaving Ready, a failure and a newly observed spec are written at once.
    """
    live = live or {}
    before = next((c for c in live.get("conditions") or [] if c.get("type") == "Ready"), None)
    after = next(c for c in desired["conditions"] if c["type"] == "Ready")
    if (before or {}).get("status", FALSE) != after["status"]:
        return False
    if before is not None and before.get("reason") != after["reason"]:
        return False  # another step than the one the status shows (Throttled -> Enabling): news
    if after["reason"] in FAILURE_REASONS:
        return False
    return live.get("observedGeneration") in (None, desired.get("observedGeneration"))

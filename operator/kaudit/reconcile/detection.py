"""The operator's side of ``spec.detection``: the DetectionCoverage condition and the refusal.

The reconciler asks :meth:`DetectionGate.assess` once the policy is rendered and before anything
is applied. The required rules are the pack rules ``spec.detection.packRules`` names plus the
user's own rules from ``spec.detection.configMapRef`` (a ConfigMap in the operator namespace,
found by listing that namespace: the operator's ClusterRole lists ConfigMaps, and no ``get`` is
added for this). Coverage (:func:`kaudit.detect.required.assess`) costs seconds of CPU for the
whole pack under the larger profiles, so it runs in a worker thread and its result is kept per
(policy hash, rules, mode): a resync or a drift repair with an unchanged policy costs nothing.

In ``Refuse`` mode a policy under which a required rule is blind is refused: the reconciler
reports it as it reports an invalid policy (PolicyValid False, the last good policy and status
kept, nothing applied). DetectionCoverage never decides Ready by itself: in ``Report`` mode a
blind rule is reported, not enforced.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Callable, Protocol

from kaudit.api.spec import DetectionSpec
from kaudit.conditions import Condition
from kaudit.detect.required import (
    CONDITION, Assessment, assess, invalid_rules, pack_required, rules_from_config_map,
)
from kaudit.detect.sync import Credentials
from kaudit.errors import InvalidInput
from kaudit.k8s import resources as r

CACHE_SIZE = 32


class Lister(Protocol):
    async def list(self, resource: r.Resource, *, namespace: str | None = None,
                   label_selector: str | None = None) -> list[dict[str, Any]]: ...


def _fingerprint(rules: list[Any]) -> str:
    from kaudit.detect.render import rule_to_api

    text = json.dumps([rule_to_api(rule) for rule in rules], sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()


class DetectionGate:
    def __init__(self, client: Lister, namespace: str) -> None:
        self.client = client
        self.namespace = namespace
        self._cache: OrderedDict[tuple[str, str, str], Assessment] = OrderedDict()

    async def _rules(self, spec: DetectionSpec) -> list[Any]:
        rules = pack_required(spec)
        if spec.config_map is not None:
            ref = spec.config_map
            found = [cm for cm in await self.client.list(r.CONFIG_MAPS, namespace=self.namespace)
                     if (cm.get("metadata") or {}).get("name") == ref.name]
            rules += rules_from_config_map(found[0] if found else None, ref, self.namespace)
        return rules

    async def assess(self, spec: DetectionSpec | None, policy_text: str, policy_hash: str,
                     short_hash: str, name: str = "") -> Assessment | None:
        """The assessment of the collection's required rules under the rendered policy (``name``
        in messages, default "policy SHORT_HASH"); None without ``spec.detection``."""
        if spec is None:
            return None
        try:
            rules = await self._rules(spec)
        except InvalidInput as exc:
            return invalid_rules(exc)
        key = (policy_hash, _fingerprint(rules), spec.mode)
        cached = self._cache.get(key)
        if cached is not None:
            self._cache.move_to_end(key)
            return cached
        result = await asyncio.to_thread(_assess_text, policy_text, rules, spec, name or f"policy {short_hash}")
        self._cache[key] = result
        while len(self._cache) > CACHE_SIZE:
            self._cache.popitem(last=False)
        return result


def _assess_text(policy_text: str, rules: list[Any], spec: DetectionSpec, name: str) -> Assessment:
    from kaudit.policy.loader import load_policy

    loaded = load_policy(policy_text).policy
    if loaded is None:  # a rendered policy always loads; kept as a guard, not a code path users see
        raise ValueError("the rendered policy does not load")
    return assess(loaded, rules, spec, name)


def detection_condition(assessment: Assessment) -> Condition:
    return Condition(CONDITION, assessment.status, assessment.reason, assessment.message)


SYNC_CONDITION = "DetectionRulesSynced"
SYNC_INTERVAL = 300.0  # seconds between syncs of unchanged rules: how soon drift in Datadog is put back


@dataclass(frozen=True)
class SyncSettings:
    """``kaudit run --detection-sync``: keep the required rules in Datadog (kaudit.detect.sync)."""

    credentials: Credentials
    site: str = "datadoghq.com"
    owner: str = ""  # default: the cluster, else the collection's name
    cluster: str = ""  # kube_cluster_name the queries are scoped to; "" for unscoped rules
    dry_run: bool = False
    url: str = ""  # the API's base URL instead of the site's (a proxy, a test server)
    interval: float = SYNC_INTERVAL


class RuleSync:
    """Syncs a collection's required rules, at most every ``interval`` while they are unchanged
    (every reconcile would otherwise read the whole organisation's rules)."""

    def __init__(self, settings: SyncSettings, clock: Callable[[], float] = time.monotonic) -> None:
        self.settings = settings
        self.clock = clock
        self._last: tuple[str, float, Condition] | None = None

    async def run(self, collection: str, rules: list[Any]) -> Condition:
        settings = self.settings
        owner = settings.owner or settings.cluster or collection
        key = f"{owner}:{_fingerprint(rules)}"
        now = self.clock()
        if self._last is not None and self._last[0] == key and now - self._last[1] < settings.interval:
            return self._last[2]
        condition = await asyncio.to_thread(_sync, settings, owner, rules)
        self._last = (key, now, condition)
        return condition


def _sync(settings: SyncSettings, owner: str, rules: list[Any]) -> Condition:
    from kaudit.detect.sync import SYNC_FAILED, DatadogRulesApi, SyncError, summary, sync

    api = DatadogRulesApi(settings.credentials, site=settings.site, url=settings.url)
    try:
        status, reason, message = summary(sync(api, rules, owner, settings.cluster, dry_run=settings.dry_run))
    except SyncError as exc:
        status, reason, message = "False", SYNC_FAILED, str(exc)
    finally:
        api.close()
    return Condition(SYNC_CONDITION, status, reason, message)


__all__ = ["CONDITION", "SYNC_CONDITION", "DetectionGate", "RuleSync", "SyncSettings", "detection_condition"]

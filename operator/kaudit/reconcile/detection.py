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
from collections import OrderedDict
from typing import Any, Protocol

from kaudit.api.spec import DetectionSpec
from kaudit.detect.required import (
    CONDITION, Assessment, assess, invalid_rules, pack_required, rules_from_config_map,
)
from kaudit.errors import InvalidInput
from kaudit.k8s import resources as r
from kaudit.reconcile.status import Condition

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
                     short_hash: str) -> Assessment | None:
        """The assessment of the collection's required rules under the rendered policy; None
        without ``spec.detection``."""
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
        result = await asyncio.to_thread(_assess_text, policy_text, rules, spec, f"policy {short_hash}")
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


__all__ = ["CONDITION", "DetectionGate", "detection_condition"]

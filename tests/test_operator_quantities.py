"""Resource quantities: the API server's canonical spelling of what kaudit sent is not drift.

Expected amounts follow the quantity grammar and examples documented in k8s.io/apimachinery's
pkg/api/resource/quantity.go (``1.5`` is serialised as ``1500m``, ``1.5Gi`` as ``1536Mi``;
``1000m`` reads back as ``1`` and ``0.5`` as ``500m``; values finer than 1n are rounded up).
"""

from __future__ import annotations

import copy
from fractions import Fraction

import pytest

from kaudit.k8s.quantity import parse_quantity, same_quantity
from kaudit.reconcile import plan
from kaudit.render import render
from operator_support import collection


@pytest.mark.parametrize("text, amount", [
    ("1", Fraction(1)), ("1000m", Fraction(1)), ("500m", Fraction(1, 2)), ("0.5", Fraction(1, 2)),
    (".5", Fraction(1, 2)), ("1.", Fraction(1)), ("+2", Fraction(2)), ("-1k", Fraction(-1000)),
    ("1Ki", Fraction(1024)), ("1536Mi", Fraction(1536 * 2**20)), ("1.5Gi", Fraction(3 * 2**29)),
    ("1e3", Fraction(1000)), ("1E-3", Fraction(1, 1000)), ("1E", Fraction(10**18)), ("2M", Fraction(2 * 10**6)),
    ("100u", Fraction(1, 10**4)), ("1n", Fraction(1, 10**9)), ("0.1n", Fraction(1, 10**9)), (3, Fraction(3)),
])
def test_parse_quantity(text, amount):
    assert parse_quantity(text) == amount


@pytest.mark.parametrize("text", ["", "m", "1.5.5", "1 Gi", "1GB", "1ki", "abc", "1e", "--1", None, True, 1.5])
def test_not_a_quantity(text):
    assert parse_quantity(text) is None


def test_same_quantity_compares_amounts():
    assert same_quantity("1", "1000m") and same_quantity("500m", "0.5") and same_quantity("1536Mi", "1.5Gi")
    assert not same_quantity("1", "1001m") and not same_quantity("1Gi", "1G")
    assert same_quantity("not-a-quantity", "not-a-quantity") and not same_quantity("x", "y")


def canonical(live: dict) -> dict:
    """What the API server hands back for the managed agent DaemonSet: quantities re-spelt."""
    spelt = {"1000m": "1", "0.5": "500m", "2048Mi": "2Gi"}
    result = copy.deepcopy(live)
    for container in result["spec"]["template"]["spec"]["containers"]:
        for part in (container.get("resources") or {}).values():
            for name, value in part.items():
                part[name] = spelt.get(value, value)
    return result


def test_canonicalised_quantities_are_not_drift_and_a_changed_amount_is():
    spec = {"agent": {"mode": "Managed", "managed": {"resources": {
        "requests": {"cpu": "0.5", "memory": "2048Mi"}, "limits": {"cpu": "1000m"}}}}}
    owner = collection(spec=spec)
    objects = render(owner, namespace="kaudit-system", image="kaudit/kaudit:test").objects
    agent = next(o for o in objects if o["kind"] == "DaemonSet" and o["metadata"]["name"].endswith("-agent"))
    desired = plan.stamp(plan.with_owner(agent, owner))
    live = canonical(desired)
    assert live != desired  # the test exercises a re-spelling
    assert not plan.needs_apply(desired, live)  # a resync writes nothing
    result = plan.plan_writes(owner=owner, objects=[agent], patches=[], live_children=[live], live_targets={})
    assert result.empty
    live["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"]["cpu"] = "2"
    assert plan.needs_apply(desired, live)  # someone changed the amount: drift


def test_only_resource_maps_compare_by_amount():
    # Elsewhere "1" and "1000m" are different strings (an env value, an annotation).
    assert not plan.contains({"env": [{"name": "A", "value": "1"}]}, {"env": [{"name": "A", "value": "1000m"}]})
    assert plan.contains({"resources": {"limits": {"cpu": "1"}}}, {"resources": {"limits": {"cpu": "1000m"}}})


def test_a_malformed_quantity_is_refused_with_its_field_path():
    # "1GB" is no Kubernetes quantity: the API server would refuse every apply of the agent.
    from kaudit.errors import InvalidInput

    spec = {"agent": {"mode": "Managed", "managed": {"resources": {"limits": {"memory": "1GB"}}}}}
    with pytest.raises(InvalidInput) as caught:
        render(collection(spec=spec), namespace="kaudit-system", image="kaudit/kaudit:test")
    assert [e.path for e in caught.value.errors] == ["spec.agent.managed.resources.limits.memory"]

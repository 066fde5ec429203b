"""The Reconciler on its own: typed inputs and an in-memory storage, no kopf and no API server."""

from __future__ import annotations

import copy
from typing import Any, Mapping

from kaudit.api.resource import CollectionResource, parse_resource
from kaudit.k8s import resources as r
from kaudit.k8s.resources import Resource
from kaudit.reconcile.service import OperatorConfig, Reconciler

JSON = dict[str, Any]
Key = tuple[str, str | None, str]


class MemoryStorage:
    """Objects in a dict by (plural, namespace, name); records every write.

    Enough of the API server for a reconcile: an apply stores the body as sent (kaudit's own
    objects are complete), a merge patch merges, a label selector is ``key=value`` or ``key``.
    """

    def __init__(self, *objects: JSON) -> None:
        self.objects: dict[Key, JSON] = {}
        self.writes: list[tuple[str, Key]] = []
        self.events: list[JSON] = []
        for obj in objects:
            self.objects[self._key(obj)] = copy.deepcopy(obj)

    @staticmethod
    def _key(body: Mapping[str, Any]) -> Key:
        meta = body["metadata"]
        return r.resource_of(dict(body)).plural, meta.get("namespace"), meta["name"]

    async def get(self, resource: Resource, namespace: str | None, name: str) -> JSON | None:
        found = self.objects.get((resource.plural, namespace, name))
        return copy.deepcopy(found) if found is not None else None

    async def list(self, resource: Resource, *, namespace: str | None = None,
                   label_selector: str | None = None) -> list[JSON]:
        key, _, value = (label_selector or "").partition("=")

        def selected(obj: JSON) -> bool:
            labels = obj["metadata"].get("labels") or {}
            return not key or (key in labels and (not value or labels[key] == value))

        return [copy.deepcopy(obj) for (plural, ns, _), obj in self.objects.items()
                if plural == resource.plural and (namespace is None or ns == namespace) and selected(obj)]

    async def apply(self, body: JSON, *, force: bool = True) -> JSON:
        key = self._key(body)
        self.writes.append(("apply", key))
        self.objects[key] = copy.deepcopy(body)
        return copy.deepcopy(body)

    async def merge_patch(self, resource: Resource, namespace: str | None, name: str, patch: Mapping[str, Any], *,
                          subresource: str | None = None, retry_conflicts: bool = True) -> JSON | None:
        key = (resource.plural, namespace, name)
        self.writes.append((f"patch {subresource or ''}".strip(), key))
        if key not in self.objects:
            return None
        _merge(self.objects[key], patch)
        return copy.deepcopy(self.objects[key])

    async def json_patch(self, resource: Resource, namespace: str | None, name: str,
                         operations: list[JSON]) -> JSON | None:
        raise AssertionError("kaudit's own objects need no JSON patch")

    async def delete(self, resource: Resource, namespace: str | None, name: str) -> bool:
        self.writes.append(("delete", (resource.plural, namespace, name)))
        return self.objects.pop((resource.plural, namespace, name), None) is not None

    async def create(self, resource: Resource, namespace: str | None, body: JSON) -> JSON:
        self.events.append(body)
        return body


def _merge(target: JSON, patch: Mapping[str, Any]) -> None:
    for key, value in patch.items():
        if value is None:
            target.pop(key, None)
        elif isinstance(value, Mapping) and isinstance(target.get(key), dict):
            _merge(target[key], value)
        else:
            target[key] = copy.deepcopy(value)


def collection(name: str = "cluster", agent: JSON | None = None, created: str = "2026-01-01T00:00:00Z") -> JSON:
    return {"apiVersion": "kaudit.dev/v1alpha1", "kind": "AuditCollection",
            "metadata": {"name": name, "uid": f"uid-{name}", "generation": 1, "creationTimestamp": created},
            "spec": {"apiServer": {"installPolicy": False}, "agent": agent or {"mode": "Managed"}}}


def live(storage: MemoryStorage, name: str = "cluster") -> CollectionResource:
    body = storage.objects[("auditcollections", None, name)]
    return parse_resource(body)


def conditions(storage: MemoryStorage, name: str = "cluster") -> dict[str, JSON]:
    status = storage.objects[("auditcollections", None, name)].get("status") or {}
    return {c["type"]: c for c in status.get("conditions") or []}


async def test_a_managed_collection_is_applied_once_then_left_alone():
    storage = MemoryStorage(collection())
    reconciler = Reconciler(storage, OperatorConfig(namespace="ops"), clock=lambda: "2026-01-01T00:00:00Z")
    first = await reconciler.reconcile(live(storage))
    applied = sorted(key for kind, key in storage.writes if kind == "apply")
    # Managed mode without the installer: the policy ConfigMap in the operator namespace, the agent's
    # log configuration, its ServiceAccount and its DaemonSet in the agent namespace.
    assert applied == [("configmaps", "datadog", "kaudit-cluster-agent-config"), ("configmaps", "ops", "kaudit-cluster-policy"),
                       ("daemonsets", "datadog", "kaudit-cluster-agent"), ("serviceaccounts", "datadog", "kaudit-cluster-agent")]
    assert first.writes == len(storage.writes)  # 4 applies, the policy approval, the status
    assert conditions(storage)["PolicyValid"]["status"] == "True"
    policy = storage.objects[("auditcollections", None, "cluster")]["status"]["policy"]
    config_map = storage.objects[("configmaps", "ops", "kaudit-cluster-policy")]
    assert config_map["metadata"]["annotations"]["kaudit.dev/policy-hash"] == policy["fullHash"]
    assert config_map["metadata"]["ownerReferences"][0]["uid"] == "uid-cluster"

    before = len(storage.writes)
    second = await Reconciler(storage, OperatorConfig(namespace="ops"),
                              clock=lambda: "2026-01-01T00:01:00Z").reconcile(live(storage))
    assert second.writes == 0 and len(storage.writes) == before


async def test_an_invalid_spec_writes_only_status_and_keeps_the_last_good_policy():
    storage = MemoryStorage(collection())
    reconciler = Reconciler(storage, OperatorConfig(namespace="ops"), clock=lambda: "2026-01-01T00:00:00Z")
    await reconciler.reconcile(live(storage))
    good = copy.deepcopy(storage.objects[("auditcollections", None, "cluster")]["status"])
    objects = {key: copy.deepcopy(obj) for key, obj in storage.objects.items() if key[0] != "auditcollections"}

    storage.objects[("auditcollections", None, "cluster")]["spec"]["agent"]["namespace"] = "Not A Namespace"
    before = len(storage.writes)
    outcome = await reconciler.reconcile(live(storage))
    assert [kind for kind, _ in storage.writes[before:]] == ["patch status"]
    assert {key: obj for key, obj in storage.objects.items() if key[0] != "auditcollections"} == objects
    status = storage.objects[("auditcollections", None, "cluster")]["status"]
    assert status["policy"] == good["policy"] and status["apiServerFlags"] == good["apiServerFlags"]
    assert outcome.reason == "InvalidSpec" and not outcome.ready
    assert "spec.agent.namespace" in conditions(storage)["AgentConfigured"]["message"]


async def test_a_second_collection_changes_nothing_while_the_first_is_active():
    older, newer = collection("first", created="2026-01-01T00:00:00Z"), collection("second", created="2026-01-02T00:00:00Z")
    storage = MemoryStorage(older, newer)
    reconciler = Reconciler(storage, OperatorConfig(namespace="ops"))
    outcome = await reconciler.reconcile(live(storage, "second"), others=[live(storage, "first").meta])
    assert [kind for kind, _ in storage.writes] == ["patch status"]
    assert outcome.reason == "Conflict"
    assert "'first' is already active" in conditions(storage, "second")["PolicyValid"]["message"]

"""The pure decision: given what the renderer wants and what the cluster has, which writes to make.

Nothing here talks to the API; every function takes and returns plain dicts, so each rule is
unit-tested on its own and the async service (``service.py``) stays a thin sequence of calls.

Quiet when converged: an object is re-applied only when its ``kaudit.dev/applied-hash`` annotation
differs from the hash of what kaudit would send now (the rendering changed, including fields that
are no longer wanted), or when the live object no longer contains what kaudit sent (someone edited
or deleted it: drift). Otherwise the plan is empty and the reconcile writes nothing.
"""

from __future__ import annotations

import copy
import hashlib
import json
from dataclasses import dataclass, field
from typing import Any, Iterable

from kaudit.k8s.quantity import same_quantity
from kaudit.k8s.resources import FIELD_MANAGER, identity

COLLECTION_LABEL = "kaudit.dev/collection"
APPLIED_HASH_ANNOTATION = "kaudit.dev/applied-hash"
# For lists Kubernetes treats as one value (``listType=atomic``): which items kaudit added, so
# that a release can give the user back exactly their own list.
ADDED_ITEMS_ANNOTATION = "kaudit.dev/added-items"
# For single values kaudit sets over the user's (DD_LOGS_ENABLED=false on a Helm agent): the
# user's value by path, so that the user's view and the hand-back can give it back.
REPLACED_VALUES_ANNOTATION = "kaudit.dev/replaced-values"

# PodSpec.tolerations is an atomic list (``listType=atomic``): whoever applies it owns all of it,
# so the renderer sends the user's tolerations plus the missing control-plane ones. The same holds
# for the DatadogAgent's ``override.nodeAgent.tolerations``; its volumes and volume mounts are
# keyed lists there, so kaudit's items come and go on their own.
ATOMIC_LISTS: dict[tuple[str, str], tuple[tuple[str, ...], ...]] = {
    ("apps/v1", "DaemonSet"): (("spec", "template", "spec", "tolerations"),),
    ("datadoghq.com/v2alpha1", "DatadogAgent"): (("spec", "override", "nodeAgent", "tolerations"),),
}

# A container's ``resources`` maps whose values are quantities.
QUANTITY_MAPS = ("limits", "requests")

# Keys that identify an item in the associative lists kaudit renders (``listType=map``).
MERGE_KEYS = ("name", "mountPath", "containerPort", "uid")

Key = tuple[str, str, "str | None", str]


@dataclass(frozen=True)
class Plan:
    applies: tuple[dict[str, Any], ...] = ()  # complete SSA bodies, owned objects first
    deletes: tuple[Key, ...] = ()  # owned objects the rendering no longer contains
    releases: tuple[dict[str, Any], ...] = ()  # live objects kaudit patched and no longer should

    @property
    def empty(self) -> bool:
        return not (self.applies or self.deletes or self.releases)


@dataclass(frozen=True)
class Release:
    """How to hand a patched object back: restore atomic lists and replaced values, then an empty apply."""

    restore: dict[str, Any] | None  # a JSON merge patch, or None when no atomic list needs restoring
    apply: dict[str, Any]  # the (almost) empty SSA body: kaudit then manages no field of the object
    key: Key = field(default=("", "", None, ""))
    values: tuple[tuple[tuple[str, ...], Any], ...] = ()  # (path, the user's value) to put back


# --- hashing and ownership ----------------------------------------------------------------------


def content_hash(body: dict[str, Any]) -> str:
    """sha256 of the body as kaudit sends it, ignoring the hash annotation itself."""
    clean = copy.deepcopy(body)
    annotations = clean.get("metadata", {}).get("annotations") or {}
    annotations.pop(APPLIED_HASH_ANNOTATION, None)
    if not annotations:
        clean.get("metadata", {}).pop("annotations", None)
    text = json.dumps(clean, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


def stamp(body: dict[str, Any]) -> dict[str, Any]:
    stamped = copy.deepcopy(body)
    digest = content_hash(stamped)
    stamped.setdefault("metadata", {}).setdefault("annotations", {})[APPLIED_HASH_ANNOTATION] = digest
    return stamped


def owner_reference(owner: dict[str, Any]) -> dict[str, Any]:
    meta = owner["metadata"]
    return {
        "apiVersion": owner["apiVersion"],
        "kind": owner["kind"],
        "name": meta["name"],
        "uid": meta["uid"],
        "controller": True,
        "blockOwnerDeletion": True,
    }


def with_owner(body: dict[str, Any], owner: dict[str, Any]) -> dict[str, Any]:
    owned = copy.deepcopy(body)
    owned.setdefault("metadata", {})["ownerReferences"] = [owner_reference(owner)]
    return owned


def is_owned_by(body: dict[str, Any], owner_uid: str) -> bool:
    refs = (body.get("metadata") or {}).get("ownerReferences") or []
    return any(ref.get("uid") == owner_uid for ref in refs)


def is_owned_by_a_collection(body: dict[str, Any]) -> bool:
    """Owned by some AuditCollection: an object kaudit created, never one it only patched."""
    refs = (body.get("metadata") or {}).get("ownerReferences") or []
    return any(ref.get("kind") == "AuditCollection" for ref in refs)


def key_of(body: dict[str, Any]) -> Key:
    return identity(body)


# --- comparison -----------------------------------------------------------------------------------


def contains(live: Any, desired: Any, path: tuple[str, ...] = ()) -> bool:
    """Whether ``live`` still holds everything in ``desired`` (extra live fields are fine).

    Lists of objects with a merge key (``name``, ``mountPath``...) are matched item by item on that
    key, as the API server merges them, so a user's other containers or env vars do not count as
    drift. Other lists are compared whole, in order. Resource quantities (``resources.limits`` and
    ``resources.requests`` of a container) are compared by amount: the API server stores them in
    canonical form (``1000m`` reads back as ``1``), which is not a change.
    """
    if isinstance(desired, dict):
        if not isinstance(live, dict):
            return False
        return all(key in live and contains(live[key], value, (*path[-2:], key)) for key, value in desired.items())
    if isinstance(desired, list):
        if not isinstance(live, list):
            return False
        merge_key = _merge_key(desired)
        if merge_key is None:
            return len(live) == len(desired) and all(contains(l, d) for l, d in zip(live, desired))
        by_key = {item.get(merge_key): item for item in live if isinstance(item, dict)}
        return all(
            item[merge_key] in by_key and contains(by_key[item[merge_key]], item) for item in desired
        )
    if len(path) == 3 and path[0] == "resources" and path[1] in QUANTITY_MAPS:
        return same_quantity(live, desired)
    return bool(live == desired)


def _merge_key(items: list[Any]) -> str | None:
    if not items or not all(isinstance(item, dict) for item in items):
        return None
    for key in MERGE_KEYS:
        if all(key in item for item in items):
            return key
    return None


def needs_apply(desired: dict[str, Any], live: dict[str, Any] | None) -> bool:
    """``desired`` must be stamped (see :func:`stamp`)."""
    if live is None:
        return True
    wanted = desired["metadata"]["annotations"][APPLIED_HASH_ANNOTATION]
    have = ((live.get("metadata") or {}).get("annotations") or {}).get(APPLIED_HASH_ANNOTATION)
    return have != wanted or not contains(live, desired)


# --- objects kaudit does not own ------------------------------------------------------------------


def _get_path(obj: Any, path: Iterable[str]) -> Any:
    for step in path:
        if isinstance(obj, dict):
            obj = obj.get(step)
        elif isinstance(obj, list):  # a named item, e.g. containers → "agent"
            obj = next((item for item in obj if isinstance(item, dict) and item.get("name") == step), None)
        else:
            return None
    return obj


def _path_text(path: tuple[str, ...]) -> str:
    return "." + ".".join(path)


def added_items(live: dict[str, Any] | None) -> dict[str, list[Any]]:
    raw = ((live or {}).get("metadata") or {}).get("annotations", {}).get(ADDED_ITEMS_ANNOTATION)
    try:
        parsed = json.loads(raw) if raw else {}
    except ValueError:
        return {}
    return parsed if isinstance(parsed, dict) else {}


def user_items(live: dict[str, Any] | None, path: tuple[str, ...]) -> list[Any]:
    """The items of an atomic list that are the user's (not added by kaudit).

    A list another manager applied since (a helm upgrade puts the chart's list back) is all theirs.
    """
    current = _get_path(live, path) or []
    if owned_by_others(live, path):
        return list(current)
    ours = added_items(live).get(_path_text(path), [])
    return [item for item in current if item not in ours]


# --- field ownership (metadata.managedFields) -----------------------------------------------------


def _is_kaudit_apply(entry: dict[str, Any]) -> bool:
    return entry.get("manager") == FIELD_MANAGER and entry.get("operation") == "Apply"


def _field_keys(live: Any, path: tuple[str, ...]) -> list[str] | None:
    """The fieldsV1 keys of ``path`` (named list items as ``k:{"name":...}``), or None if absent."""
    keys: list[str] = []
    node = live
    for step in path:
        if isinstance(node, list):
            node = next((item for item in node if isinstance(item, dict) and item.get("name") == step), None)
            keys.append("k:" + json.dumps({"name": step}, separators=(",", ":")))
        elif isinstance(node, dict):
            node = node.get(step)
            keys.append(f"f:{step}")
        else:
            return None
        if node is None:
            return None
    return keys


def _tree_has(tree: dict[str, Any], keys: list[str]) -> bool:
    for key in keys:
        if not isinstance(tree, dict) or key not in tree:
            return False
        tree = tree[key]
    return True


def owned_by_others(live: dict[str, Any] | None, path: tuple[str, ...]) -> bool:
    """Whether a manager other than kaudit's apply owns the field at ``path`` of ``live``."""
    keys = _field_keys(live, path)
    if not keys:
        return False
    return any(_tree_has(m.get("fieldsV1") or {}, keys)
               for m in ((live or {}).get("metadata") or {}).get("managedFields") or []
               if not _is_kaudit_apply(m) and not m.get("subresource"))


def replaced_values(obj: dict[str, Any] | None) -> list[tuple[tuple[str, ...], Any]]:
    raw = ((obj or {}).get("metadata") or {}).get("annotations", {}).get(REPLACED_VALUES_ANNOTATION)
    try:
        parsed = json.loads(raw) if raw else []
    except ValueError:
        return []
    return [(tuple(entry[0]), entry[1]) for entry in parsed
            if isinstance(entry, list) and len(entry) == 2 and isinstance(entry[0], list)]


def _leaves(obj: Any, path: tuple[str, ...] = ()) -> Iterable[tuple[tuple[str, ...], Any]]:
    """Scalar leaves of an apply body, list items stepped by name (containers, env)."""
    if isinstance(obj, dict):
        for key, value in obj.items():
            yield from _leaves(value, (*path, key))
    elif isinstance(obj, list):
        for item in obj:
            if isinstance(item, dict) and isinstance(item.get("name"), str):
                yield from _leaves({k: v for k, v in item.items() if k != "name"}, (*path, item["name"]))
    else:
        yield path, obj


def record_replaced_values(patch: dict[str, Any], live: dict[str, Any] | None) -> dict[str, Any]:
    """Annotate ``patch`` with the user's values it sets to something else (atomic lists aside)."""
    atomic = ATOMIC_LISTS.get((patch.get("apiVersion", ""), patch.get("kind", "")), ())
    user = user_view(live)
    recorded = []
    for path, value in _leaves(patch.get("spec") or {}, ("spec",)):
        if any(path[:len(a)] == a for a in atomic):
            continue
        theirs = _get_path(user, path)
        if theirs is not None and not isinstance(theirs, (dict, list)) and theirs != value:
            recorded.append([list(path), theirs])
    result = copy.deepcopy(patch)
    if recorded:
        annotations = result.setdefault("metadata", {}).setdefault("annotations", {})
        annotations[REPLACED_VALUES_ANNOTATION] = json.dumps(recorded, sort_keys=True, separators=(",", ":"))
    return result


def yielded_paths(desired: dict[str, Any]) -> list[tuple[str, ...]]:
    """Fields kaudit sets over another manager's value and must not keep owning.

    Server-side apply with force moves such a field to kaudit; the next apply of the user's own
    manager (a helm upgrade, Helm 4 applies server-side without force) would then fail with a
    conflict. Owned by nobody after kaudit's write, the field goes back to the user's manager on
    its next apply without a conflict; kaudit sees the change as drift and sets it again.
    """
    paths = [path for path, _ in replaced_values(desired)]
    added = added_items(desired)
    # An atomic list kaudit added items to is a value over the user's too, even an empty one:
    # Helm applies the chart's `tolerations: null` and so owns the field.
    paths += [path for path in ATOMIC_LISTS.get((desired.get("apiVersion", ""), desired.get("kind", "")), ())
              if added.get(_path_text(path))]
    return paths


def yield_patch(live: dict[str, Any] | None) -> list[dict[str, Any]] | None:
    """A JSON patch that drops :func:`yielded_paths` from kaudit's managedFields entry, or None.

    ``live`` is the object as the server returned it: kaudit's annotations say which fields.
    """
    entries = ((live or {}).get("metadata") or {}).get("managedFields") or []
    index = next((i for i, m in enumerate(entries) if _is_kaudit_apply(m)), None)
    if index is None:
        return None
    tree = copy.deepcopy(entries[index].get("fieldsV1") or {})
    changed = False
    for path in yielded_paths(live or {}):
        keys = _field_keys(live, path)
        if not keys or not _tree_has(tree, keys):
            continue
        parent = tree
        for key in keys[:-1]:
            parent = parent[key]
        del parent[keys[-1]]
        changed = True
    if not changed:
        return None
    base = f"/metadata/managedFields/{index}"
    return [
        {"op": "test", "path": "/metadata/resourceVersion", "value": (live or {})["metadata"].get("resourceVersion")},
        {"op": "test", "path": f"{base}/manager", "value": FIELD_MANAGER},
        {"op": "test", "path": f"{base}/operation", "value": "Apply"},
        {"op": "replace", "path": f"{base}/fieldsV1", "value": tree},
    ]


def restore_values_patch(live: dict[str, Any] | None, values: Iterable[tuple[tuple[str, ...], Any]]) -> list[dict[str, Any]] | None:
    """A JSON patch that puts the user's replaced values back in ``live`` (by index, names tested)."""
    ops: list[dict[str, Any]] = []
    for path, original in values:
        if owned_by_others(live, path):
            continue  # the user has set it again since: theirs wins
        pointer, node, tests = "", live, list[dict[str, Any]]()
        for step in path[:-1]:
            if isinstance(node, list):
                index = next((i for i, item in enumerate(node) if isinstance(item, dict) and item.get("name") == step), None)
                if index is None:
                    break
                pointer += f"/{index}"
                tests.append({"op": "test", "path": f"{pointer}/name", "value": step})
                node = node[index]
            elif isinstance(node, dict) and step in node:
                pointer += "/" + step.replace("~", "~0").replace("/", "~1")
                node = node[step]
            else:
                break
        else:
            if isinstance(node, dict) and node.get(path[-1]) != original:
                op = "replace" if path[-1] in node else "add"
                ops += [*tests, {"op": op, "path": f"{pointer}/{path[-1]}", "value": original}]
    return ops or None


def record_added_items(patch: dict[str, Any], live: dict[str, Any] | None) -> dict[str, Any]:
    """Annotate ``patch`` with the atomic-list items kaudit adds to the user's own items."""
    recorded: dict[str, list[Any]] = {}
    for path in ATOMIC_LISTS.get((patch.get("apiVersion", ""), patch.get("kind", "")), ()):
        wanted = _get_path(patch, path)
        if not isinstance(wanted, list):
            continue
        users = user_items(live, path)
        added = [item for item in wanted if item not in users]
        if added:
            recorded[_path_text(path)] = added
    result = copy.deepcopy(patch)
    if recorded:
        annotations = result.setdefault("metadata", {}).setdefault("annotations", {})
        annotations[ADDED_ITEMS_ANNOTATION] = json.dumps(recorded, sort_keys=True, separators=(",", ":"))
    return result


def release_of(live: dict[str, Any]) -> Release:
    """Undo kaudit's patch of ``live``: restore atomic lists, then apply an empty body.

    An empty apply as field manager ``kaudit`` removes every field only kaudit manages; fields
    the user's manager also set (same value) stay. Atomic lists kaudit applied are owned by kaudit
    alone, so the empty apply would drop the user's items too: a merge patch first puts back the
    user's own items (guarded by resourceVersion against a concurrent change), then the apply.
    """
    api_version, kind, namespace, name = key_of(live)
    meta: dict[str, Any] = {"name": name}
    if namespace:
        meta["namespace"] = namespace
    apply = {"apiVersion": api_version, "kind": kind, "metadata": meta}
    restore: dict[str, Any] | None = None
    recorded = added_items(live)
    for path in ATOMIC_LISTS.get((api_version, kind), ()):
        if not recorded.get(_path_text(path)):
            continue
        current = _get_path(live, path) or []
        mine = user_items(live, path)
        if mine != current:
            restore = restore or {"metadata": {"resourceVersion": (live.get("metadata") or {}).get("resourceVersion")}}
            _set_path(restore, path, mine or None)
    return Release(restore=restore, apply=apply, key=(api_version, kind, namespace, name),
                   values=tuple(replaced_values(live)))


def _set_path(obj: dict[str, Any], path: tuple[str, ...], value: Any) -> None:
    for step in path[:-1]:
        obj = obj.setdefault(step, {})
    obj[path[-1]] = value


def user_view(live: dict[str, Any] | None, manager: str = FIELD_MANAGER) -> dict[str, Any] | None:
    """The object as its user has it: ``live`` minus the fields only ``manager`` applied.

    The renderer adapts its patch to the existing object (it reuses an existing pointdir mount,
    adds tolerations only when missing); it must see the object without kaudit's own additions,
    or the next rendering would drop them as "already there" and the two would flap.
    """
    if live is None:
        return None
    managed = (live.get("metadata") or {}).get("managedFields") or []
    ours = [m.get("fieldsV1") or {} for m in managed if m.get("manager") == manager and m.get("operation") == "Apply"]
    others = [m.get("fieldsV1") or {} for m in managed
              if not (m.get("manager") == manager and m.get("operation") == "Apply") and not m.get("subresource")]
    view = copy.deepcopy(live)
    if ours:
        theirs = _union(others)
        theirs.setdefault("f:metadata", {})  # the object keeps its metadata even if no one else lists any
        _strip(view, _union(ours), theirs)
    for path, original in replaced_values(live):
        if not owned_by_others(live, path):
            _set_named(view, path, original)
    meta = view.get("metadata") or {}
    for annotation in (APPLIED_HASH_ANNOTATION, ADDED_ITEMS_ANNOTATION, REPLACED_VALUES_ANNOTATION):
        (meta.get("annotations") or {}).pop(annotation, None)
    for path in ATOMIC_LISTS.get((live.get("apiVersion", ""), live.get("kind", "")), ()):
        if _get_path(live, path) is None:
            continue
        mine = user_items(live, path)
        if mine:
            _set_path(view, path, mine)
        else:
            parent = _get_path(view, path[:-1])
            if isinstance(parent, dict):
                parent.pop(path[-1], None)
    return view


def _set_named(obj: Any, path: tuple[str, ...], value: Any) -> None:
    """Set the leaf at ``path`` (named list items by name) if its parent exists."""
    parent = _get_path(obj, path[:-1])
    if isinstance(parent, dict):
        parent[path[-1]] = value


def _union(trees: list[dict[str, Any]]) -> dict[str, Any]:
    merged: dict[str, Any] = {}
    for tree in trees:
        for key, value in tree.items():
            merged[key] = _union([merged.get(key) or {}, value or {}]) if key in merged else (value or {})
    return merged


def _strip(obj: Any, ours: dict[str, Any], others: dict[str, Any]) -> None:
    """Remove from ``obj`` what ``ours`` (a fieldsV1 tree) owns and ``others`` does not."""
    for key, sub in ours.items():
        if key == ".":
            continue
        kind, _, name = key.partition(":")
        if kind == "f" and isinstance(obj, dict) and name in obj:
            if key not in others:
                del obj[name]
            elif sub:
                _strip(obj[name], sub, others[key])
        elif kind == "k" and isinstance(obj, list):
            try:
                wanted = json.loads(name)
            except ValueError:
                continue
            for index, item in enumerate(obj):
                if isinstance(item, dict) and all(item.get(k) == v for k, v in wanted.items()):
                    if key not in others:
                        del obj[index]
                    elif sub:
                        _strip(item, sub, others[key])
                    break
        elif kind == "v" and isinstance(obj, list) and key not in others:
            try:
                value = json.loads(name)
            except ValueError:
                continue
            if value in obj:
                obj.remove(value)


# --- the plan -------------------------------------------------------------------------------------


def plan_writes(
    *,
    owner: dict[str, Any],
    objects: Iterable[dict[str, Any]],
    patches: Iterable[dict[str, Any]],
    live_children: Iterable[dict[str, Any]],
    live_targets: dict[Key, dict[str, Any] | None],
) -> Plan:
    """Which applies, deletions and releases turn the live state into the rendered one.

    ``live_children``: every live object labelled ``kaudit.dev/collection=<owner>``;
    ``live_targets``: the live objects the patches are for (found by name, labelled or not).
    """
    owner_uid = owner["metadata"]["uid"]
    children = {key_of(child): child for child in live_children}
    applies: list[dict[str, Any]] = []
    wanted_keys: set[Key] = set()
    for obj in objects:
        desired = stamp(with_owner(obj, owner))
        key = key_of(desired)
        wanted_keys.add(key)
        if needs_apply(desired, children.get(key)):
            applies.append(desired)
    for patch in patches:
        key = key_of(patch)
        wanted_keys.add(key)
        live = live_targets.get(key, children.get(key))
        desired = stamp(record_replaced_values(record_added_items(patch, live), live))
        if needs_apply(desired, live):
            applies.append(desired)
    deletes: list[Key] = []
    releases: list[dict[str, Any]] = []
    for key, child in sorted(children.items(), key=lambda item: tuple(str(part) for part in item[0])):
        if key in wanted_keys:
            continue
        if is_owned_by(child, owner_uid):
            deletes.append(key)
        elif not is_owned_by_a_collection(child):
            releases.append(child)
        # else: left over from an earlier collection of the same name; the garbage collector removes
        # it with its owner, and it holds nothing of the user's to hand back.
    return Plan(applies=tuple(applies), deletes=tuple(deletes), releases=tuple(releases))

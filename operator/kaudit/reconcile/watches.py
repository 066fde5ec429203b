"""kaudit's own watches in the operator's namespace: the installer's Role and RoleBinding, and the
node reports (Leases).

kopf's watches are cluster-wide, which would need a cluster-wide read of every Role and Lease;
these need list and watch in one namespace only. Each change reconciles the collection named by
the object's ``kaudit.dev/collection`` label, through the steps the handlers share (``runtime.py``).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Awaitable, Callable, Coroutine

from kaudit.k8s import resources as r
from kaudit.reconcile import runtime
from kaudit.reconcile.runtime import OperatorMemo
from kaudit.reconcile.plan import COLLECTION_LABEL
from kaudit.reconcile.storage import JSON

logger = logging.getLogger("kaudit.operator")

WATCH_RETRY_DELAY = 0.5  # first wait before opening a failed namespaced watch again; doubles
WATCH_RETRY_MAX_DELAY = 60.0

OnList = Callable[[OperatorMemo, list[JSON], bool], Awaitable[None]]
OnEvent = Callable[[OperatorMemo, str, JSON], Awaitable[None]]
ReportState = tuple[str, tuple[tuple[str, str], ...]]


def operator_namespace_watches(memo: OperatorMemo) -> list[Coroutine[None, None, None]]:
    """The watches to run for the operator's lifetime."""
    watches = [watch_in_operator_namespace(memo, resource, ignore_listing, child_in_namespace_changed)
               for resource in r.OPERATOR_NAMESPACE_CHILDREN]
    watches.append(watch_in_operator_namespace(memo, r.LEASES, reports_listed, report_changed))
    return watches


async def watch_in_operator_namespace(memo: OperatorMemo, resource: r.Resource, on_list: OnList,
                                      on_event: OnEvent) -> None:
    """List, then watch from the list's resourceVersion, the objects of ``resource`` labelled
    kaudit.dev/collection in the operator's namespace, forever.

    ``on_list(memo, items, first)`` sees each listing (the first one at start, later ones after a
    watch the server could not resume, e.g. 410 Gone, when events may have been missed);
    ``on_event(memo, type, object)`` each event. A watch the server ended (timeoutSeconds)
    resumes from the last version seen.
    """
    namespace = memo.options.config.namespace
    delay = WATCH_RETRY_DELAY
    first = True
    while True:
        try:
            client = runtime.client(memo)
            items, version = await client.list_versioned(resource, namespace=namespace,
                                                         label_selector=COLLECTION_LABEL)
            await on_list(memo, items, first)
            first = False
            while True:
                gone = False
                async for event in client.watch(resource, namespace=namespace, label_selector=COLLECTION_LABEL,
                                                resource_version=version):
                    delay = WATCH_RETRY_DELAY
                    kind, body = event.get("type"), event.get("object") or {}
                    if kind == "ERROR":  # e.g. 410 Gone: this version cannot be resumed; list again
                        gone = True
                        break
                    version = str((body.get("metadata") or {}).get("resourceVersion") or version)
                    if kind != "BOOKMARK":
                        await on_event(memo, str(kind), body)
                if gone:
                    break
                await asyncio.sleep(WATCH_RETRY_DELAY)  # the server ended the watch: resume it
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # not logged in yet, 403 without the RBAC, connection lost
            logger.warning("watch of %s in %s failed, retrying in %.1fs: %s", resource.plural,
                           namespace, delay, exc)
            await asyncio.sleep(delay)
            delay = min(delay * 2, WATCH_RETRY_MAX_DELAY)


def owner_of(body: JSON) -> str:
    return str(((body.get("metadata") or {}).get("labels") or {}).get(COLLECTION_LABEL) or "")


async def ignore_listing(memo: OperatorMemo, items: list[JSON], first: bool) -> None:
    """Children: a listing is the state kaudit compares at every reconcile; missed drift is the resync's."""


async def child_in_namespace_changed(memo: OperatorMemo, kind: str, body: JSON) -> None:
    """Drift of the installer's Role and RoleBinding: an ADDED event is kaudit's own re-apply."""
    own = memo.state.reconciler
    if kind == "DELETED" or (kind == "MODIFIED" and not (own is not None and own.is_own_echo(body))):
        await runtime.reconcile_owner(memo, "drift", owner_of(body))


def report_state(body: JSON) -> tuple[str, ReportState]:
    """A report's name, and its collection and what it says (its annotations; renewTime alone is
    the installer's heartbeat and changes nothing)."""
    meta = body.get("metadata") or {}
    return str(meta.get("name")), (owner_of(body), tuple(sorted((meta.get("annotations") or {}).items())))


async def reports_listed(memo: OperatorMemo, items: list[JSON], first: bool) -> None:
    seen = memo.state.reports_seen
    current = dict(report_state(item) for item in items)
    owners = {state[0] for name, state in current.items() if seen.get(name) != state}
    owners |= {state[0] for name, state in seen.items() if name not in current}  # vanished
    seen.clear()
    seen.update(current)
    if first:
        return  # at start the resume handlers reconcile every collection anyway
    for owner in sorted(owners):
        await runtime.reconcile_owner(memo, "report", owner)


async def report_changed(memo: OperatorMemo, kind: str, body: JSON) -> None:
    """A node's installer wrote (or lost) its report: PolicyInstalled may change now, not at a poll."""
    seen = memo.state.reports_seen
    name, state = report_state(body)
    if kind == "DELETED":
        seen.pop(name, None)
    elif seen.get(name) == state:
        return  # a heartbeat
    else:
        seen[name] = state
    await runtime.reconcile_owner(memo, "report", state[0])

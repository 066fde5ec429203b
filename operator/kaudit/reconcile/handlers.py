"""kopf handlers: when to reconcile. What a reconcile does lives in ``service.py``.

* create / update / resume of an AuditCollection, and a slow resync as a safety net;
* drift: events of children, watched with a server-side label selector on ``kaudit.dev/collection``
  (``settings.watching.label_selectors``; a handler's ``labels=`` filter would only filter in
  memory after receiving every ConfigMap and DaemonSet of the cluster); the children that live
  only in the operator's namespace (Role, RoleBinding) and the node reports (Leases) through
  kaudit's own watches in that namespace (``watches.py``);
* delete: a finalizer only for DaemonSet/DatadogAgent modes (the ``when=`` filter decides it per
  object), which hands the user's object back; owned objects go with their owner reference.

The handlers are module-level functions on kaudit's own :data:`REGISTRY` (importing this module
touches no global kopf state): ``kopf.operator(registry=REGISTRY, memo=operator_memo(options))``.
What they share is in kopf's memo (``runtime.py``). Each handler parses kopf's body once
(:func:`kaudit.api.resource.parse_resource`) and hands typed values on.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from typing import Any

import kopf

from kaudit.platforms.eks.aws import AwsError
from kaudit.api.resource import parse_resource
from kaudit.k8s import resources as r
from kaudit.k8s.client import ApiError, TransientApiError
from kaudit.reconcile import watches
from kaudit.reconcile.bookkeeping import ProgressAnnotations
from kaudit.reconcile.plan import COLLECTION_LABEL
from kaudit.reconcile.runtime import (API_ERROR_DELAY, CollectionIndex, OperatorMemo, all_collections, close, index, metas,
                                      plain, reconcile_latest, reconciler, resync_forever, run)
from kaudit.reconcile.server import serve_metrics
from kaudit.reconcile.storage import JSON

logger = logging.getLogger("kaudit.operator")

REGISTRY = kopf.OperatorRegistry()
GROUP, VERSION, PLURAL = r.AUDIT_COLLECTIONS.group, r.AUDIT_COLLECTIONS.version, r.AUDIT_COLLECTIONS.plural
FINALIZER = "kaudit.dev/release"
WATCH_SERVER_TIMEOUT = 600  # seconds; kopf re-opens each watch after it (reads, no writes)
# Seconds a replica's keep-alive in the peering object counts (kopf's default is 60). A replica that
# dies without a goodbye (SIGKILL, a lost node) blocks the standby until then: with 20 s the standby
# takes over within about 20 s, for a keep-alive patch every 10-15 s (kopf renews 5-10 s early).
PEERING_LIFETIME = 20


# --- the handlers ------------------------------------------------------------------------------------


@kopf.on.startup(registry=REGISTRY)
def configure(settings: kopf.OperatorSettings, memo: OperatorMemo, **_: Any) -> None:
    settings.persistence.finalizer = FINALIZER
    # kopf's bookkeeping costs no write of its own (bookkeeping.py): the last handled spec in
    # memory, handler retries in kaudit's annotation domain without kopf's marker; no status.kopf.
    settings.persistence.diffbase_storage = memo.state.diffbase
    settings.persistence.progress_storage = ProgressAnnotations()
    for resource in r.CHILD_RESOURCES:
        settings.watching.label_selectors[resource.group, resource.version, resource.plural] = COLLECTION_LABEL
    # kaudit posts its own Events for changes and refusals; kopf only for its warnings.
    settings.posting.level = logging.WARNING
    # Without timeouts a watch on a half-open connection can hang unnoticed forever: ask the
    # server to end each watch, and give up on a silent one a little after that.
    settings.watching.server_timeout = WATCH_SERVER_TIMEOUT
    settings.watching.client_timeout = WATCH_SERVER_TIMEOUT + 30
    settings.watching.connect_timeout = 30
    settings.peering.lifetime = PEERING_LIFETIME


@kopf.on.login(registry=REGISTRY)
async def login(memo: OperatorMemo, **kwargs: Any) -> Any:
    info = memo.options.login(**kwargs)
    if inspect.isawaitable(info):
        info = await info
    if isinstance(info, kopf.ConnectionInfo):
        memo.state.connection_info = info
    return info


@kopf.on.cleanup(registry=REGISTRY)
async def cleanup(memo: OperatorMemo, **_: Any) -> None:
    await close(memo)


@kopf.index(GROUP, VERSION, PLURAL, id="collections", registry=REGISTRY)
def collections(name: str, body: kopf.Body, **_: Any) -> JSON:
    return {name: plain(body)}


@kopf.on.startup(registry=REGISTRY)
async def start_background(memo: OperatorMemo, collections: CollectionIndex | None = None, **_: Any) -> None:
    # kopf passes each index by its id once it is ready (always, to a startup handler); the
    # resource handlers find it in the memo.
    assert collections is not None
    state = memo.state
    state.collections = collections
    state.background.append(asyncio.create_task(resync_forever(memo, collections)))
    state.background.extend(asyncio.create_task(watch) for watch in watches.operator_namespace_watches(memo))
    if memo.options.metrics_port:
        state.background.append(asyncio.create_task(serve_metrics(state.metrics, memo.options.metrics_port)))


@kopf.on.create(GROUP, VERSION, PLURAL, registry=REGISTRY)
async def created(body: kopf.Body, memo: OperatorMemo, retry: int = 0, **_: Any) -> None:
    resource = parse_resource(plain(body))
    # kopf's bookkeeping lives in memory (bookkeeping.py), so after a restart it calls every
    # collection new; one a reconcile has reported on before is, for the metrics, a resume.
    resumed = not retry and "observedGeneration" in resource.status
    await run(memo, "resume" if resumed else "create", resource, metas(memo))


@kopf.on.update(GROUP, VERSION, PLURAL, field="spec", registry=REGISTRY)
async def updated(body: kopf.Body, memo: OperatorMemo, **_: Any) -> None:
    await run(memo, "update", parse_resource(plain(body)), metas(memo))


@kopf.on.resume(GROUP, VERSION, PLURAL, registry=REGISTRY)
async def resumed(body: kopf.Body, memo: OperatorMemo, **_: Any) -> None:
    await run(memo, "resume", parse_resource(plain(body)), metas(memo))


def needs_release(body: kopf.Body, **_: Any) -> bool:
    return parse_resource(plain(body)).patches_user_object


@kopf.on.delete(GROUP, VERSION, PLURAL, when=needs_release, registry=REGISTRY)
async def deleted(body: kopf.Body, memo: OperatorMemo, **_: Any) -> None:
    resource = parse_resource(plain(body))
    try:
        released = await reconciler(memo).release(resource)
    except TransientApiError as exc:
        raise kopf.TemporaryError(f"Kubernetes API unavailable, will retry: {exc}",
                                  delay=memo.options.transient_delay)
    except ApiError as exc:  # e.g. 403: a one-line retry notice instead of kopf's traceback
        raise kopf.TemporaryError(f"cannot hand back the patched objects yet: {exc}", delay=API_ERROR_DELAY)
    except AwsError as exc:  # platform EKS: the filter or permission stays until AWS lets kaudit remove it
        raise kopf.TemporaryError(f"cannot remove kaudit's AWS objects yet: {exc.reason}: {exc.message}",
                                  delay=API_ERROR_DELAY)
    logger.info("released %d object(s) of %s", released, resource.meta.name)


@kopf.on.event(GROUP, VERSION, PLURAL, registry=REGISTRY)
async def collection_event(type: str | None, name: str, uid: str, memo: OperatorMemo, **_: Any) -> None:
    if type is None:
        await collection_listed(memo, name, uid)
    elif type == "DELETED":
        memo.state.diffbase.forget(uid)
        await collection_gone(memo, name)


async def collection_listed(memo: OperatorMemo, name: str, uid: str) -> None:
    """kopf lists again after a peering pause or a lost watch: what happened meanwhile (a
    deleted child, while no replica was active) left no event, and kopf runs the resume
    handlers only once per process. The first listing is the resume handlers' own."""
    if uid not in memo.state.listed:
        memo.state.listed.add(uid)
        return
    await reconcile_latest(memo, "relist", name)


async def collection_gone(memo: OperatorMemo, name: str) -> None:
    # Another AuditCollection waiting in Conflict may now be the active one.
    for other in all_collections(index(memo)):
        if other["metadata"]["name"] != name:
            await run(memo, "successor", latest=other["metadata"]["name"])


async def child_changed(type: str | None, body: kopf.Body, labels: kopf.Labels, memo: OperatorMemo,
                        **_: Any) -> None:
    if type is None:  # the initial listing: resume handlers cover it
        return
    state = memo.state
    if type != "DELETED" and state.reconciler is not None and state.reconciler.is_own_echo(plain(body)):
        return  # the watch event of kaudit's own apply: nothing drifted
    await reconcile_latest(memo, "drift", str(labels.get(COLLECTION_LABEL) or ""))


for _child in r.CHILD_RESOURCES:
    kopf.on.event(_child.group, _child.version, _child.plural, labels={COLLECTION_LABEL: kopf.PRESENT},
                  id=f"drift-{_child.plural}", registry=REGISTRY)(child_changed)

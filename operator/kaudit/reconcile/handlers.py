"""kopf handlers: when to reconcile. What a reconcile does lives in ``service.py``.

* create / update / resume of an AuditCollection, and a slow timer as a safety net;
* drift: events of children, watched with a server-side label selector on ``kaudit.dev/collection``
  (``settings.watching.label_selectors``; a handler's ``labels=`` filter would only filter in
  memory after receiving every ConfigMap and DaemonSet of the cluster); the children that live
  only in the operator's namespace (Role, RoleBinding) through a watch in that namespace;
* delete: a finalizer only for DaemonSet/DatadogAgent modes (the ``when=`` filter decides it per
  object), which hands the user's object back; owned objects go with their owner reference.

Everything is registered on an explicit :class:`kopf.OperatorRegistry`, so tests and ``kaudit run``
build the same operator without import-time side effects.
"""

from __future__ import annotations

import asyncio
import copy
import datetime
import inspect
import logging
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import kopf

from kaudit.k8s import resources as r
from kaudit.k8s.client import ApiClient, ApiError, Connection, RetryPolicy, TransientApiError
from kaudit.reconcile.metrics import Metrics
from kaudit.reconcile.peering import PeeringIdentity, outranked
from kaudit.reconcile.preflight import missing_peering_message
from kaudit.reconcile.plan import COLLECTION_LABEL
from kaudit.reconcile.service import OperatorConfig, Outcome, Reconciler, patches_others_objects

logger = logging.getLogger("kaudit.operator")

GROUP, VERSION, PLURAL = r.AUDIT_COLLECTIONS.group, r.AUDIT_COLLECTIONS.version, r.AUDIT_COLLECTIONS.plural
FINALIZER = "kaudit.dev/release"
TRANSIENT_DELAY = 5.0  # seconds before kopf retries after the client's own retries gave up
API_ERROR_DELAY = 60.0  # e.g. 403 from missing RBAC: an administrator has to act first
WATCH_RETRY_DELAY = 0.5  # first wait before opening a failed namespaced watch again; doubles
WATCH_RETRY_MAX_DELAY = 60.0
WATCH_SERVER_TIMEOUT = 600  # seconds; kopf re-opens each watch after it (reads, no writes)
# Seconds a replica's keep-alive in the peering object counts (kopf's default is 60). A replica that
# dies without a goodbye (SIGKILL, a lost node) blocks the standby until then: with 20 s the standby
# takes over within about 20 s, for a keep-alive patch every 10-15 s (kopf renews 5-10 s early).
PEERING_LIFETIME = 20


def default_login(**kwargs: Any) -> Any:
    """In-cluster service account first, then KUBECONFIG / ~/.kube/config (kopf's own readers)."""
    return kopf.login_with_service_account(**kwargs) or kopf.login_with_kubeconfig(**kwargs)


@dataclass
class Runtime:
    """What the handlers share: configuration, the API client, the reconciler and metrics."""

    config: OperatorConfig = field(default_factory=OperatorConfig)
    login: Callable[..., Any] = default_login
    resync_interval: float = 300.0
    transient_delay: float = TRANSIENT_DELAY
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    force_close: bool = False  # tests: close connections at once instead of keeping them alive
    render: Callable[..., Any] | None = None
    metrics: Metrics = field(default_factory=Metrics)
    connection_info: Any = None
    background: list[asyncio.Task] = field(default_factory=list)
    rechecks: dict[str, asyncio.Task] = field(default_factory=dict)
    recheck_delay: float | None = None  # tests: instead of the service's delays per reason
    collections: Any = None  # kopf's index of AuditCollections, once the operator has started
    peering: PeeringIdentity | None = None  # None: standalone, always the active replica
    peering_missing: bool = False  # the peering object was gone at the last look (warned once)
    _reconciler: Reconciler | None = None
    _reconciler_info: Any = None

    @property
    def reconciler(self) -> Reconciler:
        if self._reconciler is not None and self._reconciler_info is not self.connection_info:
            # kopf logged in again (e.g. a rotated token after a 401): use the new credentials,
            # keeping what the reconciler remembers; the old session closes in the background.
            connection = Connection.from_connection_info(self.connection_info, force_close=self.force_close)
            old_client = self._reconciler.client
            self._reconciler.client = ApiClient(connection, retry=self.retry, observer=self.metrics.request)
            self._reconciler_info = self.connection_info
            self.background.append(asyncio.create_task(old_client.close()))
        if self._reconciler is None:
            if self.connection_info is None:
                raise kopf.TemporaryError("Not logged in to the Kubernetes API yet.", delay=1)
            connection = Connection.from_connection_info(self.connection_info, force_close=self.force_close)
            client = ApiClient(connection, retry=self.retry, observer=self.metrics.request)
            self._reconciler = Reconciler(client, self.config, render=self.render)
            self._reconciler_info = self.connection_info
        return self._reconciler

    def is_own_echo(self, child: dict) -> bool:
        return self._reconciler is not None and self._reconciler.is_own_echo(child)

    async def is_active(self) -> bool:
        """Whether kopf lets this replica work (see kaudit.reconcile.peering); kaudit's own
        background tasks ask before acting. Unreadable peering: not active (retry later)."""
        if self.peering is None:
            return True
        try:
            body = await self.reconciler.client.get(r.PEERINGS, None, self.peering.name)
        except (ApiError, kopf.TemporaryError) as exc:
            logger.warning("cannot read the peering object %s: %s", self.peering.name, exc)
            return False
        if body is None:
            # kopf pauses this replica while the object is missing (and says so only at DEBUG).
            if not self.peering_missing:
                logger.warning("paused: %s", missing_peering_message(self.peering.name))
            self.peering_missing = True
            return False
        if self.peering_missing:
            logger.info("ClusterKopfPeering %s is back", self.peering.name)
        self.peering_missing = False
        return not outranked(body, self.peering, datetime.datetime.now(datetime.timezone.utc))

    async def close(self) -> None:
        if self._reconciler is not None:
            await self._reconciler.client.close()
            self._reconciler = None


def plain(body: Any) -> dict:
    return copy.deepcopy(dict(body))


def all_collections(index: Any) -> list[dict]:
    return [value for key in index for value in index[key]]


def register(registry: kopf.OperatorRegistry, runtime: Runtime) -> None:
    collection_kwargs = dict(registry=registry)

    @kopf.on.startup(**collection_kwargs)
    def configure(settings: kopf.OperatorSettings, **_: Any) -> None:
        settings.persistence.finalizer = FINALIZER
        # kopf's bookkeeping (the last handled spec) in kaudit's own annotation domain; no status.kopf.
        settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
            prefix="kaudit.dev", key="last-handled-configuration")
        settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix="kaudit.dev")
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

    @kopf.on.login(**collection_kwargs)
    async def login(**kwargs: Any) -> Any:
        info = runtime.login(**kwargs)
        if inspect.isawaitable(info):
            info = await info
        if isinstance(info, kopf.ConnectionInfo):
            runtime.connection_info = info
        return info

    @kopf.on.cleanup(**collection_kwargs)
    async def close(**_: Any) -> None:
        for task in [*runtime.background, *runtime.rechecks.values()]:
            task.cancel()
        await runtime.close()

    @kopf.index(GROUP, VERSION, PLURAL, id="collections", **collection_kwargs)
    def collections(name: str, body: kopf.Body, **_: Any) -> dict:
        return {name: plain(body)}

    async def run(trigger: str, body: dict | None, others: list[dict], *, latest: Any = None) -> Outcome | None:
        """Reconcile ``body``, or (``latest``) the freshest state of a collection, with metrics."""
        started = time.monotonic()
        try:
            if latest is not None:
                outcome = await runtime.reconciler.reconcile_latest(latest[0], latest[1])
                if outcome is None:
                    return None
            else:
                outcome = await runtime.reconciler.reconcile(body, others=others)
        except TransientApiError as exc:
            runtime.metrics.reconciled(trigger, "error", time.monotonic() - started, 0)
            raise kopf.TemporaryError(f"Kubernetes API unavailable, will retry: {exc}", delay=runtime.transient_delay)
        except ApiError as exc:
            runtime.metrics.reconciled(trigger, "error", time.monotonic() - started, 0)
            raise kopf.TemporaryError(str(exc), delay=API_ERROR_DELAY)
        result = "ready" if outcome.ready else "not-ready"
        runtime.metrics.reconciled(trigger, result, time.monotonic() - started, outcome.writes)
        if outcome.requeue_after and outcome.name and runtime.collections is not None:
            schedule_recheck(outcome.name, runtime.recheck_delay or outcome.requeue_after)
        return outcome

    def schedule_recheck(name: str, delay: float) -> None:
        """Look again later (what no watch shows: a kube-apiserver restart, a stale report); one
        pending look per collection."""
        if name in runtime.rechecks:
            return

        async def recheck() -> None:
            await asyncio.sleep(delay)
            runtime.rechecks.pop(name, None)
            if not await runtime.is_active():
                return  # the active replica looks itself
            await reconcile_latest("recheck", runtime.collections, name)

        runtime.rechecks[name] = asyncio.create_task(recheck())

    @kopf.on.create(GROUP, VERSION, PLURAL, **collection_kwargs)
    async def created(body: kopf.Body, collections: kopf.Index, **_: Any) -> None:
        await run("create", plain(body), all_collections(collections))

    @kopf.on.update(GROUP, VERSION, PLURAL, field="spec", **collection_kwargs)
    async def updated(body: kopf.Body, collections: kopf.Index, **_: Any) -> None:
        await run("update", plain(body), all_collections(collections))

    @kopf.on.resume(GROUP, VERSION, PLURAL, **collection_kwargs)
    async def resumed(body: kopf.Body, collections: kopf.Index, **_: Any) -> None:
        await run("resume", plain(body), all_collections(collections))

    def freshest(collections: kopf.Index, name: str) -> tuple[str, Callable[[], tuple[dict | None, list[dict]]]]:
        def lookup() -> tuple[dict | None, list[dict]]:
            bodies = all_collections(collections)
            body = next((b for b in bodies if b["metadata"]["name"] == name), None)
            if body is not None and body["metadata"].get("deletionTimestamp"):
                body = None
            return body, bodies
        return name, lookup

    async def resync_forever(collections: kopf.Index) -> None:
        # A plain task rather than @kopf.timer: kopf puts a finalizer on every object a timer
        # serves, and kaudit wants one only where it has something to hand back.
        while True:
            await asyncio.sleep(runtime.resync_interval)
            if not await runtime.is_active():
                continue  # a standby: kopf stopped updating the index this would work from
            for body in all_collections(collections):
                await reconcile_latest("resync", collections, body["metadata"]["name"])

    async def reconcile_latest(trigger: str, collections: kopf.Index, name: str) -> None:
        """Reconcile the freshest state of collection ``name``, logging a failure: the callers are
        event handlers and background tasks nobody retries (the next event or the resync catches up)."""
        try:
            await run(trigger, None, [], latest=freshest(collections, name))
        except kopf.TemporaryError as exc:
            logger.warning("%s reconcile of %s failed: %s", trigger, name, exc)

    def owner_of(body: dict) -> str:
        return str(((body.get("metadata") or {}).get("labels") or {}).get(COLLECTION_LABEL) or "")

    async def reconcile_owner(trigger: str, owner: str) -> None:
        """Reconcile the collection a child or report belongs to (the active replica only)."""
        if owner and runtime.collections is not None and await runtime.is_active():
            await reconcile_latest(trigger, runtime.collections, owner)

    async def watch_in_operator_namespace(resource: r.Resource, on_list: Callable[[list[dict], bool], Any],
                                          on_event: Callable[[str, dict], Any]) -> None:
        """List, then watch from the list's resourceVersion, the objects of ``resource`` labelled
        kaudit.dev/collection in the operator's namespace, forever.

        kopf's watches are cluster-wide, which would need a cluster-wide read of every Role and
        Lease; this one needs list and watch in one namespace only. ``on_list(items, first)`` sees
        each listing (the first one at start, later ones after a watch the server could not
        resume, e.g. 410 Gone, when events may have been missed); ``on_event(type, object)`` each
        event. A watch the server ended (timeoutSeconds) resumes from the last version seen.
        """
        delay = WATCH_RETRY_DELAY
        first = True
        while True:
            try:
                client = runtime.reconciler.client
                items, version = await client.list_versioned(resource, namespace=runtime.config.namespace,
                                                             label_selector=COLLECTION_LABEL)
                await on_list(items, first)
                first = False
                while True:
                    gone = False
                    async for event in client.watch(resource, namespace=runtime.config.namespace,
                                                    label_selector=COLLECTION_LABEL, resource_version=version):
                        delay = WATCH_RETRY_DELAY
                        kind, body = event.get("type"), event.get("object") or {}
                        if kind == "ERROR":  # e.g. 410 Gone: this version cannot be resumed; list again
                            gone = True
                            break
                        version = str((body.get("metadata") or {}).get("resourceVersion") or version)
                        if kind != "BOOKMARK":
                            await on_event(str(kind), body)
                    if gone:
                        break
                    await asyncio.sleep(WATCH_RETRY_DELAY)  # the server ended the watch: resume it
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # not logged in yet, 403 without the RBAC, connection lost
                logger.warning("watch of %s in %s failed, retrying in %.1fs: %s", resource.plural,
                               runtime.config.namespace, delay, exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, WATCH_RETRY_MAX_DELAY)

    async def ignore_listing(items: list[dict], first: bool) -> None:
        """Children: a listing is the state kaudit compares at every reconcile; missed drift is the resync's."""

    async def child_in_namespace_changed(kind: str, body: dict) -> None:
        """Drift of the installer's Role and RoleBinding: an ADDED event is kaudit's own re-apply."""
        if kind == "DELETED" or (kind == "MODIFIED" and not runtime.is_own_echo(body)):
            await reconcile_owner("drift", owner_of(body))

    # Each report by name: its collection and what it says (its annotations; renewTime alone is
    # the installer's heartbeat and changes nothing).
    reports_seen: dict[str, tuple[str, tuple]] = {}

    def report_state(body: dict) -> tuple[str, tuple[str, tuple]]:
        meta = body.get("metadata") or {}
        return str(meta.get("name")), (owner_of(body), tuple(sorted((meta.get("annotations") or {}).items())))

    async def reports_listed(items: list[dict], first: bool) -> None:
        current = dict(report_state(item) for item in items)
        owners = {state[0] for name, state in current.items() if reports_seen.get(name) != state}
        owners |= {state[0] for name, state in reports_seen.items() if name not in current}  # vanished
        reports_seen.clear()
        reports_seen.update(current)
        if first:
            return  # at start the resume handlers reconcile every collection anyway
        for owner in sorted(owners):
            await reconcile_owner("report", owner)

    async def report_changed(kind: str, body: dict) -> None:
        """A node's installer wrote (or lost) its report: PolicyInstalled may change now, not at a poll."""
        name, state = report_state(body)
        if kind == "DELETED":
            reports_seen.pop(name, None)
        elif reports_seen.get(name) == state:
            return  # a heartbeat
        else:
            reports_seen[name] = state
        await reconcile_owner("report", state[0])

    @kopf.on.startup(**collection_kwargs)
    async def start_resync(collections: kopf.Index, **_: Any) -> None:
        runtime.collections = collections
        runtime.background.append(asyncio.create_task(resync_forever(collections)))
        for resource in r.OPERATOR_NAMESPACE_CHILDREN:
            runtime.background.append(asyncio.create_task(
                watch_in_operator_namespace(resource, ignore_listing, child_in_namespace_changed)))
        runtime.background.append(asyncio.create_task(
            watch_in_operator_namespace(r.LEASES, reports_listed, report_changed)))

    def needs_release(body: kopf.Body, **_: Any) -> bool:
        return patches_others_objects(plain(body))

    @kopf.on.delete(GROUP, VERSION, PLURAL, when=needs_release, **collection_kwargs)
    async def deleted(body: kopf.Body, **_: Any) -> None:
        try:
            released = await runtime.reconciler.release(plain(body))
        except TransientApiError as exc:
            raise kopf.TemporaryError(f"Kubernetes API unavailable, will retry: {exc}", delay=runtime.transient_delay)
        except ApiError as exc:  # e.g. 403: a one-line retry notice instead of kopf's traceback
            raise kopf.TemporaryError(f"cannot hand back the patched objects yet: {exc}", delay=API_ERROR_DELAY)
        logger.info("released %d object(s) of %s", released, body["metadata"]["name"])

    listed: set[str] = set()  # collections this process has seen in a listing of kopf's

    @kopf.on.event(GROUP, VERSION, PLURAL, **collection_kwargs)
    async def collection_event(type: str | None, name: str, uid: str, collections: kopf.Index, **_: Any) -> None:
        if type is None:
            await collection_listed(name, uid, collections)
        elif type == "DELETED":
            await collection_gone(name, collections)

    async def collection_listed(name: str, uid: str, collections: kopf.Index) -> None:
        """kopf lists again after a peering pause or a lost watch: what happened meanwhile (a
        deleted child, while no replica was active) left no event, and kopf runs the resume
        handlers only once per process. The first listing is the resume handlers' own."""
        if uid not in listed:
            listed.add(uid)
            return
        await reconcile_latest("relist", collections, name)

    async def collection_gone(name: str, collections: kopf.Index) -> None:
        # Another AuditCollection waiting in Conflict may now be the active one.
        for other in all_collections(collections):
            if other["metadata"]["name"] != name:
                await run("successor", None, [], latest=freshest(collections, other["metadata"]["name"]))

    for resource in r.CHILD_RESOURCES:
        @kopf.on.event(resource.group, resource.version, resource.plural,
                       labels={COLLECTION_LABEL: kopf.PRESENT}, id=f"drift-{resource.plural}",
                       **collection_kwargs)
        async def child_changed(type: str | None, body: kopf.Body, labels: kopf.Labels,
                                collections: kopf.Index, **_: Any) -> None:
            if type is None:  # the initial listing: resume handlers cover it
                return
            if type != "DELETED" and runtime.is_own_echo(plain(body)):
                return  # the watch event of kaudit's own apply: nothing drifted
            await reconcile_latest("drift", collections, labels.get(COLLECTION_LABEL))


def build_registry(runtime: Runtime) -> kopf.OperatorRegistry:
    registry = kopf.OperatorRegistry()
    register(registry, runtime)
    return registry

"""What kaudit's kopf handlers share: the operator's options and state in kopf's memo, and the
steps every trigger takes (reconcile one collection with metrics, recheck later, resync).

Everything the handlers share is in kopf's memo: an :class:`OperatorMemo` made by
:func:`operator_memo`, holding the fixed :class:`Options` and the mutable :class:`State` (kopf
gives each object a shallow copy of the memo, so they all share that one State).
"""

from __future__ import annotations

import asyncio
import copy
import datetime
import logging
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import kopf

from kaudit.api.resource import CollectionResource, ObjectMeta, object_meta, parse_resource
from kaudit.k8s import resources as r
from kaudit.k8s.client import ApiClient, ApiError, Connection, RetryPolicy, TransientApiError
from kaudit.reconcile.bookkeeping import MemoryDiffBaseStorage
from kaudit.reconcile.metrics import Metrics
from kaudit.reconcile.peering import PeeringIdentity, outranked
from kaudit.reconcile.preflight import missing_peering_message
from kaudit.reconcile.service import STATUS_HOLD, OperatorConfig, Outcome, Reconciler
from kaudit.reconcile.storage import JSON

logger = logging.getLogger("kaudit.operator")

TRANSIENT_DELAY = 5.0  # seconds before kopf retries after the client's own retries gave up
API_ERROR_DELAY = 60.0  # e.g. 403 from missing RBAC: an administrator has to act first

CollectionIndex = kopf.Index[str, JSON]


def default_login(**kwargs: Any) -> Any:
    """In-cluster service account first, then KUBECONFIG / ~/.kube/config (kopf's own readers)."""
    return kopf.login_with_service_account(**kwargs) or kopf.login_with_kubeconfig(**kwargs)


@dataclass(frozen=True)
class Options:
    """How this operator runs, fixed at start (``kaudit run``'s flags; tests shorten the delays)."""

    config: OperatorConfig = field(default_factory=OperatorConfig)
    login: Callable[..., Any] = default_login
    resync_interval: float = 300.0
    transient_delay: float = TRANSIENT_DELAY
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    force_close: bool = False  # tests: close connections at once instead of keeping them alive
    recheck_delay: float | None = None  # tests: instead of the service's delays per reason
    status_hold: float = STATUS_HOLD  # how long a progress-only status change may wait (service.py)
    peering: PeeringIdentity | None = None  # None: standalone, always the active replica
    metrics_port: int = 0  # GET /metrics there; 0: no endpoint


@dataclass
class State:
    """What the operator learns and holds while it runs; one per operator, shared by every handler."""

    metrics: Metrics = field(default_factory=Metrics)
    connection_info: kopf.ConnectionInfo | None = None  # kopf's credentials, set at each login
    client: ApiClient | None = None
    client_info: kopf.ConnectionInfo | None = None  # the credentials the client was made with
    reconciler: Reconciler | None = None
    background: list[asyncio.Task[None]] = field(default_factory=list)
    rechecks: dict[str, asyncio.Task[None]] = field(default_factory=dict)
    recheck_due: dict[str, float] = field(default_factory=dict)  # when each pending recheck runs (loop time)
    collections: CollectionIndex | None = None  # kopf's index of AuditCollections, once started
    peering_missing: bool = False  # the peering object was gone at the last look (warned once)
    listed: set[str] = field(default_factory=set)  # collections (uids) seen in a listing of kopf's
    # Each node report by name: its collection and what it says (see watches.report_state).
    reports_seen: dict[str, tuple[str, tuple[tuple[str, str], ...]]] = field(default_factory=dict)
    diffbase: MemoryDiffBaseStorage = field(default_factory=MemoryDiffBaseStorage)  # kopf's, see bookkeeping.py


class OperatorMemo(kopf.Memo):
    """kopf's memo with kaudit's two entries, typed."""

    options: Options
    state: State


def operator_memo(options: Options | None = None, state: State | None = None) -> OperatorMemo:
    memo = OperatorMemo()
    memo.options = options or Options()
    memo.state = state or State()
    return memo


# --- what the handlers share -------------------------------------------------------------------------


def client(memo: OperatorMemo) -> ApiClient:
    """The API client for kopf's current credentials: made at first use, and again after kopf
    logged in anew (e.g. a rotated token after a 401); the old session closes in the background."""
    state, options = memo.state, memo.options
    if state.connection_info is None:
        raise kopf.TemporaryError("Not logged in to the Kubernetes API yet.", delay=1)
    if state.client is None or state.client_info is not state.connection_info:
        if state.client is not None:
            state.background.append(asyncio.create_task(state.client.close()))
        connection = Connection.from_connection_info(state.connection_info, force_close=options.force_close)
        state.client = ApiClient(connection, retry=options.retry, observer=state.metrics.request)
        state.client_info = state.connection_info
        if state.reconciler is not None:
            state.reconciler.storage = state.client  # keeping what the reconciler remembers
    return state.client


def reconciler(memo: OperatorMemo) -> Reconciler:
    """The one reconciler, writing through :func:`client` (made at first use)."""
    storage = client(memo)
    if memo.state.reconciler is None:
        memo.state.reconciler = Reconciler(storage, memo.options.config,
                                           status_hold=memo.options.status_hold)
    return memo.state.reconciler


async def is_active(memo: OperatorMemo) -> bool:
    """Whether kopf lets this replica work (see kaudit.reconcile.peering); kaudit's own
    background tasks ask before acting. Unreadable peering: not active (retry later)."""
    peering, state = memo.options.peering, memo.state
    if peering is None:
        return True
    try:
        body = await client(memo).get(r.PEERINGS, None, peering.name)
    except (ApiError, kopf.TemporaryError) as exc:
        logger.warning("cannot read the peering object %s: %s", peering.name, exc)
        return False
    if body is None:
        # kopf pauses this replica while the object is missing (and says so only at DEBUG).
        if not state.peering_missing:
            logger.warning("paused: %s", missing_peering_message(peering.name))
        state.peering_missing = True
        return False
    if state.peering_missing:
        logger.info("ClusterKopfPeering %s is back", peering.name)
    state.peering_missing = False
    return not outranked(body, peering, datetime.datetime.now(datetime.timezone.utc))


async def close(memo: OperatorMemo) -> None:
    state = memo.state
    for task in [*state.background, *state.rechecks.values()]:
        task.cancel()
    if state.client is not None:
        await state.client.close()
    state.client = state.reconciler = None


def plain(body: kopf.Body | JSON) -> JSON:
    return copy.deepcopy(dict(body))


def all_collections(collections: CollectionIndex) -> list[JSON]:
    return [value for key in collections for value in collections[key]]


def index(memo: OperatorMemo) -> CollectionIndex:
    """kopf's index of AuditCollections (the startup handler keeps it in the memo)."""
    collections = memo.state.collections
    if collections is None:
        raise kopf.TemporaryError("The operator is still starting.", delay=1)
    return collections


def metas(memo: OperatorMemo) -> list[ObjectMeta]:
    """Who the collections in the index are (to tell which one is active)."""
    return [object_meta(body) for body in all_collections(index(memo))]


def freshest(collections: CollectionIndex, name: str) -> Callable[[], tuple[CollectionResource | None, list[ObjectMeta]]]:
    """The state of collection ``name`` and of the others as kopf's index has them when called."""
    def lookup() -> tuple[CollectionResource | None, list[ObjectMeta]]:
        bodies = all_collections(collections)
        body = next((b for b in bodies if b["metadata"]["name"] == name), None)
        if body is not None and body["metadata"].get("deletionTimestamp"):
            body = None
        return (parse_resource(body) if body is not None else None), [object_meta(b) for b in bodies]
    return lookup


async def run(memo: OperatorMemo, trigger: str, resource: CollectionResource | None = None,
              others: list[ObjectMeta] | None = None, *, latest: str = "") -> Outcome | None:
    """Reconcile ``resource``, or (``latest``: a name) the freshest state of that collection, with metrics."""
    state, options = memo.state, memo.options
    started = time.monotonic()
    try:
        if resource is None:
            outcome = await reconciler(memo).reconcile_latest(latest, freshest(index(memo), latest))
            if outcome is None:
                return None
        else:
            outcome = await reconciler(memo).reconcile(resource, others or [])
    except TransientApiError as exc:
        state.metrics.reconciled(trigger, "error", time.monotonic() - started, 0)
        raise kopf.TemporaryError(f"Kubernetes API unavailable, will retry: {exc}", delay=options.transient_delay)
    except ApiError as exc:
        state.metrics.reconciled(trigger, "error", time.monotonic() - started, 0)
        raise kopf.TemporaryError(str(exc), delay=API_ERROR_DELAY)
    result = "ready" if outcome.ready else "not-ready"
    state.metrics.reconciled(trigger, result, time.monotonic() - started, outcome.writes)
    if outcome.name and state.collections is not None:
        if outcome.requeue_after:
            schedule_recheck(memo, outcome.name, options.recheck_delay or outcome.requeue_after)
        if outcome.flush_after:  # a status held back: due then, whatever the recheck delay
            schedule_recheck(memo, outcome.name, outcome.flush_after)
    return outcome


async def reconcile_latest(memo: OperatorMemo, trigger: str, name: str) -> None:
    """Reconcile the freshest state of collection ``name``, logging a failure: the callers are
    event handlers and background tasks nobody retries (the next event or the resync catches up)."""
    try:
        await run(memo, trigger, latest=name)
    except kopf.TemporaryError as exc:
        logger.warning("%s reconcile of %s failed: %s", trigger, name, exc)


async def reconcile_owner(memo: OperatorMemo, trigger: str, owner: str) -> None:
    """Reconcile the collection a child or report belongs to (the active replica only)."""
    if owner and memo.state.collections is not None and await is_active(memo):
        await reconcile_latest(memo, trigger, owner)


def schedule_recheck(memo: OperatorMemo, name: str, delay: float) -> None:
    """Look again later (what no watch shows: a kube-apiserver restart, a stale report; a status
    held back); one pending look per collection, the earliest asked for."""
    rechecks, due = memo.state.rechecks, memo.state.recheck_due
    when = asyncio.get_running_loop().time() + delay
    if name in rechecks:
        if due.get(name, when) <= when:
            return
        rechecks.pop(name).cancel()

    async def recheck() -> None:
        await asyncio.sleep(delay)
        rechecks.pop(name, None)
        due.pop(name, None)
        if not await is_active(memo):
            return  # the active replica looks itself
        await reconcile_latest(memo, "recheck", name)

    rechecks[name] = asyncio.create_task(recheck())
    due[name] = when


async def resync_forever(memo: OperatorMemo, collections: CollectionIndex) -> None:
    # A plain task rather than @kopf.timer: kopf puts a finalizer on every object a timer
    # serves, and kaudit wants one only where it has something to hand back.
    while True:
        await asyncio.sleep(memo.options.resync_interval)
        if not await is_active(memo):
            continue  # a standby: kopf stopped updating the index this would work from
        for body in all_collections(collections):
            await reconcile_latest(memo, "resync", body["metadata"]["name"])



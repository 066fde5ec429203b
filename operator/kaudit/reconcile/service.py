"""One reconcile of one AuditCollection: read, render, decide, write, report.

Called by every kopf handler (create, update, resume, timer, child drift); the handlers only
choose when. Decisions are in ``plan.py``/``status.py``/``agent.py`` (pure); this module is the
sequence of API calls around them, all made through a :class:`~kaudit.reconcile.storage.Storage`
(in the operator, :class:`kaudit.k8s.client.ApiClient`). Its inputs are typed: a
:class:`~kaudit.api.resource.CollectionResource` parsed once by the handler, and the
:class:`~kaudit.render.result.Rendered` the renderer returns, whose named parts (installer, agent
DaemonSet, agent target) say what each rendered object is.
"""

from __future__ import annotations

import asyncio
import datetime
import logging
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable, Iterable, Protocol, Sequence

from kaudit.api.resource import CollectionResource, ObjectMeta
from kaudit.api.spec import DEFAULT_INSTALLER_IMAGE, AgentTarget, AuditCollection, DetectionSpec
from kaudit.conditions import FALSE, TRUE, UNKNOWN, Condition
from kaudit.detect.required import Assessment
from kaudit.errors import InvalidInput, Refused
from kaudit.installer.reports import aggregate
from kaudit.k8s import resources as r
from kaudit.k8s.client import ApiError, TransientApiError
from kaudit.k8s.events import NORMAL, WARNING, build_event
from kaudit.k8s.permissions import APISERVER_NAMESPACE
from kaudit.reconcile import plan as planning
from kaudit.reconcile.agent import CONTROL_PLANE_SELECTORS, AgentFigures, agent_figures
from kaudit.reconcile.detection import DetectionGate, RuleSync, SyncSettings, detection_condition
from kaudit.reconcile.status import (FAILURE_REASONS, PROGRESSING_REASONS, condition_changes, is_progress,
                                     render_conditions, status_patch, summarise)
from kaudit.reconcile.platform import Clouds, reconcile_managed, release_managed
from kaudit.reconcile.storage import JSON, Storage
from kaudit.render import render_collection
from kaudit.render.policy import recording_policy
from kaudit.render.result import Rendered

logger = logging.getLogger("kaudit.reconcile")

# A hand-back restore that keeps meeting concurrent writes (409): read again this often, then kopf retries.
RESTORE_ATTEMPTS = 5
# kubeadm's kube-apiserver mirror pods: their container start tells whether the policy is loaded.
# (The chart's Role that allows listing them is in the same namespace: see k8s/permissions.py.)
APISERVER_SELECTOR = "component=kube-apiserver"
# How soon to read the node reports again, by PolicyInstalled reason (Installed: at the resync).
# A new or changed report reconciles at once (handlers.py watches the Leases); these looks catch
# what no watch shows: kube-apiserver restarted on a node (RestartRequired) and reports gone stale.
RECHECK_AFTER = {"NoReports": 60.0, "Installing": 60.0, "InstallFailed": 30.0, "RestartRequired": 60.0}
# The API resource of each kind of user object a collection may patch (AgentTarget.kind).
TARGET_RESOURCES = {"DaemonSet": r.DAEMON_SETS, "DatadogAgent": r.DATADOG_AGENTS}
# The status fields a successful render fills; a refusal keeps their last good values.
RENDERED_STATUS_KEYS = ("policy", "apiServerFlags", "nextSteps", "agent", "nodes", "eks")
# The kinds rendered objects refer to by name: applied in a first round (apply_rounds).
REFERENCED_KINDS = frozenset({"ConfigMap", "ServiceAccount", "Role"})
# Seconds a status change that only reports progress (status.is_progress) may wait after the
# collection's last status write, to be written together with what comes next.
STATUS_HOLD = 3.0


class ApplyRefused(Exception):
    """An apply the API server refused for good; carries the API error for the handler."""

    def __init__(self, message: str, cause: ApiError):
        super().__init__(message)
        self.cause = cause


@dataclass(frozen=True)
class OperatorConfig:
    namespace: str = "kaudit-system"  # POD_NAMESPACE: where non-agent objects and Events live
    image: str = ""  # "" = the renderer's default image (DEFAULT_INSTALLER_IMAGE)
    detection_sync: SyncSettings | None = None  # keep spec.detection's rules in Datadog (off: None)


@dataclass
class Outcome:
    """What one reconcile did, for handlers (errors), metrics and tests."""

    writes: int = 0
    ready: bool = False
    reason: str = ""
    conditions: list[JSON] = field(default_factory=list)
    name: str = ""
    requeue_after: float | None = None  # seconds until the node reports are worth reading again
    flush_after: float | None = None  # seconds until a status change held back is due (STATUS_HOLD)


class RenderFunction(Protocol):
    """:func:`kaudit.render.render_collection`'s signature, as the reconciler calls it."""

    def __call__(self, spec: AuditCollection, *, existing: Sequence[JSON], namespace: str, image: str) -> Rendered: ...


# The freshest known state of one collection and the others beside it (None: it is gone).
Latest = Callable[[], "tuple[CollectionResource | None, list[ObjectMeta]]"]
NodeReader = Callable[[], Awaitable[list[JSON]]]


def now_text() -> str:
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def target_resource(target: AgentTarget) -> r.Resource:
    return TARGET_RESOURCES[target.kind]


def active_collection(collections: Iterable[ObjectMeta]) -> str | None:
    """The one AuditCollection that is in charge: the oldest one not being deleted."""
    alive = [c for c in collections if not c.deleting]
    if not alive:
        return None
    return min(alive, key=lambda c: (c.creation_timestamp, c.name)).name


class Reconciler:
    """One reconcile of one AuditCollection, from typed inputs through :class:`Storage`."""

    def __init__(
        self,
        storage: Storage,
        config: OperatorConfig,
        *,
        render: RenderFunction = render_collection,
        clock: Callable[[], str] = now_text,
        clouds: Clouds | None = None,
        status_hold: float = STATUS_HOLD,
    ):
        self.storage = storage
        self.config = config
        self.clouds = clouds or Clouds()  # spec.platform EKS: the AWS calls, per region
        self._render = render
        self._clock = clock
        self.status_hold = status_hold
        # When the status of each collection (by uid) was last written, on the event loop's clock.
        self._written_at: dict[str, float] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        # The status last written per collection (by uid): the body a drift event hands us can
        # predate our own status patch, and comparing with it would patch the same status again.
        self._written: dict[str, JSON] = {}
        self._waiting: set[str] = set()
        # What kaudit last applied per object, to recognise the watch events of its own writes.
        self._applied: dict[planning.Key, JSON] = {}
        self._seen_status: dict[planning.Key, Any] = {}
        self._detection = DetectionGate(storage, config.namespace)
        self._rule_sync = RuleSync(config.detection_sync) if config.detection_sync else None

    def lock(self, name: str) -> asyncio.Lock:
        return self._locks.setdefault(name, asyncio.Lock())

    @property
    def idle(self) -> bool:
        """No reconcile running or waiting for its collection's lock."""
        return not self._waiting and not any(lock.locked() for lock in self._locks.values())

    def render(self, spec: AuditCollection, existing: tuple[JSON, ...]) -> Rendered:
        return self._render(spec, existing=existing, namespace=self.config.namespace,
                            image=self.config.image or DEFAULT_INSTALLER_IMAGE)

    # --- the reconcile --------------------------------------------------------------------------

    async def reconcile(self, resource: CollectionResource, others: Iterable[ObjectMeta] = ()) -> Outcome:
        async with self.lock(resource.meta.name):
            return await self._reconcile(resource, list(others))

    async def reconcile_latest(self, name: str, latest: Latest) -> Outcome | None:
        """Reconcile ``name`` from the freshest known state, coalescing bursts of triggers.

        A trigger that arrives while another one for the same collection is still waiting for
        the lock returns at once: the waiting reconcile reads the state after both changes.
        ``latest`` is called only once the lock is held, so a collection deleted meanwhile is
        skipped instead of being reconciled from a stale body.
        """
        if name in self._waiting:
            return None
        self._waiting.add(name)
        try:
            async with self.lock(name):
                self._waiting.discard(name)
                resource, others = latest()
                if resource is None:
                    return None
                return await self._reconcile(resource, others)
        finally:
            self._waiting.discard(name)

    def is_own_echo(self, child: JSON) -> bool:
        """Whether a child's watch event shows exactly what kaudit last applied (no drift).

        A DaemonSet whose status moved is not an echo: the agent rollout figures need a refresh.
        """
        key = planning.key_of(child)
        sent = self._applied.get(key)
        if sent is None or planning.needs_apply(sent, child):
            return False
        status = child.get("status")
        if self._seen_status.get(key) != status:
            self._seen_status[key] = status
            return child.get("kind") != "DaemonSet"
        return True

    async def _reconcile(self, resource: CollectionResource, others: list[ObjectMeta]) -> Outcome:
        meta = resource.meta
        outcome = Outcome(name=meta.name)
        if meta.deleting:
            return outcome  # being deleted: the finalizer (or the garbage collector) has the last word
        active = await self._active(meta, others)
        if active is not None and active != meta.name:
            message = (f"AuditCollection {active!r} is already active; a cluster has one audit policy. "
                       f"Delete one of them; this one changes nothing meanwhile.")
            conditions = [Condition("PolicyValid", UNKNOWN, "Conflict", message),
                          Condition("AgentConfigured", UNKNOWN, "Conflict", message)]
            return await self._report(resource, outcome, conditions, None)
        if resource.spec is None:
            assert resource.invalid is not None
            return await self._report(resource, outcome, _invalid_conditions(resource.invalid), None)
        spec = resource.spec
        if spec.managed_platform:  # no node holds the audit log: the provider's logging carries it
            return await self._reconcile_managed(resource, spec, outcome)

        # A platform whose agent side differs (another kind of user object, or none) branches
        # here and in render; the steps below work from what render named.
        target = spec.agent.target
        live_target = await self.storage.get(target_resource(target), target.namespace, target.name) if target else None
        existing = (planning.user_view(live_target),) if live_target else ()
        try:
            rendered = self.render(spec, tuple(e for e in existing if e is not None))
        except InvalidInput as exc:
            return await self._report(resource, outcome, _invalid_conditions(exc), None)
        except Refused as exc:
            conditions = [Condition("PolicyValid", UNKNOWN, exc.reason, exc.message),
                          Condition("AgentConfigured", FALSE, exc.reason, exc.message)]
            return await self._report(resource, outcome, conditions, None)

        # spec.detection: in Refuse mode a policy that blinds a required rule is refused like an
        # invalid one (nothing written, the last good policy and status kept).
        detection = await self._detection.assess(spec.detection, rendered.policy.text, rendered.policy.hash,
                                                 rendered.policy.short_hash)
        if detection is not None and detection.refuse:
            conditions = [Condition("PolicyValid", FALSE, "BlindingPolicyRefused", detection.message),
                          detection_condition(detection)]
            return await self._report(resource, outcome, conditions, None)

        children = await self._live_children(meta.name)
        targets: dict[planning.Key, JSON | None] = {planning.key_of(live_target): live_target} if live_target else {}
        writes = planning.plan_writes(owner=meta.reference(), objects=rendered.objects, patches=rendered.patches,
                                      live_children=children, live_targets=targets)
        await self._approve(resource, rendered, outcome)
        try:
            applied = await self._execute(meta, writes, rendered.events)
            if live_target is not None and planning.key_of(live_target) not in applied:
                await self._yield_fields(live_target)  # an earlier yield that did not go through
        except ApplyRefused as exc:
            # The API refused a write (a missing namespace, an admission webhook, RBAC): say so in
            # status, then let the handler retry later.
            conditions = [Condition("PolicyValid", TRUE, "Valid", _policy_message(rendered)),
                          Condition("AgentConfigured", FALSE, "ApplyFailed", str(exc))]
            await self._report(resource, outcome, conditions, rendered_status(rendered))
            raise exc.cause from None
        outcome.writes += len(writes.applies) + len(writes.deletes) + len(writes.releases)

        nodes = _once(self._control_plane_nodes)  # read only if a consumer needs it, then shared
        figures, installed = await asyncio.gather(
            self._agent_figures(rendered, applied, children, live_target, nodes),
            self._policy_installed(meta.name, rendered, nodes))
        parts = rendered_status(rendered)
        if figures is not None:
            parts["agent"] = figures.as_status()
            if figures.warning:
                parts["warnings"] = [*parts.get("warnings", []), f"spec.agent: {figures.warning}"]
        # The conditions in status order. Another condition (computed from ``rendered`` and live
        # reads like the two above) is appended here, its status fields added to ``parts`` and
        # its reasons to the vocabulary in status.py; Ready summarises whatever is listed.
        conditions = [Condition("PolicyValid", TRUE, "Valid", _policy_message(rendered))]
        if installed is not None:
            parts["nodes"], installed_condition = installed
            conditions.append(installed_condition)
            outcome.requeue_after = RECHECK_AFTER.get(installed_condition.reason)
        conditions.append(_agent_condition(spec.agent.mode, figures))
        if detection is not None:
            conditions += await self._detection_conditions(meta.name, detection)
        return await self._report(resource, outcome, conditions, parts)

    async def _reconcile_managed(self, resource: CollectionResource, spec: AuditCollection,
                                 outcome: Outcome) -> Outcome:
        managed = await reconcile_managed(spec, self._live_status(resource), self.clouds)
        for reason, message in managed.events:
            await self._event(resource.meta, NORMAL, reason, message)
        outcome.requeue_after = managed.requeue_after
        conditions, parts = list(managed.conditions), dict(managed.parts)
        if spec.detection is not None:
            found, warning = await self._platform_detection(spec, spec.detection)
            conditions += found
            if warning:
                parts["warnings"] = [*parts.get("warnings", []), warning]
        return await self._report(resource, outcome, conditions, parts, summary=managed.ready)

    async def _platform_detection(self, spec: AuditCollection, detection: DetectionSpec) -> tuple[list[Condition], str]:
        """spec.detection on a managed control plane: the required rules under the policy the
        provider applies, where kaudit knows it (kaudit.render.policy.recording_policy: EKS),
        synced like any collection's; elsewhere (GKE, AKS) a warning that says they are not assessed."""
        document = recording_policy(spec, self.config.namespace)
        if document is None:
            return [], (f"spec.detection: kaudit does not know the audit policy {spec.platform} applies, so it "
                        "cannot tell which required rules fire; replay them on logs it recorded with 'kaudit policy "
                        "simulate --detections'")
        assessment = await self._detection.assess(detection, document.text, document.hash, document.short_hash,
                                                  name=f"{spec.platform}'s own policy")
        assert assessment is not None  # spec.detection is given
        return await self._detection_conditions(spec.name, assessment), ""

    async def _detection_conditions(self, name: str, assessment: Assessment) -> list[Condition]:
        """DetectionCoverage, and DetectionRulesSynced when the operator syncs the rules
        (``kaudit run --detection-sync``): what every collection with spec.detection reports."""
        conditions = [detection_condition(assessment)]
        if self._rule_sync is not None and assessment.results:
            conditions.append(await self._rule_sync.run(name, [c.rule for c in assessment.results]))
        return conditions

    async def _active(self, meta: ObjectMeta, others: list[ObjectMeta]) -> str | None:
        """The collection in charge among this one and ``others``, confirmed by a read when it is another."""
        candidates = [meta, *[o for o in others if o.name != meta.name]]
        active = active_collection(candidates)
        while active is not None and active != meta.name:
            # The caller's view of other collections can lag (a watch event not processed yet):
            # confirm the one that would win before refusing this one.
            live = await self.storage.get(r.AUDIT_COLLECTIONS, None, active)
            if live is not None and not (live.get("metadata") or {}).get("deletionTimestamp"):
                break
            candidates = [c for c in candidates if c.name != active]
            active = active_collection(candidates)
        return active

    def _live_status(self, resource: CollectionResource) -> JSON:
        return self._written.get(resource.meta.uid) or dict(resource.status)

    async def _approve(self, resource: CollectionResource, rendered: Rendered, outcome: Outcome) -> None:
        """Publish the rendered policy's hash in status.policy before the ConfigMap carries it.

        The installers install only the policy whose hash status.policy.fullHash names
        (kaudit.installer.approval); approving first means a legitimate change is never refused
        for arriving before its approval. Nothing is written when the status already says so,
        nor when no installer is rendered (``installPolicy: false``, DaemonSet-less platforms):
        then nobody reads the approval before the status that carries it anyway.
        """
        if not rendered.installs_policy:
            return
        live_status = self._live_status(resource)
        policy = rendered_status(rendered)["policy"]
        if live_status.get("policy") == policy:
            return
        await self.storage.merge_patch(r.AUDIT_COLLECTIONS, None, resource.meta.name, {"status": {"policy": policy}},
                                       subresource="status")
        self._written[resource.meta.uid] = {**live_status, "policy": policy}
        self._written_at[resource.meta.uid] = asyncio.get_running_loop().time()
        outcome.writes += 1

    async def _optional_list(self, resource: r.Resource, namespace: str | None, selector: str) -> list[JSON]:
        """A read that enriches status but must not stop a reconcile when RBAC does not allow it."""
        try:
            return await self.storage.list(resource, namespace=namespace, label_selector=selector)
        except ApiError as exc:
            if exc.status != 403:
                raise
            logger.warning("not allowed to list %s in %s: %s", resource.plural, namespace or "the cluster", exc)
            return []

    async def _policy_installed(self, name: str, rendered: Rendered,
                                control_plane_nodes: NodeReader) -> tuple[list[JSON], Condition] | None:
        """Node by node: which policy the installer wrote and whether kube-apiserver has loaded it.

        Every control-plane node must report: one whose installer has not reported yet
        is waited for, so Ready never comes while a node still lacks the policy. None when kaudit
        does not install the policy (spec.apiServer.installPolicy: false). A platform that
        delivers the policy another way reports its own PolicyInstalled here.
        """
        if not rendered.installs_policy:
            return None
        leases, pods, nodes_now = await asyncio.gather(
            self._optional_list(r.LEASES, self.config.namespace, f"{planning.COLLECTION_LABEL}={name}"),
            self._optional_list(r.PODS, APISERVER_NAMESPACE, APISERVER_SELECTOR), control_plane_nodes())
        leases = [lease for lease in leases if _collection_label(lease) == name]
        names = [(node.get("metadata") or {}).get("name") for node in nodes_now]
        summary = aggregate(leases, pods, rendered.policy.hash, now=datetime.datetime.now(datetime.timezone.utc),
                            nodes=[n for n in names if n])
        found = summary.condition
        return summary.nodes, Condition(found["type"], found["status"], found["reason"], found["message"])

    async def _live_children(self, name: str) -> list[JSON]:
        selector = f"{planning.COLLECTION_LABEL}={name}"
        lists: list[tuple[r.Resource, str | None]] = [(resource, None) for resource in r.CHILD_RESOURCES]
        lists += [(resource, self.config.namespace) for resource in r.OPERATOR_NAMESPACE_CHILDREN]
        # Independent reads: issued together, a reconcile waits for one round trip, not six.
        results = await asyncio.gather(*(self.storage.list(resource, namespace=namespace, label_selector=selector)
                                         for resource, namespace in lists))
        # Servers filter by label; filtering again keeps test servers without selectors honest.
        return [item for items in results for item in items if _collection_label(item) == name]

    async def _yield_fields(self, live: JSON) -> JSON | None:
        """Give up ownership of the fields kaudit set over another manager's value (plan.yielded_paths)."""
        operations = planning.yield_patch(live)
        if not operations:
            return None
        _, _, namespace, name = planning.key_of(live)
        try:
            return await self.storage.json_patch(r.resource_of(live), namespace, name, operations)
        except TransientApiError:
            raise
        except ApiError as exc:  # a concurrent write moved the object: the next reconcile tries again
            logger.info("could not yield fields of %s: %s", _describe(planning.key_of(live)), exc)
            return None

    async def _execute(self, owner: ObjectMeta, writes: planning.Plan,
                       notices: tuple[tuple[str, str], ...] = ()) -> dict[planning.Key, JSON]:
        applied: dict[planning.Key, JSON] = {}
        for round_ in apply_rounds(writes.applies):
            # The objects of one round refer to none of each other: sent together, a reconcile
            # waits for two round trips instead of one per object.
            results = await asyncio.gather(*(self._apply_one(owner, body, notices) for body in round_),
                                           return_exceptions=True)
            for body, result in zip(round_, results):
                if not isinstance(result, BaseException):
                    applied[planning.key_of(body)] = result
            failed = [result for result in results if isinstance(result, BaseException)]
            if failed:
                raise failed[0]
        for key in writes.deletes:
            resource = r.resource_of({"apiVersion": key[0], "kind": key[1]})
            await self.storage.delete(resource, key[2], key[3])
            await self._event(owner, NORMAL, "Pruned", f"Deleted {_describe(key)}: no longer rendered.")
        for live in writes.releases:
            await self._release_one(owner, live)
        return applied

    async def _apply_one(self, owner: ObjectMeta, body: JSON, notices: tuple[tuple[str, str], ...]) -> JSON:
        key = planning.key_of(body)
        try:
            result = await self.storage.apply(body, force=True)
        except TransientApiError:
            raise
        except ApiError as exc:
            raise ApplyRefused(f"{_describe(key)}: {exc.status} {exc.reason}: {exc.message}", exc) from None
        self._applied[key] = body
        live = await self._yield_fields(result) or result or body
        await self._event(owner, NORMAL, "Applied", f"Applied {_describe(key)}.")
        if not planning.is_owned_by_a_collection(body):
            for reason, message in notices:
                await self._event(owner, NORMAL, reason, message)
        return live

    async def _release_one(self, owner: ObjectMeta, live: JSON) -> None:
        restored = await self._restore_user_items(live)
        if restored is None:
            return  # the user deleted it meanwhile: nothing to hand back (an apply would create it)
        release, current = restored
        resource = r.resource_of(release.apply)
        values = planning.restore_values_patch(current, release.values)
        if values and await self.storage.json_patch(resource, release.key[2], release.key[3], values) is None:
            return
        await self.storage.apply(release.apply, force=False)
        await self._event(owner, NORMAL, "Released", f"Removed kaudit's changes from {_describe(release.key)}.")

    async def _restore_user_items(self, live: JSON) -> tuple[planning.Release, JSON] | None:
        """Put the user's own atomic-list items back (see planning.release_of): the release to
        finish with and the object as it is now, or None when the object is gone.

        The restore is guarded by the resourceVersion it was computed from. After a concurrent
        write (409) it is computed again from a fresh read: sent again as it was, it could only
        meet the same 409.
        """
        release = planning.release_of(live)
        resource = r.resource_of(release.apply)
        _, _, namespace, name = release.key
        if release.restore is None:
            current = await self.storage.get(resource, namespace, name)
            return (release, current) if current is not None else None
        for attempt in range(1, RESTORE_ATTEMPTS + 1):
            try:
                current = await self.storage.merge_patch(resource, namespace, name, release.restore,
                                                         retry_conflicts=False)
                return (release, current) if current is not None else None
            except ApiError as exc:
                if exc.status != 409:
                    raise
                if attempt == RESTORE_ATTEMPTS:  # a writer that busy: kopf retries the handler soon
                    raise TransientApiError(exc.status, exc.reason, exc.message) from None
            fresh = await self.storage.get(resource, namespace, name)
            if fresh is None:
                return None
            release = planning.release_of(fresh)
            if release.restore is None:
                return release, fresh  # the user's items are back already
        return None  # unreachable: the loop returns or raises

    async def release(self, resource: CollectionResource) -> int:
        """Undo kaudit's patches of objects it does not own (the finalizer's work); owned objects
        go with their owner through the garbage collector. Returns the number of objects released."""
        meta = resource.meta
        async with self.lock(meta.name):
            if resource.spec is not None and resource.spec.managed_platform:
                # AwsError propagates: the handler retries the delete later
                changes = await release_managed(resource.spec, dict(resource.status), self.clouds)
                for reason, message in changes:
                    await self._event(meta, NORMAL, reason, message)
                return len(changes)
            patched = [c for c in await self._live_children(meta.name) if not planning.is_owned_by(c, meta.uid)]
            for live in patched:
                await self._release_one(meta, live)
            return len(patched)

    async def _control_plane_nodes(self) -> list[JSON]:
        """The nodes with the first control-plane role label any node carries (the legacy one after)."""
        for label in CONTROL_PLANE_SELECTORS:
            nodes = await self._optional_list(r.NODES, None, label)
            if nodes:
                return nodes
        return []

    async def _agent_figures(self, rendered: Rendered, applied: dict[planning.Key, JSON], children: list[JSON],
                             live_target: JSON | None, control_plane_nodes: NodeReader) -> AgentFigures | None:
        mode = rendered.spec.agent.mode
        if mode in ("None", "DatadogAgent"):
            return None
        daemon_set = _agent_daemon_set(rendered, applied, children, live_target)
        nodes = await control_plane_nodes()
        pods: list[JSON] = []
        if daemon_set is not None and nodes:
            namespace = (daemon_set.get("metadata") or {}).get("namespace")
            match = (((daemon_set.get("spec") or {}).get("selector")) or {}).get("matchLabels") or {}
            selector = ",".join(f"{k}={v}" for k, v in sorted(match.items()))
            pods = await self._optional_list(r.PODS, namespace, selector)
        return agent_figures(daemon_set, nodes, pods)

    # --- reporting -------------------------------------------------------------------------------

    async def _report(self, resource: CollectionResource, outcome: Outcome, conditions: list[Condition],
                      parts: JSON | None, *, summary: Condition | None = None) -> Outcome:
        """Write the status ``conditions`` and ``parts`` (the status fields of a successful render)
        ask for. ``parts`` None is a refusal: the last good policy, flags and node reports stay,
        and so do the conditions this reconcile did not decide. ``summary`` replaces the Ready of
        ``conditions`` where a platform decides it (EKS: LogsFlowing does not hold Ready back)."""
        meta = resource.meta
        live_status = self._live_status(resource)
        if parts is None:
            given = {c.type for c in conditions}
            conditions = [*conditions, *(
                Condition(c["type"], c["status"], c["reason"], c.get("message", ""))
                for c in live_status.get("conditions") or []
                if c.get("type") not in given and c.get("type") != "Ready")]
        full = [summary or summarise(conditions), *conditions]
        rendered_conditions = render_conditions(full, previous=live_status.get("conditions") or [],
                                                generation=meta.generation, now=self._clock())
        desired: JSON = {"observedGeneration": meta.generation, "conditions": rendered_conditions}
        for key in RENDERED_STATUS_KEYS:
            if parts is not None and key in parts:
                desired[key] = parts[key]
            elif parts is None and key in live_status:
                desired[key] = live_status[key]
        desired["warnings"] = (parts or {}).get("warnings", [])
        patch = status_patch(live_status, desired)
        held = self._hold_left(meta.uid, live_status, desired) if patch is not None else 0.0
        if held > 0:
            outcome.flush_after = held  # a reconcile then writes it, with whatever came meanwhile
        elif patch is not None:
            await self.storage.merge_patch(r.AUDIT_COLLECTIONS, None, meta.name, patch, subresource="status")
            self._written[meta.uid] = {**live_status, **desired}
            self._written_at[meta.uid] = asyncio.get_running_loop().time()
            outcome.writes += 1
            for changed in condition_changes(live_status.get("conditions") or [], rendered_conditions,
                                             restate=FAILURE_REASONS):
                if changed["type"] != "Ready":
                    continue
                # Steps on the way are not problems: their Events are Normal.
                progressing = changed["reason"] in PROGRESSING_REASONS
                kind = NORMAL if changed["status"] == TRUE or progressing else WARNING
                await self._event(meta, kind, changed["reason"], changed["message"])
        ready = rendered_conditions[0]
        outcome.ready = ready["status"] == TRUE
        outcome.reason = ready["reason"]
        outcome.conditions = rendered_conditions
        return outcome

    def _hold_left(self, uid: str, live_status: JSON, desired: JSON) -> float:
        """Seconds this status change may still wait (0: write it now): a change that only reports
        progress waits until STATUS_HOLD after the collection's last status write, so the steps of
        a create or a rollout go out together with the next one (at most one write per hold)."""
        written_at = self._written_at.get(uid)
        if written_at is None or not is_progress(live_status, desired):
            return 0.0
        return max(0.0, written_at + self.status_hold - asyncio.get_running_loop().time())

    async def _event(self, about: ObjectMeta, type_: str, reason: str, message: str) -> None:
        body = build_event(about.reference(), type_=type_, reason=reason, message=message,
                           now=datetime.datetime.now(datetime.timezone.utc))
        try:
            await self.storage.create(r.EVENTS, body["metadata"]["namespace"], body)
        except Exception as exc:  # an Event is informative; never fail a reconcile for it
            logger.warning("could not post an Event (%s): %s", reason, exc)


def apply_rounds(applies: Sequence[JSON]) -> list[list[JSON]]:
    """The applies in two rounds, each in plan order: first what other objects refer to (a pod's
    ServiceAccount and ConfigMap volume, a RoleBinding's Role), then the rest. A DaemonSet applied
    before its ServiceAccount gets pods refused at admission (the controller retries them later)."""
    first = [body for body in applies if body.get("kind") in REFERENCED_KINDS]
    rest = [body for body in applies if body.get("kind") not in REFERENCED_KINDS]
    return [round_ for round_ in (first, rest) if round_]


def _once(factory: Callable[[], Awaitable[list[JSON]]]) -> NodeReader:
    """``factory()`` started on the first call only; every caller awaits that same task."""
    task: asyncio.Future[list[JSON]] | None = None

    def get() -> Awaitable[list[JSON]]:
        nonlocal task
        if task is None:
            task = asyncio.ensure_future(factory())
        return task
    return get


def _collection_label(obj: JSON) -> str | None:
    labels: dict[str, str] = (obj.get("metadata") or {}).get("labels") or {}
    return labels.get(planning.COLLECTION_LABEL)


def _describe(key: planning.Key) -> str:
    _, kind, namespace, name = key
    return f"{kind} {namespace}/{name}" if namespace else f"{kind} {name}"


def _invalid_conditions(exc: InvalidInput) -> list[Condition]:
    policy_errors = [e for e in exc.errors if e.path.startswith("spec.policy") or e.path.startswith("spec.apiServer")]
    other_errors = [e for e in exc.errors if e not in policy_errors]
    conditions = []
    if policy_errors:
        text = "; ".join(str(e) for e in policy_errors)
        conditions.append(Condition("PolicyValid", FALSE, "InvalidPolicy",
                                    f"{text}. Nothing was written; the last valid policy stays in place."))
    else:
        conditions.append(Condition("PolicyValid", UNKNOWN, "InvalidSpec", "Not evaluated: the spec is invalid."))
    if other_errors:
        text = "; ".join(str(e) for e in other_errors)
        conditions.append(Condition("AgentConfigured", FALSE, "InvalidSpec", f"{text}. Nothing was written."))
    else:
        conditions.append(Condition("AgentConfigured", UNKNOWN, "InvalidPolicy", "Not changed: the policy is invalid."))
    return conditions


def _policy_message(rendered: Rendered) -> str:
    policy = rendered.policy
    return f"Policy {policy.short_hash} with {policy.rule_count} rules is valid."


def rendered_status(rendered: Rendered) -> JSON:
    """The status fields a render decides: the policy's identity, the flags, the steps, the warnings."""
    policy = rendered.policy
    return {
        "policy": {"hash": policy.short_hash, "fullHash": policy.hash, "ruleCount": policy.rule_count,
                   "profile": rendered.spec.policy.profile, "auditKaudit": rendered.spec.policy.audit_kaudit},
        "apiServerFlags": list(rendered.api_server_flags),
        "nextSteps": list(rendered.next_steps),
        "warnings": [str(w) for w in rendered.warnings],
    }


def _agent_daemon_set(rendered: Rendered, applied: dict[planning.Key, JSON], children: list[JSON],
                      live_target: JSON | None) -> JSON | None:
    """The agent DaemonSet as it is now: the user's (DaemonSet mode) or kaudit's own (Managed)."""
    if rendered.spec.agent.mode == "DaemonSet":
        if live_target is None:
            return None
        return applied.get(planning.key_of(live_target)) or live_target
    own = rendered.agent_daemon_set
    if own is None:
        return None
    key = planning.key_of(own)
    return applied.get(key) or next((c for c in children if planning.key_of(c) == key), None) or own


def _agent_condition(mode: str, figures: AgentFigures | None) -> Condition:
    if mode == "None":
        return Condition("AgentConfigured", TRUE, "NoAgent",
                         "spec.agent.mode is None: kaudit renders the policy only; collect the log yourself.")
    if mode == "DatadogAgent":
        return Condition("AgentConfigured", TRUE, "Applied",
                         "The DatadogAgent is configured; the Datadog Operator rolls out the agent.")
    if figures is not None and figures.warning:
        return Condition("AgentConfigured", FALSE, "NotSchedulable", figures.warning)
    message = "The agent configuration is applied."
    if figures is not None:
        message += " " + figures.message
    return Condition("AgentConfigured", TRUE, "Applied", message)

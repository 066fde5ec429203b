"""One reconcile of one AuditCollection: read, render, decide, write, report.

Called by every kopf handler (create, update, resume, timer, child drift); the handlers only
choose when. Decisions are in ``plan.py``/``status.py``/``agent.py`` (pure); this module is the
sequence of API calls around them, all made through :class:`kaudit.k8s.client.ApiClient`.
"""

from __future__ import annotations

import asyncio
import datetime
import logging
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable, Iterable

from kaudit.errors import InvalidInput, Refused
from kaudit.k8s import resources as r
from kaudit.k8s.client import ApiClient, ApiError, TransientApiError
from kaudit.k8s.events import NORMAL, WARNING, post_event
from kaudit.k8s.permissions import APISERVER_NAMESPACE
from kaudit.reconcile import plan as planning
from kaudit.reconcile.agent import CONTROL_PLANE_SELECTORS, agent_figures
from kaudit.reconcile.status import (FAILURE_REASONS, FALSE, PROGRESSING_REASONS, TRUE, UNKNOWN, Condition, condition_changes,
                                     render_conditions, status_patch, summarise)

logger = logging.getLogger("kaudit.reconcile")

DEFAULT_AGENT_NAMESPACE = "datadog"
INSTALLER_COMPONENT = "policy-installer"
# A hand-back restore that keeps meeting concurrent writes (409): read again this often, then kopf retries.
RESTORE_ATTEMPTS = 5
# kubeadm's kube-apiserver mirror pods: their container start tells whether the policy is loaded.
# (The chart's Role that allows listing them is in the same namespace: see k8s/permissions.py.)
APISERVER_SELECTOR = "component=kube-apiserver"
# How soon to read the node reports again, by PolicyInstalled reason (Installed: at the resync).
# A new or changed report reconciles at once (handlers.py watches the Leases); these looks catch
# what no watch shows: kube-apiserver restarted on a node (RestartRequired) and reports gone stale.
RECHECK_AFTER = {"NoReports": 60.0, "Installing": 60.0, "InstallFailed": 30.0, "RestartRequired": 60.0}


class ApplyRefused(Exception):
    """An apply the API server refused for good; carries the API error for the handler."""

    def __init__(self, message: str, cause: ApiError):
        super().__init__(message)
        self.cause = cause


@dataclass(frozen=True)
class OperatorConfig:
    namespace: str = "kaudit-system"  # POD_NAMESPACE: where non-agent objects and Events live
    image: str = ""  # "" = the renderer's default image


@dataclass
class Outcome:
    """What one reconcile did, for handlers (errors), metrics and tests."""

    writes: int = 0
    ready: bool = False
    reason: str = ""
    conditions: list[dict] = field(default_factory=list)
    name: str = ""
    requeue_after: float | None = None  # seconds until the node reports are worth reading again


def now_text() -> str:
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def agent_target(collection: dict) -> tuple[r.Resource, str, str] | None:
    """(resource, namespace, name) of the user's object kaudit patches, or None in other modes."""
    agent = ((collection.get("spec") or {}).get("agent")) or {}
    mode = agent.get("mode") or "Managed"
    namespace = agent.get("namespace") or DEFAULT_AGENT_NAMESPACE
    if mode == "DaemonSet":
        return r.DAEMON_SETS, namespace, (agent.get("daemonSet") or {}).get("name") or "datadog-agent"
    if mode == "DatadogAgent":
        return r.DATADOG_AGENTS, namespace, (agent.get("datadogAgent") or {}).get("name") or "datadog"
    return None


def agent_mode(collection: dict) -> str:
    return (((collection.get("spec") or {}).get("agent")) or {}).get("mode") or "Managed"


def patches_others_objects(collection: dict) -> bool:
    """DaemonSet and DatadogAgent modes change a user's object: deleting needs a finalizer."""
    return agent_target(collection) is not None


def active_collection(collections: Iterable[dict]) -> str | None:
    """The one AuditCollection that is in charge: the oldest one not being deleted."""
    alive = [c for c in collections if not (c.get("metadata") or {}).get("deletionTimestamp")]
    if not alive:
        return None
    oldest = min(alive, key=lambda c: ((c["metadata"].get("creationTimestamp") or ""), c["metadata"]["name"]))
    return oldest["metadata"]["name"]


class Reconciler:
    def __init__(
        self,
        client: ApiClient,
        config: OperatorConfig,
        *,
        render: Callable[..., Any] | None = None,
        clock: Callable[[], str] = now_text,
    ):
        self.client = client
        self.config = config
        self._render = render
        self._clock = clock
        self._locks: dict[str, asyncio.Lock] = {}
        # The status last written per collection (by uid): the body a drift event hands us can
        # predate our own status patch, and comparing with it would patch the same status again.
        self._written: dict[str, dict] = {}
        self._waiting: set[str] = set()
        # What kaudit last applied per object, to recognise the watch events of its own writes.
        self._applied: dict[planning.Key, dict] = {}
        self._seen_status: dict[planning.Key, Any] = {}

    def lock(self, name: str) -> asyncio.Lock:
        return self._locks.setdefault(name, asyncio.Lock())

    def render(self, collection: dict, existing: tuple[dict, ...]) -> Any:
        render = self._render
        if render is None:
            from kaudit.render import render  # the renderer's import cost is paid once, on first use
        kwargs: dict[str, Any] = {"existing": existing, "namespace": self.config.namespace}
        if self.config.image:
            kwargs["image"] = self.config.image
        return render(collection, **kwargs)

    # --- the reconcile --------------------------------------------------------------------------

    async def reconcile(self, collection: dict, *, others: Iterable[dict] = ()) -> Outcome:
        name = collection["metadata"]["name"]
        async with self.lock(name):
            return await self._reconcile(collection, list(others))

    async def reconcile_latest(self, name: str, latest: Callable[[], tuple[dict | None, list[dict]]]
                               ) -> Outcome | None:
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
                body, others = latest()
                if body is None:
                    return None
                return await self._reconcile(body, others)
        finally:
            self._waiting.discard(name)

    def is_own_echo(self, child: dict) -> bool:
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

    async def _reconcile(self, collection: dict, others: list[dict]) -> Outcome:
        name = collection["metadata"]["name"]
        outcome = Outcome(name=name)
        if collection["metadata"].get("deletionTimestamp"):
            return outcome  # being deleted: the finalizer (or the garbage collector) has the last word
        candidates = [collection, *[o for o in others if o["metadata"]["name"] != name]]
        active = active_collection(candidates)
        while active is not None and active != name:
            # The caller's view of other collections can lag (a watch event not processed yet):
            # confirm the one that would win before refusing this one.
            live = await self.client.get(r.AUDIT_COLLECTIONS, None, active)
            if live is not None and not live["metadata"].get("deletionTimestamp"):
                break
            candidates = [c for c in candidates if c["metadata"]["name"] != active]
            active = active_collection(candidates)
        if active is not None and active != name:
            message = (f"AuditCollection {active!r} is already active; a cluster has one audit policy. "
                       f"Delete one of them; this one changes nothing meanwhile.")
            conditions = [Condition("PolicyValid", UNKNOWN, "Conflict", message),
                          Condition("AgentConfigured", UNKNOWN, "Conflict", message)]
            return await self._report(collection, outcome, conditions, extra={})

        target = agent_target(collection)
        live_target = await self.client.get(*target) if target else None
        existing = (planning.user_view(live_target),) if live_target else ()
        try:
            rendered = self.render(collection, existing)
        except InvalidInput as exc:
            return await self._report(collection, outcome, _invalid_conditions(exc), extra={})
        except Refused as exc:
            conditions = [Condition("PolicyValid", UNKNOWN, exc.reason, exc.message),
                          Condition("AgentConfigured", FALSE, exc.reason, exc.message)]
            return await self._report(collection, outcome, conditions, extra={})

        children = await self._live_children(name)
        targets = {planning.key_of(live_target): live_target} if live_target else {}
        writes = planning.plan_writes(owner=collection, objects=rendered.objects, patches=rendered.patches,
                                      live_children=children, live_targets=targets)
        await self._approve(collection, rendered, outcome)
        try:
            applied = await self._execute(collection, writes, tuple(getattr(rendered, "events", ())))
            if live_target is not None and planning.key_of(live_target) not in applied:
                await self._yield_fields(live_target)  # an earlier yield that did not go through
        except ApplyRefused as exc:
            # The API refused a write (a missing namespace, an admission webhook, RBAC): say so in
            # status, then let the handler retry later.
            conditions = [Condition("PolicyValid", TRUE, "Valid", _policy_message(rendered)),
                          Condition("AgentConfigured", FALSE, "ApplyFailed", str(exc))]
            await self._report(collection, outcome, conditions, extra=_rendered_status(collection, rendered))
            raise exc.cause from None
        outcome.writes += len(writes.applies) + len(writes.deletes) + len(writes.releases)

        nodes = _once(self._control_plane_nodes)  # read only if a consumer needs it, then shared
        figures, installed = await asyncio.gather(
            self._agent_figures(collection, rendered, applied, children, live_target, nodes),
            self._policy_installed(collection, rendered, nodes))
        extra = _rendered_status(collection, rendered)
        if figures is not None:
            extra["agent"] = figures.as_status()
            if figures.warning:
                extra["warnings"] = [*extra.get("warnings", []), f"spec.agent: {figures.warning}"]
        conditions = [Condition("PolicyValid", TRUE, "Valid", _policy_message(rendered))]
        if installed is not None:
            extra["nodes"], installed_condition = installed
            conditions.append(installed_condition)
            outcome.requeue_after = RECHECK_AFTER.get(installed_condition.reason)
        conditions.append(_agent_condition(collection, figures))
        return await self._report(collection, outcome, conditions, extra=extra)

    async def _approve(self, collection: dict, rendered: Any, outcome: Outcome) -> None:
        """Publish the rendered policy's hash in status.policy before the ConfigMap carries it.

        The installers install only the policy whose hash status.policy.fullHash names
        (kaudit.installer.approval); approving first means a legitimate change is never refused
        for arriving before its approval. Nothing is written when the status already says so.
        """
        meta = collection["metadata"]
        live_status = self._written.get(meta.get("uid", "")) or collection.get("status") or {}
        policy = _rendered_status(collection, rendered)["policy"]
        if live_status.get("policy") == policy:
            return
        await self.client.merge_patch(r.AUDIT_COLLECTIONS, None, meta["name"], {"status": {"policy": policy}},
                                      subresource="status")
        self._written[meta.get("uid", "")] = {**live_status, "policy": policy}
        outcome.writes += 1

    async def _optional_list(self, resource: r.Resource, namespace: str | None, selector: str) -> list[dict]:
        """A read that enriches status but must not stop a reconcile when RBAC does not allow it."""
        try:
            return await self.client.list(resource, namespace=namespace, label_selector=selector)
        except ApiError as exc:
            if exc.status != 403:
                raise
            logger.warning("not allowed to list %s in %s: %s", resource.plural, namespace or "the cluster", exc)
            return []

    async def _policy_installed(self, collection: dict, rendered: Any,
                                control_plane_nodes: Callable[[], Awaitable[list[dict]]]) -> tuple[list[dict], Condition] | None:
        """Node by node: which policy the installer wrote and whether kube-apiserver has loaded it.

        Every control-plane node must report: one whose installer has not reported yet
        is waited for, so Ready never comes while a node still lacks the policy. None when kaudit
        does not install the policy (spec.apiServer.installPolicy: false).
        """
        if not any(_component(obj) == INSTALLER_COMPONENT for obj in rendered.objects):
            return None
        from kaudit.installer.reports import aggregate

        name = collection["metadata"]["name"]
        leases, pods, nodes_now = await asyncio.gather(
            self._optional_list(r.LEASES, self.config.namespace, f"{planning.COLLECTION_LABEL}={name}"),
            self._optional_list(r.PODS, APISERVER_NAMESPACE, APISERVER_SELECTOR), control_plane_nodes())
        leases = [lease for lease in leases
                  if ((lease.get("metadata") or {}).get("labels") or {}).get(planning.COLLECTION_LABEL) == name]
        names = [(node.get("metadata") or {}).get("name") for node in nodes_now]
        summary = aggregate(leases, pods, rendered.policy.hash, now=datetime.datetime.now(datetime.timezone.utc),
                            nodes=[n for n in names if n])
        found = summary.condition
        return summary.nodes, Condition(found["type"], found["status"], found["reason"], found["message"])

    async def _live_children(self, name: str) -> list[dict]:
        selector = f"{planning.COLLECTION_LABEL}={name}"
        lists = [(resource, None) for resource in r.CHILD_RESOURCES]
        lists += [(resource, self.config.namespace) for resource in r.OPERATOR_NAMESPACE_CHILDREN]
        # Independent reads: issued together, a reconcile waits for one round trip, not six.
        results = await asyncio.gather(*(self.client.list(resource, namespace=namespace, label_selector=selector)
                                         for resource, namespace in lists))
        # Servers filter by label; filtering again keeps test servers without selectors honest.
        return [item for items in results for item in items
                if ((item.get("metadata") or {}).get("labels") or {}).get(planning.COLLECTION_LABEL) == name]

    async def _yield_fields(self, live: dict | None) -> dict | None:
        """Give up ownership of the fields kaudit set over another manager's value (plan.yielded_paths)."""
        operations = planning.yield_patch(live)
        if not operations:
            return None
        try:
            return await self.client.json_patch(r.resource_of(live), *planning.key_of(live)[2:], operations)
        except TransientApiError:
            raise
        except ApiError as exc:  # a concurrent write moved the object: the next reconcile tries again
            logger.info("could not yield fields of %s: %s", _describe(planning.key_of(live)), exc)
            return None

    async def _execute(self, collection: dict, writes: planning.Plan,
                       notices: tuple[tuple[str, str], ...] = ()) -> dict[planning.Key, dict]:
        applied: dict[planning.Key, dict] = {}
        for body in writes.applies:
            try:
                result = await self.client.apply(body, force=True)
            except TransientApiError:
                raise
            except ApiError as exc:
                raise ApplyRefused(f"{_describe(planning.key_of(body))}: {exc.status} {exc.reason}: {exc.message}",
                                   exc) from None
            applied[planning.key_of(body)] = await self._yield_fields(result) or result or body
            self._applied[planning.key_of(body)] = body
            await self._event(collection, NORMAL, "Applied", f"Applied {_describe(planning.key_of(body))}.")
            if not planning.is_owned_by_a_collection(body):
                for reason, message in notices:
                    await self._event(collection, NORMAL, reason, message)
        for key in writes.deletes:
            resource = r.resource_of({"apiVersion": key[0], "kind": key[1]})
            await self.client.delete(resource, key[2], key[3])
            await self._event(collection, NORMAL, "Pruned", f"Deleted {_describe(key)}: no longer rendered.")
        for live in writes.releases:
            await self._release_one(collection, live)
        return applied

    async def _release_one(self, collection: dict, live: dict) -> None:
        restored = await self._restore_user_items(live)
        if restored is None:
            return  # the user deleted it meanwhile: nothing to hand back (an apply would create it)
        release, current = restored
        resource = r.resource_of(release.apply)
        values = planning.restore_values_patch(current, release.values)
        if values and await self.client.json_patch(resource, release.key[2], release.key[3], values) is None:
            return
        await self.client.apply(release.apply, force=False)
        await self._event(collection, NORMAL, "Released",
                          f"Removed kaudit's changes from {_describe(release.key)}.")

    async def _restore_user_items(self, live: dict) -> tuple[planning.Release, dict] | None:
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
            current = await self.client.get(resource, namespace, name)
            return (release, current) if current is not None else None
        for attempt in range(1, RESTORE_ATTEMPTS + 1):
            try:
                current = await self.client.merge_patch(resource, namespace, name, release.restore,
                                                        retry_conflicts=False)
                return (release, current) if current is not None else None
            except ApiError as exc:
                if exc.status != 409:
                    raise
                if attempt == RESTORE_ATTEMPTS:  # a writer that busy: kopf retries the handler soon
                    raise TransientApiError(exc.status, exc.reason, exc.message) from None
            fresh = await self.client.get(resource, namespace, name)
            if fresh is None:
                return None
            release = planning.release_of(fresh)
            if release.restore is None:
                return release, fresh  # the user's items are back already
        return None  # unreachable: the loop returns or raises

    async def release(self, collection: dict) -> int:
        """Undo kaudit's patches of objects it does not own (the finalizer's work); owned objects
        go with their owner through the garbage collector. Returns the number of objects released."""
        name = collection["metadata"]["name"]
        async with self.lock(name):
            owner_uid = collection["metadata"]["uid"]
            patched = [c for c in await self._live_children(name) if not planning.is_owned_by(c, owner_uid)]
            for live in patched:
                await self._release_one(collection, live)
            return len(patched)

    async def _control_plane_nodes(self) -> list[dict]:
        """The nodes with the first control-plane role label any node carries (the legacy one after)."""
        for label in CONTROL_PLANE_SELECTORS:
            nodes = await self._optional_list(r.NODES, None, label)
            if nodes:
                return nodes
        return []

    async def _agent_figures(self, collection: dict, rendered: Any, applied: dict, children: list[dict],
                             live_target: dict | None, control_plane_nodes: Callable[[], Awaitable[list[dict]]]):
        mode = agent_mode(collection)
        if mode in ("None", "DatadogAgent"):
            return None
        daemon_set = _agent_daemon_set(mode, rendered, applied, children, live_target)
        nodes = await control_plane_nodes()
        pods: list[dict] = []
        if daemon_set is not None and nodes:
            namespace = (daemon_set.get("metadata") or {}).get("namespace")
            match = (((daemon_set.get("spec") or {}).get("selector")) or {}).get("matchLabels") or {}
            selector = ",".join(f"{k}={v}" for k, v in sorted(match.items()))
            pods = await self._optional_list(r.PODS, namespace, selector)
        return agent_figures(daemon_set, nodes, pods)

    # --- reporting -------------------------------------------------------------------------------

    async def _report(self, collection: dict, outcome: Outcome, conditions: list[Condition],
                      extra: dict) -> Outcome:
        meta = collection["metadata"]
        live_status = self._written.get(meta.get("uid", "")) or collection.get("status") or {}
        generation = meta.get("generation") or 0
        keep_last_good = not extra  # a refusal keeps the last good policy, flags and node reports
        if keep_last_good:
            given = {c.type for c in conditions}
            conditions = [*conditions, *(
                Condition(c["type"], c["status"], c["reason"], c.get("message", ""))
                for c in live_status.get("conditions") or []
                if c.get("type") not in given and c.get("type") != "Ready")]
        full = [summarise(conditions), *conditions]
        rendered_conditions = render_conditions(full, previous=live_status.get("conditions") or [],
                                                generation=generation, now=self._clock())
        desired = {"observedGeneration": generation, "conditions": rendered_conditions}
        for key in ("policy", "apiServerFlags", "nextSteps", "agent", "nodes"):
            if key in extra:
                desired[key] = extra[key]
            elif keep_last_good and key in live_status:
                desired[key] = live_status[key]
        desired["warnings"] = extra.get("warnings", [])
        patch = status_patch(live_status, desired)
        if patch is not None:
            await self.client.merge_patch(r.AUDIT_COLLECTIONS, None, meta["name"], patch, subresource="status")
            self._written[meta.get("uid", "")] = {**live_status, **desired}
            outcome.writes += 1
            for changed in condition_changes(live_status.get("conditions") or [], rendered_conditions,
                                             restate=FAILURE_REASONS):
                if changed["type"] != "Ready":
                    continue
                # Steps on the way are not problems: their Events are Normal.
                progressing = changed["reason"] in PROGRESSING_REASONS
                kind = NORMAL if changed["status"] == TRUE or progressing else WARNING
                await self._event(collection, kind, changed["reason"], changed["message"])
        ready = rendered_conditions[0]
        outcome.ready = ready["status"] == TRUE
        outcome.reason = ready["reason"]
        outcome.conditions = rendered_conditions
        return outcome

    async def _event(self, collection: dict, type_: str, reason: str, message: str) -> None:
        try:
            await post_event(self.client, collection, type_=type_, reason=reason, message=message)
        except Exception as exc:  # an Event is informative; never fail a reconcile for it
            logger.warning("could not post an Event (%s): %s", reason, exc)


def _once(factory: Callable[[], Awaitable[Any]]) -> Callable[[], Awaitable[Any]]:
    """``factory()`` started on the first call only; every caller awaits that same task."""
    task: asyncio.Future | None = None

    def get() -> Awaitable[Any]:
        nonlocal task
        if task is None:
            task = asyncio.ensure_future(factory())
        return task
    return get


def _component(obj: dict) -> str:
    return ((obj.get("metadata") or {}).get("labels") or {}).get("app.kubernetes.io/component", "")


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


def _policy_message(rendered: Any) -> str:
    policy = rendered.policy
    return f"Policy {policy.short_hash} with {policy.rule_count} rules is valid."


def _rendered_status(collection: dict, rendered: Any) -> dict:
    policy = rendered.policy
    return {
        "policy": {"hash": policy.short_hash, "fullHash": policy.hash, "ruleCount": policy.rule_count,
                   "profile": _profile_of(collection), "auditKaudit": _audits_kaudit(collection)},
        "apiServerFlags": list(rendered.api_server_flags),
        "nextSteps": list(rendered.next_steps),
        "warnings": [str(w) for w in rendered.warnings],
    }


def _profile_of(collection: dict) -> str:
    return ((collection.get("spec") or {}).get("policy") or {}).get("profile") or "Default"


def _audits_kaudit(collection: dict) -> bool:
    return ((collection.get("spec") or {}).get("policy") or {}).get("auditKaudit") is not False


def _agent_daemon_set(mode: str, rendered: Any, applied: dict, children: list[dict],
                      live_target: dict | None) -> dict | None:
    if mode == "DaemonSet":
        if live_target is None:
            return None
        return applied.get(planning.key_of(live_target)) or live_target
    for obj in rendered.objects:
        if obj.get("kind") == "DaemonSet" and "agent" == ((obj.get("metadata") or {}).get("labels") or {}).get(
                "app.kubernetes.io/component"):
            key = planning.key_of(obj)
            live = applied.get(key) or next((c for c in children if planning.key_of(c) == key), None)
            return live or obj
    return None


def _agent_condition(collection: dict, figures) -> Condition:
    mode = agent_mode(collection)
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

"""Keep detection rules in Datadog: plan (pure) and apply (the rules API v2, :class:`DatadogRulesApi`).

Ownership is by tags, so a fleet of clusters can share one Datadog organisation safely:

* every rule kaudit writes carries ``managed-by:kaudit`` and ``kaudit-owner:OWNER``;
* a sync reads every rule of the organisation, but only ever updates or deletes the rules that
  carry both tags with **its** owner; a rule of another owner, or one without kaudit's tags, is
  never touched, even when it has the name of a desired rule (that is a *conflict*, reported, and
  the desired rule is not created beside it);
* rules are matched by name within the owner, so the owner's set is exactly the desired set after
  an apply: missing ones created, drifted ones put back (``PUT`` of the whole rule), ones no longer
  desired deleted.

Drift is judged on the fields kaudit sets (:func:`differences`): what Datadog adds on its own
(ids, versions, defaults of fields kaudit does not write) is not drift. Tag order is not either.
"""

from __future__ import annotations

import json
import re
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Iterable, Mapping, Protocol, Sequence

from kaudit.detect.model import MANAGED_TAG, Rule
from kaudit.detect.render import for_cluster, rule_to_api
from kaudit.errors import KauditError

OWNER_TAG = "kaudit-owner"
# Datadog sites the client knows (its server variable "site"); a site is not a URL.
SITES = ("datadoghq.com", "us3.datadoghq.com", "us5.datadoghq.com", "ap1.datadoghq.com", "ap2.datadoghq.com",
         "datadoghq.eu", "ddog-gov.com")
PAGE_SIZE = 100  # the API's maximum page size for the rules list
# Fields of a create payload the update payload (PUT) does not take.
CREATE_ONLY = ("type",)
_TAG_VALUE = re.compile(r"^[A-Za-z0-9_.\-/]+$")

CREATE, UPDATE, DELETE, UNCHANGED, CONFLICT = "create", "update", "delete", "unchanged", "conflict"


class SyncError(KauditError):
    """Datadog refused or could not be reached; the message is one line."""


def owner_tag(owner: str) -> str:
    return f"{OWNER_TAG}:{owner}"


def check_tag_value(value: str) -> str | None:
    """Why ``value`` cannot be a tag value (owner, cluster), or None."""
    if not _TAG_VALUE.match(value):
        return "letters, digits, '-', '_', '.' and '/' only (it becomes a Datadog tag value)"
    return None


def desired_payloads(rules: Iterable[Rule], owner: str, cluster: str = "") -> dict[str, dict[str, Any]]:
    """The create payloads the owner wants in Datadog, by rule name; ``cluster`` scopes each rule
    to that cluster's logs (:func:`kaudit.detect.render.for_cluster`). Raises ValueError on two
    rules with one name (they could not be told apart in Datadog)."""
    out: dict[str, dict[str, Any]] = {}
    for rule in rules:
        payload = rule_to_api(for_cluster(rule, cluster))
        tags = [t for t in payload["tags"] if not t.startswith(OWNER_TAG + ":")]
        payload["tags"] = _unique(tags + [MANAGED_TAG, owner_tag(owner)])
        if payload["name"] in out:
            raise ValueError(f"two rules are named {payload['name']!r}")
        out[payload["name"]] = payload
    return out


def _unique(items: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(items))


def owned_by(rule: Mapping[str, Any], owner: str) -> bool:
    tags = set(rule.get("tags") or ())
    return MANAGED_TAG in tags and owner_tag(owner) in tags


def _empty(value: Any) -> bool:
    return value in ("", [], {}, None)


def differences(desired: Any, actual: Any, path: str = "") -> list[str]:
    """Paths where ``actual`` (a rule as Datadog returns it) differs from ``desired`` (a payload
    kaudit wrote). Keys only ``actual`` has are Datadog's own; a key it lacks matches an empty
    desired value; tags compare as sets."""
    if isinstance(desired, dict):
        if not isinstance(actual, dict):
            return [path or "."]
        out: list[str] = []
        for key, want in desired.items():
            where = f"{path}.{key}" if path else key
            if key not in actual or actual[key] is None:
                if not _empty(want):
                    out.append(where)
                continue
            if key == "tags" and isinstance(want, list) and isinstance(actual[key], list):
                if set(want) != set(actual[key]):
                    out.append(where)
                continue
            out += differences(want, actual[key], where)
        return out
    if isinstance(desired, list):
        if not isinstance(actual, list) or len(actual) != len(desired):
            return [path]
        return [d for i, (want, got) in enumerate(zip(desired, actual)) for d in differences(want, got, f"{path}[{i}]")]
    if type(desired) is not type(actual) and not (_number(desired) and _number(actual)):
        return [path]
    return [] if desired == actual else [path]


def _number(value: Any) -> bool:
    return type(value) in (int, float)


@dataclass(frozen=True)
class Action:
    kind: str  # create, update, delete, unchanged, conflict
    name: str
    rule_id: str = ""  # the Datadog rule id (update, delete, unchanged, conflict)
    payload: Mapping[str, Any] | None = None  # what is sent (create, update)
    changed: tuple[str, ...] = ()  # the drifted fields (update)
    reason: str = ""  # why nothing is done (conflict)


@dataclass(frozen=True)
class Plan:
    owner: str
    actions: tuple[Action, ...]

    def of(self, kind: str) -> list[Action]:
        return [a for a in self.actions if a.kind == kind]

    @property
    def writes(self) -> list[Action]:
        return [a for a in self.actions if a.kind in (CREATE, UPDATE, DELETE)]


def update_payload(payload: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in payload.items() if k not in CREATE_ONLY}


def plan(desired: Mapping[str, Mapping[str, Any]], existing: Sequence[Mapping[str, Any]], owner: str) -> Plan:
    """What makes the owner's rules in Datadog exactly ``desired`` (pure: no request)."""
    mine: dict[str, list[Mapping[str, Any]]] = {}
    others: dict[str, Mapping[str, Any]] = {}
    for rule in existing:
        name = str(rule.get("name", ""))
        if owned_by(rule, owner):
            mine.setdefault(name, []).append(rule)
        else:
            others.setdefault(name, rule)
    actions: list[Action] = []
    for name, payload in desired.items():
        found = mine.pop(name, [])
        if not found:
            if name in others:
                other = others[name]
                actions.append(Action(CONFLICT, name, str(other.get("id", "")), reason=_foreign(other, owner)))
            else:
                actions.append(Action(CREATE, name, payload=payload))
            continue
        keep, *duplicates = found
        changed = tuple(differences(update_payload(payload), keep))
        kind = UPDATE if changed else UNCHANGED
        actions.append(Action(kind, name, str(keep.get("id", "")), update_payload(payload) if changed else None,
                              changed))
        actions += [Action(DELETE, name, str(d.get("id", "")), reason="a second rule of this owner with this name")
                    for d in duplicates]
    for name, stale in sorted(mine.items()):
        actions += [Action(DELETE, name, str(r.get("id", "")), reason="no longer desired") for r in stale]
    return Plan(owner, tuple(actions))


def _foreign(rule: Mapping[str, Any], owner: str) -> str:
    owners = sorted(t.partition(":")[2] for t in rule.get("tags") or () if t.startswith(OWNER_TAG + ":"))
    if MANAGED_TAG in (rule.get("tags") or ()) and owners:
        return (f"rule {rule.get('id', '?')} has this name and belongs to kaudit owner {', '.join(owners)}, "
                f"not {owner}: left alone")
    return f"rule {rule.get('id', '?')} has this name and is not kaudit's ({owner_tag(owner)}): left alone"


# --- talking to Datadog ---------------------------------------------------------------------------------------

class RulesApi(Protocol):
    """The four calls a sync makes; :class:`DatadogRulesApi` is the real one."""

    def list_rules(self) -> list[dict[str, Any]]: ...

    def create(self, payload: Mapping[str, Any]) -> str: ...

    def update(self, rule_id: str, payload: Mapping[str, Any]) -> None: ...

    def delete(self, rule_id: str) -> None: ...


@dataclass(frozen=True)
class Credentials:
    api_key: str
    app_key: str = field(repr=False)

    def __repr__(self) -> str:  # never print a key
        return "Credentials(<hidden>)"


RULES_PATH = "/api/v2/security_monitoring/rules"
RETRIES = 3  # what the official client's enable_retry did
RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
MAX_RETRY_WAIT = 10.0  # seconds: a longer rate-limit reset waits for the next sync instead


def _retry_after(reset: str | None, attempt: int) -> float:
    """Seconds before retry ``attempt`` (0-based): Datadog's X-RateLimit-Reset when it gives one
    (seconds until the window resets), else 0.5, 1, 2...; at most MAX_RETRY_WAIT."""
    try:
        wait = float(reset) if reset is not None else 0.5 * 2 ** attempt
    except ValueError:
        wait = 0.5 * 2 ** attempt
    return max(0.0, min(wait, MAX_RETRY_WAIT))


class DatadogRulesApi:
    """The four rules endpoints of Datadog's API v2 (Security Monitoring), JSON over HTTPS with the
    standard library. Four calls need no SDK: the official client (datadog-api-client) was 95 MB of
    the image's 159 MB virtual environment. The bodies are the API's own JSON
    (:func:`kaudit.detect.render.rule_to_api`); the tests parse every body kaudit sends with the
    official client's models (tests/datadog_rules_server.py), so a body Datadog's schema refuses
    fails there. Rate limits and server errors are retried (``retries`` times, waiting what
    Datadog's ``X-RateLimit-Reset`` asks, else a doubling backoff); any other error is a
    :class:`SyncError` naming the call."""

    def __init__(self, credentials: Credentials, site: str = "datadoghq.com", url: str = "",
                 timeout: float = 30.0, retries: int = RETRIES, sleep: Callable[[float], None] = time.sleep) -> None:
        from kaudit import __version__

        self._base = (url or f"https://api.{site}").rstrip("/")
        self._headers = {"DD-API-KEY": credentials.api_key, "DD-APPLICATION-KEY": credentials.app_key,
                         "Accept": "application/json", "Content-Type": "application/json",
                         "User-Agent": f"kaudit/{__version__}"}
        self._timeout = timeout
        self._retries = retries
        self._sleep = sleep

    def close(self) -> None:
        """Nothing to close: each call opens and closes its own connection."""

    def list_rules(self) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        page = 0
        while True:
            query = urllib.parse.urlencode({"page[size]": PAGE_SIZE, "page[number]": page})
            body = self._request("GET", f"{RULES_PATH}?{query}", "list_security_monitoring_rules")
            page_items = body.get("data") or []
            out += [item for item in page_items if isinstance(item, dict)]
            if len(page_items) < PAGE_SIZE:  # the page as Datadog sent it decides whether another follows
                return out
            page += 1

    def create(self, payload: Mapping[str, Any]) -> str:
        return str(self._request("POST", RULES_PATH, "create_security_monitoring_rule", payload).get("id", ""))

    def update(self, rule_id: str, payload: Mapping[str, Any]) -> None:
        self._request("PUT", f"{RULES_PATH}/{urllib.parse.quote(rule_id, safe='')}",
                      "update_security_monitoring_rule", payload)

    def delete(self, rule_id: str) -> None:
        self._request("DELETE", f"{RULES_PATH}/{urllib.parse.quote(rule_id, safe='')}",
                      "delete_security_monitoring_rule")

    def _request(self, method: str, path: str, operation: str, payload: Mapping[str, Any] | None = None) -> Any:
        data = None if payload is None else json.dumps(payload).encode()
        attempt = 0
        while True:
            request = urllib.request.Request(self._base + path, data=data, method=method, headers=self._headers)
            try:
                with urllib.request.urlopen(request, timeout=self._timeout) as response:
                    raw = response.read()
            except urllib.error.HTTPError as exc:
                if exc.code in RETRY_STATUSES and attempt < self._retries:
                    self._sleep(_retry_after(exc.headers.get("X-RateLimit-Reset"), attempt))
                    attempt += 1
                    continue
                raise SyncError(f"Datadog answered {exc.code} {exc.reason or ''}".strip() + f" to {operation}") from None
            except OSError as exc:  # URLError (no connection, TLS) and timeouts
                if attempt < self._retries:
                    self._sleep(_retry_after(None, attempt))
                    attempt += 1
                    continue
                reason = getattr(exc, "reason", exc)
                raise SyncError(f"{operation}: {type(exc).__name__}: {str(reason).splitlines()[0][:200]}") from None
            try:
                answer = json.loads(raw) if raw.strip() else {}
            except ValueError:
                raise SyncError(f"{operation}: Datadog's answer is not JSON") from None
            return answer if isinstance(answer, dict) else {}


@dataclass(frozen=True)
class SyncResult:
    plan: Plan
    applied: bool  # False in a dry run
    created_ids: tuple[str, ...] = ()


def sync(api: RulesApi, rules: Iterable[Rule], owner: str, cluster: str = "", dry_run: bool = False) -> SyncResult:
    """Plan against the rules Datadog has now, then (unless ``dry_run``) apply the plan's writes;
    conflicts are never written. Raises SyncError on the first refused call."""
    desired = desired_payloads(rules, owner, cluster)
    the_plan = plan(desired, api.list_rules(), owner)
    if dry_run:
        return SyncResult(the_plan, applied=False)
    created: list[str] = []
    done: list[Action] = []
    for action in the_plan.actions:
        if action.kind == CREATE and action.payload is not None:
            created.append(api.create(action.payload))
            action = replace(action, rule_id=created[-1])
        elif action.kind == UPDATE and action.payload is not None:
            api.update(action.rule_id, action.payload)
        elif action.kind == DELETE:
            api.delete(action.rule_id)
        done.append(action)
    return SyncResult(Plan(owner, tuple(done)), applied=True, created_ids=tuple(created))


def plan_lines(result: SyncResult) -> list[str]:
    """The plan as lines: one per rule, what is (or, in a dry run, would be) done and why."""
    verb = {CREATE: "create", UPDATE: "update", DELETE: "delete"} if result.applied else \
        {CREATE: "would create", UPDATE: "would update", DELETE: "would delete"}
    out = []
    for action in result.plan.actions:
        label = verb.get(action.kind, action.kind)
        detail = ""
        if action.kind == UPDATE:
            detail = f" (drifted: {', '.join(action.changed)})"
        elif action.reason:
            detail = f" ({action.reason})"
        rid = f" [{action.rule_id}]" if action.rule_id else ""
        out.append(f"{label:<13} {action.name}{rid}{detail}")
    return out


def plan_document(result: SyncResult) -> dict[str, Any]:
    return {
        "kind": "DetectionRuleSync", "version": 1, "owner": result.plan.owner, "applied": result.applied,
        "actions": [{"action": a.kind, "name": a.name, "id": a.rule_id, "changed": list(a.changed),
                     "reason": a.reason} for a in result.plan.actions],
    }


# Reasons of the operator's DetectionRulesSynced condition (informational: it never decides Ready).
SYNCED, SYNC_PLANNED, SYNC_CONFLICT, SYNC_FAILED = "RulesSynced", "SyncPlanned", "RuleNameTaken", "SyncFailed"
MAX_MESSAGE = 1024  # condition messages stay readable in kubectl describe


def condition_message(text: str) -> str:
    return text if len(text) <= MAX_MESSAGE else text[:MAX_MESSAGE - 3] + "..."


def summary(result: SyncResult) -> tuple[str, str, str]:
    """(status, reason, message) of a sync run, for the operator's condition."""
    counts: dict[str, int] = {}
    for action in result.plan.actions:
        counts[action.kind] = counts.get(action.kind, 0) + 1
    verbs = {CREATE: "created", UPDATE: "repaired", DELETE: "deleted", UNCHANGED: "unchanged", CONFLICT: "conflicting"}
    if not result.applied:
        verbs.update({CREATE: "to create", UPDATE: "to repair", DELETE: "to delete"})
    done = ", ".join(f"{counts[kind]} {verbs[kind]}" for kind in (CREATE, UPDATE, DELETE, UNCHANGED, CONFLICT)
                     if counts.get(kind))
    head = f"owner {result.plan.owner}: {done or 'no rules'}"
    conflicts = result.plan.of(CONFLICT)
    if conflicts:
        return "False", SYNC_CONFLICT, condition_message(f"{head}; " + "; ".join(f"{a.name}: {a.reason}" for a in conflicts))
    if not result.applied:
        return "True", SYNC_PLANNED, condition_message(f"dry run, nothing written: {head}")
    return "True", SYNCED, condition_message(head)

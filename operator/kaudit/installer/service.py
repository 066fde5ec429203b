"""The long-running installer: follow the source, install, report each node's state.

Glue only: the writing is in :mod:`kaudit.installer.writer`, the following in
:mod:`kaudit.installer.follow`, the report body in :mod:`kaudit.installer.lease`.
"""

from __future__ import annotations

import logging
import signal
import threading
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Protocol

from kaudit.installer.follow import Outcome, Refusal, follow
from kaudit.installer.lease import Identity, report_lease

log = logging.getLogger("kaudit.installer")


class Sender(Protocol):
    def send(self, body: dict[str, Any]) -> bool: ...


@dataclass(frozen=True)
class NodeState:
    """What the node report says: the installed policy, the latest error, the standing refusal."""

    installed_hash: str = ""
    installed_at: datetime | None = None
    error: str = ""
    refused: Refusal | None = None
    refused_at: datetime | None = None
    warnings: tuple[str, ...] = ()  # the lints of the installed policy (`kaudit policy lint`'s words)


class Reporter:
    """Sends a report when the node's state changes, and renews it every ``heartbeat`` seconds."""

    def __init__(self, sender: Sender, identity: Identity, policy_file: Path, *, heartbeat: float,
                 clock: Callable[[], datetime] = lambda: datetime.now(timezone.utc)):
        self.sender = sender
        self.identity = identity
        self.policy_file = str(policy_file)
        self.heartbeat = heartbeat
        self.clock = clock
        self.state = NodeState()
        self.sent_state: NodeState | None = None
        self.sent_at: datetime | None = None

    def record(self, outcome: Outcome) -> None:
        state = self.state
        if outcome.result is not None:
            # Installed (or already in place): whatever was refused before is no longer offered.
            self.state = NodeState(outcome.result.hash, outcome.result.installed_at, warnings=outcome.warnings)
        elif outcome.refused is not None:
            # Keep what is installed; name what was refused, since when (the same candidate keeps its time).
            since = state.refused_at if state.refused == outcome.refused else self.clock()
            self.state = replace(state, error="", refused=outcome.refused, refused_at=since)
        else:
            # Keep what is installed (and its warnings); add why the latest round failed.
            self.state = replace(state, error=outcome.error)
        self.flush()

    def flush(self) -> None:
        now = self.clock()
        due = self.sent_at is None or (now - self.sent_at).total_seconds() >= self.heartbeat
        if self.state == self.sent_state and not due:
            return
        state = self.state
        body = report_lease(
            self.identity,
            policy_file=self.policy_file,
            installed_hash=state.installed_hash,
            installed_at=state.installed_at,
            error=state.error,
            warnings=state.warnings,
            now=now,
            lease_seconds=int(self.heartbeat * 3),
            refused_hash=state.refused.hash if state.refused else "",
            refused_reason=state.refused.reason if state.refused else "",
            refused_at=state.refused_at,
        )
        if self.sender.send(body):
            self.sent_state, self.sent_at = state, now


def log_outcome(outcome: Outcome) -> None:
    if outcome.refused is not None:
        log.warning("refused policy %s: %s; the installed file is left as it is",
                    outcome.refused.hash[:12], outcome.refused.reason)
    elif outcome.error:
        log.error("%s", outcome.error)
    elif outcome.result is not None:
        r = outcome.result
        if r.changed:
            kept = f", previous kept as {r.previous}" if r.previous else ""
            log.info("installed policy %s at %s%s", r.hash[:12], r.target, kept)
        else:
            log.info("policy %s already in place at %s", r.hash[:12], r.target)
        for warning in outcome.warnings:
            log.warning("%s", warning)


def serve(source: Path, target: Path, validate: Callable[[bytes], str], *, interval: float,
          reporter: Reporter | None, approve: Callable[[bytes], None] | None = None,
          lint: Callable[[bytes], tuple[str, ...]] | None = None) -> int:
    """Follow ``source`` until SIGTERM/SIGINT; returns the exit code (0). ``approve``, ``lint``: see follow()."""
    stop = threading.Event()

    def handle(signum: int, frame: object) -> None:  # noqa: ARG001 - signal handler signature
        stop.set()

    signal.signal(signal.SIGTERM, handle)
    signal.signal(signal.SIGINT, handle)

    last: tuple[str, Refusal | None] = ("", None)

    def on_outcome(outcome: Outcome) -> None:
        nonlocal last
        problem = (outcome.error, outcome.refused)
        if problem == ("", None) or problem != last:  # a failure or refusal repeats every round
            log_outcome(outcome)
        last = problem
        if reporter is not None:
            reporter.record(outcome)

    follow(source, target, validate, interval=interval, on_outcome=on_outcome, stop=stop,
           on_round=reporter.flush if reporter is not None else None, approve=approve, lint=lint)
    return 0

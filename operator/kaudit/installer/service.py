"""The long-running installer: follow the source, install, report each node's state.

Glue only: the writing is in :mod:`kaudit.installer.writer`, the following in
:mod:`kaudit.installer.follow`, the report body in :mod:`kaudit.installer.lease`.
"""

from __future__ import annotations

import logging
import signal
import threading
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Protocol

from kaudit.installer.follow import Outcome, follow
from kaudit.installer.lease import Identity, report_lease

log = logging.getLogger("kaudit.installer")


class Sender(Protocol):
    def send(self, body: dict) -> bool: ...


class Reporter:
    """Sends a report when the node's state changes, and renews it every ``heartbeat`` seconds."""

    def __init__(self, sender: Sender, identity: Identity, policy_file: Path, *, heartbeat: float,
                 clock: Callable[[], datetime] = lambda: datetime.now(timezone.utc)):
        self.sender = sender
        self.identity = identity
        self.policy_file = str(policy_file)
        self.heartbeat = heartbeat
        self.clock = clock
        self.state: tuple[str, datetime | None, str] = ("", None, "")
        self.sent_state: tuple[str, datetime | None, str] | None = None
        self.sent_at: datetime | None = None

    def record(self, outcome: Outcome) -> None:
        if outcome.result is not None:
            self.state = (outcome.result.hash, outcome.result.installed_at, "")
        else:
            # Keep what is installed; add why the latest round failed.
            self.state = (self.state[0], self.state[1], outcome.error)
        self.flush()

    def flush(self) -> None:
        now = self.clock()
        due = self.sent_at is None or (now - self.sent_at).total_seconds() >= self.heartbeat
        if self.state == self.sent_state and not due:
            return
        installed_hash, installed_at, error = self.state
        body = report_lease(
            self.identity,
            policy_file=self.policy_file,
            installed_hash=installed_hash,
            installed_at=installed_at,
            error=error,
            now=now,
            lease_seconds=int(self.heartbeat * 3),
        )
        if self.sender.send(body):
            self.sent_state, self.sent_at = self.state, now


def log_outcome(outcome: Outcome) -> None:
    if outcome.error:
        log.error("%s", outcome.error)
    elif outcome.result is not None:
        r = outcome.result
        if r.changed:
            kept = f", previous kept as {r.previous}" if r.previous else ""
            log.info("installed policy %s at %s%s", r.hash[:12], r.target, kept)
        else:
            log.info("policy %s already in place at %s", r.hash[:12], r.target)


def serve(source: Path, target: Path, validate: Callable[[bytes], str], *, interval: float,
          reporter: Reporter | None) -> int:
    """Follow ``source`` until SIGTERM/SIGINT; returns the exit code (0)."""
    stop = threading.Event()

    def handle(signum, frame):  # noqa: ARG001 - signal handler signature
        stop.set()

    signal.signal(signal.SIGTERM, handle)
    signal.signal(signal.SIGINT, handle)

    last_error = ""

    def on_outcome(outcome: Outcome) -> None:
        nonlocal last_error
        if not outcome.error or outcome.error != last_error:  # a failure repeats every round
            log_outcome(outcome)
        last_error = outcome.error
        if reporter is not None:
            reporter.record(outcome)

    follow(source, target, validate, interval=interval, on_outcome=on_outcome, stop=stop,
           on_round=reporter.flush if reporter is not None else None)
    return 0

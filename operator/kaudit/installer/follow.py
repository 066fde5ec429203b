"""Validate-then-install from a source file, once or following the source as it changes.

How ConfigMap updates are followed: the kubelet updates a ConfigMap volume by writing the new
keys into a fresh hidden directory and renaming the ``..data`` symlink onto it, so
``<mount>/policy.yaml`` (a symlink through ``..data``) switches from one complete version to the
next in one step. The follower re-opens that path every ``interval`` seconds and compares the
bytes it reads with the last bytes it handled. Reading content is what makes this reliable:
watching the mtime or inode of ``policy.yaml`` itself would see the symlink, not the data, and
inotify on a symlink swap needs the directory watched plus the same re-read anyway. A policy is a
few kilobytes, so a re-read every few seconds costs nothing. (A ``subPath`` mount never updates;
the rendered DaemonSet mounts the whole ConfigMap volume for that reason.)

The target is re-checked on every round too: if someone edits or deletes the installed file on
the node, the next round puts the policy back.
"""

from __future__ import annotations

import functools
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from kaudit.errors import InvalidInput, KauditError
from kaudit.installer.writer import InstallError, InstallResult, file_id, install

if TYPE_CHECKING:
    from kaudit.policy.loader import LoadResult


@dataclass(frozen=True)
class Refusal:
    """A candidate the AuditCollection does not approve (see kaudit.installer.approval)."""

    hash: str
    reason: str


@dataclass(frozen=True)
class Outcome:
    """One round: a result, the refusal of an unapproved candidate, or the one-line error that stopped
    it; the lints of what it installed."""

    result: InstallResult | None = None
    error: str = ""
    refused: Refusal | None = None
    approval_unread: bool = False  # the error is that the AuditCollection could not be read
    warnings: tuple[str, ...] = ()  # "FILE: FIELD: MESSAGE", as `kaudit policy lint` words them

    @property
    def unapproved(self) -> bool:
        return self.refused is not None or self.approval_unread


# While a candidate is refused (or its approval cannot be read), ask again after these delays,
# capped at the follow interval: a legitimate change whose approval lands a moment after the
# ConfigMap still installs within about a second.
RETRY_DELAYS = (0.25, 0.25, 0.5, 1.0, 2.0)


def policy_validator(source: Path, kubernetes_version: str = "") -> Callable[[bytes], str]:
    """A validator that loads the policy as kube-apiserver would and returns its content hash.

    Its errors name the file, the line and the field, as ``kaudit policy validate`` does.
    """

    def validate(content: bytes) -> str:
        from kaudit.policy.document import content_hash

        loaded = _loaded(content, kubernetes_version, str(source))
        if not loaded.ok:
            raise InvalidInput(loaded.errors)
        return content_hash(content.decode("utf-8"))

    return validate


@functools.lru_cache(maxsize=2)
def _loaded(content: bytes, kubernetes_version: str, file: str) -> LoadResult:
    """The policy loaded once per content: the validation and the lints of a round read the same
    bytes, and parsing is most of a round's work (its result is immutable)."""
    from kaudit.policy.loader import load_policy

    return load_policy(content, kubernetes_version, file=file)


def policy_warnings(source: Path, content: bytes, kubernetes_version: str = "") -> tuple[str, ...]:
    """The lints of a policy that loads, one line each: the verdict `kaudit policy lint` gives."""
    from kaudit.policy.lint import lint_loaded

    loaded = _loaded(content, kubernetes_version, str(source))
    if not loaded.ok:
        return ()
    return tuple(str(warning.in_file(str(source))) for warning in lint_loaded(loaded, kubernetes_version))


def read_source(source: Path) -> bytes:
    """The source's bytes, at most one past the size limit (the validator then names the size)."""
    from kaudit.documents import MAX_BYTES, os_error_message

    try:
        with open(source, "rb") as handle:
            return handle.read(MAX_BYTES + 1)
    except OSError as exc:
        raise InstallError(f"{source}: {os_error_message(exc)}") from None


def install_from(source: Path, target: Path, validate: Callable[[bytes], str],
                 approve: Callable[[bytes], None] | None = None, content: bytes | None = None) -> InstallResult:
    """Install ``source`` (or ``content`` already read from it) at ``target``; raises KauditError
    with a one-line message."""
    return install(read_source(source) if content is None else content, target, validate, approve)


def _signature(path: Path) -> tuple[int, int, int] | None:
    try:
        return file_id(os.lstat(path))
    except OSError:
        return None


def follow(
    source: Path,
    target: Path,
    validate: Callable[[bytes], str],
    *,
    interval: float,
    on_outcome: Callable[[Outcome], None],
    stop: threading.Event,
    on_round: Callable[[], None] | None = None,
    approve: Callable[[bytes], None] | None = None,
    lint: Callable[[bytes], tuple[str, ...]] | None = None,
) -> None:
    """Install now, then again whenever the source's content or the installed file changes.

    ``on_outcome`` is called after every round that did something, failed or refused, and after
    the first round in any case; ``on_round`` after every round (the report's heartbeat). It runs
    until ``stop`` is set. ``approve`` (see :func:`run_round`) is retried soon after a refusal;
    ``lint`` gives the warnings of content that installs.
    """
    # (source bytes, target signature) after the last successful round: nothing to do while both
    # stay the same. After a failure it is None, so the next round tries again.
    settled: tuple[bytes, tuple[int, int, int] | None] | None = None
    first = True
    retries = 0  # rounds in a row that could not get the candidate approved
    while not stop.is_set():
        wait = interval
        try:
            content = read_source(source)
        except InstallError as exc:
            # A ConfigMap swap can make one read fail; the next round reads the new version.
            on_outcome(Outcome(error=str(exc)))
            settled = None
        else:
            if settled != (content, _signature(target)):
                outcome = run_round(content, target, validate, approve, lint)
                # The identity of the file as installed, not a fresh lstat: a change made right after
                # the install must still look like a change in the next round.
                settled = (content, outcome.result.file_id) if outcome.result else None
                # A round after a refusal is news even when nothing was written: the refusal ended.
                if (first or outcome.error or outcome.refused or retries
                        or (outcome.result and outcome.result.changed)):
                    on_outcome(outcome)
                retries = retries + 1 if outcome.unapproved else 0
                if outcome.unapproved:
                    wait = min(interval, RETRY_DELAYS[min(retries, len(RETRY_DELAYS)) - 1])
            first = False
        if on_round is not None:
            on_round()
        stop.wait(wait)


def run_round(content: bytes, target: Path, validate: Callable[[bytes], str],
              approve: Callable[[bytes], None] | None = None,
              lint: Callable[[bytes], tuple[str, ...]] | None = None) -> Outcome:
    """One install as an Outcome; never raises, so the following loop outlives any failure.

    ``approve`` raises :class:`~kaudit.installer.approval.NotApproved` for a candidate the
    AuditCollection does not approve: that is a refusal, not an error (the node report says so).
    """
    from kaudit.installer.approval import ApprovalUnavailable, NotApproved

    try:
        result = install(content, target, validate, approve)
        return Outcome(result=result, warnings=lint(content) if lint is not None else ())
    except NotApproved as exc:
        return Outcome(refused=Refusal(exc.candidate_hash, exc.reason))
    except ApprovalUnavailable as exc:
        return Outcome(error=str(exc), approval_unread=True)
    except InvalidInput as exc:
        return Outcome(error="; ".join(str(e) for e in exc.errors))
    except KauditError as exc:
        return Outcome(error=str(exc))
    except OSError as exc:  # a race with another writer of the directory; the next round retries
        return Outcome(error=f"{target}: {exc.strerror or exc}")

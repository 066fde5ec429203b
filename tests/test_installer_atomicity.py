"""A writer killed at any moment leaves the target old-and-complete or new-and-complete.

Two ways of killing it, both with SIGKILL (no cleanup code runs, as with the OOM killer or a node
shutdown):

- deterministic: a forked child runs the writer with ``os`` wrapped so that it kills itself just
  before its N-th file-system call (half-way through the data for a write); N goes from 1 until the
  writer finishes, so every step of the sequence is a crash point;
- random: a forked child installs two large policies alternately, forever, and the parent kills
  it after a random delay, many times.

After each kill the target is checked byte for byte, and a normal run afterwards must complete
and leave no temporary file behind.
"""

from __future__ import annotations

import os
import random
import signal
import time
from pathlib import Path

import pytest

from installer_support import leftovers, mode, policy_text
from kaudit.installer import writer
from kaudit.installer.follow import policy_validator
from kaudit.installer.writer import install, previous_path

# Calls that change the file system or the data in flight; the others (stat, listdir) cannot
# leave anything half-done.
MUTATING = {"open", "write", "fsync", "fchmod", "close", "link", "replace", "unlink", "chmod"}

OLD = policy_text("Metadata", padding=200)
NEW = policy_text("RequestResponse", padding=300)


class _CrashingOs:
    """``os`` for the writer module, killing the process before the ``crash_at``-th mutating call."""

    def __init__(self, crash_at: int):
        self.crash_at = crash_at
        self.calls = 0

    def __getattr__(self, name):
        real = getattr(os, name)
        if name not in MUTATING:
            return real

        def call(*args, **kwargs):
            self.calls += 1
            if self.calls == self.crash_at:
                if name == "write":  # die with part of the data written
                    fd, data = args
                    os.write(fd, bytes(data[: max(1, len(data) // 2)]))
                os.kill(os.getpid(), signal.SIGKILL)
            return real(*args, **kwargs)

        return call


def _run_in_child(body) -> int:
    """Run ``body()`` in a forked child; its raw wait status."""
    pid = os.fork()
    if pid == 0:  # pragma: no cover - child
        try:
            body()
            os._exit(0)
        except BaseException:
            os._exit(3)
    _, status = os.waitpid(pid, 0)
    return status


def _check_state(target: Path, old: str | None, new: str, where: str) -> str:
    if not target.exists():
        assert old is None, f"{where}: the old file disappeared"
        return "absent"
    content = target.read_text()
    assert content in ({old, new} - {None}), f"{where}: target is neither the old nor the new file"
    if content == new:
        assert mode(target) == 0o600, where
    previous = previous_path(target)
    if previous.exists():
        assert previous.read_text() == old, f"{where}: .previous is not the old file"
    return "new" if content == new else "old"


@pytest.mark.parametrize("old", [OLD, None], ids=["replace", "first-install"])
def test_a_kill_before_any_file_system_call_leaves_old_or_new(tmp_path, old):
    validate = policy_validator(Path("policy.yaml"))
    seen = set()
    for crash_at in range(1, 200):
        directory = tmp_path / f"run{crash_at}"
        directory.mkdir()
        target = directory / "policy.yaml"
        if old is not None:
            target.write_text(old)
            os.chmod(target, 0o600)

        def body():
            writer.os = _CrashingOs(crash_at)
            install(NEW.encode(), target, validate)

        status = _run_in_child(body)
        where = f"crash before mutating call #{crash_at}"
        seen.add(_check_state(target, old, NEW, where))
        # Recovery: a normal run completes and cleans up what the killed one left.
        install(NEW.encode(), target, validate)
        assert target.read_text() == NEW, where
        assert leftovers(directory, "policy.yaml") == [], where
        if os.WIFEXITED(status):
            assert os.WEXITSTATUS(status) == 0, where
            break  # the writer made fewer calls than crash_at: every step has been a crash point
        assert os.WTERMSIG(status) == signal.SIGKILL, where
    else:
        pytest.fail("the writer never finished")
    assert crash_at > 5  # the sequence really was interrupted at several steps
    assert "new" in seen and ({"old", "absent"} & seen)


def _alternate_forever(target: Path) -> None:  # pragma: no cover - runs in the child
    validate = policy_validator(Path("policy.yaml"))
    contents = [BIG_A.encode(), BIG_B.encode()]
    i = 0
    while True:
        install(contents[i % 2], target, validate)
        i += 1


BIG_A = policy_text("Metadata", padding=6000)  # ~450 kB: each write takes a while
BIG_B = policy_text("Request", padding=5000)


def test_random_kills_during_repeated_installs_never_leave_a_partial_file(tmp_path):
    seed = int(time.time())
    rng = random.Random(seed)
    target = tmp_path / "policy.yaml"
    install(BIG_A.encode(), target, policy_validator(Path("policy.yaml")))
    outcomes = set()
    for attempt in range(40):
        pid = os.fork()
        if pid == 0:  # pragma: no cover - child
            try:
                _alternate_forever(target)
            finally:
                os._exit(3)
        time.sleep(rng.uniform(0.0, 0.06))
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        content = target.read_text()
        assert content in (BIG_A, BIG_B), f"seed {seed}, attempt {attempt}: partial or foreign content"
        assert mode(target) == 0o600
        previous = previous_path(target)
        if previous.exists():
            assert previous.read_text() in (BIG_A, BIG_B), f"seed {seed}, attempt {attempt}: bad .previous"
        outcomes.add(content)
    # The next run cleans whatever temporary file the last kill left.
    install(BIG_A.encode(), target, policy_validator(Path("policy.yaml")))
    assert leftovers(tmp_path, "policy.yaml") == []

"""Following a mounted ConfigMap through the kubelet's ``..data`` symlink swap, without a restart."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import pytest

from installer_support import INVALID_POLICY, digest, policy_text
from kaudit.installer.follow import Outcome, follow, policy_validator
from kaudit.installer.writer import previous_path


class ConfigMapVolume:
    """A ConfigMap volume laid out as the kubelet's atomic writer does it.

    ``<dir>/..<timestamp>/policy.yaml`` holds the data, ``..data`` is a symlink to the current
    timestamped directory and ``policy.yaml`` is a symlink to ``..data/policy.yaml``. An update
    writes a new timestamped directory, points a temporary symlink at it, renames that over
    ``..data`` (the one atomic step) and removes the old directory.
    """

    def __init__(self, root: Path, text: str):
        self.root = root
        root.mkdir()
        self.generation = 0
        self.current = self._write_generation(text)
        os.symlink(self.current, root / "..data")
        os.symlink("..data/policy.yaml", root / "policy.yaml")

    @property
    def key(self) -> Path:
        return self.root / "policy.yaml"

    def _write_generation(self, text: str) -> str:
        self.generation += 1
        name = f"..2026_11_22_12_00_{self.generation:02d}.000000001"
        (self.root / name).mkdir()
        (self.root / name / "policy.yaml").write_text(text)
        return name

    def update(self, text: str) -> None:
        new = self._write_generation(text)
        os.symlink(new, self.root / "..data_tmp")
        os.rename(self.root / "..data_tmp", self.root / "..data")
        old, self.current = self.current, new
        for entry in (self.root / old).iterdir():
            entry.unlink()
        (self.root / old).rmdir()


class Follower:
    def __init__(self, source: Path, target: Path):
        self.outcomes: list[Outcome] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(
            target=follow,
            args=(source, target, policy_validator(source)),
            kwargs={"interval": 0.01, "on_outcome": self.outcomes.append, "stop": self.stop},
            daemon=True,
        )

    def __enter__(self) -> "Follower":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        self.thread.join(5)
        assert not self.thread.is_alive()


def wait_for(predicate, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.01)
    pytest.fail("condition not reached in time")


@pytest.fixture
def layout(tmp_path):
    volume = ConfigMapVolume(tmp_path / "configmap", policy_text("Metadata"))
    (tmp_path / "host").mkdir()
    return volume, tmp_path / "host" / "policy.yaml"


def test_the_simulated_volume_reads_like_a_configmap_mount(layout):
    volume, _ = layout
    assert volume.key.is_symlink()
    assert volume.key.read_text() == policy_text("Metadata")
    volume.update(policy_text("Request"))
    assert volume.key.read_text() == policy_text("Request")


def test_a_configmap_update_is_installed_without_restart(layout):
    volume, target = layout
    with Follower(volume.key, target) as follower:
        wait_for(lambda: target.exists() and target.read_text() == policy_text("Metadata"))
        volume.update(policy_text("Request"))
        wait_for(lambda: target.read_text() == policy_text("Request"))
        volume.update(policy_text("RequestResponse"))
        wait_for(lambda: target.read_text() == policy_text("RequestResponse"))
    assert previous_path(target).read_text() == policy_text("Request")
    installed = [o.result.hash for o in follower.outcomes if o.result and o.result.changed]
    assert installed == [digest(policy_text(level)) for level in ("Metadata", "Request", "RequestResponse")]
    assert not any(o.error for o in follower.outcomes)


def test_an_unchanged_configmap_causes_no_rewrite(layout):
    volume, target = layout
    with Follower(volume.key, target) as follower:
        wait_for(lambda: target.exists())
        mtime = os.stat(target).st_mtime_ns
        time.sleep(0.2)  # about twenty rounds
        # The kubelet also rewrites ..data when nothing changed (e.g. after a resync): same bytes.
        volume.update(policy_text("Metadata"))
        time.sleep(0.1)
    assert os.stat(target).st_mtime_ns == mtime
    assert len(follower.outcomes) == 1  # only the first round is reported


def test_an_invalid_update_is_reported_and_the_installed_policy_stays(layout):
    volume, target = layout
    with Follower(volume.key, target) as follower:
        wait_for(lambda: target.exists())
        volume.update(INVALID_POLICY)
        wait_for(lambda: any(o.error for o in follower.outcomes))
        assert target.read_text() == policy_text("Metadata")
        volume.update(policy_text("None"))  # the next valid version goes through
        wait_for(lambda: target.read_text() == policy_text("None"))
    error = next(o.error for o in follower.outcomes if o.error)
    assert f"{volume.key}:4:3: rules[0].level: Unsupported value" in error


def test_an_edited_or_deleted_installed_file_is_put_back(layout):
    volume, target = layout
    with Follower(volume.key, target):
        wait_for(lambda: target.exists())
        target.write_text("# edited by hand\n")
        wait_for(lambda: target.read_text() == policy_text("Metadata"))
        target.unlink()
        wait_for(lambda: target.exists() and target.read_text() == policy_text("Metadata"))


def test_a_missing_target_directory_is_retried_until_it_exists(tmp_path):
    volume = ConfigMapVolume(tmp_path / "configmap", policy_text())
    target = tmp_path / "later" / "policy.yaml"
    with Follower(volume.key, target) as follower:
        wait_for(lambda: any("directory does not exist" in o.error for o in follower.outcomes))
        target.parent.mkdir()
        wait_for(lambda: target.exists())
    assert target.read_text() == policy_text()

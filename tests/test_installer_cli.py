"""``kaudit install-policy`` as a separate process, outside Kubernetes (as cloud-init would run it)."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from installer_support import INVALID_POLICY, digest, mode, policy_text

IS_ROOT = os.geteuid() == 0
SETPRIV = shutil.which("setpriv")
# Root without any capability: what the installer container keeps (drop: [ALL], no escalation).
NO_CAPABILITIES = [SETPRIV or "setpriv", "--inh-caps=-all", "--bounding-set=-all", "--no-new-privs", "--"]


def clean_env() -> dict:
    env = {k: v for k, v in os.environ.items()
           if k not in ("NODE_NAME", "POD_NAMESPACE", "KAUDIT_COLLECTION", "KUBERNETES_SERVICE_HOST")}
    return env


def kaudit(*args: str, without_capabilities: bool = False) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "kaudit", "install-policy", *args]
    if without_capabilities:
        command = NO_CAPABILITIES + command
    return subprocess.run(command, capture_output=True, text=True, env=clean_env(), timeout=60)


def unprivileged(*args: str) -> subprocess.CompletedProcess:
    """Run so that file permissions apply: as root, drop every capability (DAC_OVERRIDE included)."""
    if IS_ROOT and not SETPRIV:
        pytest.skip("running as root without setpriv: permission bits cannot be made to apply")
    return kaudit(*args, without_capabilities=IS_ROOT)


@pytest.fixture
def files(tmp_path):
    source = tmp_path / "policy-source.yaml"
    source.write_text(policy_text("Request"))
    directory = tmp_path / "audit-policies"
    directory.mkdir(mode=0o755)
    target = directory / "policy.yaml"
    target.write_text(policy_text("Metadata"))
    os.chmod(target, 0o600)
    return source, target


def assert_one_line_error(result: subprocess.CompletedProcess, *fragments: str) -> None:
    assert result.returncode == 1, result
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ") and "Traceback" not in result.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def test_install_then_unchanged(files):
    source, target = files
    first = kaudit("--from", str(source), "--to", str(target), "--once")
    assert first.returncode == 0, first.stderr
    short = digest(policy_text("Request"))[:12]
    assert first.stdout == f"installed policy {short} at {target} (previous kept as {target}.previous)\n"
    assert target.read_text() == policy_text("Request") and mode(target) == 0o600
    mtime = os.stat(target).st_mtime_ns
    second = kaudit("--from", str(source), "--to", str(target), "--once")
    assert second.returncode == 0 and second.stdout == f"unchanged: policy {short} already at {target}\n"
    assert os.stat(target).st_mtime_ns == mtime


def test_invalid_policy_is_refused_and_the_old_file_stays(files):
    source, target = files
    source.write_text(INVALID_POLICY)
    result = kaudit("--from", str(source), "--to", str(target), "--once")
    assert_one_line_error(result, f"{source}:4:3: rules[0].level: Unsupported value")
    assert target.read_text() == policy_text("Metadata")
    assert sorted(os.listdir(target.parent)) == ["policy.yaml"]


def test_missing_source(files):
    source, target = files
    result = kaudit("--from", str(source) + ".missing", "--to", str(target), "--once")
    assert_one_line_error(result, f"{source}.missing: no such file")
    assert target.read_text() == policy_text("Metadata")


def test_unreadable_source(files):
    source, target = files
    os.chmod(source, 0o000)
    result = unprivileged("--from", str(source), "--to", str(target), "--once")
    assert_one_line_error(result, f"{source}: permission denied")
    assert target.read_text() == policy_text("Metadata")


def test_an_unparsable_kubernetes_version_is_refused_before_anything_is_written(files):
    source, target = files
    result = kaudit("--from", str(source), "--to", str(target), "--once", "--kubernetes-version", "latest")
    assert_one_line_error(result, "--kubernetes-version", "'latest'")
    assert target.read_text() == policy_text("Metadata")
    assert sorted(os.listdir(target.parent)) == ["policy.yaml"]


def test_missing_target_directory(files, tmp_path):
    source, _ = files
    target = tmp_path / "no-such-dir" / "policy.yaml"
    result = kaudit("--from", str(source), "--to", str(target), "--once")
    assert_one_line_error(result, str(target.parent), "directory does not exist")
    assert not target.parent.exists()


def test_read_only_target_directory(files):
    source, target = files
    os.chmod(target.parent, 0o555)
    try:
        result = unprivileged("--from", str(source), "--to", str(target), "--once")
    finally:
        os.chmod(target.parent, 0o755)
    assert_one_line_error(result, str(target.parent), "permission denied")
    assert target.read_text() == policy_text("Metadata")
    assert sorted(os.listdir(target.parent)) == ["policy.yaml"]


def test_symlink_target_is_refused(files, tmp_path):
    source, target = files
    elsewhere = tmp_path / "elsewhere.yaml"
    elsewhere.write_text("not yours\n")
    link = target.parent / "link.yaml"
    link.symlink_to(elsewhere)
    result = kaudit("--from", str(source), "--to", str(link), "--once")
    assert_one_line_error(result, str(link), "symbolic link", "refusing to write through it")
    assert elsewhere.read_text() == "not yours\n" and link.is_symlink()


@pytest.mark.skipif(not (IS_ROOT and SETPRIV), reason="needs root and setpriv to drop every capability")
def test_root_without_any_capability_can_install_into_a_root_owned_0755_directory(files):
    # The DaemonSet's claim: uid 0 with drop: [ALL] writes /etc/kubernetes/<dir> through the owner
    # bits alone — create, rename, hard link for .previous, fsync — with no CAP_DAC_OVERRIDE.
    source, target = files
    os.chown(target.parent, 0, 0)
    old_inode = os.stat(target).st_ino
    result = kaudit("--from", str(source), "--to", str(target), "--once", without_capabilities=True)
    assert result.returncode == 0, result.stderr
    assert target.read_text() == policy_text("Request")
    previous = Path(str(target) + ".previous")
    assert previous.read_text() == policy_text("Metadata")
    assert os.stat(previous).st_ino == old_inode  # kept by hard link, not by the copy fallback
    assert (os.stat(target).st_uid, mode(target)) == (0, 0o600)


@pytest.mark.skipif(not (IS_ROOT and SETPRIV), reason="needs root and setpriv to drop every capability")
def test_root_without_capabilities_cannot_write_a_directory_owned_by_someone_else(files):
    # ... and the same process is refused where the owner bits do not apply: nothing more is kept.
    source, target = files
    os.chown(target.parent, 1000, 1000)
    result = kaudit("--from", str(source), "--to", str(target), "--once", without_capabilities=True)
    assert_one_line_error(result)
    assert target.read_text() == policy_text("Metadata")


def test_report_outside_kubernetes_is_a_clear_error(files):
    source, target = files
    result = kaudit("--from", str(source), "--to", str(target), "--once", "--report")
    assert_one_line_error(result, "NODE_NAME", "--no-report")
    assert target.read_text() == policy_text("Metadata")


def test_a_report_that_cannot_be_sent_stops_before_anything_is_written(files):
    source, target = files
    env = clean_env() | {"NODE_NAME": "cp-1", "POD_NAMESPACE": "kaudit-system"}  # but no API server
    result = subprocess.run(
        [sys.executable, "-m", "kaudit", "install-policy", "--from", str(source), "--to", str(target),
         "--once", "--collection", "cluster"],
        capture_output=True, text=True, env=env, timeout=60,
    )
    assert_one_line_error(result, "--report", "cannot reach the Kubernetes API")
    assert target.read_text() == policy_text("Metadata")


def test_help_explains_the_command():
    result = subprocess.run([sys.executable, "-m", "kaudit", "install-policy", "--help"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0
    for word in ("--from", "--to", "--once", "--interval", "--no-report", ".previous", "symlink"):
        assert word in result.stdout


def test_following_without_once_picks_up_changes_and_stops_on_sigterm(files):
    source, target = files
    process = subprocess.Popen(
        [sys.executable, "-m", "kaudit", "install-policy", "--from", str(source), "--to", str(target),
         "--interval", "0.05"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=clean_env(),
    )
    try:
        deadline = time.monotonic() + 20
        while target.read_text() != policy_text("Request") and time.monotonic() < deadline:
            time.sleep(0.05)
        assert target.read_text() == policy_text("Request")
        # Replace the source the way a careful tool would (rename), then check it is followed.
        staged = source.with_suffix(".new")
        staged.write_text(policy_text("RequestResponse"))
        os.replace(staged, source)
        while target.read_text() != policy_text("RequestResponse") and time.monotonic() < deadline:
            time.sleep(0.05)
        assert target.read_text() == policy_text("RequestResponse")
    finally:
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=20)
    assert process.returncode == 0, stderr
    assert "installed policy" in stderr

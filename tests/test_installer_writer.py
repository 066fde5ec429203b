"""The atomic, validated write at the core of ``kaudit install-policy`` (no Kubernetes involved)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from installer_support import EMPTY_POLICY, INVALID_POLICY, digest, leftovers, mode, policy_text
from kaudit.errors import InvalidInput
from kaudit.installer.follow import policy_validator
from kaudit.installer.writer import InstallError, install, previous_path


@pytest.fixture
def target(tmp_path: Path) -> Path:
    directory = tmp_path / "audit-policies"
    directory.mkdir(mode=0o755)
    return directory / "policy.yaml"


def validate(path: Path = Path("policy.yaml")):
    return policy_validator(path)


def put(target: Path, text: str):
    return install(text.encode(), target, validate())


def test_first_install_writes_the_exact_content_with_mode_0600(target):
    text = policy_text("Metadata")
    result = put(target, text)
    assert result.changed and result.previous is None
    assert target.read_text() == text
    assert mode(target) == 0o600
    assert result.hash == digest(text)
    assert not previous_path(target).exists()
    assert leftovers(target.parent, target.name) == []


def test_mode_is_0600_whatever_the_umask(target):
    old = os.umask(0o077)  # a umask that would also strip bits if the writer relied on it
    try:
        put(target, policy_text())
    finally:
        os.umask(old)
    assert mode(target) == 0o600


@pytest.mark.parametrize("bad", [INVALID_POLICY, EMPTY_POLICY, "not: [valid yaml", "- a list\n- not a policy\n"])
def test_an_invalid_policy_is_never_written(target, bad):
    good = policy_text("Request")
    put(target, good)
    before = os.stat(target)
    with pytest.raises(InvalidInput) as caught:
        put(target, bad)
    assert str(caught.value).startswith("policy.yaml")  # the source named first, as every command does
    assert target.read_text() == good
    assert os.stat(target).st_mtime_ns == before.st_mtime_ns
    assert not previous_path(target).exists()
    assert leftovers(target.parent, target.name) == []


def test_invalid_bytes_are_refused_before_the_directory_is_touched(target):
    with pytest.raises(InvalidInput):
        install(b"\xff\xfe\x00binary", target, validate())
    assert os.listdir(target.parent) == []


def test_same_content_is_not_rewritten(target):
    text = policy_text()
    first = put(target, text)
    before = os.stat(target)
    second = put(target, text)
    after = os.stat(target)
    assert not second.changed
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)
    assert second.installed_at == first.installed_at  # the file's mtime, i.e. the first install
    assert not previous_path(target).exists()


def test_same_content_with_a_wrong_mode_gets_its_mode_fixed_but_keeps_its_mtime(target):
    text = policy_text()
    target.write_text(text)
    os.chmod(target, 0o644)
    before = os.stat(target)
    result = put(target, text)
    assert not result.changed
    assert mode(target) == 0o600
    assert os.stat(target).st_mtime_ns == before.st_mtime_ns


def test_the_replaced_file_is_kept_as_previous(target):
    a, b, c = policy_text("Metadata"), policy_text("Request"), policy_text("RequestResponse")
    put(target, a)
    result = put(target, b)
    assert result.previous == previous_path(target) == target.with_name("policy.yaml.previous")
    assert (target.read_text(), result.previous.read_text()) == (b, a)
    assert mode(result.previous) == 0o600
    put(target, c)  # only one generation is kept
    assert (target.read_text(), previous_path(target).read_text()) == (c, b)
    assert sorted(os.listdir(target.parent)) == ["policy.yaml", "policy.yaml.previous"]


def test_previous_of_a_file_someone_else_wrote_is_kept_too(target):
    target.write_text("# hand-copied earlier\n" + policy_text("None"))
    put(target, policy_text())
    assert previous_path(target).read_text().startswith("# hand-copied earlier")


def test_temporaries_left_by_a_killed_run_are_removed(target):
    stale = target.parent / ".policy.yaml.0123456789ab.kaudit-tmp"
    stale.write_text("half a poli")
    unrelated = target.parent / ".other.yaml.0123456789ab.kaudit-tmp"
    unrelated.write_text("not ours")
    put(target, policy_text())
    assert not stale.exists()
    assert unrelated.exists()


def test_a_symlink_target_is_refused_and_left_alone(target, tmp_path):
    real = tmp_path / "elsewhere.yaml"
    real.write_text("someone else's file\n")
    target.symlink_to(real)
    with pytest.raises(InstallError, match="symbolic link; refusing to write through it") as caught:
        put(target, policy_text())
    assert str(target) in str(caught.value)
    assert target.is_symlink() and real.read_text() == "someone else's file\n"


def test_a_dangling_symlink_target_is_refused(target, tmp_path):
    target.symlink_to(tmp_path / "does-not-exist.yaml")
    with pytest.raises(InstallError, match="symbolic link"):
        put(target, policy_text())
    assert not (tmp_path / "does-not-exist.yaml").exists()


def test_a_missing_directory_is_named(tmp_path):
    missing = tmp_path / "nope" / "policy.yaml"
    with pytest.raises(InstallError, match="directory does not exist") as caught:
        put(missing, policy_text())
    assert str(missing.parent) in str(caught.value)
    assert not missing.parent.exists()  # never created behind the user's back


def test_a_directory_at_the_target_is_refused(target):
    target.mkdir()
    with pytest.raises(InstallError, match="not a regular file"):
        put(target, policy_text())

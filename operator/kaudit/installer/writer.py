"""Install one file atomically: the node-side core of ``kaudit install-policy``.

Nothing here knows about Kubernetes, so the same code serves the in-cluster DaemonSet and a
plain ``kaudit install-policy --from FILE --to FILE --once`` from cloud-init or Ansible.

The sequence, and why each step is there (kube-apiserver exits on a missing or half-written
policy, so a reader must only ever see a complete file):

1. refuse a target that is a symlink, a directory, or whose directory is missing;
2. validate the new content (the caller's ``validate``) — an invalid policy is never written;
3. compare with what is in place: identical content is left alone (no write, mtime unchanged);
4. write it to a temporary file in the *same* directory (so the final rename cannot cross a file
   system), created with mode 0600, then ``fsync`` it so its data is on disk before its name is;
5. keep the current file as ``<name>.previous``: a hard link under a temporary name, renamed over
   the old ``.previous`` (the current file is never copied, so it never exists half-copied);
6. ``rename`` the temporary file over the target (atomic on POSIX: a reader opens either the old
   inode or the new one);
7. ``fsync`` the directory, so the renames survive a power cut.

A process killed at any step leaves the target either old and complete or new and complete; at
worst a stray ``.<name>.*.kaudit-tmp`` file, which the next run removes.
"""

from __future__ import annotations

import errno
import os
import stat
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Iterator

from kaudit.errors import KauditError

FILE_MODE = 0o600
PREVIOUS_SUFFIX = ".previous"
TEMP_SUFFIX = ".kaudit-tmp"

# Checks the new content and returns its hash, or raises (InvalidInput) to stop the install.
Validator = Callable[[bytes], str]


class InstallError(KauditError):
    """A file-system problem that stopped the install; the message names the path."""


@dataclass(frozen=True)
class InstallResult:
    target: Path
    hash: str
    changed: bool  # False: the target already had this content and was left alone
    installed_at: datetime  # when the content now in place was written (the target's mtime)
    previous: Path | None = None  # where the replaced file was kept, when there was one
    # (inode, mtime ns, size) of the file put in place: a later lstat that differs means someone
    # else replaced, edited or removed it.
    file_id: tuple[int, int, int] | None = None


def previous_path(target: Path) -> Path:
    return target.with_name(target.name + PREVIOUS_SUFFIX)


def _temp_prefix(target: Path) -> str:
    return f".{target.name}."


def _describe(exc: OSError) -> str:
    if exc.errno == errno.EROFS:
        return "read-only file system"
    if exc.errno in (errno.EACCES, errno.EPERM):
        return "permission denied"
    return exc.strerror or str(exc)


def check_target(target: Path) -> os.stat_result | None:
    """The target's lstat (None when absent) after refusing targets kaudit must not write."""
    directory = target.parent
    try:
        dir_stat = os.stat(directory)
    except FileNotFoundError:
        raise InstallError(f"{directory}: directory does not exist (create it first, mode 0755)") from None
    except OSError as exc:
        raise InstallError(f"{directory}: cannot use directory: {_describe(exc)}") from None
    if not stat.S_ISDIR(dir_stat.st_mode):
        raise InstallError(f"{directory}: not a directory")
    try:
        st = os.lstat(target)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise InstallError(f"{target}: cannot inspect target: {_describe(exc)}") from None
    if stat.S_ISLNK(st.st_mode):
        # Writing through a link would put the policy wherever the link points (possibly a file
        # kube-apiserver or another tool owns); renaming over it would silently drop the link.
        raise InstallError(
            f"{target}: target is a symbolic link; refusing to write through it "
            f"(point --to at the real file, or remove the link)"
        )
    if not stat.S_ISREG(st.st_mode):
        raise InstallError(f"{target}: target exists and is not a regular file")
    return st


def read_current(target: Path) -> bytes | None:
    try:
        fd = os.open(target, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise InstallError(f"{target}: cannot read the installed file: {_describe(exc)}") from None
    try:
        return _read_all(fd)
    finally:
        os.close(fd)


def _read_all(fd: int) -> bytes:
    chunks = []
    while chunk := os.read(fd, 1 << 16):
        chunks.append(chunk)
    return b"".join(chunks)


def remove_stale_temporaries(target: Path) -> None:
    """Delete temporary files a killed earlier run left beside the target."""
    prefix = _temp_prefix(target)
    try:
        names = os.listdir(target.parent)
    except OSError:
        return
    for name in names:
        if name.startswith(prefix) and name.endswith(TEMP_SUFFIX):
            try:
                os.unlink(target.parent / name)
            except OSError:
                pass


def file_id(st: os.stat_result) -> tuple[int, int, int]:
    return (st.st_ino, st.st_mtime_ns, st.st_size)


def _mtime(st: os.stat_result) -> datetime:
    return datetime.fromtimestamp(st.st_mtime_ns / 1e9, tz=timezone.utc)


def _write_temporary(target: Path, content: bytes) -> tuple[Path, os.stat_result]:
    """A fully written, fsynced 0600 file beside ``target`` and its stat; removed if anything fails."""
    # O_EXCL with a random name: never reuse (or follow) something already in the directory.
    for _ in range(100):
        temp = target.parent / f"{_temp_prefix(target)}{os.urandom(6).hex()}{TEMP_SUFFIX}"
        try:
            fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, FILE_MODE)
            break
        except FileExistsError:
            continue
        except OSError as exc:
            raise InstallError(f"{target.parent}: cannot create a file in the directory: {_describe(exc)}") from None
    else:  # pragma: no cover - 100 collisions of 48 random bits
        raise InstallError(f"{target.parent}: cannot find a free temporary name")
    with _removed_on_failure(temp, f"{target}: cannot write the new file"):
        try:
            os.fchmod(fd, FILE_MODE)  # the umask may have removed bits; 0600 exactly
            view = memoryview(content)
            while view:
                view = view[os.write(fd, view):]
            os.fsync(fd)
            # The mtime now is the install time (a rename does not change it); taken here because
            # the file may be replaced or removed by someone else as soon as it is in place.
            written = os.fstat(fd)
        finally:
            os.close(fd)
    return temp, written


@contextmanager
def _removed_on_failure(temp: Path, what: str) -> Iterator[None]:
    """Delete ``temp`` if the block fails; an OSError becomes an InstallError saying ``what``."""
    try:
        yield
    except OSError as exc:
        _unlink_quietly(temp)
        raise InstallError(f"{what}: {_describe(exc)}") from None
    except BaseException:
        _unlink_quietly(temp)
        raise


def _unlink_quietly(path: Path) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass


def _keep_previous(target: Path, current: bytes) -> Path:
    """Make ``<target>.previous`` hold the current content, atomically."""
    previous = previous_path(target)
    staging = target.parent / f"{_temp_prefix(target)}{os.urandom(6).hex()}{TEMP_SUFFIX}"
    try:
        os.link(target, staging, follow_symlinks=False)
    except OSError:
        # No hard links on this file system (or the kernel's protected_hardlinks refused one):
        # write a copy instead, by the same temporary-file route.
        staging, _ = _write_temporary(target, current)
    try:
        os.replace(staging, previous)
    except OSError as exc:
        raise InstallError(f"{previous}: cannot keep the previous file: {_describe(exc)}") from None
    finally:
        # rename() between two links of one inode (a run killed after this step left .previous
        # linked to the current file) succeeds without removing the source: remove it here.
        _unlink_quietly(staging)
    return previous


def _fsync_directory(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def install(content: bytes, target: Path, validate: Validator,
            approve: Callable[[bytes], None] | None = None) -> InstallResult:
    """Put ``content`` at ``target`` atomically, mode 0600, keeping the old file as ``.previous``.

    Raises :class:`InstallError` for file-system problems and whatever ``validate`` raises for
    invalid content; in both cases nothing in place is changed. ``approve`` is asked only when the
    content would be written (it differs from the installed file) and stops the install by raising.
    """
    target = Path(target)
    content_hash = validate(content)  # before anything touches the directory
    st = check_target(target)
    remove_stale_temporaries(target)
    current = read_current(target) if st is not None else None
    if current == content:
        assert st is not None
        if stat.S_IMODE(st.st_mode) != FILE_MODE:
            try:
                os.chmod(target, FILE_MODE)  # mode only: the content is right, keep its mtime
            except OSError as exc:
                raise InstallError(f"{target}: cannot set mode 0600: {_describe(exc)}") from None
        return InstallResult(target, content_hash, changed=False, installed_at=_mtime(st), file_id=file_id(st))

    if approve is not None:
        approve(content)  # after the comparison: what is already in place needs no approval
    temp, written = _write_temporary(target, content)
    previous = None
    with _removed_on_failure(temp, f"{target}: cannot replace the file"):
        if current is not None:
            previous = _keep_previous(target, current)
        os.replace(temp, target)
    try:
        _fsync_directory(target.parent)
    except OSError as exc:
        raise InstallError(f"{target.parent}: written, but cannot sync the directory: {_describe(exc)}") from None
    return InstallResult(target, content_hash, changed=True, installed_at=_mtime(written), previous=previous,
                         file_id=file_id(written))

"""Reading audit logs: which files, in which order, and one line at a time.

kube-apiserver's log backend rotates by renaming the active file ``audit.log`` to
``audit-<UTC timestamp>.log`` (the timestamp format is ``2006-01-02T15-04-05.000``, optionally
gzip-compressed with a ``.gz`` suffix) and creating a fresh ``audit.log``. The ordering rule:

* Arguments are read in the order given, except that the files of one rotation set (the same
  directory and base name: ``NAME-<timestamp>EXT[.gz]`` and ``NAMEEXT``) are read together,
  oldest first: the backups by the timestamp in their names, then the active file last. A set
  takes the place of its first member among the arguments.
* A directory argument stands for the ``*.log`` and ``*.log.gz`` files directly inside it.
* ``-`` is standard input.

Compression is recognised by content (the gzip magic number), not by name, so it also works for
standard input, and so are the envelopes of managed control planes (a file whose first line is a
GKE LogEntry or an AKS resource-log record is read through :func:`kaudit.auditlog.unwrap`).
Lines are read as bytes in a bounded buffer: memory does not grow with the input.
"""

from __future__ import annotations

import gzip
import io
import os
import re
import sys
import zlib
from dataclasses import dataclass
from typing import BinaryIO, Callable, Iterator, TextIO

from kaudit.auditlog import envelope, unwrap
from kaudit.documents import os_error_message
from kaudit.errors import FieldError, InvalidInput

STDIN = "-"
READ_BUFFER = 1 << 20
BATCH_BYTES = 256 << 10
_GZIP_MAGIC = b"\x1f\x8b"
# NAME-2006-01-02T15-04-05.000EXT[.gz], the backup name kube-apiserver's rotation gives a file.
_BACKUP_NAME = re.compile(
    r"^(?P<name>.+)-(?P<stamp>\d{4}-\d{2}-\d{2}T\d{2}-\d{2}-\d{2}\.\d{3})(?P<ext>\.[^.]*)?(?:\.gz)?$"
)


@dataclass(frozen=True)
class _RotationMember:
    set_key: tuple[str, str, str]  # (directory, base name, extension)
    order: tuple[int, str]  # (0, timestamp) for backups, (1, "") for the active file


def _rotation_member(path: str) -> _RotationMember | None:
    directory, filename = os.path.split(path)
    match = _BACKUP_NAME.match(filename)
    if match:
        key = (directory, match["name"], match["ext"] or "")
        return _RotationMember(key, (0, match["stamp"]))
    stem = filename[:-3] if filename.endswith(".gz") else filename
    base, ext = os.path.splitext(stem)
    if not base:
        return None
    return _RotationMember((directory, base, ext), (1, ""))


def _expand_directory(path: str) -> list[str]:
    names = sorted(
        name for name in os.listdir(path)
        if (name.endswith(".log") or name.endswith(".log.gz")) and os.path.isfile(os.path.join(path, name))
    )
    return [os.path.join(path, name) for name in names]


def order_inputs(paths: list[str]) -> list[str]:
    """The files to read, in chronological order (see the module docstring for the rule)."""
    expanded: list[str] = []
    for path in paths:
        expanded.extend(_expand_directory(path) if path != STDIN and os.path.isdir(path) else [path])
    slots: list[str | tuple[str, str, str]] = []
    sets: dict[tuple[str, str, str], list[tuple[tuple[int, str], str]]] = {}
    for path in expanded:
        member = None if path == STDIN else _rotation_member(path)
        if member is None:
            slots.append(path)
            continue
        if member.set_key not in sets:
            sets[member.set_key] = []
            slots.append(member.set_key)
        sets[member.set_key].append((member.order, path))
    ordered: list[str] = []
    for slot in slots:
        if isinstance(slot, str):
            ordered.append(slot)
        else:
            ordered.extend(path for _, path in sorted(sets[slot]))
    return ordered


def check_inputs(paths: list[str]) -> None:
    """Refuse, before reading anything, inputs that do not exist or cannot be read."""
    errors = []
    if paths.count(STDIN) > 1:
        errors.append(FieldError("--events", "standard input ('-') is given twice; it can be read only once"))
    for path in paths:
        if path == STDIN:
            continue
        if not os.path.exists(path):
            errors.append(FieldError("", "no such file", file=path))
        elif not os.access(path, os.R_OK):
            errors.append(FieldError("", "permission denied", file=path))
        elif os.path.isdir(path) and not _expand_directory(path):
            errors.append(FieldError("", "a directory without *.log or *.log.gz files", file=path))
    if errors:
        raise InvalidInput(errors)


class Progress:
    """A one-line progress indicator on a terminal: bytes read against the total input size.

    Drawn with a carriage return, at most every 1 % of the input (or every 64 MiB when the size is
    unknown), and only when the stream is a TTY; otherwise every method does nothing.
    """

    def __init__(self, total: int | None, stream: TextIO | None = None,
                 observer: Callable[[int], None] | None = None):
        self.stream = stream if stream is not None else sys.stderr
        self.enabled = bool(getattr(self.stream, "isatty", lambda: False)())
        # Called with the bytes read so far (every batch of lines), whatever the stream; benchmarks
        # use it to sample memory at fixed points of the input.
        self.observer = observer
        self.total = total
        self.step = max(total // 100, 1 << 20) if total else 64 << 20
        self.next_draw = self.step

    def update(self, done: int) -> None:
        if self.observer is not None:
            self.observer(done)
        if not self.enabled or done < self.next_draw:
            return
        self.next_draw = done + self.step
        mib = done / (1 << 20)
        if self.total:
            fraction = min(done / self.total, 1.0)
            bar = "#" * int(fraction * 30)
            self.stream.write(f"\rsimulating [{bar:<30}] {fraction:4.0%} {mib:,.0f} MiB")
        else:
            self.stream.write(f"\rsimulating {mib:,.0f} MiB")
        self.stream.flush()

    def finish(self) -> None:
        if self.enabled:
            self.stream.write("\r" + " " * 60 + "\r")
            self.stream.flush()


@dataclass
class InputFile:
    """One file as read: its name, whether it was compressed, and what it held."""

    name: str
    compressed: bool = False
    lines: int = 0
    bytes_read: int = 0  # uncompressed bytes


def _open(path: str) -> tuple[BinaryIO, BinaryIO]:
    """(raw stream, line stream): the raw stream's position measures progress."""
    raw: BinaryIO
    if path == STDIN:
        raw = sys.stdin.buffer
    else:
        raw = open(path, "rb", buffering=READ_BUFFER)
    head = raw.peek(2)[:2] if hasattr(raw, "peek") else b""
    if head == _GZIP_MAGIC:
        return raw, io.BufferedReader(gzip.GzipFile(fileobj=raw, mode="rb"), READ_BUFFER)
    return raw, raw


def total_size(paths: list[str]) -> int | None:
    """Sum of the files' sizes on disk (compressed sizes for gzip files); None with stdin."""
    if STDIN in paths:
        return None
    return sum(os.path.getsize(path) for path in paths)


def iter_files(
    paths: list[str], progress: Progress | None = None,
) -> Iterator[tuple[InputFile, Iterator[list[bytes]]]]:
    """For each file in order: its :class:`InputFile` record and an iterator over batches of its
    lines (lists of about ``BATCH_BYTES`` bytes: per-line generator overhead would cost more than
    the simulation's own work on small events).

    Consume each file's batches before asking for the next file. A file that turns out to be
    unreadable (a corrupt gzip stream, an I/O error) raises :class:`InvalidInput` naming it: it is
    a problem with the input, not a bug.
    """
    done_before = 0
    for path in paths:
        info = InputFile(name="<stdin>" if path == STDIN else path)
        yield info, _batches(path, info, progress, done_before)
        done_before += info.bytes_read if path == STDIN else os.path.getsize(path)


def _batches(path: str, info: InputFile, progress: Progress | None, done_before: int) -> Iterator[list[bytes]]:
    try:
        raw, stream = _open(path)
    except OSError as exc:
        raise InvalidInput([FieldError("", os_error_message(exc), file=info.name)]) from None
    info.compressed = stream is not raw
    tell: Callable[[], int] = raw.tell if path != STDIN and raw.seekable() else lambda: info.bytes_read
    enveloped: bool | None = None  # GKE LogEntries or AKS records, told by the first line
    try:
        while True:
            batch = stream.readlines(BATCH_BYTES)
            if not batch:
                break
            info.bytes_read += sum(map(len, batch))
            info.lines += len(batch)
            if enveloped is None:
                enveloped = envelope(batch[0])
            if enveloped:
                batch = list(map(unwrap, batch))
            if progress is not None:
                progress.update(done_before + tell())
            yield batch
    except (OSError, EOFError, zlib.error) as exc:
        raise InvalidInput([FieldError("", f"cannot read: {exc}", file=info.name)]) from None
    finally:
        if path != STDIN:
            raw.close()

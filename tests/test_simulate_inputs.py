"""Reading inputs: rotation order, gzip by content, directories, progress, broken files."""

from __future__ import annotations

import gzip
import io
import os

import pytest

from kaudit.errors import InvalidInput
from kaudit.simulate import simulate
from kaudit.simulate.inputs import Progress, check_inputs, iter_files, order_inputs
from simulate_support import EVERYTHING_METADATA, event, line, loaded


def test_rotated_files_oldest_first_active_last():
    # kube-apiserver renames audit.log to audit-<UTC timestamp>.log (optionally .gz) on rotation;
    # the timestamps sort chronologically, the active file is the newest.
    given = [
        "/l/audit.log",
        "/l/audit-2026-01-02T00-00-00.000.log.gz",
        "/l/other.txt",
        "/l/audit-2026-01-01T23-59-59.999.log",
    ]
    assert order_inputs(given) == [
        "/l/audit-2026-01-01T23-59-59.999.log",
        "/l/audit-2026-01-02T00-00-00.000.log.gz",
        "/l/audit.log",
        "/l/other.txt",  # not of the set: keeps its place after the set's first member
    ]


def test_rotation_sets_are_per_directory_and_name():
    given = ["/b/audit.log", "/a/audit-2026-01-01T00-00-00.000.log", "/b/audit-2026-01-01T00-00-00.000.log"]
    assert order_inputs(given) == [
        "/b/audit-2026-01-01T00-00-00.000.log", "/b/audit.log", "/a/audit-2026-01-01T00-00-00.000.log",
    ]


def test_directory_expands_to_its_logs(tmp_path):
    for name in ("audit.log", "audit-2026-01-01T00-00-00.000.log.gz", "notes.txt"):
        (tmp_path / name).write_bytes(b"")
    assert order_inputs([str(tmp_path)]) == [
        str(tmp_path / "audit-2026-01-01T00-00-00.000.log.gz"), str(tmp_path / "audit.log"),
    ]


def test_rotated_and_gzip_inputs_are_read_in_order(tmp_path):
    # Three files of one rotation set, the oldest compressed, given newest first: the events
    # come out oldest first, which the line numbers of malformed lines show.
    old = tmp_path / "audit-2026-01-01T00-00-00.000.log.gz"
    mid = tmp_path / "audit-2026-01-02T00-00-00.000.log"
    new = tmp_path / "audit.log"
    ev = event(1, "Metadata", "ResponseComplete", "get", "u", uri="/api/v1/pods", resource="pods")
    old.write_bytes(gzip.compress(line(ev) + b"bad-old\n"))
    mid.write_bytes(line(ev) + line(ev) + b"bad-mid\n")
    new.write_bytes(b"bad-new\n")
    doc = simulate(loaded(EVERYTHING_METADATA), [str(new), str(mid), str(old)])
    assert [f["name"] for f in doc["input"]["files"]] == [str(old), str(mid), str(new)]
    assert [f["compressed"] for f in doc["input"]["files"]] == [True, False, False]
    assert doc["input"]["events"] == 3
    assert [m.split(": ")[0] for m in doc["input"]["malformedExamples"]] == [
        f"{old}:2", f"{mid}:3", f"{new}:1",
    ]
    # The written size does not depend on the compression of the recording.
    assert doc["policy"]["totals"]["bytes"] == 3 * len(line(ev))


def test_gzip_is_recognised_by_content_not_name(tmp_path):
    path = tmp_path / "audit.log"
    ev = event(1, "Metadata", "ResponseComplete", "get", "u", uri="/api/v1/pods", resource="pods")
    path.write_bytes(gzip.compress(line(ev)))
    (info, batches), = list(iter_files([str(path)]))
    assert list(batches) == [[line(ev)]]
    assert info.compressed and info.lines == 1


def test_corrupt_gzip_is_a_clear_error(tmp_path):
    path = tmp_path / "audit.log.gz"
    data = gzip.compress(os.urandom(100_000))
    path.write_bytes(data[: len(data) // 2])  # truncated mid-stream
    with pytest.raises(InvalidInput) as exc:
        for _, batches in iter_files([str(path)]):
            list(batches)
    assert str(path) in str(exc.value)


def test_missing_input_is_refused_before_reading(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(InvalidInput) as exc:
        check_inputs([str(tmp_path / "nope.log"), "-", "-", str(tmp_path / "empty")])
    assert [str(e) for e in exc.value.errors] == [
        "--events: standard input ('-') is given twice; it can be read only once",
        f"{tmp_path / 'nope.log'}: no such file",
        f"{tmp_path / 'empty'}: a directory without *.log or *.log.gz files",
    ]


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_only_on_a_terminal():
    quiet = io.StringIO()
    progress = Progress(100 << 20, quiet)
    progress.update(50 << 20)
    progress.finish()
    assert quiet.getvalue() == ""
    tty = _Tty()
    progress = Progress(100 << 20, tty)
    progress.update(50 << 20)
    assert tty.getvalue().startswith("\rsimulating [") and " 50% " in tty.getvalue()
    progress.finish()
    assert tty.getvalue().endswith("\r")

"""``kaudit policy simulate``: replay recorded audit events through a candidate policy.

Public API::

    from kaudit.simulate import simulate
    doc = simulate(candidate, ["audit.log"], baseline=None)   # the version-1 JSON document

``candidate`` and ``baseline`` are :class:`LoadedPolicy` values (a parsed policy and where it came
from). Modules: ``inputs`` (which files, in which order, streamed), ``sizes`` (bytes per event at a
level), ``counters`` (bounded top-N), ``core`` (the replay loop and tallies), ``report`` (the JSON
document), ``views`` (table and Markdown).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import Any, Callable, Iterator, TextIO

from kaudit.policy.model import Policy
from kaudit.simulate.report import PolicySource


@dataclass(frozen=True)
class LoadedPolicy:
    policy: Policy
    source: PolicySource


def simulate(
    candidate: LoadedPolicy,
    events: list[str],
    baseline: LoadedPolicy | None = None,
    *,
    top: int = 20,
    progress_stream: TextIO | None = None,
    observer: Callable[[int], None] | None = None,
    request_cache_size: int | None = None,
    on_batch: Callable[[list[bytes]], None] | None = None,
) -> dict[str, Any]:
    """Replay ``events`` (paths, directories or ``-``) and return the report document.

    ``observer``, if given, is called with the number of input bytes read so far, every batch of
    lines (256 KiB). ``on_batch``, if given, sees every batch of raw lines before the simulation
    does (the detection replay reads the same single pass, so standard input works too).
    """
    from kaudit.policy.catalog import SENSITIVE_RESOURCES
    from kaudit.policy.evaluate import Evaluator
    from kaudit.simulate.core import Simulation
    from kaudit.simulate.inputs import InputFile, Progress, check_inputs, iter_files, order_inputs, total_size
    from kaudit.simulate.report import build_report

    check_inputs(events)
    paths = order_inputs(events)
    check_inputs(paths)
    # The simulation caches decisions per request shape itself (with a smaller bound than the
    # evaluator's event cache), so it calls the evaluator's uncached entry point.
    sim = Simulation(
        (candidate.policy, Evaluator(candidate.policy).evaluate),
        None if baseline is None else (baseline.policy, Evaluator(baseline.policy).evaluate),
        sensitive=SENSITIVE_RESOURCES,
        **({} if request_cache_size is None else {"request_cache_size": request_cache_size}),
    )
    progress = Progress(total_size(paths), progress_stream if progress_stream is not None else sys.stderr, observer)
    files: list[InputFile] = []

    def tracked() -> Iterator[tuple[InputFile, Iterator[list[bytes]]]]:
        for info, lines in iter_files(paths, progress):
            files.append(info)
            yield info, lines if on_batch is None else _observed(lines, on_batch)

    try:
        sim.run(tracked())
    finally:
        progress.finish()
    return build_report(
        sim, files, candidate.source, None if baseline is None else baseline.source, top=top,
    )


def _observed(batches: Iterator[list[bytes]], on_batch: Callable[[list[bytes]], None]) -> Iterator[list[bytes]]:
    for batch in batches:
        on_batch(batch)
        yield batch


__all__ = ["LoadedPolicy", "PolicySource", "simulate"]

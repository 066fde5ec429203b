"""People-facing views of the JSON report: a plain-text table and Markdown.

Both are rendered from the same list of sections (title, lines of prose, one table), so they
carry the same facts; only the typography differs.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

SUMMARY_WIDTH = 70  # rule summaries longer than this are cut in the table view


@dataclass
class Section:
    title: str
    lines: list[str] = field(default_factory=list)
    headers: tuple[str, ...] = ()
    rows: list[tuple[str, ...]] = field(default_factory=list)
    right: frozenset[int] = frozenset()  # indexes of right-aligned (numeric) columns


def human_bytes(count: int) -> str:
    sign = "-" if count < 0 else ""
    value = float(abs(count))
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{sign}{value:.0f} {unit}" if unit == "B" else f"{sign}{value:.1f} {unit}"
        value /= 1024
    return f"{sign}{value:.1f} TiB"  # pragma: no cover - unreachable, the loop returns


def _signed_bytes(count: int) -> str:
    return ("+" if count > 0 else "") + human_bytes(count)


def _percent(value: float | None) -> str:
    return "n/a" if value is None else f"{value:+.1f}%"


def _share(part: int, whole: int) -> str:
    return f"{part * 100.0 / whole:.1f}%" if whole else "-"


def _num(value: int) -> str:
    return f"{value:,}"


def _policy_sections(report: dict[str, Any], label: str, recorded: int, cut: Callable[[str], str]) -> list[Section]:
    totals = report["totals"]
    bound = " (lower bound: under-recorded events)" if totals["underRecordedEvents"] else ""
    volume = Section(
        f"{label}: {report['source']} (hash {report['hash'][:12]})",
        [
            f"Estimated volume: {_num(totals['events'])} events, {human_bytes(totals['bytes'])}{bound}; "
            f"{_share(totals['bytes'], recorded)} of the recorded input.",
            _dropped_line(report["dropped"]),
        ],
        ("level", "events", "bytes", "share", "under-recorded"),
        [
            (level, _num(figures["events"]), human_bytes(figures["bytes"]), _share(figures["bytes"], totals["bytes"]),
             _num(figures["underRecordedEvents"]))
            for level, figures in report["levels"].items()
        ],
        frozenset({1, 2, 3, 4}),
    )
    rules = Section(
        f"{label}: rules",
        [],
        ("#", "level", "matched", "written", "omitted", "bytes", "share", "rule"),
        [
            ("-" if r["index"] is None else str(r["index"]), r["level"], _num(r["matchedEvents"]),
             _num(r["writtenEvents"]), _num(r["omittedStageEvents"]), human_bytes(r["bytes"]),
             _share(r["bytes"], totals["bytes"]), cut(r["summary"]))
            for r in report["rules"] if r["matchedEvents"] or r["index"] is not None
        ],
        frozenset({0, 2, 3, 4, 5, 6}),
    )
    top = report["topSources"]
    sources = Section(
        f"{label}: top sources of volume",
        [] if top["exact"] else ["Approximate: more distinct sources than the counter holds; see maxError in JSON."],
        ("bytes", "events", "user", "verb", "resource"),
        [(human_bytes(e["bytes"]), _num(e["events"]), e["user"], e["verb"], e["resource"]) for e in top["entries"]],
        frozenset({0, 1}),
    )
    exposure = report["exposure"]
    exposed = Section(
        f"{label}: exposure",
        [f"{_num(exposure['events'])} event(s) would log bodies of sensitive resources."
         if exposure["events"] else "No event would log a body of a sensitive resource."],
        ("events", "resource", "verb", "user", "level", "bodies") if exposure["entries"] else (),
        [(_num(e["events"]), e["resource"], e["verb"], e["user"], e["level"], e["bodies"]) for e in exposure["entries"]],
        frozenset({0}),
    )
    return [volume, rules, sources, exposed]


def _dropped_line(dropped: dict[str, Any]) -> str:
    parts = [f"level None: {_num(dropped['levelNone']['events'])} events "
             f"({human_bytes(dropped['levelNone']['recordedBytes'])} recorded)"]
    for stage, figures in dropped["omittedStages"].items():
        parts.append(f"stage {stage}: {_num(figures['events'])} events ({human_bytes(figures['recordedBytes'])} recorded)")
    return "Dropped: " + "; ".join(parts) + "."


def _cut(text: str) -> str:
    return text if len(text) <= SUMMARY_WIDTH else text[: SUMMARY_WIDTH - 3] + "..."


def _comparison_sections(comparison: dict[str, Any], cut: Callable[[str], str]) -> list[Section]:
    total = comparison["bytes"]
    overview = Section(
        "Comparison with the baseline",
        [
            f"Bytes: {human_bytes(total['baseline'])} -> {human_bytes(total['candidate'])} "
            f"({_signed_bytes(total['change'])}, {_percent(total['changePercent'])}); events: "
            f"{_num(comparison['events']['baseline'])} -> {_num(comparison['events']['candidate'])}; "
            f"events exposing sensitive bodies: {_num(comparison['exposureEvents']['baseline'])} -> "
            f"{_num(comparison['exposureEvents']['candidate'])}.",
        ],
        ("level", "baseline", "candidate", "change"),
        [
            (level, human_bytes(c["baseline"]), human_bytes(c["candidate"]), _percent(c["changePercent"]))
            for level, c in comparison["levels"].items()
        ],
        frozenset({1, 2, 3}),
    )
    rules = Section(
        "Comparison per rule (identical rules paired)",
        [],
        ("baseline #", "candidate #", "level", "baseline", "candidate", "change", "rule"),
        [
            ("-" if r["baselineIndex"] is None else str(r["baselineIndex"]),
             "-" if r["candidateIndex"] is None else str(r["candidateIndex"]), r["level"],
             human_bytes(r["baseline"]), human_bytes(r["candidate"]), _signed_bytes(r["change"]), cut(r["summary"]))
            for r in comparison["rules"] if r["baseline"] or r["candidate"]
        ],
        frozenset({0, 1, 3, 4, 5}),
    )
    changes = comparison["levelChanges"]
    moved = Section(
        "Requests whose level changes",
        [] if changes["entries"] else ["None: every event gets the same level under both policies."],
        ("events", "user", "verb", "resource", "from", "to", "bytes change") if changes["entries"] else (),
        [(_num(e["events"]), e["user"], e["verb"], e["resource"], e["from"], e["to"], _signed_bytes(e["bytesChange"]))
         for e in changes["entries"]],
        frozenset({0, 6}),
    )
    return [overview, rules, moved]


def sections(doc: dict[str, Any], *, cut_summaries: bool = True) -> list[Section]:
    inp = doc["input"]
    head = Section(
        "Input",
        [
            f"{_num(inp['events'])} events, {human_bytes(inp['recordedBytes'])} recorded, from "
            f"{len(inp['files'])} file(s); {_num(inp['malformedLines'])} malformed line(s) skipped.",
            "Recorded levels: " + (", ".join(f"{k} {_num(v)}" for k, v in inp["eventsByRecordedLevel"].items()) or "-")
            + "; stages: " + (", ".join(f"{k} {_num(v)}" for k, v in inp["eventsByStage"].items()) or "-") + ".",
        ] + [f"malformed: {example}" for example in inp["malformedExamples"]],
    )
    cut = _cut if cut_summaries else str
    out = [head] + _policy_sections(doc["policy"], "Candidate", inp["recordedBytes"], cut)
    if doc["baseline"] is not None:
        base = _policy_sections(doc["baseline"], "Baseline", inp["recordedBytes"], cut)
        out += [base[0]] + _comparison_sections(doc["comparison"], cut)
    if doc["warnings"]:
        out.append(Section("Warnings", [f"- {w}" for w in doc["warnings"]]))
    return out


def _text_table(section: Section) -> list[str]:
    widths = [max(len(row[i]) for row in [section.headers, *section.rows]) for i in range(len(section.headers))]

    def fmt(row: tuple[str, ...]) -> str:
        cells = [cell.rjust(w) if i in section.right else cell.ljust(w) for i, (cell, w) in enumerate(zip(row, widths))]
        return "  " + "  ".join(cells).rstrip()

    return [fmt(section.headers)] + [fmt(row) for row in section.rows]


def render_table(doc: dict[str, Any]) -> str:
    lines: list[str] = []
    for section in sections(doc):
        lines.append(section.title)
        lines.extend("  " + line for line in section.lines if line)
        if section.headers:
            lines.extend(_text_table(section))
        lines.append("")
    return "\n".join(lines)


def _md_cell(text: str) -> str:
    return text.replace("|", "\\|") or " "


def render_markdown(doc: dict[str, Any]) -> str:
    lines: list[str] = ["# Audit policy simulation", ""]
    for section in sections(doc, cut_summaries=False):
        lines += [f"## {section.title}", ""]
        if section.lines:
            lines += [line for line in section.lines if line] + [""]
        if section.headers:
            lines.append("| " + " | ".join(section.headers) + " |")
            lines.append("|" + "|".join("---:" if i in section.right else "---" for i in range(len(section.headers))) + "|")
            lines += ["| " + " | ".join(_md_cell(cell) for cell in row) + " |" for row in section.rows]
            lines.append("")
    return "\n".join(lines)


def render(doc: dict[str, Any], fmt: str) -> str:
    if fmt == "json":
        import json

        return json.dumps(doc, indent=2) + "\n"
    return render_markdown(doc) if fmt == "markdown" else render_table(doc)


"""``kaudit policy``: validate, lint, evaluate, render and simulate audit policies offline.

The engine (kaudit.policy) is imported inside each command so ``kaudit --help`` and the other
commands start fast.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from typing import IO, TYPE_CHECKING, Iterable, cast

from kaudit.cli.shared import (add_profile_options, check_file, check_kubernetes_version, print_findings, profile_options,
                               rules_file_findings, version_argument)
from kaudit.errors import FieldError, InvalidInput

if TYPE_CHECKING:
    from kaudit.cli import Subparsers
    from kaudit.policy.evaluate import Evaluator
    from kaudit.policy.loader import LoadResult

# Imports are inside the functions: every command module is imported to build the parser (see kaudit.cli).
HELP = "validate, lint, evaluate, render and simulate kube-apiserver audit policies (offline)"
DESCRIPTION = """\
Work with audit.k8s.io/v1 Policy files exactly as kube-apiserver treats them: whether a file
loads, what it drops silently, and which level each request gets.
"""
EPILOG = """\
examples:
  kaudit policy validate /etc/kubernetes/audit-policies/policy.yaml
  kaudit policy lint policy.yaml
  kaudit policy eval --policy policy.yaml --events /var/log/kubernetes/apiserver/audit.log
  kaudit policy render --profile Default --omit-read-only
"""


def register(subparsers: Subparsers) -> None:
    parser = subparsers.add_parser("policy", help=HELP, description=DESCRIPTION, epilog=EPILOG,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
    policy_subparsers = parser.add_subparsers(dest="policy_command", metavar="SUBCOMMAND")
    parser.set_defaults(func=lambda args: _usage(parser))
    _register_validate(policy_subparsers)
    _register_lint(policy_subparsers)
    _register_eval(policy_subparsers)
    _register_render(policy_subparsers)
    try:
        simulate = importlib.import_module("kaudit.cli.policy_simulate")
    except ModuleNotFoundError as exc:  # `policy simulate` not built yet
        if exc.name != "kaudit.cli.policy_simulate":
            raise
    else:
        simulate.register(policy_subparsers)


def _usage(parser: argparse.ArgumentParser) -> int:
    from kaudit.cli import missing_command

    return missing_command(parser, "validate, lint, eval, render, simulate")


def _rules_summary(result: LoadResult) -> str:
    assert result.policy is not None  # a file that loaded
    count = len(result.policy.rules)
    return f"{count} rule{'s' if count != 1 else ''}"


# --- validate / lint ----------------------------------------------------------------------------

def _register_validate(subparsers: Subparsers) -> None:
    parser = subparsers.add_parser(
        "validate", help="check that kube-apiserver would load each policy file",
        description="Exit 0 when kube-apiserver would load every FILE, 1 otherwise. Errors are printed "
                    "as 'error: FILE[:LINE:COL]: FIELD: MESSAGE', lint warnings as 'warning: FILE: FIELD: MESSAGE' "
                    "(standard error); each valid FILE gets 'FILE: valid: ...' on standard output.")
    parser.add_argument("files", nargs="+", metavar="FILE", help="policy file (YAML or JSON; '-' for standard input)")
    parser.add_argument("--strict", action="store_true", help="fail on lint warnings too")
    version_argument(parser)
    parser.set_defaults(func=run_validate)


def run_validate(args: argparse.Namespace) -> int:
    from kaudit.documents import check_stdin_once, display_name

    check_kubernetes_version(args)
    check_stdin_once(("FILE", path) for path in args.files)
    failed = False
    for path in args.files:
        result, errors, warnings = check_file(path, args.kubernetes_version)
        print_findings(display_name(path), errors, warnings)
        failed = failed or bool(errors) or (args.strict and bool(warnings))
        if not errors:
            noted = f", {len(warnings)} warning(s)" if warnings else ""
            print(f"{display_name(path)}: valid: kube-apiserver would load it ({_rules_summary(result)}{noted})")
    return 1 if failed else 0


def _register_lint(subparsers: Subparsers) -> None:
    parser = subparsers.add_parser(
        "lint", help="report what kube-apiserver accepts silently but is probably wrong",
        description="Print lint warnings ('warning: FILE: FIELD: MESSAGE') and, for a file kube-apiserver "
                    "would refuse, its errors ('error: FILE[:LINE:COL]: FIELD: MESSAGE'). Exit 1 when there is "
                    "any finding; without one, 'FILE: no findings' on standard output.")
    parser.add_argument("file", metavar="FILE", help="policy file (YAML or JSON; '-' for standard input)")
    version_argument(parser)
    parser.set_defaults(func=run_lint)


def run_lint(args: argparse.Namespace) -> int:
    from kaudit.documents import display_name

    check_kubernetes_version(args)
    result, errors, warnings = check_file(args.file, args.kubernetes_version)
    print_findings(display_name(args.file), errors, warnings)
    if not errors and not warnings:
        print(f"{display_name(args.file)}: no findings ({_rules_summary(result)})")
    return 1 if errors or warnings else 0


# --- eval ---------------------------------------------------------------------------------------

def _register_eval(subparsers: Subparsers) -> None:
    parser = subparsers.add_parser(
        "eval", help="evaluate a policy against audit events, one JSON result per line",
        description="Read audit.k8s.io/v1 Event JSON lines and write, for each input line in order, "
                    '{"level": ..., "omitStages": [...], "omitManagedFields": ..., "rule": INDEX|null}, '
                    'or {"error": "..."} for a line that is not a valid event.')
    parser.add_argument("--policy", required=True, metavar="FILE", help="the policy file")
    parser.add_argument("--events", default="-", metavar="FILE",
                        help="audit log with one Event per line ('-', the default, is standard input)")
    version_argument(parser)
    parser.set_defaults(func=run_eval)


# Malformed lines held back while no line has been an audit event: past this many, the input is
# taken for something that is not an audit log, and nothing is written.
HOLD_LINES = 100_000


def evaluate_lines(evaluator: Evaluator, lines: Iterable[bytes], out: IO[str], batch: int = 4096, name: str = "-") -> int:
    """Write one result line per input line; returns the number of malformed lines.

    Nothing is written until a line has been an audit event: input without one (an empty file,
    a YAML file, binary data) raises :class:`InvalidInput` naming ``name`` with nothing written,
    so a wrong path cannot pass for an empty log.
    """
    import itertools
    import json

    from kaudit.auditlog import MalformedEvent, decode_lines, envelope, unwrap
    from kaudit.simulate.inputs import BATCH_BYTES

    results = evaluator.decision_lines
    bad = seen = 0
    held: list[str] = []  # results of the leading lines, none of them an event so far
    first_problem = ""
    # A file hands out its lines in batches by itself (one C call), of simulate's batch size (256
    # KiB: measured 8 % faster than 1 MiB batches, which leave the processor's caches); any other
    # iterable is sliced.
    read = getattr(lines, "readlines", None)
    source = iter(lines)
    enveloped: bool | None = None  # GKE LogEntries or AKS records, told by the first line
    while chunk := (read(BATCH_BYTES) if read is not None else list(itertools.islice(source, batch))):
        if enveloped is None:
            enveloped = envelope(chunk[0])
        if enveloped:
            chunk = list(map(unwrap, chunk))
        events, malformed = decode_lines(chunk)
        decided = results(events)
        for i in malformed:
            event = events[i]
            assert isinstance(event, MalformedEvent)  # decode_lines lists the malformed ones
            message = f"not a JSON line: {event}" if event.kind == "json" else str(event)
            decided[i] = json.dumps({"error": message})
            first_problem = first_problem or f"line {seen + i + 1}: {message}"
        written = cast("list[str]", decided)  # None only where a line was malformed, replaced above
        bad += len(malformed)
        seen += len(chunk)
        if bad == seen:  # no event yet: hold the lines back
            held.extend(written)
            if bad >= HOLD_LINES:
                raise _no_event(name, bad, first_problem, complete=False)
            continue
        if held:
            written[:0] = held
            held = []
        written.append("")
        out.write("\n".join(written))
    if bad == seen:
        raise _no_event(name, bad, first_problem, complete=True)
    return bad


def _no_event(name: str, lines: int, first_problem: str, *, complete: bool) -> InvalidInput:
    from kaudit.documents import display_name

    if not lines:
        message = "no audit event: the input is empty"
    else:
        scope = f"none of its {lines} line(s)" if complete else f"none of its first {lines} lines"
        message = f"no audit event: {scope} is an audit Event JSON object ({first_problem})"
    return InvalidInput([FieldError("", message, file=display_name(name))])


def run_eval(args: argparse.Namespace) -> int:
    from kaudit.documents import check_stdin_once, display_name, os_error_message
    from kaudit.policy.evaluate import Evaluator

    check_kubernetes_version(args)
    check_stdin_once([("--policy", args.policy), ("--events", args.events)])
    result, errors, _ = check_file(args.policy, args.kubernetes_version)
    if errors:
        print_findings(display_name(args.policy), errors, [])
        return 1
    evaluator = Evaluator(result.policy)
    try:
        source = sys.stdin.buffer if args.events == "-" else open(args.events, "rb")
    except OSError as exc:
        raise InvalidInput([FieldError("", os_error_message(exc), file=args.events)]) from None
    with source:
        try:
            evaluate_lines(evaluator, source, sys.stdout, name=args.events)
        except IsADirectoryError as exc:
            raise InvalidInput([FieldError("", os_error_message(exc), file=args.events)]) from None
    sys.stdout.flush()
    return 0


# --- render -------------------------------------------------------------------------------------

def _register_render(subparsers: Subparsers) -> None:
    from kaudit.policy.document import PROFILES

    parser = subparsers.add_parser(
        "render", help="print a profile as a policy file",
        description="Print the policy kaudit writes for a profile and options (spec.policy), with its header "
                    "and content hash. Warnings go to standard error.")
    parser.add_argument("--profile", required=True, choices=PROFILES, help="the built-in profile")
    add_profile_options(parser)
    version_argument(parser)
    parser.set_defaults(func=run_render)


def run_render(args: argparse.Namespace) -> int:
    from kaudit.policy import compose_policy

    check_kubernetes_version(args)
    options = profile_options(args, args.profile)
    try:
        document = compose_policy(options)
    except InvalidInput as exc:
        raise InvalidInput(rules_file_findings(exc.errors, args.rules, len(options.rules))) from None
    for warning in rules_file_findings(document.warnings, args.rules, len(options.rules)):
        print(f"warning: {warning}", file=sys.stderr)
    sys.stdout.write(document.text)
    return 0

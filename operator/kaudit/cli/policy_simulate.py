"""``kaudit policy simulate``: what a candidate policy would write, from recorded audit events.

Registered under ``kaudit policy`` by the policy command group (``register(policy_subparsers)``).
Exit codes: 0 done; 1 bad input (one line per problem on stderr); 3 ``--fail-if-increase``
threshold exceeded (the report is still printed).
"""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING, Any

from kaudit.errors import FieldError, InvalidInput

if TYPE_CHECKING:
    from kaudit.cli import Subparsers
    from kaudit.errors import FieldError
    from kaudit.policy.document import PolicyOptions
    from kaudit.detect.replay import DetectionReplay
    from kaudit.simulate import LoadedPolicy

# Imports are inside the functions: every command module is imported to build the parser (see kaudit.cli).
EXIT_THRESHOLD_EXCEEDED = 3
FORMATS = ("table", "json", "markdown")


def register(policy_subparsers: Subparsers) -> argparse.ArgumentParser:
    parser = policy_subparsers.add_parser(
        "simulate",
        help="estimate the volume and exposure of a policy from recorded audit events",
        description=(
            "Replay recorded kube-apiserver audit events (audit.k8s.io/v1 Event JSON lines, plain or gzip,\n"
            "rotated files in order, '-' for stdin) through a candidate policy and report what it would\n"
            "write: events and estimated bytes per rule and per level, dropped events, the top sources of\n"
            "volume, and events that would log bodies of sensitive resources. With --baseline, compare\n"
            "with another policy."
        ),
        epilog=(
            "examples:\n"
            "  kaudit policy simulate --profile Default --events /var/log/kubernetes/audit/\n"
            "  kaudit policy simulate --policy new.yaml --baseline old.yaml --events audit.log.gz "
            "--fail-if-increase 20 -o json\n\n"
            f"exit codes: 0 done; 1 bad input; {EXIT_THRESHOLD_EXCEEDED} --fail-if-increase threshold exceeded"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    from kaudit.cli.shared import add_profile_options, version_argument
    from kaudit.policy.document import PROFILES

    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--policy", metavar="FILE", help="candidate policy file (audit.k8s.io/v1 Policy)")
    source.add_argument("--profile", choices=PROFILES, help="candidate built-in profile")
    add_profile_options(parser, help_prefix="with --profile: ")  # the same options as `kaudit policy render`
    version_argument(parser)
    parser.add_argument(
        "--events", metavar="FILE", nargs="+", action="extend", required=True,
        help="audit log files or directories (plain or .gz; rotated files are read oldest first); '-' for stdin",
    )
    base = parser.add_mutually_exclusive_group()
    base.add_argument("--baseline", metavar="FILE", help="policy file to compare with (e.g. the one deployed now)")
    base.add_argument("--baseline-profile", choices=PROFILES,
                      help="built-in profile to compare with (with its default options)")
    parser.add_argument(
        "--fail-if-increase", metavar="PCT", type=float, default=None,
        help=f"exit {EXIT_THRESHOLD_EXCEEDED} when the candidate's estimated bytes exceed the baseline's by more "
        "than PCT percent (needs --baseline or --baseline-profile)",
    )
    parser.add_argument(
        "--detections", metavar="FILE", nargs="*", default=None,
        help="also replay Cloud SIEM detection rules (kaudit's pack without FILE; Datadog API JSON or .tf.json "
        "files): signals per rule before (baseline, else as recorded) and after, noise hot spots, bytes per rule",
    )
    parser.add_argument("--top", metavar="N", type=int, default=20, help="rows in the top-N tables (default 20)")
    parser.add_argument("-o", "--output", choices=FORMATS, default="table", help="output format (default table)")
    parser.set_defaults(func=run)
    simulate: argparse.ArgumentParser = parser
    return simulate


def _profile_options(args: argparse.Namespace, profile: str, *, as_shipped: bool = False) -> PolicyOptions:
    """The candidate profile's options from the command line; a baseline profile as shipped."""
    from kaudit.cli.shared import profile_options
    from kaudit.policy import PolicyOptions

    if as_shipped:
        return PolicyOptions(profile=profile, kubernetes_version=args.kubernetes_version)
    return profile_options(args, profile)


def _load_file(path: str, kubernetes_version: str) -> tuple[LoadedPolicy, list[FieldError]]:
    """(LoadedPolicy, lint warnings) for a policy file, read as ``kaudit policy validate`` reads it."""
    from kaudit.cli.shared import check_file
    from kaudit.documents import display_name
    from kaudit.policy import content_hash
    from kaudit.simulate import LoadedPolicy, PolicySource

    checked = check_file(path, kubernetes_version)
    if checked.errors:
        raise InvalidInput(error.in_file(display_name(path)) for error in checked.errors)
    result, text, warnings = checked.result, checked.data.decode("utf-8"), checked.warnings
    assert result is not None and result.policy is not None  # no errors: the file loaded
    return LoadedPolicy(result.policy, PolicySource(path, content_hash(text))), \
        [warning.in_file(display_name(path)) for warning in warnings]


def _load_profile(args: argparse.Namespace, profile: str, *,
                  as_shipped: bool = False) -> tuple[LoadedPolicy, list[FieldError]]:
    """(LoadedPolicy, warnings) for a built-in profile with the command line's options."""
    from kaudit.cli.shared import rules_file_findings
    from kaudit.policy import compose_policy, load_policy
    from kaudit.simulate import LoadedPolicy, PolicySource

    options = _profile_options(args, profile, as_shipped=as_shipped)
    try:
        document = compose_policy(options)
    except InvalidInput as exc:
        raise InvalidInput(rules_file_findings(exc.errors, args.rules, len(options.rules))) from None
    result = load_policy(document.text, args.kubernetes_version)
    if not result.ok:  # a profile always loads; kept as a guard, not a code path users see
        raise InvalidInput(list(result.errors))
    assert result.policy is not None  # result.ok
    warnings = rules_file_findings(document.warnings, None if as_shipped else args.rules, len(options.rules))
    return LoadedPolicy(result.policy, PolicySource(f"profile {profile}", document.hash)), warnings


def _check_args(args: argparse.Namespace) -> None:
    errors = []
    profile_flags = (args.rules or args.omit_read_only or args.omit_stages is not None or args.keep_managed_fields
                     or args.operator_namespace is not None or args.collection is not None or args.no_audit_kaudit)
    if args.policy and profile_flags:
        errors.append(FieldError(
            "--policy", "--rules, --omit-read-only, --omit-stages, --keep-managed-fields, --operator-namespace, "
                        "--collection and --no-audit-kaudit apply to --profile only",
        ))
    if args.fail_if_increase is not None and not (args.baseline or args.baseline_profile):
        errors.append(FieldError("--fail-if-increase", "needs --baseline or --baseline-profile to compare with"))
    if args.fail_if_increase is not None and args.fail_if_increase < 0:
        errors.append(FieldError("--fail-if-increase", "must be a percentage >= 0"))
    if args.top < 1:
        errors.append(FieldError("--top", "must be at least 1"))
    if errors:
        raise InvalidInput(errors)


def run(args: argparse.Namespace) -> int:
    from kaudit.cli.shared import check_kubernetes_version
    from kaudit.documents import check_stdin_once
    from kaudit.simulate import simulate
    from kaudit.simulate.views import render

    check_kubernetes_version(args)
    _check_args(args)
    check_stdin_once([("--policy", args.policy), ("--rules", args.rules), ("--baseline", args.baseline)]
                     + [("--detections", path) for path in args.detections or ()]
                     + [("--events", path) for path in args.events])
    version = args.kubernetes_version
    candidate, lints = _load_file(args.policy, version) if args.policy else _load_profile(args, args.profile)
    baseline = None
    if args.baseline:
        baseline, _ = _load_file(args.baseline, version)
    elif args.baseline_profile:
        baseline, _ = _load_profile(args, args.baseline_profile, as_shipped=True)
    replay = _detection_replay(args, candidate, baseline)
    doc = simulate(candidate, args.events, baseline, top=args.top,
                   on_batch=None if replay is None else replay.feed_lines)
    _refuse_without_events(doc, args.events)
    if replay is not None:
        doc["detection"] = replay.document()
    # The candidate's lints, as `kaudit policy lint` gives them: one verdict whatever reads the policy.
    doc["warnings"][:0] = [f"candidate: {warning}" for warning in lints]
    sys.stdout.write(render(doc, args.output))
    if replay is not None and args.output != "json":
        from kaudit.detect.replay import detection_table

        sys.stdout.write("\n" + "".join(line + "\n" for line in detection_table(doc["detection"])))
    sys.stdout.flush()
    if args.fail_if_increase is not None and exceeds(doc, args.fail_if_increase):
        change = doc["comparison"]["bytes"]
        print(
            f"error: estimated volume rises from {change['baseline']} to {change['candidate']} bytes, "
            f"more than the allowed {args.fail_if_increase:g}%",
            file=sys.stderr,
        )
        return EXIT_THRESHOLD_EXCEEDED
    return 0


def _detection_replay(args: argparse.Namespace, candidate: LoadedPolicy,
                      baseline: LoadedPolicy | None) -> DetectionReplay | None:
    """The rule-aware replay for --detections, or None."""
    if args.detections is None:
        return None
    from kaudit.cli.rules import load_detection_rules
    from kaudit.detect.replay import DetectionReplay

    rules = load_detection_rules(args.detections)
    return DetectionReplay(rules, candidate.policy, None if baseline is None else baseline.policy)


def _refuse_without_events(doc: dict[str, Any], events: list[str]) -> None:
    """Input without one audit event is bad input, not a report of zeros: a wrong path in CI must
    not pass a --fail-if-increase gate (fails closed)."""
    from kaudit.documents import display_name

    inp = doc["input"]
    if inp["events"]:
        return
    lines = sum(f["lines"] for f in inp["files"])
    if not lines:
        detail = "the input is empty"
    else:
        example = f" ({inp['malformedExamples'][0]})" if inp["malformedExamples"] else ""
        detail = f"none of its {lines} line(s) is an audit Event JSON object{example}"
    raise InvalidInput([FieldError("", f"no audit event: {detail}", file=", ".join(map(display_name, events)))])


def exceeds(doc: dict[str, Any], percent: float) -> bool:
    """Whether the candidate's estimated bytes exceed the baseline's by more than ``percent``.

    Any volume where the baseline writes nothing counts as exceeding.
    """
    change = doc["comparison"]["bytes"]
    return bool(change["candidate"] > change["baseline"] * (1 + percent / 100.0))

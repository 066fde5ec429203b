"""``kaudit policy simulate``: what a candidate policy would write, from recorded audit events.

Registered under ``kaudit policy`` by the policy command group (``register(policy_subparsers)``).
Exit codes: 0 done; 1 bad input (one line per problem on stderr); 3 ``--fail-if-increase``
threshold exceeded (the report is still printed).
"""

from __future__ import annotations

import argparse
import sys

from kaudit.errors import FieldError, InvalidInput

EXIT_THRESHOLD_EXCEEDED = 3
FORMATS = ("table", "json", "markdown")


def register(policy_subparsers) -> argparse.ArgumentParser:
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
    from kaudit.cli.policy import add_profile_options
    from kaudit.policy.document import PROFILES

    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--policy", metavar="FILE", help="candidate policy file (audit.k8s.io/v1 Policy)")
    source.add_argument("--profile", choices=PROFILES, help="candidate built-in profile")
    add_profile_options(parser, help_prefix="with --profile: ")  # the same options as `kaudit policy render`
    parser.add_argument("--kubernetes-version", metavar="1.N", default="",
                        help="kube-apiserver version the policies are for (default: the newest kaudit knows)")
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
    parser.add_argument("--top", metavar="N", type=int, default=20, help="rows in the top-N tables (default 20)")
    parser.add_argument("-o", "--output", choices=FORMATS, default="table", help="output format (default table)")
    parser.set_defaults(func=run)
    return parser


def _profile_options(args: argparse.Namespace, profile: str, *, as_shipped: bool = False):
    """The candidate profile's options from the command line; a baseline profile as shipped."""
    from kaudit.cli.policy import profile_options
    from kaudit.policy import PolicyOptions

    if as_shipped:
        return PolicyOptions(profile=profile, kubernetes_version=args.kubernetes_version)
    return profile_options(args, profile)


def _load_file(path: str, flag: str, kubernetes_version: str):
    from kaudit.policy import content_hash, load_policy
    from kaudit.simulate import LoadedPolicy, PolicySource

    try:
        with open(path, "rb") as handle:
            data = handle.read()
    except OSError as exc:
        raise InvalidInput([FieldError(flag, f"{path}: {exc.strerror or exc}")]) from None
    result = load_policy(data, kubernetes_version)
    if not result.ok:
        raise InvalidInput([FieldError(path, str(error)) for error in result.errors])
    text = data.decode("utf-8", errors="replace")
    return LoadedPolicy(result.policy, PolicySource(path, content_hash(text)))


def _load_profile(args: argparse.Namespace, profile: str, *, as_shipped: bool = False):
    from kaudit.policy import compose_policy, load_policy
    from kaudit.simulate import LoadedPolicy, PolicySource

    document = compose_policy(_profile_options(args, profile, as_shipped=as_shipped))
    result = load_policy(document.text, args.kubernetes_version)
    if not result.ok:  # a profile always loads; kept as a guard, not a code path users see
        raise InvalidInput(list(result.errors))
    return LoadedPolicy(result.policy, PolicySource(f"profile {profile}", document.hash))


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
    from kaudit.cli.policy import check_kubernetes_version
    from kaudit.simulate import simulate
    from kaudit.simulate.views import render

    check_kubernetes_version(args)
    _check_args(args)
    version = args.kubernetes_version
    candidate = _load_file(args.policy, "--policy", version) if args.policy else _load_profile(args, args.profile)
    baseline = None
    if args.baseline:
        baseline = _load_file(args.baseline, "--baseline", version)
    elif args.baseline_profile:
        baseline = _load_profile(args, args.baseline_profile, as_shipped=True)
    doc = simulate(candidate, args.events, baseline, top=args.top)
    sys.stdout.write(render(doc, args.output))
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


def exceeds(doc: dict, percent: float) -> bool:
    """Whether the candidate's estimated bytes exceed the baseline's by more than ``percent``.

    Any volume where the baseline writes nothing counts as exceeding.
    """
    change = doc["comparison"]["bytes"]
    return change["candidate"] > change["baseline"] * (1 + percent / 100.0)

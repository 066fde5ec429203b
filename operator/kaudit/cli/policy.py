"""``kaudit policy``: validate, lint, evaluate, render and simulate audit policies offline.

The engine (kaudit.policy) is imported inside each command so ``kaudit --help`` and the other
commands start fast.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from dataclasses import dataclass
from typing import IO, TYPE_CHECKING, Any, Iterable, Iterator, cast

from kaudit.errors import FieldError, InvalidInput

if TYPE_CHECKING:
    from kaudit.cli import Subparsers
    from kaudit.policy.document import PolicyOptions, SelfAudit
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


def version_argument(parser: argparse.ArgumentParser) -> None:
    """--kubernetes-version, one definition for every command that validates a policy."""
    parser.add_argument("--kubernetes-version", metavar="1.N", default="",
                        help="kube-apiserver version the policy is for (default: the newest kaudit knows)")


def check_kubernetes_version(args: argparse.Namespace) -> None:
    """Refuse ``args.kubernetes_version`` unless it is empty or reads as a minor version ("1.33").

    A version kaudit cannot read must not silently mean "the newest": it decides what loads
    (``group: "*"`` needs 1.36). Raises :class:`InvalidInput` naming ``--kubernetes-version``.
    Shared by every command with that option (policy, policy simulate, install-policy).
    """
    from kaudit.policy.validation import parse_minor

    if args.kubernetes_version and parse_minor(args.kubernetes_version) is None:
        raise InvalidInput([FieldError("--kubernetes-version",
                                       f'expected a version such as "1.33", got {args.kubernetes_version!r}')])


# --- reading and reporting --------------------------------------------------------------------

def print_findings(name: str, errors: Iterable[FieldError], warnings: Iterable[FieldError]) -> None:
    """``error: FILE[:LINE:COL]: FIELD: MESSAGE`` and ``warning: FILE: FIELD: MESSAGE``, one per line."""
    for error in errors:
        print(f"error: {error.in_file(name)}", file=sys.stderr)
    for warning in warnings:
        print(f"warning: {warning.in_file(name)}", file=sys.stderr)


@dataclass(frozen=True)
class CheckedFile:
    """One policy file as every policy command reads it: loaded, or errors; lints when it loads."""

    result: Any  # LoadResult, or None when the file could not be read
    errors: list[FieldError]
    warnings: list[FieldError]
    data: bytes = b""

    def __iter__(self) -> Iterator[Any]:  # (result, errors, warnings), as most callers want them
        return iter((self.result, self.errors, self.warnings))


def check_file(path: str, kubernetes_version: str) -> CheckedFile:
    """One policy file, read within kaudit's limits, loaded as kube-apiserver would, and linted."""
    from kaudit.documents import display_name, read_bytes
    from kaudit.policy import lint_loaded, load_policy

    try:
        data = read_bytes(path)
    except InvalidInput as exc:
        return CheckedFile(None, exc.errors, [])
    result = load_policy(data, kubernetes_version, file=display_name(path))
    if not result.ok:
        return CheckedFile(result, list(result.errors), [], data)
    return CheckedFile(result, [], lint_loaded(result, kubernetes_version), data)


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


def add_profile_options(parser: argparse.ArgumentParser, help_prefix: str = "") -> None:
    """The options applied on top of a profile (spec.policy), shared by ``render`` and ``simulate``.

    ``--omit-stages`` defaults to None so a caller can tell whether it was given; see
    :func:`profile_options` for the default it stands for.
    """
    parser.add_argument("--rules", metavar="FILE",
                        help=f"{help_prefix}custom rules evaluated before the profile's: a YAML/JSON list of "
                             "PolicyRule objects (or a Policy, whose rules are taken)")
    parser.add_argument("--omit-read-only", action="store_true",
                        help=f"{help_prefix}stop logging get/list/watch (reads of secrets stay at Metadata)")
    parser.add_argument("--omit-stages", metavar="STAGES", default=None,
                        help=f"{help_prefix}comma-separated policy-level omitStages (default: RequestReceived; "
                             "'' for none)")
    parser.add_argument("--keep-managed-fields", action="store_true",
                        help=f"{help_prefix}set omitManagedFields: false (the default omits them)")
    parser.add_argument("--operator-namespace", metavar="NS", default=None,
                        help=f"{help_prefix}kaudit's namespace, named by the self-audit rules (default: kaudit-system)")
    parser.add_argument("--collection", metavar="NAME", default=None,
                        help=f"{help_prefix}the AuditCollection whose policy ConfigMap the self-audit rules name "
                             "(default: cluster)")
    parser.add_argument("--no-audit-kaudit", action="store_true",
                        help=f"{help_prefix}leave out the self-audit rules (spec.policy.auditKaudit: false)")


def profile_options(args: argparse.Namespace, profile: str) -> PolicyOptions:
    """The PolicyOptions that ``profile`` plus the options of :func:`add_profile_options` ask for."""
    from kaudit.policy import PolicyOptions

    _refuse_options_of_fixed_profile(args, profile)
    stages = ("RequestReceived",) if args.omit_stages is None else tuple(
        stage.strip() for stage in args.omit_stages.split(",") if stage.strip())
    return PolicyOptions(
        profile=profile,
        self_audit=None if args.no_audit_kaudit else _self_audit(args),
        rules=read_custom_rules(args.rules),
        omit_read_only=args.omit_read_only,
        omit_stages=stages,
        omit_managed_fields=not args.keep_managed_fields,
        kubernetes_version=args.kubernetes_version,
    )


def _refuse_options_of_fixed_profile(args: argparse.Namespace, profile: str) -> None:
    """A platform's own policy (FIXED_PROFILES) takes none of kaudit's options: naming one is an error,
    since the result would not be what that platform records."""
    from kaudit.policy.document import FIXED_PROFILES

    if profile not in FIXED_PROFILES:
        return
    given = {"--rules": args.rules, "--omit-read-only": args.omit_read_only,
             "--omit-stages": args.omit_stages is not None, "--keep-managed-fields": args.keep_managed_fields,
             "--no-audit-kaudit": args.no_audit_kaudit, "--operator-namespace": args.operator_namespace is not None,
             "--collection": args.collection is not None}
    errors = [FieldError(flag, f"profile {profile} is {FIXED_PROFILES[profile]}, which cannot be changed: "
                               f"{flag} does not apply")
              for flag, value in given.items() if value]
    if errors:
        raise InvalidInput(errors)


def _self_audit(args: argparse.Namespace) -> SelfAudit:
    """The objects the self-audit rules name: what kaudit renders for --collection in --operator-namespace."""
    from dataclasses import replace

    from kaudit.api.spec import dns_label_problem
    from kaudit.policy import SelfAudit
    from kaudit.render.policy import self_audit

    problems = [FieldError(flag, f"Invalid value: {value!r}: {problem}")
                for flag, value in (("--operator-namespace", args.operator_namespace), ("--collection", args.collection))
                if value is not None and (problem := dns_label_problem(value))]
    if problems:
        raise InvalidInput(problems)
    default = SelfAudit()
    namespace = args.operator_namespace or default.namespace
    if args.collection is None:
        return replace(default, namespace=namespace)
    return self_audit(args.collection, namespace)


def read_custom_rules(path: str | None) -> tuple[dict[str, Any], ...]:
    """The custom rules in the file a ``--rules FILE`` option names, as plain mappings.

    The file holds a YAML/JSON list of audit PolicyRule objects, or a whole Policy whose
    ``rules`` are taken. No path (or an empty file) means no custom rules. The rules are not
    validated here: ``compose_policy`` does that and names each problem ``rules[i]...``.
    Raises :class:`InvalidInput` naming the file when it cannot be read or is not such a list.
    Shared by ``kaudit policy render`` and ``kaudit policy simulate``.
    """
    from kaudit.documents import display_name, load, wrong_kind

    if not path:
        return ()
    documents = load(path, first_only=True)
    data = documents[0].data if documents else None
    if data is None:
        return ()
    other = wrong_kind(data, "Policy")
    if other is not None:
        raise InvalidInput([other.in_file(display_name(path))])
    if isinstance(data, dict) and isinstance(data.get("rules"), list):  # a whole Policy: take its rules
        data = data["rules"]
    if not isinstance(data, list):
        raise InvalidInput([FieldError("", "must be a list of audit policy rules (or a Policy with rules)",
                                       file=display_name(path))])
    return tuple(data)


def rules_file_findings(errors: Iterable[FieldError], rules_path: str | None, custom: int) -> list[FieldError]:
    """Errors or warnings about the composed policy, those on a custom rule naming the --rules file."""
    from kaudit.documents import display_name

    if not rules_path:
        return list(errors)
    custom_paths = tuple(f"rules[{i}]" for i in range(custom))
    return [error.in_file(display_name(rules_path))
            if error.path.split(".", 1)[0] in custom_paths else error for error in errors]


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

"""What several ``kaudit`` commands share: the options on top of a profile, the Kubernetes version
option, reading a policy file as every policy command does, and reporting its findings.

Used by ``kaudit policy`` (cli/policy.py), ``kaudit policy simulate`` (cli/policy_simulate.py),
``kaudit rules`` (cli/rules.py) and ``kaudit install-policy``; it imports none of them, so the
command modules form no circle. The engine is imported inside each function, as in every command
module, so building the parser stays fast.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Iterable, Iterator

from kaudit.errors import FieldError, InvalidInput

if TYPE_CHECKING:
    from kaudit.policy.document import PolicyOptions, SelfAudit


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

"""Compose a policy file from ``spec.policy`` options: kaudit's self-audit rules, then custom
rules, then the omitReadOnly rules, then the profile's rules, rendered through
``templates/policy.yaml.j2``.

The self-audit rules come first so that no custom rule can take a change to the audit machinery
away from them (kube-apiserver takes the first matching rule); only
``spec.policy.auditKaudit: false`` leaves them out.
"""

from __future__ import annotations

import hashlib
import textwrap
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

import jinja2
import yaml

from kaudit import __version__
from kaudit.errors import FieldError, InvalidInput
from kaudit.policy.document import FIXED_PROFILES, PROFILES, PolicyDocument, PolicyOptions
from kaudit.policy.lint import covers, lint_policy, unknown_field_warnings
from kaudit.policy.loader import DecodeError, decode_rule, load_policy
from kaudit.policy.model import Policy, PolicyRule, rule_to_dict
from kaudit.policy.profiles import omit_read_only_rules, profile_rules, self_audit_rules
from kaudit.policy.validation import validate_rule, validate_stages

if TYPE_CHECKING:
    from kaudit.policy.profiles import CommentedRule


@dataclass(frozen=True)
class _Item:
    comment: tuple[str, ...]
    yaml: str


def _flow(value: object) -> str:
    return yaml.safe_dump(value, default_flow_style=True, width=10_000).strip().removesuffix("...").strip()


def _rule_yaml(rule: PolicyRule) -> str:
    """One rule as a block-style list item; lists of strings in flow style for readability."""
    lines: list[str] = []
    for key, value in rule_to_dict(rule).items():
        prefix = "- " if not lines else "  "
        if key == "resources":
            lines.append(f"{prefix}resources:")
            for entry in value:
                entry_lines = [f"{k}: {_flow(v)}" for k, v in entry.items()]
                lines.append("  - " + entry_lines[0])
                lines.extend("    " + line for line in entry_lines[1:])
        else:
            lines.append(f"{prefix}{key}: {_flow(value)}")
    return "\n".join(lines)


def _wrap(comment: str) -> tuple[str, ...]:
    return tuple(textwrap.wrap(comment, width=96)) or ("",)


def _option_errors(options: PolicyOptions) -> list[FieldError]:
    errors = []
    if options.profile not in PROFILES:
        supported = ", ".join(f'"{p}"' for p in PROFILES)
        errors.append(FieldError("profile", f'Unsupported value: "{options.profile}": supported values: {supported}'))
    errors += validate_stages(tuple(options.omit_stages), "omitStages")
    if options.profile in FIXED_PROFILES:
        why = f"profile {options.profile} is {FIXED_PROFILES[options.profile]}, which cannot be changed"
        if options.rules:
            errors.append(FieldError("rules", f"Forbidden: {why}"))
        if options.omit_read_only:
            errors.append(FieldError("omitReadOnly", f"Forbidden: {why}"))
    return errors


def _as_applied(options: PolicyOptions) -> PolicyOptions:
    """``options`` for a fixed profile as its platform applies it: no self-audit rules, and the
    policy-level omitStages and omitManagedFields the platform's policy has (none; false).

    The PolicyOptions defaults stand for kaudit's choices, which a platform's policy does not make;
    callers that let a user set them refuse them for a fixed profile (kaudit.cli.policy).
    """
    if options.profile not in FIXED_PROFILES:
        return options
    return replace(options, self_audit=None, omit_stages=(), omit_managed_fields=False)


def _custom_rules(options: PolicyOptions) -> tuple[tuple[PolicyRule, ...], list[str], list[FieldError]]:
    rules: list[PolicyRule] = []
    unknown: list[str] = []
    errors: list[FieldError] = []
    for i, data in enumerate(options.rules):
        try:
            rule = decode_rule(data, f"rules[{i}]", unknown)
        except DecodeError as exc:
            errors.append(exc.error)
            continue
        errors += validate_rule(rule, f"rules[{i}]", options.kubernetes_version)
        rules.append(rule)
    return tuple(rules), unknown, errors


def render_policy_text(options: PolicyOptions, items: list[_Item], policy: Policy) -> tuple[str, str]:
    """(file text, content hash)."""
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("kaudit.policy", "templates"),
        keep_trailing_newline=True,
        autoescape=False,
        undefined=jinja2.StrictUndefined,
    )
    template = env.get_template("policy.yaml.j2")
    values = dict(
        version=__version__,
        profile=options.profile,
        platform=FIXED_PROFILES.get(options.profile, ""),
        custom_count=len(options.rules),
        omit_read_only=str(bool(options.omit_read_only)),
        omit_stages=list(policy.omit_stages),
        omit_managed_fields=str(policy.omit_managed_fields),
        rules=items,
    )
    content = template.render(header=False, hash="", **values)
    digest = hashlib.sha256(content.encode("utf-8")).hexdigest()
    text = template.render(header=True, hash=digest, **values)
    return text, digest


def compose_policy(options: PolicyOptions) -> PolicyDocument:
    """The policy file ``options`` ask for, or :class:`InvalidInput` with paths relative to spec.policy.

    Warnings (lints) name ``rules[i]`` for the user's own rules (index i of spec.policy.rules,
    whatever comes before them in the file) and policy-level fields such as ``omitStages``.
    """
    errors = _option_errors(options)
    options = _as_applied(options)
    custom, unknown, rule_errors = _custom_rules(options)
    errors += rule_errors
    if errors:
        raise InvalidInput(errors)

    items: list[_Item] = []
    rules: list[PolicyRule] = []
    generated: list[PolicyRule] = []

    def add_generated(commented: CommentedRule) -> None:
        # A generated rule that an earlier generated rule makes unreachable is left out.
        if any(covers(earlier, commented.rule) for earlier in generated):
            return
        generated.append(commented.rule)
        rules.append(commented.rule)
        items.append(_Item(_wrap(commented.comment), _rule_yaml(commented.rule)))

    for commented in self_audit_rules(options.self_audit) if options.self_audit is not None else ():
        add_generated(commented)
    first_custom = len(rules)
    items += [_Item(_wrap(f"Custom rule spec.policy.rules[{i}]."), _rule_yaml(rule)) for i, rule in enumerate(custom)]
    rules += custom
    extra = omit_read_only_rules() if options.omit_read_only and options.profile != "None" else ()
    for commented in extra + profile_rules(options.profile):
        add_generated(commented)

    policy = Policy(
        rules=tuple(rules),
        omit_stages=tuple(dict.fromkeys(options.omit_stages)),
        omit_managed_fields=bool(options.omit_managed_fields),
    )
    text, digest = render_policy_text(options, items, policy)
    loaded = load_policy(text, options.kubernetes_version)
    if not loaded.ok:  # a bug in kaudit, never the user's input: refuse rather than write it
        raise InvalidInput(FieldError("", f"kaudit composed a policy that would not load: {e}") for e in loaded.errors)

    assert loaded.policy is not None  # loaded.ok
    warnings = unknown_field_warnings(unknown)

    def spec_name(index: int) -> str:  # a rule of the file as the user knows it
        if index < first_custom:
            return "kaudit's self-audit rules (spec.policy.auditKaudit)"
        return f"rules[{index - first_custom}]"

    for warning in lint_policy(loaded.policy, kubernetes_version=options.kubernetes_version, rule_name=spec_name):
        index, rest = _rule_index(warning.path)
        if index is None:
            if not warning.path.startswith("rules"):
                warnings.append(warning)
        elif first_custom <= index < first_custom + len(custom):
            warnings.append(FieldError(f"rules[{index - first_custom}]{rest}", warning.message))
    return PolicyDocument(text=text, hash=digest, rule_count=len(rules), warnings=tuple(warnings))


def _rule_index(path: str) -> tuple[int | None, str]:
    """(N, rest) for a path ``rules[N]rest``; (None, path) for any other path."""
    head, bracket, tail = path.partition("[")
    number, close, rest = tail.partition("]")
    if head != "rules" or not bracket or not close or not number.isdigit():
        return None, path
    return int(number), rest

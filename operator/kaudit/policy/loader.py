"""Load an audit policy the way kube-apiserver does (``pkg/audit/policy/reader.go``).

kube-apiserver decodes the file strictly first and, when the only problems are unknown or
duplicate fields, falls back to a lenient decode that silently drops them. Anything else a
JSON decoder would refuse (a string where a list belongs, a list where a mapping belongs) stops
the load. Then it checks apiVersion/kind (only ``audit.k8s.io/v1`` ``Policy``), validates, and
refuses a policy with zero rules.

:func:`load_policy` reproduces that and also returns what the lenient decode dropped, so the
lints can point at misspelt keys.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from kaudit.documents import DocumentError, parse, wrong_kind
from kaudit.errors import FieldError
from kaudit.policy.model import (API_VERSION, GROUP_RESOURCES_FIELDS, KIND, RULE_FIELDS, GroupResources, Policy,
                                 PolicyRule)
from kaudit.policy.validation import validate_policy

MAX_REPORTED_UNKNOWN = 1000  # unknown fields listed for the lints; hostile input may hold millions

_POLICY_FIELDS = {"apiVersion", "kind", "metadata", "rules", "omitStages", "omitManagedFields"}


@dataclass(frozen=True)
class LoadResult:
    """The outcome of loading: a policy when kube-apiserver would load it, else errors."""

    policy: Policy | None
    errors: tuple[FieldError, ...] = ()
    # Paths of fields the lenient decode drops (e.g. ``rules[3].resources[0].verbs``).
    unknown_fields: tuple[str, ...] = ()
    # Paths of keys given twice; the decoder keeps the last value.
    duplicate_fields: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        return self.policy is not None


class DecodeError(Exception):
    """A value of the wrong JSON type, which stops kube-apiserver's decoder; ``.error`` names it."""

    def __init__(self, error: FieldError):
        super().__init__(str(error))
        self.error = error


def parse_document(text: str | bytes) -> Any:
    """The first YAML (or JSON) document of ``text``, guarded against hostile input.

    Raises :class:`~kaudit.documents.DocumentError` (a ValueError) with a one-line message for
    binary, oversized, too deeply nested or malformed input.
    """
    return parse_with_duplicates(text)[0]


def parse_with_duplicates(text: str | bytes) -> tuple[Any, tuple[str, ...]]:
    """:func:`parse_document`, plus the paths of duplicated keys."""
    documents = parse(text, first_only=True)
    if not documents:
        return None, ()
    return documents[0].data, tuple(path for path, _, _ in documents[0].duplicates)


def _type_name(value: Any) -> str:
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a mapping"
    return f"a {type(value).__name__}"


def _fail(path: str, expected: str, value: Any) -> DecodeError:
    return DecodeError(FieldError(path, f"must be {expected}, not {_type_name(value)}; kube-apiserver refuses the file"))


def _string(value: Any, path: str) -> str:
    # A JSON null leaves a Go string at its zero value.
    if value is None:
        return ""
    if not isinstance(value, str):
        raise _fail(path, "a string", value)
    return value


def _strings(value: Any, path: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, list):
        raise _fail(path, "a list of strings", value)
    return tuple(_string(item, f"{path}[{i}]") for i, item in enumerate(value))


def _bool(value: Any, path: str) -> bool | None:
    if value is None:
        return None
    if not isinstance(value, bool):
        raise _fail(path, "a boolean (true or false)", value)
    return value


def _mapping(value: Any, path: str, known: set[str] | frozenset[str], unknown: list[str]) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise _fail(path, "a mapping", value)
    prefix = f"{path}." if path else ""
    for key in value:
        if (not isinstance(key, str) or key not in known) and len(unknown) < MAX_REPORTED_UNKNOWN:
            unknown.append(f"{prefix}{key}")
    return value


def decode_group_resources(value: Any, path: str, unknown: list[str]) -> GroupResources:
    data = _mapping(value, path, GROUP_RESOURCES_FIELDS, unknown)
    return GroupResources(
        group=_string(data.get("group"), f"{path}.group"),
        resources=_strings(data.get("resources"), f"{path}.resources"),
        resource_names=_strings(data.get("resourceNames"), f"{path}.resourceNames"),
    )


def decode_rule(value: Any, path: str, unknown: list[str]) -> PolicyRule:
    """One PolicyRule from its JSON/YAML form; raises DecodeError on a type mismatch."""
    data = _mapping(value, path, RULE_FIELDS, unknown)
    resources = data.get("resources")
    if resources is not None and not isinstance(resources, list):
        raise _fail(f"{path}.resources", "a list of mappings", resources)
    return PolicyRule(
        level=_string(data.get("level"), f"{path}.level"),
        users=_strings(data.get("users"), f"{path}.users"),
        user_groups=_strings(data.get("userGroups"), f"{path}.userGroups"),
        verbs=_strings(data.get("verbs"), f"{path}.verbs"),
        resources=tuple(
            decode_group_resources(item, f"{path}.resources[{i}]", unknown) for i, item in enumerate(resources or ())
        ),
        namespaces=_strings(data.get("namespaces"), f"{path}.namespaces"),
        non_resource_urls=_strings(data.get("nonResourceURLs"), f"{path}.nonResourceURLs"),
        omit_stages=_strings(data.get("omitStages"), f"{path}.omitStages"),
        omit_managed_fields=_bool(data.get("omitManagedFields"), f"{path}.omitManagedFields"),
    )


def decode_rules(values: Any, path: str = "rules") -> tuple[tuple[PolicyRule, ...], list[str]]:
    """Decode a list of rules; raises InvalidInput-ready FieldErrors through DecodeError."""
    unknown: list[str] = []
    if values is None:
        return (), unknown
    if not isinstance(values, list):
        raise _fail(path, "a list of rules", values)
    rules = tuple(decode_rule(item, f"{path}[{i}]", unknown) for i, item in enumerate(values))
    return rules, unknown


def _check_type_meta(data: dict[str, Any]) -> list[FieldError]:
    api_version = data.get("apiVersion")
    kind = data.get("kind")
    other = wrong_kind(data, KIND)
    if other is not None:
        return [other]
    if not api_version and not kind:
        return [FieldError("apiVersion", f'Required value: kube-apiserver needs apiVersion: {API_VERSION} and kind: {KIND}')]
    if not api_version:
        return [FieldError("apiVersion", f'Required value: must be "{API_VERSION}"')]
    if api_version != API_VERSION:
        shown = api_version if isinstance(api_version, str) else repr(api_version)
        return [FieldError("apiVersion", f'Unsupported value: "{shown}": supported values: "{API_VERSION}" '
                                         "(v1alpha1 and v1beta1 were removed in Kubernetes 1.24)")]
    if kind != KIND:
        if not kind:
            return [FieldError("kind", f'Required value: must be "{KIND}"')]
        return [FieldError("kind", f'Unsupported value: "{kind}": supported values: "{KIND}"')]
    return []


def decode_policy(data: Any, kubernetes_version: str = "") -> LoadResult:
    """Decode, check apiVersion/kind, validate and count rules: kube-apiserver's load."""
    if data is None:
        return LoadResult(None, (FieldError("", "the file is empty: a policy needs at least one rule"),))
    unknown: list[str] = []
    try:
        mapping = _mapping(data, "", _POLICY_FIELDS, unknown)
        type_errors = _check_type_meta(mapping)
        if type_errors:
            return LoadResult(None, tuple(type_errors))
        _mapping(mapping.get("metadata"), "metadata", set(), [])  # contents are ObjectMeta; not policy's concern
        rules, rule_unknown = decode_rules(mapping.get("rules"))
        unknown.extend(rule_unknown)
        policy = Policy(
            rules=rules,
            omit_stages=_strings(mapping.get("omitStages"), "omitStages"),
            omit_managed_fields=bool(_bool(mapping.get("omitManagedFields"), "omitManagedFields")),
        )
    except DecodeError as exc:
        if not exc.error.path:
            return LoadResult(None, (FieldError("", f"the document is {_type_name(data)}, not a mapping (an audit Policy object)"),))
        return LoadResult(None, (exc.error,), tuple(unknown))
    errors = validate_policy(policy, kubernetes_version)
    if errors:
        return LoadResult(None, tuple(errors), tuple(unknown))
    if not policy.rules:
        return LoadResult(None, (FieldError("rules", "Required value: kube-apiserver refuses a policy with zero rules"),), tuple(unknown))
    return LoadResult(policy, (), tuple(unknown))


def load_policy(source: str | bytes | dict[str, Any], kubernetes_version: str = "", *, file: str = "") -> LoadResult:
    """Load a policy from YAML/JSON text (or an already parsed mapping) as kube-apiserver would.

    ``kubernetes_version`` ("1.33") selects version-dependent rules; "" means the newest known.
    ``file``, the name the text was read from, is put in each error with the field's line and column.
    """
    duplicates: tuple[str, ...] = ()
    if isinstance(source, (str, bytes)):
        try:
            documents = parse(source, first_only=True)
        except DocumentError as exc:
            return LoadResult(None, (exc.field_error(file),))
        document = documents[0] if documents else None
        data = document.data if document else None
        duplicates = tuple(path for path, _, _ in document.duplicates) if document else ()
    else:
        data, document = source, None
    result = decode_policy(data, kubernetes_version)
    if file and result.errors:
        errors = (document.locate(error, file) if document else error.in_file(file) for error in result.errors)
        result = replace(result, errors=tuple(errors))
    return replace(result, duplicate_fields=duplicates) if duplicates else result

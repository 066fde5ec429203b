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
from typing import Any, Iterator

from kaudit.errors import FieldError
from kaudit.policy.model import (API_VERSION, GROUP_RESOURCES_FIELDS, KIND, RULE_FIELDS, GroupResources, Policy,
                                 PolicyRule)

MAX_BYTES = 4 * 1024 * 1024  # far above anything a ConfigMap (1 MiB) can deliver
MAX_DEPTH = 64  # a policy nests 5 levels deep; deeper input is not a policy
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


def _yaml_loader() -> type:
    import yaml

    base = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

    class Loader(base):  # type: ignore[misc,valid-type]
        pass

    # Go's YAML decoder hands dates to a string field as text; PyYAML would make datetimes.
    Loader.yaml_implicit_resolvers = {
        first: [(tag, rx) for tag, rx in resolvers if tag != "tag:yaml.org,2002:timestamp"]
        for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
    }
    return Loader


def parse_document(text: str | bytes) -> Any:
    """The first YAML (or JSON) document of ``text``, guarded against hostile input.

    Raises :class:`ValueError` with a one-line message for binary, oversized, too deeply
    nested or malformed input.
    """
    return parse_with_duplicates(text)[0]


def _duplicate_keys(node: Any, path: str, visited: set[int] | None = None) -> Iterator[str]:
    """Paths of mapping keys that occur twice (YAML decoders keep the last one silently).

    A node reached again through an alias is not walked again (alias bombs stay linear).
    """
    import yaml

    visited = set() if visited is None else visited
    if id(node) in visited:
        return
    visited.add(id(node))
    if isinstance(node, yaml.MappingNode):
        seen: set[str] = set()
        for key_node, value_node in node.value:
            key = key_node.value if isinstance(key_node, yaml.ScalarNode) else None
            child = f"{path}.{key}" if path else str(key)
            if key is not None and key in seen:
                yield child
            if key is not None:
                seen.add(key)
            yield from _duplicate_keys(value_node, child, visited)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            yield from _duplicate_keys(item, f"{path}[{i}]", visited)


def parse_with_duplicates(text: str | bytes) -> tuple[Any, tuple[str, ...]]:
    """:func:`parse_document`, plus the paths of duplicated keys."""
    import yaml

    if isinstance(text, bytes):
        if len(text) > MAX_BYTES:
            raise ValueError(f"file is too large (over the {MAX_BYTES}-byte limit; a policy is a few kilobytes)")
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ValueError(f"not UTF-8 text (invalid byte at offset {exc.start})") from None
    if len(text) > MAX_BYTES:
        raise ValueError(f"file is too large (over the {MAX_BYTES}-character limit; a policy is a few kilobytes)")
    if "\x00" in text:
        raise ValueError("binary data (NUL byte) is not a YAML document")
    loader_class = _yaml_loader()
    try:
        check_nesting(text, loader_class)
        loader = loader_class(text)
        try:
            node = loader.get_node() if loader.check_node() else None
            if node is None:
                return None, ()
            duplicates = tuple(_duplicate_keys(node, ""))
            return loader.construct_document(node), duplicates
        finally:
            loader.dispose()
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = exc.problem or exc.context or "malformed"
        raise ValueError(f"invalid YAML{where}: {problem}") from None
    except yaml.YAMLError as exc:
        raise ValueError(f"invalid YAML: {' '.join(str(exc).split())}") from None
    except RecursionError:
        raise ValueError(f"document is nested too deeply (limit {MAX_DEPTH} levels)") from None


def check_nesting(text: str, loader: type, *, every_document: bool = False) -> None:
    """Walk the parser's events of the first document (or of all) and refuse deep nesting.

    libyaml's composer recurses per nesting level and crashes the interpreter (a segmentation
    fault, not an exception) on very deep input, so the depth is checked on the (iterative)
    event stream before composing. Raises ValueError; the parser's own YAMLError for malformed
    input passes through.
    """
    import yaml

    too_deep = f"document is nested too deeply (more than {MAX_DEPTH} levels)"
    depth = 0
    try:
        for event in yaml.parse(text, Loader=loader):
            if isinstance(event, (yaml.MappingStartEvent, yaml.SequenceStartEvent)):
                depth += 1
                if depth > MAX_DEPTH:
                    raise ValueError(too_deep)
            elif isinstance(event, (yaml.MappingEndEvent, yaml.SequenceEndEvent)):
                depth -= 1
            elif isinstance(event, yaml.DocumentEndEvent) and not every_document:
                return
    except yaml.MarkedYAMLError as exc:
        # The scanner reads flow collections ahead of the events, and some libyaml builds stop at
        # their own nesting limit there: judge the depth at the failure point by kaudit's limit, so
        # the error is the same whatever PyYAML a machine has.
        mark = exc.problem_mark
        if mark is not None and _flow_depth(text, mark.index) > MAX_DEPTH:
            raise ValueError(too_deep) from None
        raise


def _flow_depth(text: str, end: int) -> int:
    """The deepest flow-collection nesting (``[``/``{``) in ``text[:end]``, outside quotes and comments."""
    depth = deepest = 0
    quote = ""
    comment = False
    previous = "\n"
    for char in text[:end]:
        if comment:
            comment = char != "\n"
        elif quote:
            if char == quote and not (quote == '"' and previous == "\\"):
                quote = ""
        elif char in "\"'" and previous in " \t\n[{,:":
            quote = char
        elif char == "#" and previous in " \t\n":
            comment = True
        elif char in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif char in "]}":
            depth -= 1
        previous = char
    return deepest


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


def _mapping(value: Any, path: str, known: set[str] | frozenset[str], unknown: list[str]) -> dict:
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


def _check_type_meta(data: dict) -> list[FieldError]:
    api_version = data.get("apiVersion")
    kind = data.get("kind")
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
    from kaudit.policy.validation import validate_policy

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


def load_policy(source: str | bytes | dict, kubernetes_version: str = "") -> LoadResult:
    """Load a policy from YAML/JSON text (or an already parsed mapping) as kube-apiserver would.

    ``kubernetes_version`` ("1.33") selects version-dependent rules; "" means the newest known.
    """
    duplicates: tuple[str, ...] = ()
    if isinstance(source, (str, bytes)):
        try:
            data, duplicates = parse_with_duplicates(source)
        except ValueError as exc:
            return LoadResult(None, (FieldError("", str(exc)),))
    else:
        data = source
    result = decode_policy(data, kubernetes_version)
    return replace(result, duplicate_fields=duplicates) if duplicates else result

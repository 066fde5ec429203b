"""Read detection rules from the Datadog API's JSON and from Terraform's JSON syntax.

Accepted files (one or more rules each):

* Datadog API JSON: one rule object, a list of them, or ``{"data": [...]}`` / ``{"rules": [...]}``;
  the read-only fields a GET returns (``id``, ``createdAt``, ``isDefault``...) are ignored.
* Terraform JSON syntax (``*.tf.json``): ``{"resource": {"datadog_security_monitoring_rule":
  {"NAME": {...}}}}``, nested blocks as an object or a list of objects, literal values only.

HCL native syntax (``*.tf``) is refused with one line: reading it faithfully needs a full HCL
parser (expressions, heredocs, dynamic blocks) and, for variables and locals, Terraform itself; a
partial reading would misread silently. Terraform loads ``.tf.json`` files as they are, and
``kaudit rules render -o terraform`` writes one.

Every other problem is an :class:`~kaudit.errors.InvalidInput` whose paths name the file and the
field (``rules.json: [2].options.keepAlive``); unknown keys are errors, because a misspelt key
would silently change what the rule does.
"""

from __future__ import annotations

import json
import re
from typing import Any, Callable

from kaudit.detect import model
from kaudit.detect.model import Case, NewValueOptions, Options, Query, Rule
from kaudit.documents import MAX_RULE_FILE_BYTES as MAX_BYTES  # the limits have one definition
from kaudit.errors import FieldError, InvalidInput

TERRAFORM_TYPE = "datadog_security_monitoring_rule"
# What a GET of a rule returns besides the fields of a create payload: read only, ignored.
API_READ_ONLY = frozenset({
    "id", "createdAt", "creationAuthorId", "updateAuthorId", "updatedAt", "isDefault", "isDeleted",
    "version", "defaultTags", "deprecationDate", "blocking", "isBeta", "hasExtendedTitle", "filters",
    "referenceTables", "groupSignalsBy", "thirdPartyCases", "complianceSignalOptions",
})
TERRAFORM_IGNORED = frozenset({"has_extended_title", "filter", "validate", "reference_tables",
                               "group_signals_by", "count", "for_each", "lifecycle", "depends_on", "provider"})
# A template sequence; Terraform JSON writes a literal "${" as "$${" (and "%{" as "%%{").
_EXPRESSION = re.compile(r"(?<!\$)\$\{|(?<!%)%\{")


class _Style:
    """Key names of one input form: camelCase (API) or snake_case (Terraform)."""

    def __init__(self, terraform: bool):
        self.terraform = terraform

    def key(self, camel: str) -> str:
        if not self.terraform:
            return camel
        special = {"isEnabled": "enabled", "queries": "query", "cases": "case"}
        return special.get(camel) or re.sub(r"([A-Z])", lambda m: "_" + m.group(1).lower(), camel)


class _Reader:
    def __init__(self, where: str, style: _Style):
        self.where, self.style = where, style
        self.errors: list[FieldError] = []

    def fail(self, path: str, message: str) -> None:
        self.errors.append(FieldError(f"{self.where}: {path}" if path else self.where, message))

    def check_keys(self, data: dict[str, Any], path: str, known: set[str], ignored: frozenset[str] = frozenset()) -> None:
        for key in data:
            if key not in known and key not in ignored:
                self.fail(_join(path, key), f"unknown field (known: {', '.join(sorted(known))})")

    def value(self, data: dict[str, Any], path: str, camel: str, kind: type, default: Any,
              allowed: tuple[Any, ...] | None = None) -> Any:
        key = self.style.key(camel)
        raw = data.get(key, default)
        field = _join(path, key)
        if raw is None:
            return default
        if kind is int and (type(raw) is not int):
            self.fail(field, f"must be an integer, got {json.dumps(raw)}")
            return default
        if kind is str and type(raw) is not str:
            self.fail(field, f"must be a string, got {json.dumps(raw)}")
            return default
        if kind is bool and type(raw) is not bool:
            self.fail(field, f"must be true or false, got {json.dumps(raw)}")
            return default
        if self.style.terraform and type(raw) is str and _EXPRESSION.search(raw):
            self.fail(field, "is a Terraform expression; kaudit reads literal values only")
            return default
        if self.style.terraform and type(raw) is str:
            raw = raw.replace("$${", "${").replace("%%{", "%{")
        if allowed is not None and raw not in allowed:
            self.fail(field, f"unsupported value {json.dumps(raw)}: supported values: "
                             f"{', '.join(json.dumps(a) for a in allowed)}")
            return default
        return raw

    def strings(self, data: dict[str, Any], path: str, camel: str) -> tuple[str, ...]:
        key = self.style.key(camel)
        raw = data.get(key)
        if raw is None:
            return ()
        if type(raw) is not list or any(type(item) is not str for item in raw):
            self.fail(_join(path, key), "must be a list of strings")
            return ()
        return tuple(raw)

    def blocks(self, data: dict[str, Any], path: str, camel: str, single: bool = False) -> list[tuple[str, dict[str, Any]]]:
        """Nested objects under ``camel`` with their paths; Terraform allows one object for a list of one."""
        key = self.style.key(camel)
        raw = data.get(key)
        field = _join(path, key)
        if raw is None:
            return []
        if type(raw) is dict and (single or self.style.terraform):
            return [(field, raw)]
        if type(raw) is not list or (single and not self.style.terraform):
            self.fail(field, "must be an object" if single else "must be a list of objects")
            return []
        out = []
        for i, item in enumerate(raw):
            if type(item) is not dict:
                self.fail(f"{field}[{i}]", "must be an object")
            else:
                out.append((f"{field}[{i}]", item))
        if single and len(out) > 1:
            self.fail(field, "must be given once")
        return out


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _query(r: _Reader, data: dict[str, Any], path: str) -> Query:
    s = r.style
    r.check_keys(data, path, {s.key(k) for k in ("query", "name", "aggregation", "groupByFields", "distinctFields",
                                                  "metric", "metrics", "dataSource", "hasOptionalGroupByFields")})
    query = r.value(data, path, "query", str, "")
    if not query.strip():
        r.fail(_join(path, "query"), "is required")
    r.value(data, path, "dataSource", str, "logs", ("logs",))
    metric = r.value(data, path, "metric", str, "")
    return Query(
        query=query,
        name=r.value(data, path, "name", str, ""),
        aggregation=r.value(data, path, "aggregation", str, "count", model.AGGREGATIONS),
        group_by_fields=r.strings(data, path, "groupByFields"),
        distinct_fields=r.strings(data, path, "distinctFields"),
        metrics=r.strings(data, path, "metrics") or ((metric,) if metric else ()),
    )


def _case(r: _Reader, data: dict[str, Any], path: str) -> Case:
    s = r.style
    r.check_keys(data, path, {s.key(k) for k in ("name", "status", "condition", "notifications", "actions")})
    return Case(status=r.value(data, path, "status", str, "info", model.STATUSES),
                condition=r.value(data, path, "condition", str, ""),
                name=r.value(data, path, "name", str, ""))


def _new_value_options(r: _Reader, data: dict[str, Any], path: str) -> NewValueOptions:
    s = r.style
    r.check_keys(data, path, {s.key(k) for k in ("forgetAfter", "learningDuration", "learningMethod",
                                                  "learningThreshold")})
    return NewValueOptions(
        forget_after=r.value(data, path, "forgetAfter", int, 7, model.FORGET_AFTER_DAYS),
        learning_duration=r.value(data, path, "learningDuration", int, 0, model.LEARNING_DURATION_DAYS),
        learning_method=r.value(data, path, "learningMethod", str, "duration", model.LEARNING_METHODS),
        learning_threshold=r.value(data, path, "learningThreshold", int, 0, model.LEARNING_THRESHOLDS),
    )


def _options(r: _Reader, data: dict[str, Any], path: str) -> Options:
    s = r.style
    r.check_keys(data, path, {s.key(k) for k in ("detectionMethod", "evaluationWindow", "keepAlive",
                                                  "maxSignalDuration", "newValueOptions",
                                                  "decreaseCriticalityBasedOnEnv")})
    nvo = [_new_value_options(r, d, p) for p, d in r.blocks(data, path, "newValueOptions", single=True)]
    return Options(
        detection_method=r.value(data, path, "detectionMethod", str, "threshold", model.DETECTION_METHODS),
        evaluation_window=r.value(data, path, "evaluationWindow", int, 300, model.WINDOW_SECONDS),
        keep_alive=r.value(data, path, "keepAlive", int, 3600, model.WINDOW_SECONDS),
        max_signal_duration=r.value(data, path, "maxSignalDuration", int, 86400, model.WINDOW_SECONDS),
        new_value_options=nvo[0] if nvo else None,
    )


_RULE_KEYS = ("name", "message", "isEnabled", "type", "tags", "queries", "cases", "options")


def _rule(r: _Reader, data: dict[str, Any], path: str, source: str) -> Rule | None:
    before = len(r.errors)
    s = r.style
    r.check_keys(data, path, {s.key(k) for k in _RULE_KEYS},
                 TERRAFORM_IGNORED if s.terraform else API_READ_ONLY)
    name = r.value(data, path, "name", str, "")
    if not name:
        r.fail(_join(path, s.key("name")), "is required")
    queries = tuple(_query(r, d, p) for p, d in r.blocks(data, path, "queries"))
    cases = tuple(_case(r, d, p) for p, d in r.blocks(data, path, "cases"))
    if not queries:
        r.fail(_join(path, s.key("queries")), "at least one query is required")
    if not cases:
        r.fail(_join(path, s.key("cases")), "at least one case is required")
    options = [_options(r, d, p) for p, d in r.blocks(data, path, "options", single=True)]
    rule = Rule(
        name=name, queries=queries, cases=cases, options=options[0] if options else Options(),
        message=r.value(data, path, "message", str, ""), tags=r.strings(data, path, "tags"),
        enabled=r.value(data, path, "isEnabled", bool, True),
        type=r.value(data, path, "type", str, "log_detection", model.RULE_TYPES),
        source=source,
    )
    if len(r.errors) == before:
        _check_semantics(r, rule, path)
    return rule if len(r.errors) == before else None


def _check_semantics(r: _Reader, rule: Rule, path: str) -> None:
    """What the API refuses across fields, and what kaudit must understand to evaluate the rule."""
    from kaudit.detect.conditions import parse_condition
    from kaudit.detect.query import parse_query

    s = r.style
    names = model.query_names(rule)
    for i, query in enumerate(rule.queries):
        where = f"{_join(path, s.key('queries'))}[{i}]"
        try:
            parse_query(query.query)
        except ValueError as exc:
            r.fail(_join(where, "query"), str(exc))
        if query.aggregation == "new_value" and not query.metrics:
            r.fail(_join(where, s.key("metrics")), "a new_value query needs the field it watches")
        if query.aggregation == "cardinality" and not query.distinct_fields:
            r.fail(_join(where, s.key("distinctFields")), "a cardinality query needs distinct fields")
    for i, case in enumerate(rule.cases):
        try:
            parse_condition(case.condition, names)
        except ValueError as exc:
            r.fail(f"{_join(path, s.key('cases'))}[{i}].condition", str(exc))
    method = rule.options.detection_method
    if method == "new_value" and not all(q.aggregation == "new_value" for q in rule.queries):
        r.fail(_join(path, s.key("options")), "detectionMethod new_value needs new_value queries")
    if rule.options.keep_alive > rule.options.max_signal_duration:
        r.fail(_join(_join(path, s.key("options")), s.key("keepAlive")), "must not exceed maxSignalDuration")


def rules_from_api(data: Any, where: str) -> list[Rule]:
    """Rules from decoded Datadog API JSON; raises InvalidInput naming ``where`` and the field."""
    r = _Reader(where, _Style(terraform=False))
    if type(data) is dict and ("data" in data or "rules" in data) and "queries" not in data:
        key = "data" if "data" in data else "rules"
        items, prefix = data[key], key
        if type(items) is list:
            items = [item.get("attributes", item) if type(item) is dict and "attributes" in item else item
                     for item in items]
    elif type(data) is list:
        items, prefix = data, ""
    else:
        items, prefix = [data], None
    if type(items) is not list:
        raise InvalidInput([FieldError(where, "must hold a rule, a list of rules or {\"data\": [...]}")])
    rules = []
    for i, item in enumerate(items):
        path = "" if prefix is None else f"{prefix}[{i}]"
        source = where if prefix is None else f"{where}: {path}"
        if type(item) is not dict:
            r.fail(path, "must be a rule object")
            continue
        rule = _rule(r, item, path, source)
        if rule:
            rules.append(rule)
    if r.errors:
        raise InvalidInput(r.errors)
    return rules


def rules_from_terraform(data: Any, where: str) -> list[Rule]:
    """Rules from Terraform JSON syntax: every ``datadog_security_monitoring_rule`` resource."""
    r = _Reader(where, _Style(terraform=True))
    resources = data.get("resource") if type(data) is dict else None
    if type(resources) is list:  # the JSON syntax allows a list of resource objects
        merged: dict[str, Any] = {}
        for item in resources:
            if type(item) is dict:
                for kind, body in item.items():
                    merged.setdefault(kind, {}).update(body if type(body) is dict else {})
        resources = merged
    if type(resources) is not dict or type(resources.get(TERRAFORM_TYPE)) is not dict:
        raise InvalidInput([FieldError(where, f"has no resource \"{TERRAFORM_TYPE}\"")])
    rules = []
    for label, body in resources[TERRAFORM_TYPE].items():
        path = f"resource.{TERRAFORM_TYPE}.{label}"
        if type(body) is list and len(body) == 1:
            body = body[0]
        if type(body) is not dict:
            r.fail(path, "must be an object")
            continue
        rule = _rule(r, body, path, f"{where}: {path}")
        if rule:
            rules.append(rule)
    if r.errors:
        raise InvalidInput(r.errors)
    return rules


def load_rules_text(text: str | bytes, where: str) -> list[Rule]:
    """Rules from a file's content; the form is told by the name and the content."""
    if where.endswith(".tf") and not where.endswith(".tf.json"):
        raise InvalidInput([FieldError(where, "HCL native syntax is not read: give the rules in Terraform's "
                                              "JSON syntax (.tf.json) or as Datadog API JSON")])
    if len(text) > MAX_BYTES:
        raise InvalidInput([FieldError(where, f"larger than {MAX_BYTES} bytes")])
    try:
        data = json.loads(text)
    except (ValueError, RecursionError) as exc:
        position = f":{exc.lineno}:{exc.colno}" if isinstance(exc, json.JSONDecodeError) else ""
        message = exc.msg if isinstance(exc, json.JSONDecodeError) else "not JSON"
        raise InvalidInput([FieldError(f"{where}{position}", f"not JSON: {message}")]) from None
    if type(data) is dict and "resource" in data:
        return rules_from_terraform(data, where)
    return rules_from_api(data, where)


def load_rules_file(path: str, reader: Callable[[str], bytes] | None = None) -> list[Rule]:
    try:
        if reader:
            data = reader(path)
        else:
            with open(path, "rb") as handle:
                data = handle.read(MAX_BYTES + 1)
    except OSError as exc:
        raise InvalidInput([FieldError(path, f"cannot read: {exc.strerror or exc}")]) from None
    return load_rules_text(data, path)

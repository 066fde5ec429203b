"""The Datadog log search syntax detection rules use: parser, syntax tree and event matcher.

Supported (semantics as Datadog's "Log Search Syntax" page describes them; docs/detection.md cites
each point):

* ``@attr:value`` attribute search, case sensitive; ``key:value`` without ``@`` is a tag or reserved
  attribute (``source:kubernetes.audit``), answered from the tags the caller gives;
* a value is a term (``\\`` escapes a special character), a quoted sequence (exact, wildcards are
  literal), ``*`` (the attribute exists), a wildcard pattern (``*`` any run of characters, ``?`` one
  character; whole-value match), a range ``[a TO b]`` (inclusive, ``*`` for an open end) or a
  comparison ``>N`` ``>=N`` ``<N`` ``<=N`` (numbers only), or a parenthesised group of values
  (``@http.method:(create OR get)``);
* ``AND``, ``OR``, ``NOT`` (upper case, as Datadog's operators are case sensitive), ``-`` before a
  term or group, parentheses, and implicit ``AND`` between terms. ``NOT``/``-`` bind tightest, then
  ``AND``, then ``OR``.

Anything else is a ``ValueError`` naming the column (1-based), never a silent non-match: free text
(kaudit cannot know a log's message), full-text ``*:term``, ``{a TO b}``, ``CIDR()``, an unescaped
special character inside a term, a lower-case ``and``/``or``/``not``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Union

from kaudit.detect.fields import ABSENT, lookup, source_path

_SPECIAL_IN_TERM = set(':"[]{}=!^~<>&|+#')
_NUMBER = re.compile(r"-?\d+(\.\d+)?\Z")


@dataclass(frozen=True)
class Predicate:
    """What a value must be: exists, text (literal or wildcard pattern), range or comparison."""

    kind: str  # "exists" | "text" | "range"
    text: str = ""  # the unescaped value (text)
    regex: re.Pattern[str] | None = None  # set when the text has unescaped wildcards
    low: float | None = None  # range bounds (None: open); comparisons are ranges
    high: float | None = None
    low_inclusive: bool = True
    high_inclusive: bool = True

    def describe(self) -> str:
        if self.kind == "exists":
            return "*"
        if self.kind == "text":
            return self.text
        low = "*" if self.low is None else f"{self.low:g}"
        high = "*" if self.high is None else f"{self.high:g}"
        return f"[{low} TO {high}]"


@dataclass(frozen=True)
class Term:
    field: str  # attribute path without "@", or a tag key
    predicate: Predicate
    tag: bool = False  # written without "@": a tag or reserved attribute
    position: int = 0  # 0-based offset of the term in the query


@dataclass(frozen=True)
class Not:
    child: "Node"


@dataclass(frozen=True)
class And:
    children: tuple["Node", ...]


@dataclass(frozen=True)
class Or:
    children: tuple["Node", ...]


@dataclass(frozen=True)
class MatchAll:
    pass


Node = Union[Term, Not, And, Or, MatchAll]


# --- parsing --------------------------------------------------------------------------------------

class _Parser:
    def __init__(self, text: str):
        self.text = text
        self.i = 0

    def error(self, message: str, at: int | None = None) -> ValueError:
        return ValueError(f"column {(self.i if at is None else at) + 1}: {message}")

    def skip(self) -> None:
        while self.i < len(self.text) and self.text[self.i].isspace():
            self.i += 1

    def at_end(self) -> bool:
        self.skip()
        return self.i >= len(self.text)

    def keyword(self, word: str) -> bool:
        """Consume ``word`` (AND, OR, NOT) when it stands alone at the cursor."""
        self.skip()
        end = self.i + len(word)
        if self.text.startswith(word, self.i) and (end == len(self.text) or self.text[end].isspace()
                                                     or self.text[end] == "("):
            self.i = end
            return True
        return False

    def starts_operand(self) -> bool:
        self.skip()
        if self.i >= len(self.text) or self.text[self.i] == ")":
            return False
        return not any(self._peek_keyword(w) for w in ("AND", "OR"))

    def _peek_keyword(self, word: str) -> bool:
        saved = self.i
        found = self.keyword(word)
        self.i = saved
        return found

    # boolean structure, shared by whole terms and by the values of one attribute
    def disjunction(self, atom: Callable[[], Node]) -> Node:
        children = [self.conjunction(atom)]
        while self.keyword("OR"):
            children.append(self.conjunction(atom))
        return children[0] if len(children) == 1 else Or(tuple(children))

    def conjunction(self, atom: Callable[[], Node]) -> Node:
        children = [self.unary(atom)]
        while True:
            if self.keyword("AND"):
                children.append(self.unary(atom))
            elif self.starts_operand():
                children.append(self.unary(atom))  # implicit AND
            else:
                break
        return children[0] if len(children) == 1 else And(tuple(children))

    def unary(self, atom: Callable[[], Node]) -> Node:
        self.skip()
        if self.keyword("NOT"):
            return Not(self.unary(atom))
        if self.text.startswith("-", self.i):
            self.i += 1
            if self.i >= len(self.text) or self.text[self.i].isspace():
                raise self.error("'-' must be followed by the term it excludes", self.i - 1)
            return Not(self.unary(atom))
        if self.text.startswith("(", self.i):
            start = self.i
            self.i += 1
            inner = self.disjunction(atom)
            self.skip()
            if not self.text.startswith(")", self.i):
                raise self.error("unclosed '('", start)
            self.i += 1
            return inner
        if self.i >= len(self.text):
            raise self.error("a term is missing at the end of the query")
        if self.text[self.i] == ")":
            raise self.error("unexpected ')'")
        return atom()

    # terms
    def term(self) -> Node:
        start = self.i
        text = self.text
        if text.startswith("*", start) and (start + 1 == len(text) or text[start + 1].isspace()
                                             or text[start + 1] == ")"):
            self.i += 1
            return MatchAll()
        attribute = text.startswith("@", start)
        if attribute:
            self.i += 1
        name = self._name(start)
        if self.i >= len(text) or text[self.i] != ":":
            word = text[start:self.i] or text[start]
            if word in ("and", "or", "not"):
                raise self.error(f"'{word}' is searched as free text: Datadog's operators are upper case "
                                 f"({word.upper()})", start)
            if word.startswith("CIDR("):
                raise self.error("CIDR() is not supported", start)
            raise self.error(f"free-text search ({word!r}) is not supported: kaudit evaluates attribute "
                             "(@attr:value) and tag (key:value) searches only", start)
        if name == "*":
            raise self.error("full-text search (*:term) is not supported", start)
        if not name:
            raise self.error("an attribute name is missing before ':'", start)
        self.i += 1  # the colon
        if self.i >= len(text) or text[self.i].isspace():
            raise self.error(f"a value is missing after '{text[start:self.i]}'")
        return self._values(name, not attribute, start)

    def _name(self, start: int) -> str:
        out = []
        text = self.text
        while self.i < len(text):
            ch = text[self.i]
            if ch == "\\" and self.i + 1 < len(text):
                out.append(text[self.i + 1])
                self.i += 2
                continue
            if ch == ":" or ch.isspace() or ch in '()"':
                break
            out.append(ch)
            self.i += 1
        return "".join(out)

    def _values(self, name: str, tag: bool, start: int) -> Node:
        def value_atom() -> Node:
            return Term(name, self._value(), tag, start)

        if self.text.startswith("(", self.i):
            open_at = self.i
            self.i += 1
            node = self.disjunction(value_atom)
            self.skip()
            if not self.text.startswith(")", self.i):
                raise self.error("unclosed '('", open_at)
            self.i += 1
            return node
        return value_atom()

    def _value(self) -> Predicate:
        self.skip()
        text = self.text
        if self.i >= len(text):
            raise self.error("a value is missing")
        ch = text[self.i]
        if ch == '"':
            return self._phrase()
        if ch == "[":
            return self._range()
        if ch == "{":
            raise self.error("exclusive ranges {a TO b} are not supported; use [a TO b] or >, <")
        if ch in "<>":
            return self._comparison()
        return self._bare()

    def _phrase(self) -> Predicate:
        start = self.i
        self.i += 1
        out = []
        text = self.text
        while self.i < len(text) and text[self.i] != '"':
            if text[self.i] == "\\" and self.i + 1 < len(text):
                self.i += 1
            out.append(text[self.i])
            self.i += 1
        if self.i >= len(text):
            raise self.error('unclosed \'"\'', start)
        self.i += 1
        return Predicate("text", "".join(out))

    def _number(self, token: str, at: int) -> float:
        if not _NUMBER.match(token):
            raise self.error(f"{token!r} is not a number (ranges and comparisons are numeric)", at)
        return float(token)

    def _range(self) -> Predicate:
        start = self.i
        match = re.compile(r"\[\s*(\S+)\s+TO\s+([^\s\]]+)\s*\]").match(self.text, self.i)
        if not match:
            raise self.error("a range is written [LOW TO HIGH]", start)
        low, high = match.group(1), match.group(2)
        self.i = match.end()
        return Predicate("range", low=None if low == "*" else self._number(low, start),
                         high=None if high == "*" else self._number(high, start))

    def _comparison(self) -> Predicate:
        start = self.i
        match = re.compile(r"(>=|<=|>|<)([^\s()]+)").match(self.text, self.i)
        if not match:
            raise self.error("a comparison is written >N, >=N, <N or <=N", start)
        op, number = match.group(1), self._number(match.group(2), start)
        self.i = match.end()
        if op[0] == ">":
            return Predicate("range", low=number, low_inclusive=op == ">=")
        return Predicate("range", high=number, high_inclusive=op == "<=")

    def _bare(self) -> Predicate:
        start = self.i
        text = self.text
        literal: list[str] = []
        pattern: list[str] = []
        wild = False
        while self.i < len(text):
            ch = text[self.i]
            if ch.isspace() or ch in "()":
                break
            if ch == "\\":
                if self.i + 1 >= len(text):
                    raise self.error("'\\' at the end of the query escapes nothing")
                escaped = text[self.i + 1]
                literal.append(escaped)
                pattern.append(re.escape(escaped))
                self.i += 2
                continue
            if ch in _SPECIAL_IN_TERM:
                raise self.error(f"unescaped {ch!r} in a value: escape it (\\{ch}) or quote the value")
            if ch in "*?":
                wild = True
                pattern.append(".*" if ch == "*" else ".")
            else:
                pattern.append(re.escape(ch))
            literal.append(ch)
            self.i += 1
        token = "".join(literal)
        if not token:
            raise self.error("a value is missing", start)
        if text[start:self.i] == "*":
            return Predicate("exists")
        if wild:
            return Predicate("text", token, re.compile("".join(pattern) + r"\Z", re.DOTALL))
        return Predicate("text", token)


def parse_query(text: str) -> Node:
    """The syntax tree of a Datadog log search; ValueError("column N: ...") for anything unsupported."""
    if type(text) is not str or not text.strip():
        raise ValueError("the query is empty")
    parser = _Parser(text)
    node = parser.disjunction(parser.term)
    if not parser.at_end():
        raise parser.error("unexpected ')'" if parser.text[parser.i] == ")" else "unexpected text")
    return node


# --- matching values --------------------------------------------------------------------------------

def _text_form(value: Any) -> str | None:
    if type(value) is str:
        return value
    if type(value) is bool:
        return "true" if value else "false"
    if type(value) in (int, float):
        return str(value) if type(value) is int or not value.is_integer() else str(int(value))
    return None  # objects never equal a term


def value_matcher(predicate: Predicate) -> Callable[[list[Any]], bool]:
    """A function telling whether any of an attribute's values satisfies ``predicate``."""
    if predicate.kind == "exists":
        return bool
    if predicate.kind == "range":
        low, high = predicate.low, predicate.high
        low_in, high_in = predicate.low_inclusive, predicate.high_inclusive

        def in_range(values: list[Any]) -> bool:
            for v in values:
                if type(v) in (int, float):
                    if low is not None and (v < low or (v == low and not low_in)):
                        continue
                    if high is not None and (v > high or (v == high and not high_in)):
                        continue
                    return True
            return False

        return in_range
    text, regex = predicate.text, predicate.regex
    if regex is not None:
        match = regex.match
        return lambda values: any((t := _text_form(v)) is not None and match(t) for v in values)
    number = float(text) if _NUMBER.match(text) else None

    def equals(values: list[Any]) -> bool:
        for v in values:
            if type(v) is str:
                if v == text:
                    return True
            elif type(v) in (int, float):
                if number is not None and v == number:
                    return True
            elif type(v) is bool and text == ("true" if v else "false"):
                return True
        return False

    return equals


# --- matching events --------------------------------------------------------------------------------

DEFAULT_TAGS: dict[str, tuple[str, ...]] = {"source": ("kubernetes.audit",)}


def scalar_matcher(predicate: Predicate) -> Callable[[object], bool]:
    """``value_matcher`` for one value (the common case), without building a list."""
    if predicate.kind == "text" and predicate.regex is None:
        text = predicate.text
        number = float(text) if _NUMBER.match(text) else None
        truth = text if text in ("true", "false") else None

        def equals(v: Any) -> bool:
            if type(v) is str:
                return v == text
            if type(v) is bool:
                return truth is not None and v is (truth == "true")
            return number is not None and type(v) in (int, float) and v == number

        return equals
    many = value_matcher(predicate)
    return lambda v: many([v])


_TRUE, _FALSE = (lambda event: True), (lambda event: False)


def _term(node: Term, tags: dict[str, tuple[str, ...]]) -> Callable[[dict[str, Any]], bool]:
    if node.tag:
        return _TRUE if value_matcher(node.predicate)(list(tags.get(node.field, ()))) else _FALSE
    get, one, many = lookup(node.field), scalar_matcher(node.predicate), value_matcher(node.predicate)

    def term(event: dict[str, Any]) -> bool:
        value = get(event)
        if value is ABSENT:
            return False
        return many(value) if type(value) is list else one(value)

    path = source_path(node.field)
    if node.predicate.kind != "text" or node.predicate.regex is not None or path is None or len(path) > 2:
        return term
    # The hot case, inlined: an exact value at one or two levels that holds a string.
    text, first, second = node.predicate.text, path[0], path[-1]
    if len(path) == 1:
        def shallow(event: dict[str, Any]) -> bool:
            value = event.get(first)
            return value == text if type(value) is str else term(event)
        return shallow

    def nested(event: dict[str, Any]) -> bool:
        parent = event.get(first)
        if type(parent) is dict:
            value = parent.get(second)
            if type(value) is str:
                return value == text
        return term(event)

    return nested


def compile_query(node: Node, tags: dict[str, tuple[str, ...]] | None = None) -> Callable[[dict[str, Any]], bool]:
    """A function telling whether an audit event (as kube-apiserver wrote it) matches, after
    Datadog's remapping. Tags are fixed for the whole log (``source`` is kubernetes.audit unless
    ``tags`` says otherwise), so tag terms are decided here, once, and folded away."""
    tags = DEFAULT_TAGS if tags is None else tags
    if isinstance(node, MatchAll):
        return _TRUE
    if isinstance(node, Term):
        return _term(node, tags)
    if isinstance(node, Not):
        inner = compile_query(node.child, tags)
        if inner is _TRUE or inner is _FALSE:
            return _FALSE if inner is _TRUE else _TRUE
        return lambda event: not inner(event)
    parts = [compile_query(child, tags) for child in node.children]
    absorbing, neutral = (_FALSE, _TRUE) if isinstance(node, And) else (_TRUE, _FALSE)
    if absorbing in parts:
        return absorbing
    parts = [part for part in parts if part is not neutral]
    if not parts:
        return neutral
    combined = parts[-1]
    for part in reversed(parts[:-1]):  # a chain of two-way closures: no generator per event
        if absorbing is _FALSE:
            combined = (lambda a, b: lambda event: a(event) and b(event))(part, combined)
        else:
            combined = (lambda a, b: lambda event: a(event) or b(event))(part, combined)
    return combined


def terms(node: Node, negated: bool = False) -> Iterator[tuple[Term, bool]]:
    """Every term with whether it sits under an odd number of negations."""
    if isinstance(node, Term):
        yield node, negated
    elif isinstance(node, Not):
        yield from terms(node.child, not negated)
    elif isinstance(node, (And, Or)):
        for child in node.children:
            yield from terms(child, negated)


@dataclass(frozen=True)
class CompiledQuery:
    text: str
    tree: Node
    match: Callable[[dict[str, Any]], bool] = field(compare=False)


def compile_text(text: str, tags: dict[str, Any] | None = None) -> CompiledQuery:
    tree = parse_query(text)
    return CompiledQuery(text, tree, compile_query(tree, tags))

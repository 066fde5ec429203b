"""Case conditions of threshold rules (``a > 0``, ``a + b >= 10 && b < 3``) as functions.

Names are the rule's query names; numbers, ``+ - * /``, comparisons ``> >= < <= == !=``, ``&&``,
``||`` and parentheses. An empty condition is always true (new_value rules have none).
"""

from __future__ import annotations

import operator
import re
from typing import Any, Callable, Iterable

_TOKEN = re.compile(r"\s*(?:(\d+(?:\.\d+)?)|([A-Za-z_][A-Za-z0-9_]*)|(>=|<=|==|!=|&&|\|\||[-+*/()<>]))")
_COMPARE = {">": operator.gt, ">=": operator.ge, "<": operator.lt, "<=": operator.le,
            "==": operator.eq, "!=": operator.ne}
Condition = Callable[[dict[str, Any]], Any]


def _tokens(text: str) -> list[tuple[str, str, int]]:
    out: list[tuple[str, str, int]] = []
    i = 0
    while i < len(text.rstrip()):
        match = _TOKEN.match(text, i)
        if not match:
            raise ValueError(f"column {i + 1}: unexpected {text[i:].strip()[:10]!r}")
        kind = "num" if match.group(1) else "name" if match.group(2) else "op"
        index = match.lastindex or 0  # one of the three groups always matched
        out.append((kind, match.group(index), match.start(index)))
        i = match.end()
    return out


def parse_condition(text: str, names: Iterable[str]) -> Condition:
    known = set(names)
    tokens = _tokens(text or "")
    if not tokens:
        return lambda values: True
    pos = 0

    def peek() -> str | None:
        return tokens[pos][1] if pos < len(tokens) else None

    def take() -> tuple[str, str, int]:
        nonlocal pos
        if pos >= len(tokens):
            raise ValueError("the condition ends too early")
        pos += 1
        return tokens[pos - 1]

    def binary(sub: Callable[[], Condition], ops: dict[str, Any]) -> Callable[[], Condition]:
        def parse() -> Condition:
            left = sub()
            while peek() in ops:
                fn = ops[take()[1]]
                right = sub()
                left = (lambda l, r, f: lambda v: f(l(v), r(v)))(left, right, fn)
            return left
        return parse

    def atom() -> Condition:
        kind, value, at = take()
        if kind == "num":
            number = float(value)
            return lambda v: number
        if kind == "name":
            if value not in known:
                raise ValueError(f"column {at + 1}: {value!r} is not a query of this rule "
                                 f"({', '.join(sorted(known))})")
            return lambda v: v.get(value, 0)
        if value == "(":
            inner = disjunction()
            if take()[1] != ")":
                raise ValueError(f"column {at + 1}: unclosed '('")
            return inner
        raise ValueError(f"column {at + 1}: unexpected {value!r}")

    product = binary(atom, {"*": operator.mul, "/": lambda a, b: a / b if b else float("inf")})
    total = binary(product, {"+": operator.add, "-": operator.sub})
    comparison = binary(total, _COMPARE)
    conjunction = binary(comparison, {"&&": lambda a, b: bool(a) and bool(b)})
    disjunction = binary(conjunction, {"||": lambda a, b: bool(a) or bool(b)})
    result = disjunction()
    if pos != len(tokens):
        raise ValueError(f"column {tokens[pos][2] + 1}: unexpected {tokens[pos][1]!r}")
    return result

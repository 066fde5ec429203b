"""Kubernetes resource quantities (``100m``, ``1Gi``, ``1e3``) compared by value.

The API server stores a quantity in canonical form (``1000m`` comes back as ``1``, ``0.5`` as
``500m``, ``1.5Gi`` as ``1536Mi``), so what kaudit sent and what it reads back can differ as text
and still be the same amount. The drift check compares amounts, not spellings.

The format, as k8s.io/apimachinery's resource.Quantity parses it:
``<sign>? <number> <suffix>`` where the number is ``digits``, ``digits.digits``, ``digits.`` or
``.digits``, and the suffix is a binary SI one (``Ki Mi Gi Ti Pi Ei``: powers of 1024), a decimal
SI one (``n u m`` "" ``k M G T P E``) or a decimal exponent (``e``/``E`` and a signed integer).
Amounts finer than one nano-unit are rounded up to it when parsed.
"""

from __future__ import annotations

import math
import re
from fractions import Fraction

_QUANTITY = re.compile(r"([+-]?)(\d+\.?\d*|\.\d+)(Ki|Mi|Gi|Ti|Pi|Ei|[eE][+-]?\d+|[numkMGTPE]?)")
_BINARY = {"Ki": 1, "Mi": 2, "Gi": 3, "Ti": 4, "Pi": 5, "Ei": 6}
_DECIMAL = {"n": -9, "u": -6, "m": -3, "": 0, "k": 3, "M": 6, "G": 9, "T": 12, "P": 15, "E": 18}


def parse_quantity(value: object) -> Fraction | None:
    """The exact amount of a quantity, or None when ``value`` is not one."""
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        return None
    match = _QUANTITY.fullmatch(str(value))
    if match is None:
        return None
    sign, number, suffix = match.groups()
    amount = Fraction(number if not number.endswith(".") else number[:-1])
    if suffix in _BINARY:
        amount *= 1024 ** _BINARY[suffix]
    elif suffix in _DECIMAL:
        amount *= Fraction(10) ** _DECIMAL[suffix]
    else:
        amount *= Fraction(10) ** int(suffix[1:])
    amount = Fraction(math.ceil(amount * 10**9), 10**9)  # nano is the finest precision kept
    return -amount if sign == "-" else amount


def same_quantity(live: object, desired: object) -> bool:
    """Whether two quantities are the same amount (equal text always is)."""
    if live == desired:
        return True
    a, b = parse_quantity(live), parse_quantity(desired)
    return a is not None and a == b

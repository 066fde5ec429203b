"""Errors shared by every layer.

Every problem with user input is a :class:`FieldError` that names the field by its path
(``spec.policy.rules[2].level``), so the CLI, the operator's status and Events all say the
same thing in the same words. Read from a file, it also names the file and, when known, the line
and column: ``<file>[:<line>:<col>]: <field path>: <message>`` (docs/cli.md).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Iterable


@dataclass(frozen=True, order=True)
class FieldError:
    path: str
    message: str
    file: str = ""  # the file the field was read from ("<stdin>" for standard input)
    line: int = 0  # 1-based position in that file; 0 when unknown
    column: int = 0

    @property
    def where(self) -> str:
        """``file:line:col``, ``file``, or (position without a file) ``line N, column M``."""
        if self.line and self.file:
            return f"{self.file}:{self.line}:{self.column}"
        if self.line:
            return f"line {self.line}, column {self.column}"
        return self.file

    def __str__(self) -> str:
        return ": ".join(part for part in (self.where, self.path, self.message) if part)

    def under(self, prefix: str) -> "FieldError":
        """The same error, with its path placed below ``prefix`` (``rules[0]`` → ``spec.policy.rules[0]``)."""
        if not prefix:
            return self
        if not self.path:
            return replace(self, path=prefix)
        sep = "" if self.path.startswith("[") else "."
        return replace(self, path=f"{prefix}{sep}{self.path}")

    def in_file(self, file: str) -> "FieldError":
        """The same error, read from ``file`` (a file already named is kept)."""
        return self if self.file else replace(self, file=file)


def did_you_mean(word: str, candidates: Iterable[str], cutoff: float = 0.6) -> str:
    """``'; did you mean "x"?'`` for the closest of ``candidates``, or "" when none is close."""
    import difflib  # here, not at the top: kaudit render's cold start does not pay for it

    close = difflib.get_close_matches(str(word), sorted(candidates), n=1, cutoff=cutoff)
    return f'; did you mean "{close[0]}"?' if close else ""


class KauditError(Exception):
    """Base of every error kaudit reports to a user as text rather than as a traceback."""


class InvalidInput(KauditError):
    """Input that cannot be used; carries one :class:`FieldError` per problem."""

    def __init__(self, errors: Iterable[FieldError]):
        self.errors = list(errors)
        super().__init__("; ".join(str(e) for e in self.errors))

    def under(self, prefix: str) -> "InvalidInput":
        return InvalidInput(e.under(prefix) for e in self.errors)

    def in_file(self, file: str) -> "InvalidInput":
        return InvalidInput(e.in_file(file) for e in self.errors)


class Refused(KauditError):
    """A valid request kaudit will not carry out (e.g. a DaemonSet owned by the Datadog Operator).

    ``reason`` is a CamelCase word for status conditions and Events.
    """

    def __init__(self, reason: str, message: str):
        self.reason = reason
        self.message = message
        super().__init__(message)

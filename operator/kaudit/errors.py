"""Errors shared by every layer.

Every problem with user input is a :class:`FieldError` that names the field by its path
(``spec.policy.rules[2].level``), so the CLI, the operator's status and Events all say the
same thing in the same words.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable


@dataclass(frozen=True, order=True)
class FieldError:
    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}" if self.path else self.message

    def under(self, prefix: str) -> "FieldError":
        """The same error, with its path placed below ``prefix`` (``rules[0]`` → ``spec.policy.rules[0]``)."""
        if not prefix:
            return self
        if not self.path:
            return FieldError(prefix, self.message)
        sep = "" if self.path.startswith("[") else "."
        return FieldError(f"{prefix}{sep}{self.path}", self.message)


class KauditError(Exception):
    """Base of every error kaudit reports to a user as text rather than as a traceback."""


class InvalidInput(KauditError):
    """Input that cannot be used; carries one :class:`FieldError` per problem."""

    def __init__(self, errors: Iterable[FieldError]):
        self.errors = list(errors)
        super().__init__("; ".join(str(e) for e in self.errors))

    def under(self, prefix: str) -> "InvalidInput":
        return InvalidInput(e.under(prefix) for e in self.errors)


class Refused(KauditError):
    """A valid request kaudit will not carry out (e.g. a DaemonSet owned by the Datadog Operator).

    ``reason`` is a CamelCase word for status conditions and Events.
    """

    def __init__(self, reason: str, message: str):
        self.reason = reason
        self.message = message
        super().__init__(message)

"""A condition as kaudit decides it: type, status, reason, message.

One definition for every part that decides conditions (the reconciler's, kaudit.reconcile.status,
and a platform's, kaudit.platforms.eks.plan), below both so that neither imports the other for it;
kaudit.reconcile.status renders them with ``observedGeneration`` and transition times.
"""

from __future__ import annotations

from dataclasses import dataclass

TRUE, FALSE, UNKNOWN = "True", "False", "Unknown"


@dataclass(frozen=True)
class Condition:
    type: str
    status: str
    reason: str
    message: str

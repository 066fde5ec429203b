"""Which status changes only report progress and may wait for the next one (status.is_progress)."""

from __future__ import annotations

import pytest

from kaudit.reconcile.status import is_progress


def status(ready: str | None, reason: str = "", generation: int | None = 1, **extra: object) -> dict:
    body: dict = {**extra}
    if generation is not None:
        body["observedGeneration"] = generation
    if ready is not None:
        body["conditions"] = [{"type": "Ready", "status": ready, "reason": reason},
                              {"type": "PolicyValid", "status": "True", "reason": "Valid"}]
    return body


@pytest.mark.parametrize("live, desired, progress", [
    # The first status of a create, still on its way: waits (the approval was just written).
    ({"policy": {"hash": "a"}}, status("False", "NoReports"), True),
    # A step on the way: agent pods getting ready, another node's report still missing.
    (status("False", "Installing", agent={"ready": 0}), status("False", "Installing", agent={"ready": 1}), True),
    # Another reason than the one written: at once, even between two reasons on the way.
    (status("False", "NoReports"), status("False", "Installing"), False),
    (status("False", "Throttled"), status("False", "Enabling"), False),
    (status("True", "Reconciled", agent={"ready": 1}), status("True", "Reconciled", agent={"ready": 2}), True),
    # Becoming Ready, leaving Ready: at once.
    ({"policy": {"hash": "a"}}, status("True", "Reconciled"), False),
    (status("False", "NoReports"), status("True", "Reconciled"), False),
    (status("True", "Reconciled"), status("False", "Installing"), False),
    # A failure, new or first: at once.
    (status("False", "NoReports"), status("False", "InstallFailed"), False),
    ({}, status("False", "InvalidPolicy"), False),
    # A newly observed spec: at once, whatever Ready says.
    (status("True", "Reconciled", generation=1), status("True", "Reconciled", generation=2), False),
    (status("False", "Installing", generation=1), status("False", "Installing", generation=2), False),
])
def test_progress_only_changes(live, desired, progress):
    assert is_progress(live, desired) is progress

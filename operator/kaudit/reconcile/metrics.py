"""Prometheus metrics in the text exposition format, without a client library.

Counters and one histogram are enough here; aiohttp (shipped with kopf) serves them.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


@dataclass
class Metrics:
    reconciles: dict[tuple[str, str], int] = field(default_factory=lambda: defaultdict(int))
    writes: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    durations: dict[str, list[int]] = field(default_factory=dict)  # trigger → bucket counts (+Inf last)
    duration_sums: dict[str, float] = field(default_factory=lambda: defaultdict(float))
    requests: dict[tuple[str, str], int] = field(default_factory=lambda: defaultdict(int))

    def reconciled(self, trigger: str, result: str, seconds: float, writes: int) -> None:
        self.reconciles[(trigger, result)] += 1
        self.writes[trigger] += writes
        counts = self.durations.setdefault(trigger, [0] * (len(BUCKETS) + 1))
        for index, bound in enumerate(BUCKETS):
            if seconds <= bound:
                counts[index] += 1
        counts[-1] += 1
        self.duration_sums[trigger] += seconds

    def request(self, method: str, path: str, status: int, seconds: float) -> None:
        self.requests[(method, str(status))] += 1

    def render(self) -> str:
        lines = [
            "# HELP kaudit_reconciles_total Reconciles of AuditCollections by trigger and result.",
            "# TYPE kaudit_reconciles_total counter",
        ]
        for (trigger, result), count in sorted(self.reconciles.items()):
            lines.append(f'kaudit_reconciles_total{{trigger="{trigger}",result="{result}"}} {count}')
        lines += [
            "# HELP kaudit_reconcile_errors_total Reconciles that ended in an error, by trigger.",
            "# TYPE kaudit_reconcile_errors_total counter",
        ]
        errors: dict[str, int] = defaultdict(int)
        for (trigger, result), count in self.reconciles.items():
            if result == "error":
                errors[trigger] += count
        for trigger in sorted({t for t, _ in self.reconciles}):
            lines.append(f'kaudit_reconcile_errors_total{{trigger="{trigger}"}} {errors[trigger]}')
        lines += [
            "# HELP kaudit_writes_total Write requests made by reconciles (applies, deletions, status).",
            "# TYPE kaudit_writes_total counter",
        ]
        for trigger, count in sorted(self.writes.items()):
            lines.append(f'kaudit_writes_total{{trigger="{trigger}"}} {count}')
        lines += [
            "# HELP kaudit_reconcile_duration_seconds Time one reconcile took.",
            "# TYPE kaudit_reconcile_duration_seconds histogram",
        ]
        for trigger, counts in sorted(self.durations.items()):
            for bound, count in zip(BUCKETS, counts):
                lines.append(f'kaudit_reconcile_duration_seconds_bucket{{trigger="{trigger}",le="{bound}"}} {count}')
            lines.append(f'kaudit_reconcile_duration_seconds_bucket{{trigger="{trigger}",le="+Inf"}} {counts[-1]}')
            lines.append(f'kaudit_reconcile_duration_seconds_sum{{trigger="{trigger}"}} {self.duration_sums[trigger]:.6f}')
            lines.append(f'kaudit_reconcile_duration_seconds_count{{trigger="{trigger}"}} {counts[-1]}')
        lines += [
            "# HELP kaudit_api_requests_total Kubernetes API requests by method and status code (0: no response).",
            "# TYPE kaudit_api_requests_total counter",
        ]
        for (method, status), count in sorted(self.requests.items()):
            lines.append(f'kaudit_api_requests_total{{method="{method}",code="{status}"}} {count}')
        return "\n".join(lines) + "\n"

"""The real control plane for every test under tests/realcluster (see plane.py for what it offers).

One plane per session, started on first use. Without KAUDIT_K8S_ASSETS (or with a folder lacking a
binary) the whole folder is skipped with one reason, as one skip; otherwise the terminal summary says
how many real-cluster tests ran.
"""

from __future__ import annotations

import os
import sys
from collections import Counter
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
import plane as plane_module  # noqa: E402  (tests/ is not a package)

HERE = Path(__file__).resolve().parent
WHY_NOT = plane_module.missing_assets(os.environ.get(plane_module.ASSETS_ENV))
_outcomes: Counter = Counter()
_started: list[plane_module.ControlPlane] = []


def _here(item: pytest.Item) -> bool:
    return HERE in Path(str(item.fspath)).resolve().parents


@pytest.hookimpl(tryfirst=True)
def pytest_make_collect_report(collector: pytest.Collector) -> pytest.CollectReport | None:
    """Without the binaries, each module here is skipped with the same location and reason: one summary line."""
    if WHY_NOT and isinstance(collector, pytest.Module) and HERE in Path(collector.path).parents:
        return pytest.CollectReport(collector.nodeid, "skipped", (__file__, 1, f"Skipped: {WHY_NOT}"), [])
    return None


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if _here(item):
            item.add_marker(pytest.mark.realcluster)


@pytest.fixture(scope="session")
def control_plane(tmp_path_factory: pytest.TempPathFactory):
    plane = plane_module.ControlPlane(Path(os.environ[plane_module.ASSETS_ENV]), tmp_path_factory.mktemp("plane"))
    _started.append(plane)
    plane.start()
    try:
        yield plane
    finally:
        plane.stop()


@pytest.fixture(scope="session")
def kaudit_installed(control_plane):
    """kaudit installed with ``kubectl apply -k manifests/`` (CRD, namespace, RBAC, operator Deployment)."""
    import kaudit_harness

    return kaudit_harness.install_with_kustomize(control_plane)


@pytest.fixture(autouse=True)
def _real_cluster(request: pytest.FixtureRequest) -> None:
    # Every test here needs the plane: the skip reason is then one line for all of them.
    request.getfixturevalue("control_plane")


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if "realcluster" not in report.keywords:
        return
    if report.when == "call" or report.outcome != "passed":
        _outcomes[(report.nodeid, report.outcome)] += 1


def pytest_terminal_summary(terminalreporter) -> None:
    by_test = {}
    for (nodeid, outcome) in _outcomes:  # a failure in any phase wins over a pass
        by_test[nodeid] = outcome if by_test.get(nodeid, "passed") == "passed" else by_test[nodeid]
    if not by_test:
        return
    counts = Counter(by_test.values())
    summary = ", ".join(f"{counts[o]} {o}" for o in ("passed", "failed", "skipped") if counts[o])
    started = f"; control plane up in {_started[0].start_seconds:.1f} s" if _started and hasattr(
        _started[0], "start_seconds") else ""
    terminalreporter.write_line(f"realcluster: {summary} (real kube-apiserver tests){started}")

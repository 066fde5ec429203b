"""Peering on the real control plane: ``kaudit run`` without --standalone, as the chart runs it.

Each replica has its own ServiceAccount bound to the chart's roles, so the audit log tells their
requests apart (both would send the same User-Agent).
"""

from __future__ import annotations

import time

import pytest

from kaudit_harness import child_writes, dump, install, object_key, successful, wait_settled
from plane import wait_for

RELEASE, NAMESPACE, AGENT_NAMESPACE = "kaudit-peering", "peering-system", "peering-agent"
STANDBY_SA = f"{RELEASE}-standby"
TAKEOVER_WITHIN = 30.0  # seconds from the active replica's death to the other one's first repair
REFUSAL_WITHIN = 15.0  # seconds for `kaudit run` to refuse a missing peering object


@pytest.fixture(scope="module")
def kaudit(control_plane):
    env = install(control_plane, RELEASE, NAMESPACE, AGENT_NAMESPACE, peering=True)
    env.add_service_account(STANDBY_SA)
    try:
        yield env
    finally:
        env.cleanup()


def test_run_without_the_peering_object_refuses_at_once_in_one_line(kaudit):
    peering = next(o for o in kaudit.objects if o["kind"] == "ClusterKopfPeering")
    kaudit.plane.kubectl("delete", "clusterkopfpeering", RELEASE)
    try:
        operator = kaudit.start_operator("--peering", RELEASE, name="no-peering")
        code = operator.popen.wait(REFUSAL_WITHIN)
    finally:
        kaudit.plane.apply(peering)
    lines = [line for line in operator.output().splitlines() if line.strip()]
    assert code == 1
    assert len(lines) == 1, lines
    assert lines[0].startswith(f'error: ClusterKopfPeering "{RELEASE}" not found'), lines
    assert "--standalone" in lines[0]


def test_two_replicas_one_works_the_other_stands_by_and_takes_over(kaudit):
    plane = kaudit.plane
    active_user, standby_user = kaudit.user(), kaudit.user(STANDBY_SA)
    # The later standby starts first and works, then a replica with a higher priority takes over:
    # a rolling update. The first one has handled the collection before it paused.
    standby = kaudit.start_operator("--peering", RELEASE, "--priority", "10", service_account=STANDBY_SA,
                                    name="replica-low")
    kaudit.create(kaudit.managed("peering", apiServer={"installPolicy": False}))
    kaudit.wait_ready("peering")
    mark = plane.audit_mark()
    active = kaudit.start_operator("--peering", RELEASE, "--priority", "20", name="replica-high")
    wait_for(lambda: [e for e in plane.requests_since(mark, user=active_user, verbs=("list",))
                      if object_key(e)[0] == "configmaps"], 30, "the new replica to take over")
    wait_settled(plane, active_user)

    # One works: a deleted child comes back from the active replica alone.
    config_map = ("configmaps", AGENT_NAMESPACE, "kaudit-peering-agent-config")
    mark = plane.audit_mark()
    plane.kubectl("delete", "configmap", "-n", AGENT_NAMESPACE, config_map[2])
    wait_for(lambda: plane.get_or_none("configmap", "-n", AGENT_NAMESPACE, config_map[2]), 30,
             "the deleted ConfigMap back")
    time.sleep(2)  # room for a standby that would act too
    repairs = child_writes(successful(plane.requests_since(mark, user=active_user)))
    assert [object_key(e) for e in repairs] == [config_map], dump(repairs)
    standby_writes = plane.requests_since(mark, user=standby_user)
    # The standby writes nothing but its own keep-alive in the peering object.
    assert [e for e in standby_writes if object_key(e) != ("clusterkopfpeerings", "", RELEASE)] == [], \
        dump(standby_writes)

    # The active replica dies (no goodbye in the peering object); meanwhile a child is deleted.
    active.kill()
    killed = time.monotonic()
    mark = plane.audit_mark()
    plane.kubectl("delete", "configmap", "-n", AGENT_NAMESPACE, config_map[2])

    def repaired_by_standby():
        writes = child_writes(successful(plane.requests_since(mark, user=standby_user)))
        return [e for e in writes if object_key(e) == config_map]

    wait_for(repaired_by_standby, 60, "the standby to take over and repair", interval=0.2)
    took = time.monotonic() - killed
    assert took <= TAKEOVER_WITHIN, f"took over {took:.1f} s after the active replica died"
    assert standby.running, standby.tail()
    kaudit.wait_ready("peering")

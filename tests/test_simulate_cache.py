"""The decision cache keys a request by the user as the rules see it: the name only when a rule
lists it, only the groups some rule lists. These tests check that this sharing never changes a
decision, a source, or whether an event counts as malformed."""

from __future__ import annotations

from kaudit.simulate import simulate
from simulate_support import event, line, loaded

POLICY = """
apiVersion: audit.k8s.io/v1
kind: Policy
rules:
- level: None                     # rule 0
  users: ["system:kube-proxy"]
- level: Request                  # rule 1
  userGroups: ["system:nodes"]
- level: Metadata                 # rule 2
"""


def _user(ev: dict, name, groups) -> dict:
    ev["user"] = {"username": name, "groups": groups}
    return ev


def _simulate(tmp_path, events: list[dict], extra: bytes = b"") -> dict:
    path = tmp_path / "audit.log"
    path.write_bytes(b"".join(line(ev) for ev in events) + extra)
    return simulate(loaded(POLICY), [str(path)], request_cache_size=2)


def test_users_and_groups_no_rule_lists_share_decisions_but_not_sources(tmp_path):
    get = dict(resource="pods", namespace="a", name="p")
    events = [
        # the same request by four users; each first event of a shape is a cache miss
        _user(event(1, "Metadata", "ResponseComplete", "get", None, **get), "alice", ["system:authenticated", "team:a"]),
        _user(event(2, "Metadata", "ResponseComplete", "get", None, **get), "bob", ["system:authenticated", "team:b"]),
        # rule 0 names this user: it must not share alice's decision
        _user(event(3, "Metadata", "ResponseComplete", "get", None, **get), "system:kube-proxy", ["system:authenticated"]),
        # rule 1 lists one of these groups, in another order than the next event's: same decision
        _user(event(4, "Metadata", "ResponseComplete", "get", None, **get), "system:node:n1", ["system:nodes", "system:authenticated"]),
        _user(event(5, "Metadata", "ResponseComplete", "get", None, **get), "system:node:n2", ["system:authenticated", "system:nodes"]),
        _user(event(6, "Metadata", "ResponseComplete", "get", None, **get), "carol", ["team:c"]),
    ]
    doc = _simulate(tmp_path, events)
    # by hand: rule 0 takes e3; rule 1 takes e4, e5; rule 2 takes e1, e2, e6
    assert [r["matchedEvents"] for r in doc["policy"]["rules"]] == [1, 2, 3, 0]
    users = sorted(t["user"] for t in doc["policy"]["topSources"]["entries"])
    assert users == ["alice", "bob", "carol", "system:node:n1", "system:node:n2"]  # kube-proxy: dropped


def test_a_wrongly_typed_user_is_malformed_even_after_a_good_one_of_the_same_shape(tmp_path):
    get = dict(resource="pods", namespace="a", name="p")
    events = [
        _user(event(1, "Metadata", "ResponseComplete", "get", None, **get), "alice", ["team:a"]),
        _user(event(2, "Metadata", "ResponseComplete", "get", None, **get), 7, ["team:a"]),  # name not a string
        _user(event(3, "Metadata", "ResponseComplete", "get", None, **get), "bob", ["team:a", 7]),  # group not a string
    ]
    doc = _simulate(tmp_path, events)
    assert doc["input"]["events"] == 1
    assert doc["input"]["malformedLines"] == 2

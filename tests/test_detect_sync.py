"""`kaudit rules sync`: detection rules kept in Datadog through the rules API (kaudit.detect.sync).

The Datadog side is a local HTTP server on loopback (tests/datadog_rules_server.py) serving the
rules endpoints; it checks the keys and parses every request body with datadog-api-client's own
models (a test dependency only), answering 400 to anything they do not parse exactly. No test
needs Datadog.
"""

from __future__ import annotations

import json

import pytest
from datadog_rules_server import FakeDatadog, Server, strict_model
from datadog_api_client.v2.model.security_monitoring_standard_rule_create_payload import (
    SecurityMonitoringStandardRuleCreatePayload,
)

from kaudit.cli import main
from kaudit.detect.pack import PACK, pack_rules
from kaudit.detect.render import rule_to_api
from kaudit.detect.sync import Credentials, DatadogRulesApi, SyncError, differences, sync

OWNER_TAGS = ["managed-by:kaudit", "kaudit-owner:prod-eu"]


@pytest.fixture
def datadog():
    with Server(FakeDatadog()) as state:
        yield state


@pytest.fixture
def env(monkeypatch, datadog):
    monkeypatch.setenv("DD_API_KEY", datadog.api_key)
    monkeypatch.setenv("DD_APP_KEY", datadog.app_key)
    monkeypatch.delenv("DD_SITE", raising=False)
    return datadog


def api(datadog, app_key=None):
    return DatadogRulesApi(Credentials(datadog.api_key, app_key or datadog.app_key), url=datadog.url)


def cli(capsys, *args):
    code = main(["rules", "sync", *args])
    out, err = capsys.readouterr()
    return code, out, err


def foreign(name, tags=()):
    """A rule someone else made (the pack's first rule under another name and tags)."""
    payload = rule_to_api(pack_rules()[0])
    payload.update(name=name, tags=list(tags))
    return payload


def expected_payload(entry, cluster="prod-eu"):
    """What a pack rule must become in Datadog, from the pack's own JSON, written out by hand here."""
    rule = json.loads(json.dumps(entry.rule))
    rule["name"] += f" [{cluster}]"
    for query in rule["queries"]:
        query["query"] = f"kube_cluster_name:{cluster} {query['query']}"
    rule["tags"] = sorted(set(rule["tags"]) | {f"kube_cluster_name:{cluster}", "managed-by:kaudit",
                                                f"kaudit-owner:{cluster}"})
    return rule


def test_the_fakes_model_check_can_fail():
    good = rule_to_api(pack_rules()[0])
    strict_model(good, SecurityMonitoringStandardRuleCreatePayload)
    for bad in (dict(good, bogus=1), dict(good, queries=[dict(good["queries"][0], aggregation="often")]),
                dict(good, cases=[{"status": "dire", "condition": "a > 0"}])):
        with pytest.raises(ValueError):
            strict_model(bad, SecurityMonitoringStandardRuleCreatePayload)


def test_sync_creates_the_pack_scoped_to_the_cluster_then_writes_nothing(env, capsys):
    code, out, err = cli(capsys, "--cluster", "prod-eu", "--api-url", env.url)
    assert (code, err, env.violations) == (0, "", [])
    posts = [body for method, _, body in env.writes() if method == "POST"]
    assert len(posts) == len(PACK) == len(out.splitlines())
    by_name = {body["name"]: body for body in posts}
    for entry in PACK:
        want = expected_payload(entry)
        got = by_name[want["name"]]
        assert sorted(got.pop("tags")) == want.pop("tags")
        assert got["queries"] == [dict(q, **({"metrics": q["metrics"]} if "metrics" in q else {}))
                                  for q in want["queries"]]
        assert {k: got[k] for k in ("name", "isEnabled", "message", "cases", "options", "type")} == \
            {k: want[k] for k in ("name", "isEnabled", "message", "cases", "options", "type")}
    assert all(line.startswith("create ") for line in out.splitlines())
    env.requests.clear()
    code, out, _ = cli(capsys, "--cluster", "prod-eu", "--api-url", env.url)
    assert code == 0 and env.writes() == []
    assert [line.split()[0] for line in out.splitlines()] == ["unchanged"] * len(PACK)


def test_drift_is_put_back_and_what_datadog_adds_is_not_drift(env, capsys):
    assert cli(capsys, "--cluster", "prod-eu", "--api-url", env.url)[0] == 0
    rules = {r["name"]: r for r in env.rules.values()}
    exec_rule = rules["kaudit: shell opened in a pod (exec) [prod-eu]"]
    nodeport = rules["kaudit: service exposed on every node (NodePort) [prod-eu]"]
    exec_rule["queries"][0]["query"] = "source:kubernetes.audit @objectRef.subresource:exec"  # edited in the UI
    nodeport["isEnabled"] = False
    nodeport["cases"][0]["status"] = "info"
    for rule in rules.values():
        rule["tags"].reverse()  # order is not drift
        rule["queries"][0]["hasOptionalGroupByFields"] = False  # a field Datadog fills, kaudit does not set
    env.requests.clear()
    code, out, _ = cli(capsys, "--cluster", "prod-eu", "--api-url", env.url)
    assert code == 0 and env.violations == []
    puts = {path.rsplit("/", 1)[1]: body for method, path, body in env.writes()}
    assert set(puts) == {exec_rule["id"], nodeport["id"]}
    assert [m for m, _, _ in env.writes()] == ["PUT", "PUT"]
    assert "type" not in puts[exec_rule["id"]]  # the update payload has no type
    assert exec_rule["queries"][0]["query"].startswith("kube_cluster_name:prod-eu source:kubernetes.audit")
    assert nodeport["isEnabled"] is True and nodeport["cases"][0]["status"] == "low"
    drifted = [line for line in out.splitlines() if line.startswith("update")]
    assert any("queries[0].query" in line for line in drifted)
    assert any("isEnabled" in line and "cases[0].status" in line for line in drifted)


def test_only_the_owners_rules_are_touched(env, capsys, tmp_path):
    mine = pack_rules()[0]
    taken_by_user = f"{pack_rules()[1].name} [prod-eu]"
    taken_by_other = f"{pack_rules()[2].name} [prod-eu]"
    user_rule = env.add(foreign(taken_by_user))
    other_owner = env.add(foreign(taken_by_other, ["managed-by:kaudit", "kaudit-owner:prod-us"]))
    unrelated = env.add(foreign("team rule", ["team:sec"]))
    stale = env.add(foreign("kaudit: retired rule [prod-eu]", OWNER_TAGS))
    twin = env.add(foreign(f"{mine.name} [prod-eu]", OWNER_TAGS))  # two of ours with one name
    twin2 = env.add(foreign(f"{mine.name} [prod-eu]", OWNER_TAGS))
    before = {rid: json.dumps(env.rules[rid], sort_keys=True) for rid in (user_rule, other_owner, unrelated)}
    code, out, err = cli(capsys, "--cluster", "prod-eu", "--api-url", env.url)
    assert code == 1 and env.violations == []
    assert err.strip().splitlines() == [f"error: 2 rule(s) not synced, their name is taken: "
                                        f"{taken_by_user}, {taken_by_other}"]
    assert {rid: json.dumps(env.rules[rid], sort_keys=True) for rid in before} == before
    names = [r["name"] for r in env.rules.values()]
    assert names.count(taken_by_user) == names.count(taken_by_other) == 1  # not created beside them
    assert stale not in env.rules and (twin in env.rules) != (twin2 in env.rules)
    assert [m for m, _, _ in env.writes()].count("DELETE") == 2
    assert f"conflict      {taken_by_other} [{other_owner}] (rule {other_owner} has this name and belongs to " \
           f"kaudit owner prod-us, not prod-eu: left alone)" in out.splitlines()


def test_a_fleet_of_owners_in_one_organisation(env, capsys, tmp_path):
    for cluster in ("prod-eu", "prod-us"):
        assert cli(capsys, "--cluster", cluster, "--api-url", env.url)[0] == 0
    assert len(env.rules) == 2 * len(PACK)
    one = tmp_path / "one.json"
    one.write_text(json.dumps(PACK[0].rule))
    env.requests.clear()
    code, out, _ = cli(capsys, "--cluster", "prod-us", "--rules", str(one), "--api-url", env.url)
    assert code == 0
    assert [m for m, _, _ in env.writes()] == ["DELETE"] * (len(PACK) - 1)
    left = sorted(r["name"] for r in env.rules.values() if "kaudit-owner:prod-us" in r["tags"])
    assert left == [f"{PACK[0].rule['name']} [prod-us]"]
    assert sum("kaudit-owner:prod-eu" in r["tags"] for r in env.rules.values()) == len(PACK)


def test_one_unscoped_owner_for_the_fleet(env, capsys):
    assert cli(capsys, "--owner", "fleet", "--api-url", env.url)[0] == 0
    assert sorted(r["name"] for r in env.rules.values()) == sorted(e.rule["name"] for e in PACK)
    assert all(not q["query"].startswith("kube_cluster_name") for r in env.rules.values() for q in r["queries"])


def test_dry_run_reads_and_writes_nothing(env, capsys):
    env.add(foreign("kaudit: retired rule", ["managed-by:kaudit", "kaudit-owner:fleet"]))
    code, out, _ = cli(capsys, "--owner", "fleet", "--dry-run", "-o", "json", "--api-url", env.url)
    assert code == 0 and env.writes() == []
    document = json.loads(out)
    assert (document["kind"], document["applied"], document["owner"]) == ("DetectionRuleSync", False, "fleet")
    assert sorted(a["action"] for a in document["actions"]) == ["create"] * len(PACK) + ["delete"]
    code, out, _ = cli(capsys, "--owner", "fleet", "--dry-run", "--api-url", env.url)
    assert out.splitlines()[0].startswith("would create ") and "would delete " in out


def test_every_page_of_the_organisation_is_read(env):
    for i in range(230):
        env.add(foreign(f"team rule {i}", ["team:sec"]))
    stale = env.add(foreign("kaudit: retired rule", ["managed-by:kaudit", "kaudit-owner:fleet"]))
    result = sync(api(env), pack_rules(), "fleet")
    pages = [path for method, path, _ in env.requests if method == "GET"]
    assert len(pages) == 3 and "page%5Bnumber%5D=2" in pages[-1]  # 0-based pages of 100
    assert stale not in env.rules and result.applied and len(result.created_ids) == len(PACK)


def test_refused_keys_and_missing_keys_are_one_line(env, capsys, monkeypatch):
    monkeypatch.setenv("DD_APP_KEY", "wrong")
    code, out, err = cli(capsys, "--owner", "fleet", "--api-url", env.url)
    assert (code, out) == (1, "")
    assert err.splitlines() == ["error: Datadog answered 403 Forbidden to list_security_monitoring_rules"]
    assert env.writes() == []
    monkeypatch.delenv("DD_API_KEY")
    monkeypatch.setenv("DD_APP_KEY", "")
    env.requests.clear()
    code, out, err = cli(capsys, "--owner", "fleet", "--api-url", env.url)
    assert code == 1 and env.requests == []
    assert err.splitlines() == ["error: DD_API_KEY and DD_APP_KEY: not set (the Datadog API and application keys)"]
    with pytest.raises(SyncError):
        sync(api(env, app_key="wrong"), pack_rules(), "fleet")


@pytest.mark.parametrize("args, message", [
    ((), "error: --owner: is required without --cluster (the owner tag of the synced rules)"),
    (("--owner", "a b"), "error: --owner: letters, digits, '-', '_', '.' and '/' only (it becomes a Datadog tag value)"),
])
def test_bad_arguments(env, capsys, args, message):
    code, out, err = cli(capsys, *args, "--api-url", env.url)
    assert (code, out, err.splitlines()) == (1, "", [message]) and env.requests == []


def test_differences_reads_only_what_kaudit_sets():
    want = {"name": "a", "tags": ["x", "y"], "queries": [{"query": "q", "groupByFields": []}], "isEnabled": True}
    assert differences(want, dict(want, tags=["y", "x"], id="1", queries=[{"query": "q", "dataSource": "logs"}])) == []
    assert differences(want, dict(want, isEnabled=False)) == ["isEnabled"]
    assert differences(want, dict(want, queries=[{"query": "q"}, {"query": "r"}])) == ["queries"]
    assert differences(want, dict(want, tags=["x"])) == ["tags"]



def test_a_rate_limited_call_waits_what_datadog_asks_then_goes_through(datadog):
    waits = []
    client = DatadogRulesApi(Credentials(datadog.api_key, datadog.app_key), url=datadog.url, sleep=waits.append)
    datadog.throttled = 2
    assert client.list_rules() == []
    assert waits == [1.0, 1.0] and len(datadog.requests) == 3


def test_a_rate_limit_past_the_retries_is_a_sync_error_naming_the_call(datadog):
    waits = []
    client = DatadogRulesApi(Credentials(datadog.api_key, datadog.app_key), url=datadog.url, sleep=waits.append)
    datadog.throttled = 10
    with pytest.raises(SyncError) as caught:
        client.list_rules()
    assert str(caught.value) == "Datadog answered 429 Too Many Requests to list_security_monitoring_rules"
    assert len(datadog.requests) == 4 and len(waits) == 3  # three retries, as the official client made


def test_an_unreachable_api_is_a_sync_error_after_the_retries():
    waits = []
    client = DatadogRulesApi(Credentials("k", "a"), url="http://127.0.0.1:9", sleep=waits.append, timeout=2)
    with pytest.raises(SyncError) as caught:
        client.list_rules()
    assert str(caught.value).startswith("list_security_monitoring_rules: ") and waits == [0.5, 1.0, 2.0]

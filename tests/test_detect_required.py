"""spec.detection (kaudit.detect.required): parsing, the user's rules from a ConfigMap, and the
DetectionCoverage assessment with its refusal."""

from __future__ import annotations

import json

import pytest

from kaudit.detect.pack import PACK
from kaudit.api.spec import DetectionRulesRef as ConfigMapRef
from kaudit.api.spec import DetectionSpec, parse_collection
from kaudit.detect.required import (
    BLINDING_REFUSED, COVERED, PARTLY_BLIND, RULES_BLIND, assess, pack_required, rules_from_config_map,
)
from kaudit.errors import InvalidInput
from kaudit.policy import load_policy

EVERYTHING = "apiVersion: audit.k8s.io/v1\nkind: Policy\nrules:\n- level: RequestResponse\n"
PODS_METADATA = ("apiVersion: audit.k8s.io/v1\nkind: Policy\nrules:\n"
                 "- level: Metadata\n  resources: [{group: '', resources: [pods]}]\n"
                 "- level: RequestResponse\n")
EXEC_DROPPED_FOR_CI = ("apiVersion: audit.k8s.io/v1\nkind: Policy\nrules:\n"
                       "- level: None\n  users: [ci-bot]\n  resources: [{group: '', resources: [pods/exec]}]\n"
                       "- level: RequestResponse\n")
BODY_POD_RULES = [e for e in PACK if e.needs == "Request" and e.fires[0]["objectRef"]["resource"] == "pods"]


def policy(text):
    return load_policy(text).policy


def parse_detection(detection):
    body = {"apiVersion": "kaudit.dev/v1alpha1", "kind": "AuditCollection", "metadata": {"name": "c"}, "spec": {}}
    if detection is not None:
        body["spec"]["detection"] = detection
    return parse_collection(body).detection


def test_defaults_and_absence():
    assert parse_detection(None) is None
    assert parse_detection({}) == DetectionSpec("Report", ("*",), None)
    spec = parse_detection({"mode": "Refuse", "packRules": ["kaudit-pod-exec"], "configMapRef": {"name": "mine"}})
    assert spec == DetectionSpec("Refuse", ("kaudit-pod-exec",), ConfigMapRef("mine", "rules.json"))
    assert [r.name for r in pack_required(spec)] == [PACK[0].rule["name"]]
    assert len(pack_required(DetectionSpec())) == len(PACK)


def test_every_problem_names_its_field():
    with pytest.raises(InvalidInput) as caught:
        parse_detection({"mode": "refuse", "packRules": [""], "configMapRef": {"key": "a b"}, "rule": []})
    assert sorted(str(e) for e in caught.value.errors) == [
        'spec.detection.configMapRef.key: Invalid value: "a b": must consist of alphanumeric characters, '
        "'-', '_' or '.'",
        "spec.detection.configMapRef.name: Required value: the ConfigMap holding your detection rules",
        'spec.detection.mode: Unsupported value: "refuse": supported values: "Report", "Refuse"',
        'spec.detection.packRules[0]: Invalid value: "": must not be empty',
        'spec.detection.rule: unknown field "rule"',
    ]
    with pytest.raises(InvalidInput) as caught:
        pack_required(DetectionSpec(pack_rules=("kaudit-pod-exek",)))
    assert [str(e) for e in caught.value.errors] == [
        "spec.detection.packRules[0]: not a rule of kaudit's pack: 'kaudit-pod-exek'; did you mean \"kaudit-pod-exec\"?"]


def test_user_rules_from_a_config_map():
    rule = dict(PACK[0].rule, name="mine: exec")
    rules = rules_from_config_map({"data": {"rules.json": json.dumps([rule])}}, ConfigMapRef("mine"), "kaudit-system")
    assert [r.name for r in rules] == ["mine: exec"]
    with pytest.raises(InvalidInput) as caught:
        rules_from_config_map({"data": {"rules.json": "[{]"}}, ConfigMapRef("mine"), "kaudit-system")
    assert str(caught.value.errors[0]).startswith("ConfigMap kaudit-system/mine: rules.json:1:")
    with pytest.raises(InvalidInput) as caught:
        rules_from_config_map({"data": {}}, ConfigMapRef("mine", "x.json"), "ns")
    assert str(caught.value.errors[0]) == "ConfigMap ns/mine: data.x.json: missing (spec.detection.configMapRef.key)"
    with pytest.raises(InvalidInput):
        rules_from_config_map(None, ConfigMapRef("mine"), "ns")


def test_everything_recorded_covers_every_pack_rule():
    result = assess(policy(EVERYTHING), pack_required(DetectionSpec()), DetectionSpec("Refuse"))
    assert (result.status, result.reason, result.refuse) == ("True", COVERED, False)
    assert result.message == f"all {len(PACK)} required rule(s) fire under the policy"


@pytest.mark.parametrize("mode, reason, refuse", [("Report", RULES_BLIND, False), ("Refuse", BLINDING_REFUSED, True)])
def test_pods_at_metadata_blind_the_pod_body_rules(mode, reason, refuse):
    # Every pod create is logged at Metadata by rule 0: no request body, so the body rules on pods
    # can never match; every other rule keeps what it reads at RequestResponse.
    spec = DetectionSpec(mode)
    result = assess(policy(PODS_METADATA), pack_required(spec), spec, "policy abc123")
    assert (result.status, result.reason, result.refuse) == ("False", reason, refuse)
    blind = sorted(r.rule.name for r in result.results if r.verdict == "blind")
    assert blind == sorted(e.rule["name"] for e in BODY_POD_RULES)
    for entry in BODY_POD_RULES:
        assert f"{entry.rule['name']}: rule 0 (resources=[pods]) logs these requests at Metadata; this detection " \
               f"reads @requestObject" in result.message
    if refuse:
        assert result.message.startswith("policy abc123 refused, the last good policy is kept: it would blind 2")
    else:
        assert result.message.startswith(f"2 of {len(PACK)} required rule(s) blind under policy abc123: ")


def test_a_partial_drop_is_reported_and_never_refused():
    spec = DetectionSpec("Refuse", ("kaudit-pod-exec",))
    result = assess(policy(EXEC_DROPPED_FOR_CI), pack_required(spec), spec)
    assert (result.status, result.reason, result.refuse) == ("True", PARTLY_BLIND, False)
    assert "rule 0 (users=[ci-bot]" in result.message and "drops these requests (level None)" in result.message


def test_rules_check_on_a_collection_file(tmp_path, capsys):
    """`kaudit rules check -f`: the collection's policy as the operator composes it, its required pack
    rules. Expected verdicts from the levels the Datadog profile's evaluator gives the rules' requests."""
    from kaudit.cli import main
    from kaudit.detect.pack import pack_entry
    from kaudit.policy import PolicyOptions, compose_policy
    from kaudit.policy.evaluate import Evaluator

    path = tmp_path / "ac.yaml"
    path.write_text("apiVersion: kaudit.dev/v1alpha1\nkind: AuditCollection\nmetadata: {name: cluster}\n"
                    "spec:\n  policy: {profile: Datadog}\n  agent: {mode: None}\n"
                    "  detection: {packRules: [kaudit-nodeport-service, kaudit-pod-exec]}\n")
    code = main(["rules", "check", "-f", str(path), "-o", "json"])
    document = json.loads(capsys.readouterr().out)
    verdicts = {r["name"]: r["verdict"] for r in document["rules"]}
    evaluator = Evaluator(policy(compose_policy(PolicyOptions(profile="Datadog")).text))
    nodeport = pack_entry("kaudit: service exposed on every node (NodePort)")
    # Every service create of the example is logged below Request: no body, the rule cannot match.
    assert evaluator.evaluate_event(nodeport.fires[0]).level == "Metadata"
    assert sorted(verdicts) == sorted([nodeport.rule["name"], PACK[0].rule["name"]])  # the required ones only
    assert verdicts[nodeport.rule["name"]] == "blind" and code == 1
    path.write_text(path.read_text().replace("packRules: [kaudit-nodeport-service, kaudit-pod-exec]",
                                             "configMapRef: {name: team}"))
    assert main(["rules", "check", "-f", str(path)]) == 1
    assert capsys.readouterr().err.splitlines() == [
        "error: spec.detection.configMapRef: ConfigMap team is in the cluster: give its rules with --rules"]


def test_rules_check_on_an_eks_collection_uses_the_policy_eks_applies(tmp_path, capsys):
    """On EKS kaudit writes no policy: `rules check -f` judges the rules under EKS's own (the
    operator's verdict too), not under the spec.policy defaults the CRD fills in. pods/exec is
    dropped by no rule of EKS's policy, while kaudit's Default profile leaves it partly blind."""
    from kaudit.cli import main

    path = tmp_path / "ac.yaml"
    path.write_text("apiVersion: kaudit.dev/v1alpha1\nkind: AuditCollection\nmetadata: {name: eks}\nspec:\n"
                    "  platform: EKS\n  eks: {clusterName: prod, region: us-east-1, forwarderArn: "
                    "'arn:aws:lambda:us-east-1:123456789012:function:datadog-forwarder'}\n"
                    "  detection: {packRules: [kaudit-pod-exec]}\n")
    assert main(["rules", "check", "-f", str(path), "-o", "json"]) == 0
    document = json.loads(capsys.readouterr().out)
    [exec_rule] = document["rules"]
    assert exec_rule["verdict"] == "fires"
    # What the same collection would get under kaudit's own Default profile: not that verdict.
    main(["rules", "check", "--profile", "Default", "-o", "json"])
    default = {r["name"]: r["verdict"] for r in json.loads(capsys.readouterr().out)["rules"]}
    assert default[exec_rule["name"]] == "partly-blind"


def test_rules_check_on_a_collection_whose_provider_policy_kaudit_does_not_know_is_an_error(tmp_path, capsys):
    from kaudit.cli import main

    path = tmp_path / "ac.yaml"
    path.write_text("apiVersion: kaudit.dev/v1alpha1\nkind: AuditCollection\nmetadata: {name: gke}\nspec:\n"
                    "  platform: GKE\n  detection: {packRules: [kaudit-pod-exec]}\n")
    assert main(["rules", "check", "-f", str(path)]) == 1
    [line] = capsys.readouterr().err.splitlines()
    assert line.startswith(f"error: {path}: spec.platform: GKE: kaudit does not know the audit policy")

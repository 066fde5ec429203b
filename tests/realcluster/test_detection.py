"""The detection pack on events the real kube-apiserver recorded.

Each pack rule's example request, and its twin, is made on the real API server; its own audit log
is read back and kaudit's engine runs the rule on each event as a profile would record it (the
level and stages the profile's rules give that request, bodies cut to the level). The rule must
fire exactly when that level is enough for what it reads, the twin never, and kaudit's coverage
verdict must agree.

The plane records every request at Metadata; for the bodies, this module restarts the API server
once with a policy that records this module's own service account at RequestResponse (everyone
else stays at Metadata, as the other tests expect). The plane's policy file is put back at the end,
so a later restart loads the original again.

What the hollow nodes cannot do: exec and attach reach no kubelet (the node's name does not
resolve), so kube-apiserver answers 500 and the real events are the twins of those rules; the
firing events are the same real events with the 101 (Switching Protocols) a reachable kubelet
answers. The new-value rule learns for a week: its learning-period read is a real event moved 8
days back.
"""

from __future__ import annotations

import copy
import json
import ssl
import urllib.error
import urllib.request
from datetime import datetime, timedelta

import pytest

from kaudit.detect.coverage import BLIND, FIRES, PARTLY, as_recorded, check
from kaudit.detect.pack import PACK, pack_rules
from kaudit.detect.signals import run_rule
from kaudit.policy import PolicyOptions, compose_policy, load_policy
from kaudit.policy.evaluate import Evaluator
from kaudit.policy.model import LEVEL_RANK
from plane import wait_for

NS = "detect-test"
SA = "kaudit-detect"
SA_USER = f"system:serviceaccount:{NS}:{SA}"
PROFILES = ("Default", "WriteRequestBodies", "Datadog", "EKS")
RULES = dict(zip((e.id for e in PACK), pack_rules()))
ENTRIES = {e.id: e for e in PACK}


class Api:
    """Plain HTTPS requests with a bearer token (or none: anonymous), fast enough to send many."""

    def __init__(self, plane, token: str | None):
        self.base, self.token = plane.server, token
        self.context = ssl.create_default_context(cafile=str(plane.ca_file))

    def __call__(self, method: str, path: str, body: dict | None = None) -> int:
        headers = {"Content-Type": "application/json"}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(self.base + path, data=data, method=method, headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=30, context=self.context) as response:
                return response.status
        except urllib.error.HTTPError as exc:
            return exc.code


def _token(kubeconfig) -> str:
    return json.loads(kubeconfig.read_text())["users"][0]["user"]["token"]


def _pod(name: str, **spec) -> dict:
    container = {"name": "app", "image": "registry.example/app:1"}
    if spec.pop("privileged", False):
        container["securityContext"] = {"privileged": True}
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
            "spec": {"nodeName": "worker-1", "containers": [container], **spec}}


SETUP = f"""
apiVersion: v1
kind: List
items:
- {{apiVersion: v1, kind: Namespace, metadata: {{name: {NS}}}}}
- {{apiVersion: v1, kind: ServiceAccount, metadata: {{name: {SA}, namespace: {NS}}}}}
- apiVersion: rbac.authorization.k8s.io/v1
  kind: ClusterRoleBinding
  metadata: {{name: detect-test-admin}}
  roleRef: {{apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: cluster-admin}}
  subjects: [{{kind: ServiceAccount, name: {SA}, namespace: {NS}}}]
- apiVersion: rbac.authorization.k8s.io/v1
  kind: Role
  metadata: {{name: readers, namespace: {NS}}}
  rules:
  - {{apiGroups: [""], resources: [configmaps], verbs: [list]}}
  - {{apiGroups: [""], resources: [secrets], verbs: [get], resourceNames: [db]}}
- apiVersion: rbac.authorization.k8s.io/v1
  kind: RoleBinding
  metadata: {{name: readers, namespace: {NS}}}
  roleRef: {{apiGroup: rbac.authorization.k8s.io, kind: Role, name: readers}}
  subjects: [{{kind: User, name: "system:anonymous"}}, {{kind: User, name: alice}}]
"""


def _policy_with_bodies_for(user: str) -> dict:
    return {"apiVersion": "audit.k8s.io/v1", "kind": "Policy", "omitStages": ["RequestReceived"],
            "rules": [{"level": "RequestResponse", "users": [user]}, {"level": "Metadata"}]}


def _make_requests(plane) -> int:
    """Every example and twin request; returns the audit mark before them."""
    sa_config = plane.kubeconfig_for_service_account(NS, SA)
    sa, anonymous = Api(plane, _token(sa_config)), Api(plane, None)
    alice = Api(plane, _token(plane.kubeconfig_for_user("alice")))
    mark = plane.audit_mark()
    pods = f"/api/v1/namespaces/{NS}/pods"
    assert sa("POST", pods, _pod("web")) == 201
    assert sa("POST", pods, _pod("priv", privileged=True)) == 201
    assert sa("POST", pods, _pod("hostnet", hostNetwork=True)) == 201
    services = f"/api/v1/namespaces/{NS}/services"
    for name, kind in (("np", "NodePort"), ("cip", "ClusterIP")):
        assert sa("POST", services, {"apiVersion": "v1", "kind": "Service", "metadata": {"name": name},
                                     "spec": {"type": kind, "ports": [{"port": 80}]}}) == 201
    for name, role in (("detect-test-grant", "cluster-admin"), ("detect-test-view", "view")):
        assert sa("POST", "/apis/rbac.authorization.k8s.io/v1/clusterrolebindings", {
            "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding", "metadata": {"name": name},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role},
            "subjects": [{"kind": "User", "name": "bob"}]}) == 201
    hooks = "/apis/admissionregistration.k8s.io/v1/mutatingwebhookconfigurations"
    assert sa("POST", hooks, {"apiVersion": "admissionregistration.k8s.io/v1",
                              "kind": "MutatingWebhookConfiguration", "metadata": {"name": "detect-test-hook"}}) == 201
    assert sa("GET", hooks) == 200
    reviews = "/apis/authorization.k8s.io/v1/"
    assert sa("POST", reviews + "selfsubjectrulesreviews", {"apiVersion": "authorization.k8s.io/v1",
               "kind": "SelfSubjectRulesReview", "spec": {"namespace": NS}}) == 201
    assert sa("POST", reviews + "selfsubjectaccessreviews", {"apiVersion": "authorization.k8s.io/v1",
               "kind": "SelfSubjectAccessReview", "spec": {"resourceAttributes": {"verb": "get", "resource": "pods"}}}) == 201
    for ns in ("kube-system", NS):
        assert sa("POST", f"/api/v1/namespaces/{ns}/serviceaccounts",
                  {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "detect-test-helper"}}) == 201
    assert anonymous("GET", f"/api/v1/namespaces/{NS}/configmaps") == 200
    assert anonymous("GET", "/version") == 200
    for _ in range(11):
        assert alice("GET", f"/api/v1/namespaces/{NS}/pods") == 403
    assert sa("POST", f"/api/v1/namespaces/{NS}/secrets", {"apiVersion": "v1", "kind": "Secret",
                                                            "metadata": {"name": "db"}}) == 201
    assert sa("GET", f"/api/v1/namespaces/{NS}/secrets/db") == 200
    assert sa("GET", f"/api/v1/namespaces/{NS}/secrets/db") == 200
    assert alice("GET", f"/api/v1/namespaces/{NS}/secrets/db") == 200
    wait_for(lambda: plane.get("pod", "web", "-n", NS).get("status", {}).get("phase") == "Running", 30,
             "the hollow node to run pod web")
    for args in (("exec", "web", "--", "true"), ("attach", "web"), ("logs", "web")):
        plane.kubectl("-n", NS, *args, kubeconfig=sa_config, check=False, timeout=30)
    return mark


def _cleanup(plane) -> None:
    for args in (("clusterrolebinding", "detect-test-admin", "detect-test-grant", "detect-test-view"),
                 ("mutatingwebhookconfiguration", "detect-test-hook"),
                 ("serviceaccount", "detect-test-helper", "-n", "kube-system"),
                 ("namespace", NS, "--wait=false")):
        plane.kubectl("delete", "--ignore-not-found", *args, check=False)


@pytest.fixture(scope="module")
def recorded(control_plane):
    """Per pack rule: (events of its example, events of its twin), as the real API server logged them."""
    policy_file = control_plane.workdir / "audit-policy.yaml"
    original = policy_file.read_text()
    control_plane.apply(SETUP)
    policy_file.write_text(json.dumps(_policy_with_bodies_for(SA_USER)))
    try:
        control_plane.restart_apiserver()
        mark = _make_requests(control_plane)
        try:
            wait_for(lambda: not _events(control_plane, mark)[1], 10, "the audit events of every request")
        except AssertionError:
            pytest.fail("missing audit events: " + "; ".join(_events(control_plane, mark)[1]))
        events = _events(control_plane, mark)[0]
    finally:
        policy_file.write_text(original)
        _cleanup(control_plane)
    return events


def _events(plane, mark) -> tuple[dict, list[str]]:
    got = plane.requests_since(mark, verbs=None)

    def pick(verb, resource, *, user=SA_USER, name=None, sub="", ns=None, path=None):
        out = [e for e in got if e["verb"] == verb and e["user"]["username"] == user
               and (path is None or e["requestURI"] == path)
               and (resource is None or (e.get("objectRef", {}).get("resource") == resource
                                         and e["objectRef"].get("subresource", "") == sub
                                         and (name is None or e["objectRef"].get("name") == name)
                                         and (ns is None or e["objectRef"].get("namespace") == ns)))]
        return out

    def connect(sub):
        return pick("get", "pods", sub=sub, name="web") + pick("create", "pods", sub=sub, name="web")

    def switched(events):
        out = copy.deepcopy(events)
        for e in out:
            e["responseStatus"] = {"metadata": {}, "code": 101}
        return out

    reads = pick("get", "secrets", name="db")
    alice_read = pick("get", "secrets", name="db", user="alice")
    learned = copy.deepcopy(reads[:1])
    for e in learned:
        for key in ("requestReceivedTimestamp", "stageTimestamp"):
            moved = datetime.fromisoformat(e[key].replace("Z", "+00:00")) - timedelta(days=8)
            e[key] = moved.isoformat().replace("+00:00", "Z")
    denied = pick("list", "pods", user="alice")
    out = {
        "kaudit-pod-exec": (switched(connect("exec")), connect("exec")),
        "kaudit-pod-attach": (switched(connect("attach")), pick("get", "pods", sub="log", name="web")),
        "kaudit-anonymous-allowed": (pick("list", "configmaps", user="system:anonymous"),
                                     pick("get", None, user="system:anonymous", path="/version")),
        "kaudit-privileged-pod": (pick("create", "pods", name="priv"), pick("create", "pods", name="web")),
        "kaudit-host-network-pod": (pick("create", "pods", name="hostnet"), pick("create", "pods", name="web")),
        "kaudit-nodeport-service": (pick("create", "services", name="np"), pick("create", "services", name="cip")),
        "kaudit-cluster-admin-binding": (pick("create", "clusterrolebindings", name="detect-test-grant"),
                                         pick("create", "clusterrolebindings", name="detect-test-view")),
        "kaudit-admission-webhook": (pick("create", "mutatingwebhookconfigurations"),
                                     pick("list", "mutatingwebhookconfigurations")),
        "kaudit-permission-enumeration": (pick("create", "selfsubjectrulesreviews"),
                                          pick("create", "selfsubjectaccessreviews")),
        "kaudit-kube-namespace-workload": (pick("create", "serviceaccounts", ns="kube-system"),
                                           pick("create", "serviceaccounts", ns=NS, name="detect-test-helper")),
        "kaudit-denied-burst": (denied, denied[:10]),
        "kaudit-secret-read-new-identity": (learned + alice_read, learned + reads[1:2]),
    }
    sizes = {"kaudit-pod-exec": 2, "kaudit-pod-attach": 2, "kaudit-denied-burst": 11,
             "kaudit-secret-read-new-identity": 2}
    missing = [f"{rule}: {len(fires)} example event(s), {len(twin)} twin event(s)"
               for rule, (fires, twin) in out.items() if len(fires) != sizes.get(rule, 1) or not twin]
    return out, missing


def test_kubectl_exec_sends_both_verbs_and_the_hollow_node_answers_500(recorded):
    _, twin = recorded["kaudit-pod-exec"]
    assert sorted(e["verb"] for e in twin) == ["create", "get"]  # WebSocket first, then SPDY
    assert {e["responseStatus"]["code"] for e in twin} == {500}


@pytest.mark.parametrize("rule_id", list(ENTRIES))
def test_fires_on_the_real_example_and_not_on_its_twin(recorded, rule_id):
    fires, twin = recorded[rule_id]
    assert run_rule(RULES[rule_id], fires), "fires as the plane recorded it"
    assert run_rule(RULES[rule_id], twin) == []


@pytest.mark.parametrize("profile", PROFILES)
def test_under_each_profile_fires_exactly_when_its_level_is_enough(recorded, profile):
    policy = load_policy(compose_policy(PolicyOptions(profile=profile)).text).policy
    evaluator = Evaluator(policy)
    verdicts = {rule_id: result.verdict for rule_id, result in zip(ENTRIES, check(policy, pack_rules()))}
    for rule_id, (fires, twin) in recorded.items():
        needs = ENTRIES[rule_id].needs
        levels = [evaluator.evaluate_event(e) for e in fires]
        enough = all(d.level != "None" and LEVEL_RANK[d.level] >= LEVEL_RANK[needs]
                     and "ResponseComplete" not in d.omit_stages for d in levels)
        as_written = [r for r in (as_recorded(e, evaluator) for e in fires) if r is not None]
        assert bool(run_rule(RULES[rule_id], as_written)) == enough, (rule_id, [d.level for d in levels])
        assert run_rule(RULES[rule_id], [r for r in (as_recorded(e, evaluator) for e in twin) if r]) == []
        assert verdicts[rule_id] in ((FIRES, PARTLY) if enough else (BLIND, PARTLY)), rule_id

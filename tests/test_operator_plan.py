"""The pure write decisions: drift comparison, hashing, atomic lists, release, user view."""

from __future__ import annotations

import copy
import json

from kaudit.conditions import Condition
from kaudit.reconcile import plan
from kaudit.reconcile.status import render_conditions, status_patch, summarise
from test_reconciler import _merge as merge_patch

OWNER = {"apiVersion": "kaudit.dev/v1alpha1", "kind": "AuditCollection", "metadata": {"name": "c", "uid": "u1"}}
CM = {"apiVersion": "v1", "kind": "ConfigMap",
      "metadata": {"name": "kaudit-c-policy", "namespace": "ns", "labels": {"kaudit.dev/collection": "c"}},
      "data": {"policy.yaml": "x"}}
TOLERATIONS = ("spec", "template", "spec", "tolerations")


def ds(tolerations, annotations=None):
    meta = {"name": "agent", "namespace": "datadog", "resourceVersion": "9"}
    if annotations:
        meta["annotations"] = annotations
    return {"apiVersion": "apps/v1", "kind": "DaemonSet", "metadata": meta,
            "spec": {"template": {"spec": {"tolerations": tolerations}}}}


def test_contains_matches_keyed_lists_by_key_and_ignores_extra_live_items():
    live = {"containers": [{"name": "init"}, {"name": "agent", "env": [{"name": "A", "value": "1"},
                                                                        {"name": "B", "value": "2"}]}]}
    assert plan.contains(live, {"containers": [{"name": "agent", "env": [{"name": "B", "value": "2"}]}]})
    assert not plan.contains(live, {"containers": [{"name": "agent", "env": [{"name": "B", "value": "3"}]}]})
    # Lists without a merge key are compared whole: a missing toleration is drift.
    assert not plan.contains({"t": [{"key": "a"}]}, {"t": [{"key": "a"}, {"key": "b"}]})


def test_converged_object_needs_no_apply_and_edited_or_rehashed_one_does():
    desired = plan.stamp(plan.with_owner(CM, OWNER))
    live = json.loads(json.dumps(desired))
    live["metadata"]["resourceVersion"] = "5"  # server-side additions are not drift
    assert not plan.needs_apply(desired, live)
    live["data"]["policy.yaml"] = "edited"
    assert plan.needs_apply(desired, live)
    assert plan.needs_apply(desired, None)
    # A field kaudit no longer renders is only visible through the hash: it must re-apply to drop it.
    smaller = plan.stamp(plan.with_owner({**CM, "data": {}}, OWNER))
    assert plan.needs_apply(smaller, json.loads(json.dumps(desired)))


def test_plan_prunes_owned_leftovers_and_releases_patched_ones():
    stale_owned = plan.with_owner({**CM, "metadata": {**CM["metadata"], "name": "old"}}, OWNER)
    patched = ds([], {"kaudit.dev/applied-hash": "x"})
    result = plan.plan_writes(owner=OWNER, objects=[CM], patches=[], live_children=[stale_owned, patched],
                              live_targets={})
    assert [b["metadata"]["name"] for b in result.applies] == ["kaudit-c-policy"]
    assert result.deletes == (("v1", "ConfigMap", "ns", "old"),)
    assert result.releases == (patched,)


def test_objects_of_an_earlier_collection_with_the_same_name_are_left_to_the_garbage_collector():
    # Deleting and re-creating a collection gives it a new uid; until the garbage collector runs,
    # the old incarnation's objects still carry the collection label. They are not the user's
    # objects, so there is nothing to release (and no read of them, which RBAC does not grant).
    earlier = {"apiVersion": "kaudit.dev/v1alpha1", "kind": "AuditCollection", "metadata": {"name": "c", "uid": "u0"}}
    leftover = plan.with_owner({**CM, "metadata": {**CM["metadata"], "name": "old"}}, earlier)
    result = plan.plan_writes(owner=OWNER, objects=[CM], patches=[], live_children=[leftover], live_targets={})
    assert result.deletes == () and result.releases == ()


def test_added_tolerations_are_recorded_and_given_back_on_release():
    user = [{"key": "dedicated", "effect": "NoSchedule"}]
    cp = {"key": "node-role.kubernetes.io/control-plane", "operator": "Exists", "effect": "NoSchedule"}
    body = plan.record_added_items(ds(user + [cp]), ds(user))
    recorded = json.loads(body["metadata"]["annotations"][plan.ADDED_ITEMS_ANNOTATION])
    assert recorded == {".spec.template.spec.tolerations": [cp]}
    # Re-rendering against the patched object records the same item (nothing flaps).
    live = ds(user + [cp], body["metadata"]["annotations"])
    again = plan.record_added_items(ds(user + [cp]), live)
    assert again["metadata"]["annotations"][plan.ADDED_ITEMS_ANNOTATION] == body["metadata"]["annotations"][plan.ADDED_ITEMS_ANNOTATION]
    release = plan.release_of(live)
    assert release.restore == {"metadata": {"resourceVersion": "9"},
                               "spec": {"template": {"spec": {"tolerations": user}}}}
    assert release.apply == {"apiVersion": "apps/v1", "kind": "DaemonSet",
                             "metadata": {"name": "agent", "namespace": "datadog"}}


def test_release_without_added_items_is_only_the_empty_apply():
    assert plan.release_of(ds([{"key": "a"}])).restore is None


def test_user_view_strips_fields_only_kaudit_applied():
    live = {
        "apiVersion": "apps/v1", "kind": "DaemonSet",
        "metadata": {"name": "agent", "namespace": "datadog", "labels": {"app": "x", "kaudit.dev/collection": "c"},
                     "managedFields": [
                         {"manager": "helm", "operation": "Update", "fieldsV1": {
                             "f:metadata": {"f:labels": {"f:app": {}}},
                             "f:spec": {"f:template": {"f:spec": {"f:containers": {'k:{"name":"agent"}': {
                                 ".": {}, "f:volumeMounts": {'k:{"mountPath":"/opt/datadog-agent/run"}': {}}}}}}}}},
                         {"manager": "kaudit", "operation": "Apply", "fieldsV1": {
                             "f:metadata": {"f:labels": {"f:kaudit.dev/collection": {}}},
                             "f:spec": {"f:template": {"f:spec": {"f:containers": {'k:{"name":"agent"}': {
                                 ".": {}, "f:volumeMounts": {
                                     'k:{"mountPath":"/etc/datadog-agent/conf.d/kubernetes_audit.d"}': {}}}}}}}}},
                     ]},
        "spec": {"template": {"spec": {"containers": [{"name": "agent", "volumeMounts": [
            {"name": "pointdir", "mountPath": "/opt/datadog-agent/run"},
            {"name": "kaudit", "mountPath": "/etc/datadog-agent/conf.d/kubernetes_audit.d"}]}]}}},
    }
    view = plan.user_view(live)
    assert view["metadata"]["labels"] == {"app": "x"}
    # The user's pointdir mount stays (the renderer must reuse it); kaudit's own mount is gone.
    assert view["spec"]["template"]["spec"]["containers"][0]["volumeMounts"] == [
        {"name": "pointdir", "mountPath": "/opt/datadog-agent/run"}]
    assert live["metadata"]["labels"]["kaudit.dev/collection"] == "c"  # the input is not mutated


def test_status_is_patched_only_when_it_changes_and_transition_time_is_kept():
    conditions = [Condition("PolicyValid", "True", "Valid", "ok"), Condition("AgentConfigured", "True", "Applied", "ok")]
    full = [summarise(conditions), *conditions]
    first = render_conditions(full, previous=[], generation=1, now="T1")
    second = render_conditions(full, previous=first, generation=1, now="T2")
    assert first == second  # nothing changed: same dicts, same lastTransitionTime
    desired = {"observedGeneration": 1, "conditions": second}
    assert status_patch(desired, desired) is None
    flipped = render_conditions([summarise([Condition("PolicyValid", "False", "InvalidPolicy", "bad")])],
                                previous=first, generation=2, now="T3")
    assert flipped[0]["lastTransitionTime"] == "T3" and flipped[0]["reason"] == "InvalidPolicy"
    # Keys kaudit stopped reporting are removed; kopf's own status keys are not touched.
    assert status_patch({"agent": {}, "kopf": {"x": 1}}, {}) == {"status": {"agent": None}}


def test_a_member_gone_from_a_status_object_is_removed_by_the_merge_patch():
    # A JSON merge patch merges objects (RFC 7386): a member of status.eks kaudit no longer reports
    # (the update it waited for is done, the old set-up removed) must be sent as null, or the API
    # server keeps it. Applied the way the API server applies it, the patch gives the desired status.
    live = {"eks": {"logGroup": "/aws/eks/prod/cluster", "updateId": "u-1", "previous": [{"clusterName": "old"}],
                    "nested": {"a": 1, "b": 2}}, "kopf": {"x": 1}}
    desired = {"eks": {"logGroup": "/aws/eks/prod/cluster", "nested": {"a": 1}}}
    patch = status_patch(live, desired)
    assert patch == {"status": {"eks": {"logGroup": "/aws/eks/prod/cluster", "updateId": None, "previous": None,
                                        "nested": {"a": 1, "b": None}}}}
    applied = copy.deepcopy(live)
    merge_patch(applied, patch["status"])  # RFC 7386, as the in-memory storage of the reconciler tests applies it
    assert applied == {**desired, "kopf": {"x": 1}}


# --- fields kaudit sets over another manager's value (Helm 4 applies server-side) ---------------

LOGS_PATH = ("spec", "template", "spec", "containers", "agent", "env", "DD_LOGS_ENABLED", "value")
CP = {"key": "node-role.kubernetes.io/control-plane", "operator": "Exists", "effect": "NoSchedule"}
ENV_ITEM = 'k:{"name":"DD_LOGS_ENABLED"}'


def patched_by_kaudit(helm_owns_value: bool = False) -> dict:
    """A Helm agent after kaudit's forced apply: its managedFields as kube-apiserver 1.36 wrote them."""
    env_fields = {".": {}, "f:name": {}, **({"f:value": {}} if helm_owns_value else {})}
    helm = {"manager": "helm", "operation": "Apply", "fieldsV1": {"f:spec": {"f:template": {"f:spec": {
        "f:containers": {'k:{"name":"agent"}': {".": {}, "f:name": {}, "f:env": {ENV_ITEM: env_fields}}}}}}}}
    kaudit = {"manager": "kaudit", "operation": "Apply", "fieldsV1": {
        "f:metadata": {"f:annotations": {"f:kaudit.dev/replaced-values": {}}},
        "f:spec": {"f:template": {"f:spec": {
            "f:containers": {'k:{"name":"agent"}': {".": {}, "f:name": {}, "f:env": {
                ENV_ITEM: {".": {}, "f:name": {}, "f:value": {}}}}},
            "f:tolerations": {}}}}}}
    annotations = {plan.REPLACED_VALUES_ANNOTATION: json.dumps([[list(LOGS_PATH), "false"]]),
                   plan.ADDED_ITEMS_ANNOTATION: json.dumps({".spec.template.spec.tolerations": [CP]})}
    return {"apiVersion": "apps/v1", "kind": "DaemonSet",
            "metadata": {"name": "agent", "namespace": "datadog", "resourceVersion": "12",
                         "annotations": annotations, "managedFields": [helm, kaudit]},
            "spec": {"template": {"spec": {"containers": [{"name": "agent", "env": [
                {"name": "DD_LOGS_ENABLED", "value": "true"}]}], "tolerations": [CP]}}}}


def test_yield_drops_exactly_the_overridden_fields_from_kaudits_apply_entry():
    live = patched_by_kaudit()
    operations = plan.yield_patch(live)
    assert operations[:3] == [
        {"op": "test", "path": "/metadata/resourceVersion", "value": "12"},
        {"op": "test", "path": "/metadata/managedFields/1/manager", "value": "kaudit"},
        {"op": "test", "path": "/metadata/managedFields/1/operation", "value": "Apply"}]
    [replace] = operations[3:]
    assert replace["path"] == "/metadata/managedFields/1/fieldsV1"
    spec = replace["value"]["f:spec"]["f:template"]["f:spec"]
    assert "f:tolerations" not in spec  # Helm's `tolerations: null` made it Helm's field too
    assert spec["f:containers"]['k:{"name":"agent"}']["f:env"][ENV_ITEM] == {".": {}, "f:name": {}}
    assert replace["value"]["f:metadata"] == live["metadata"]["managedFields"][1]["fieldsV1"]["f:metadata"]


def test_nothing_to_yield_once_yielded_or_without_kaudits_entry():
    live = patched_by_kaudit()
    kaudit = live["metadata"]["managedFields"][1]["fieldsV1"]["f:spec"]["f:template"]["f:spec"]
    del kaudit["f:tolerations"], kaudit["f:containers"]['k:{"name":"agent"}']["f:env"][ENV_ITEM]["f:value"]
    assert plan.yield_patch(live) is None
    live["metadata"]["managedFields"] = live["metadata"]["managedFields"][:1]
    assert plan.yield_patch(live) is None


def test_user_view_gives_back_the_replaced_value_unless_the_user_set_it_again():
    view = plan.user_view(patched_by_kaudit())
    assert view["spec"]["template"]["spec"]["containers"][0]["env"] == [{"name": "DD_LOGS_ENABLED", "value": "false"}]
    assert plan.REPLACED_VALUES_ANNOTATION not in view["metadata"].get("annotations", {})
    # A helm upgrade with datadog.logs.enabled=true: Helm owns the value again, and it is theirs.
    view = plan.user_view(patched_by_kaudit(helm_owns_value=True))
    assert view["spec"]["template"]["spec"]["containers"][0]["env"] == [{"name": "DD_LOGS_ENABLED", "value": "true"}]


def test_an_atomic_list_another_manager_applied_is_all_the_users():
    live = patched_by_kaudit()
    assert plan.user_items(live, TOLERATIONS) == []  # kaudit's own addition
    live["metadata"]["managedFields"][0]["fieldsV1"]["f:spec"]["f:template"]["f:spec"]["f:tolerations"] = {}
    assert plan.user_items(live, TOLERATIONS) == [CP]  # Helm applied it: the chart's values now hold it


def test_hand_back_puts_the_replaced_value_back_by_index_with_the_names_tested():
    live = patched_by_kaudit()
    release = plan.release_of(live)
    assert release.values == ((LOGS_PATH, "false"),)
    assert plan.restore_values_patch(live, release.values) == [
        {"op": "test", "path": "/spec/template/spec/containers/0/name", "value": "agent"},
        {"op": "test", "path": "/spec/template/spec/containers/0/env/0/name", "value": "DD_LOGS_ENABLED"},
        {"op": "replace", "path": "/spec/template/spec/containers/0/env/0/value", "value": "false"}]
    # The user has set it again since (another manager owns it): their value stays.
    assert plan.restore_values_patch(patched_by_kaudit(helm_owns_value=True), release.values) is None

"""Events about an AuditCollection land where the API server accepts them and kubectl finds them."""

from __future__ import annotations

import datetime

from kaudit.k8s import permissions
from kaudit.k8s.events import build_event

NOW = datetime.datetime(2026, 1, 2, 3, 4, 5, tzinfo=datetime.timezone.utc)
COLLECTION = {"apiVersion": "kaudit.dev/v1alpha1", "kind": "AuditCollection",
              "metadata": {"name": "cluster", "uid": "uid-1", "resourceVersion": "7"}}


def accepted_by_api_server(event: dict) -> bool:
    """The namespace rule of core/v1 Event validation for Events without eventTime (kubernetes
    pkg/apis/core/validation/events.go, legacyValidateEvent): an involvedObject without a namespace
    needs the Event in namespace "" or "default"; otherwise the two namespaces must be equal."""
    involved = event["involvedObject"].get("namespace") or ""
    namespace = event["metadata"].get("namespace") or ""
    if event.get("eventTime"):
        return False  # kaudit writes legacy Events; the other branch is not modelled here
    return namespace in ("", "default") if not involved else namespace == involved


def found_by_kubectl_describe(event: dict, obj: dict) -> bool:
    """kubectl describe searches Events in all namespaces (the object's namespace, "" here) with
    the field selector involvedObject.name/namespace/kind/uid of the object (kubectl's
    describe.searchEvents and the core/v1 Events GetFieldSelector)."""
    ref = event["involvedObject"]
    meta = obj["metadata"]
    return (ref.get("name") == meta["name"] and (ref.get("namespace") or "") == (meta.get("namespace") or "")
            and ref.get("kind") == obj["kind"] and ref.get("uid") == meta["uid"])


def test_event_about_a_cluster_scoped_collection_is_created_in_default():
    event = build_event(COLLECTION, type_="Normal", reason="Applied", message="Applied x.", now=NOW)
    assert event["metadata"]["namespace"] == "default"
    assert "namespace" not in event["involvedObject"]
    assert accepted_by_api_server(event)
    assert found_by_kubectl_describe(event, COLLECTION)


def test_the_operator_namespace_would_be_refused():
    # What kaudit did before: the Event in its own namespace. The API server answers 422.
    event = build_event(COLLECTION, type_="Normal", reason="Applied", message="m", now=NOW)
    event["metadata"]["namespace"] = "kaudit-system"
    assert not accepted_by_api_server(event)


def test_event_about_a_namespaced_object_stays_in_its_namespace():
    obj = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c", "namespace": "ops", "uid": "u"}}
    event = build_event(obj, type_="Warning", reason="X", message="m", now=NOW)
    assert event["metadata"]["namespace"] == "ops" == event["involvedObject"]["namespace"]
    assert accepted_by_api_server(event) and found_by_kubectl_describe(event, obj)


def test_rbac_table_grants_event_creation_where_events_are_posted():
    # kaudit's Events: "default". kopf's own (handler failures) about a cluster-scoped object: the
    # namespace of its credentials (kopf's login_with_service_account reads the pod's namespace),
    # with involvedObject.namespace set to it, which the rule above accepts.
    scopes = {p.scope for p in permissions.PERMISSIONS if p.resource == "events"}
    assert scopes == {permissions.EVENTS_NAMESPACE, permissions.OPERATOR_NAMESPACE}
    assert permissions.scope_of_namespace("default", "kaudit-system") == permissions.EVENTS_NAMESPACE
    assert permissions.covers("", "events", "create", permissions.EVENTS_NAMESPACE)
    assert not permissions.covers("", "events", "patch", permissions.EVENTS_NAMESPACE)
    kopf_style = {"metadata": {"namespace": "kaudit-system"},
                  "involvedObject": {"kind": "AuditCollection", "name": "c", "namespace": "kaudit-system"}}
    assert accepted_by_api_server(kopf_style)

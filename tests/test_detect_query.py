"""The Datadog log search syntax kaudit evaluates, on audit events after Datadog's remapping.

Expected results follow Datadog's "Log Search Syntax" page (cited in docs/detection.md): attribute
search is case sensitive, wildcards match the whole value outside quotes and are literal inside,
ranges are inclusive, an array matches when any element does, AND is implied between terms.
"""

from __future__ import annotations

import pytest

from kaudit.detect.query import compile_text, parse_query

EVENT = {
    "kind": "Event", "verb": "create", "requestURI": "/api/v1/namespaces/shop/pods/web/exec?command=sh",
    "user": {"username": "alice@example.com", "groups": ["dev", "system:authenticated"]},
    "objectRef": {"resource": "pods", "namespace": "shop", "name": "web", "subresource": "exec"},
    "responseStatus": {"code": 101},
    "annotations": {"authorization.k8s.io/decision": "allow"},
    "requestObject": {"spec": {"hostNetwork": True, "containers": [
        {"name": "a"}, {"name": "b", "securityContext": {"privileged": True}}]}},
}


def matches(query: str, event: dict = EVENT) -> bool:
    return compile_text(query).match(event)


@pytest.mark.parametrize("query, expected", [
    # the four remapped fields, and the paths kept as they are
    ("@http.method:create", True),
    ("@http.status_code:101", True),
    ("@usr.name:alice@example.com", True),
    ("@http.url_details.path:/api/v1/namespaces/shop/pods/web/exec", True),  # without the query string
    ("@objectRef.resource:pods", True),
    # a moved field is gone once the pipeline ran
    ("@verb:create", False),
    ("@user.username:*", False),
    ("@user.groups:dev", True),  # the rest of user stays
    # case sensitivity of attribute values
    ("@objectRef.resource:Pods", False),
    # wildcards: whole value, * any run, ? one character
    ("@objectRef.namespace:sh*", True),
    ("@objectRef.namespace:*op", True),
    ("@objectRef.namespace:h*", False),
    ("@objectRef.namespace:sho?", True),
    ("@objectRef.namespace:sh?", False),
    # quoted: exact, wildcards literal
    ('@objectRef.namespace:"shop"', True),
    ('@objectRef.namespace:"sh*"', False),
    # existence and its negation
    ("@objectRef.subresource:*", True),
    ("-@objectRef.apiGroup:*", True),
    # ranges and comparisons on numbers
    ("@http.status_code:[101 TO 299]", True),
    ("@http.status_code:[102 TO *]", False),
    ("@http.status_code:>=101", True),
    ("@http.status_code:>101", False),
    ("@http.status_code:<200", True),
    # booleans, arrays (any element), keys holding dots
    ("@requestObject.spec.hostNetwork:true", True),
    ("@requestObject.spec.containers.securityContext.privileged:true", True),
    ("@requestObject.spec.containers.name:b", True),
    ("@annotations.authorization.k8s.io/decision:allow", True),
    # boolean structure: implicit AND, OR, NOT, -, groups of values, precedence
    ("@http.method:create @objectRef.resource:secrets", False),
    ("@http.method:create AND @objectRef.resource:pods", True),
    ("@objectRef.resource:secrets OR @objectRef.resource:pods", True),
    ("NOT @objectRef.resource:pods", False),
    ("@http.method:(get OR create)", True),
    ("@http.method:(get OR list)", False),
    ("@objectRef.resource:secrets OR @http.method:create @objectRef.namespace:other", False),  # AND binds tighter
    ("(@objectRef.resource:secrets OR @http.method:create) @objectRef.namespace:shop", True),
    ("-(@objectRef.resource:pods @http.method:create)", False),
    # tags: source is kubernetes.audit for these logs
    ("source:kubernetes.audit @objectRef.resource:pods", True),
    ("source:cloudtrail", False),
    ("*", True),
    # escapes
    (r"@usr.name:alice\@example.com", True),
    (r"@annotations.authorization.k8s.io/decision:al\low", True),
])
def test_query_semantics(query, expected):
    assert matches(query) is expected


def test_escaped_colon_matches_a_colon_and_a_wildcard_still_works():
    event = dict(EVENT, user={"username": "system:serviceaccount:kube-system:job-controller"})
    assert matches(r"@usr.name:system\:serviceaccount\:kube-system\:*", event)
    assert not matches(r"@usr.name:system\:node\:*", event)


def test_a_number_term_compares_numbers_by_value_and_a_pattern_reads_them_as_text():
    assert matches("@http.status_code:101.0")
    assert not matches("@http.status_code:10*2")
    assert matches("@http.status_code:1*")  # a pattern reads the number as text


@pytest.mark.parametrize("query, column, words", [
    ("@a:b c", 6, "free-text"),
    ("@a:b and @c:d", 6, "upper case"),
    ("@a:{1 TO 2}", 4, "exclusive"),
    ("@a:x:y", 5, "unescaped ':'"),
    ("@a:(b OR", 9, "missing"),
    ("(@a:b", 1, "unclosed '('"),
    ("@a:b)", 5, "unexpected ')'"),
    ("@a:[1 TO x]", 4, "not a number"),
    ("@a:[1 2]", 4, "[LOW TO HIGH]"),
    ("@a:>x", 4, "not a number"),
    ("*:hello", 1, "full-text"),
    ("@a:", 4, "value is missing"),
    ("@a: b", 4, "value is missing"),
    ("- @a:b", 1, "'-' must be followed"),
    ('@a:"open', 4, "unclosed"),
    ("CIDR(@network.client.ip,13.0.0.0/8)", 1, "CIDR"),
])
def test_unsupported_syntax_is_an_error_naming_the_column(query, column, words):
    with pytest.raises(ValueError) as info:
        parse_query(query)
    assert str(info.value).startswith(f"column {column}: ")
    assert words in str(info.value)


def test_empty_query_is_an_error():
    with pytest.raises(ValueError, match="empty"):
        parse_query("   ")


def test_other_tags_are_answered_from_the_tags_given():
    tags = {"source": ("kubernetes.audit",), "kube_cluster_name": ("prod",)}
    assert compile_text("kube_cluster_name:prod @http.method:create", tags).match(EVENT)
    assert not compile_text("kube_cluster_name:staging", tags).match(EVENT)
    assert not compile_text("kube_cluster_name:prod").match(EVENT)  # not a tag of these logs

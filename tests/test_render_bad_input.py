"""Wrongly typed input anywhere in an AuditCollection or in an --existing object is a user error
(KauditError: one line per problem, exit 1), never an exception from deep inside the renderer."""

from __future__ import annotations

import copy
from typing import Any, Iterator

import pytest

from kaudit.errors import InvalidInput, KauditError
from kaudit.render import render
from render_support import DATADOG_AGENT, EXAMPLES, HELM_DAEMONSET, daemonset_mode, datadog_agent, datadogagent_mode, \
    helm_daemonset, load_one

# Values of the wrong JSON type for nearly every field: a number, a list holding null, an object.
WRONG_VALUES = (5, [None], {"unexpected": 1})


def field_paths(node: Any, path: tuple = ()) -> Iterator[tuple]:
    if path:
        yield path
    if isinstance(node, dict):
        for key, value in node.items():
            yield from field_paths(value, path + (key,))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from field_paths(value, path + (i,))


def replaced(document: Any, path: tuple, value: Any) -> Any:
    result = copy.deepcopy(document)
    node = result
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    return result


def internal_errors(make_inputs) -> list[str]:
    """Render every variant; list those that fail with anything but a KauditError."""
    failures = []
    for label, resource, existing in make_inputs():
        try:
            render(resource, existing=existing)
        except KauditError:
            pass
        except Exception as exc:  # noqa: BLE001 - this is what the test looks for
            failures.append(f"{label}: {type(exc).__name__}: {exc}")
    return failures


@pytest.mark.parametrize("mode, live", [(daemonset_mode, helm_daemonset), (datadogagent_mode, datadog_agent)],
                         ids=["DaemonSet", "DatadogAgent"])
def test_every_field_of_the_existing_object_wrongly_typed(mode, live):
    def inputs():
        target = live()
        for path in field_paths(target):
            for value in WRONG_VALUES:
                yield f"{path}={value!r}", mode(), [replaced(target, path, value)]

    assert internal_errors(inputs) == []


@pytest.mark.parametrize("example", sorted(EXAMPLES.glob("*.yaml")), ids=lambda p: p.name)
def test_every_field_of_an_example_wrongly_typed(example):
    existing = {"daemonset.yaml": [load_one(HELM_DAEMONSET)], "datadogagent.yaml": [load_one(DATADOG_AGENT)]}
    resource = load_one(example)

    def inputs():
        for path in field_paths(resource):
            for value in WRONG_VALUES + ("text", None, True):
                yield f"{path}={value!r}", replaced(resource, path, value), existing.get(example.name, [])

    assert internal_errors(inputs) == []


def test_a_wrongly_typed_existing_field_is_named_by_its_path():
    target = replaced(helm_daemonset(), ("spec", "template", "spec", "containers", 0, "env"), "DD_LOGS_ENABLED=true")
    with pytest.raises(InvalidInput) as caught:
        render(daemonset_mode(), existing=[target])
    [error] = caught.value.errors
    assert str(error) == ("the existing DaemonSet datadog/datadog-agent: spec.template.spec.containers[0].env: "
                          "Invalid value: expected a list, got a string")

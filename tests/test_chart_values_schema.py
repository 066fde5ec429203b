"""values.schema.json turns bad values into a clear `helm install` error instead of a broken release."""

from __future__ import annotations

import json

import jsonschema
import pytest
import yaml

from helmtools import CHART, helm, k8s_tools, write_values  # noqa: F401  (fixtures)

# (values, text helm must print: the JSON pointer of the offending value and what is wrong).
# The message format is helm 4's ("at '/path': ...", checked by hand with this helm binary).
BAD_VALUES = {
    "wrong type": ({"replicaCount": "two"}, "at '/replicaCount': got string, want integer"),
    "unknown top-level key": ({"replicas": 2}, "additional properties 'replicas' not allowed"),
    "misspelt nested key": ({"image": {"tga": "1.0"}}, "at '/image': additional properties 'tga' not allowed"),
    "bad enum": ({"image": {"pullPolicy": "Sometimes"}}, "at '/image/pullPolicy'"),
    "bad namespace name": ({"rbac": {"agentNamespaces": ["Data_Dog"]}}, "at '/rbac/agentNamespaces/0'"),
    "boolean as string": ({"auditCollection": {"create": "yes"}}, "at '/auditCollection/create': got string, want boolean"),
    "port out of range": ({"operator": {"livenessPort": 70000}}, "at '/operator/livenessPort'"),
    "env without a name": ({"extraEnv": [{"value": "x"}]}, "at '/extraEnv/0'"),
    "collection name too long": ({"auditCollection": {"name": "a" * 40}}, "at '/auditCollection/name'"),
}


@pytest.mark.parametrize("case", sorted(BAD_VALUES))
def test_bad_values_fail_helm_with_the_path(helm, tmp_path, case):
    values, expected = BAD_VALUES[case]
    done = helm.run("template", "kaudit", str(CHART), "-f", str(write_values(tmp_path, values)), check=False)
    assert done.returncode != 0, f"helm accepted {values}"
    assert "don't meet the specifications of the schema" in done.stderr
    assert expected in done.stderr


def test_schema_accepts_the_defaults_and_is_closed():
    schema = json.loads((CHART / "values.schema.json").read_text())
    jsonschema.Draft7Validator.check_schema(schema)
    jsonschema.validate(yaml.safe_load((CHART / "values.yaml").read_text()), schema)

    # Every object the chart interprets itself is closed, so a typo anywhere is an error. Objects
    # passed through to Kubernetes whole (securityContext, affinity...) stay open: the API server
    # validates them with its own, version-specific schema.
    def closed_objects(node: dict, path: str = "") -> list[str]:
        open_paths = []
        if node.get("type") == "object" and "properties" in node and node.get("additionalProperties") is not False:
            open_paths.append(path or "/")
        for key, child in node.get("properties", {}).items():
            open_paths += closed_objects(child, f"{path}/{key}")
        if isinstance(node.get("items"), dict):
            open_paths += closed_objects(node["items"], f"{path}/items")
        return open_paths

    assert closed_objects(schema) == []

"""Every YAML snippet in the install and GitOps docs parses, and chart values shown there are valid."""

from __future__ import annotations

import json
import re

import jsonschema
import pytest
import yaml

from helmtools import CHART, REPO

DOCS = [REPO / "docs" / "gitops.md", REPO / "docs" / "install.md"]


def yaml_blocks():
    for doc in DOCS:
        for index, block in enumerate(re.findall(r"```yaml\n(.*?)```", doc.read_text(), flags=re.S)):
            yield pytest.param(block, id=f"{doc.name}#{index}")


@pytest.mark.parametrize("block", list(yaml_blocks()))
def test_yaml_snippet_parses(block):
    documents = [d for d in yaml.safe_load_all(block) if d is not None]
    assert documents and all(isinstance(d, dict) for d in documents)


def test_chart_values_in_the_docs_pass_the_values_schema():
    schema = json.loads((CHART / "values.schema.json").read_text())
    found = 0
    for block in yaml_blocks():
        for doc in yaml.safe_load_all(block.values[0]):
            if not isinstance(doc, dict):
                continue
            values = doc.get("spec", {}).get("values") if doc.get("kind") == "HelmRelease" else \
                ((doc.get("spec") or {}).get("source") or {}).get("helm", {}).get("valuesObject")
            if values is not None:
                jsonschema.validate(values, schema)
                found += 1
    assert found == 2  # the Argo CD Application and the Flux HelmRelease

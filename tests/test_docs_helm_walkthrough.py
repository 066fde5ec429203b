"""The `kaudit render` output quoted in the Helm walk-through of README.md and docs/api.md is what
kaudit prints today for the chart's default agent as `helm install` leaves it, so the docs cannot rot.

The walk-through was captured on a real API server from `kubectl get daemonset -o yaml`; the
committed fixture is `helm template` output, which lacks only the two annotations Helm adds at install.
"""

from __future__ import annotations

import re
import subprocess
import sys

import pytest
import yaml

from render_support import EXAMPLES, HELM_DAEMONSET, ROOT

DOCUMENTS = ("README.md", "docs/api.md")


def quoted_render_lines(text: str) -> list[str]:
    """The `# ...` lines after `$ kaudit render` in the text blocks, up to the next command."""
    lines: list[str] = []
    for block in re.findall(r"```text\n(.*?)```", text, flags=re.S):
        inside = False
        for line in block.splitlines():
            line = line.strip()
            if line.startswith("$ "):
                inside = line.startswith("$ kaudit render")
            elif inside and line.startswith("#"):
                lines.append(line)
    return lines


@pytest.fixture(scope="module")
def rendered(tmp_path_factory) -> str:
    installed = yaml.safe_load(HELM_DAEMONSET.read_text())
    installed["metadata"]["annotations"] = {"meta.helm.sh/release-name": "datadog-agent",
                                            "meta.helm.sh/release-namespace": "datadog"}
    path = tmp_path_factory.mktemp("walkthrough") / "ds.yaml"
    path.write_text(yaml.safe_dump(installed))
    done = subprocess.run([sys.executable, "-m", "kaudit", "render", "-f", str(EXAMPLES / "daemonset.yaml"),
                           "--existing", str(path)], capture_output=True, text=True, cwd=ROOT, check=True)
    return done.stdout


@pytest.mark.parametrize("document", DOCUMENTS)
def test_quoted_render_output_is_real(document, rendered):
    quoted = quoted_render_lines((ROOT / document).read_text())
    assert len(quoted) >= 10, f"{document}: no kaudit render output quoted"
    actual = [line.strip() for line in rendered.splitlines()]
    missing = [line for line in quoted if line not in actual]
    assert missing == [], f"{document} quotes lines kaudit render does not print: {missing}"

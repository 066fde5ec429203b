"""Text forms of a :class:`Rendered`: multi-document YAML with a comment header, or a JSON List."""

from __future__ import annotations

import json
import textwrap
from typing import Any, Iterable

import yaml

from kaudit.render.result import Rendered


def _yaml() -> tuple[Any, Any]:
    dumper = getattr(yaml, "CSafeDumper", yaml.SafeDumper)

    class Dumper(dumper):  # type: ignore[misc, valid-type]
        pass

    def text(representer: Any, value: str) -> Any:
        # Files inside ConfigMaps (the policy, conf.yaml) read best as literal blocks.
        style = "|" if "\n" in value else None
        return representer.represent_scalar("tag:yaml.org,2002:str", value, style=style)

    Dumper.add_representer(str, text)
    return yaml, Dumper


def _comment(lines: list[str]) -> list[str]:
    return [f"# {line}".rstrip() for line in lines]


def header_lines(rendered: Rendered, title: str, static_pod: str = "") -> list[str]:
    lines = [title, "", "kube-apiserver flags (every control-plane node):"]
    lines += [f"  {flag}" for flag in rendered.api_server_flags]
    if static_pod:
        lines += ["", "kube-apiserver static pod (kubeadm: /etc/kubernetes/manifests/kube-apiserver.yaml),",
                  "merge into the kube-apiserver container and the pod's volumes:"]
        lines += [f"  {line}" for line in static_pod.rstrip("\n").splitlines()]
    lines += ["", "Next steps:"]
    lines += _bullets(rendered.next_steps)
    if rendered.warnings:
        lines += ["", "Warnings:"]
        lines += _bullets(str(w) for w in rendered.warnings)
    return lines


def _bullets(items: Iterable[str]) -> list[str]:
    lines: list[str] = []
    for item in items:
        lines += textwrap.wrap(item, width=96, initial_indent="  - ", subsequent_indent="    ",
                               break_long_words=False, break_on_hyphens=False)
    return lines


def to_yaml(rendered: Rendered, title: str, static_pod: str = "") -> str:
    yaml, dumper = _yaml()
    parts = ["\n".join(_comment(header_lines(rendered, title, static_pod))) + "\n"]
    for obj in rendered.objects:
        parts.append("---\n" + yaml.dump(obj, Dumper=dumper, sort_keys=False, default_flow_style=False,
                                         allow_unicode=True, width=120))
    for body in rendered.patches:
        meta = body["metadata"]
        note = _comment([
            f"Server-side apply body for the existing {body['kind']} {meta['namespace']}/{meta['name']}: it names",
            "only what kaudit adds. Apply with: kubectl apply --server-side --field-manager=kaudit -f FILE",
        ])
        parts.append("---\n" + "\n".join(note) + "\n"
                     + yaml.dump(body, Dumper=dumper, sort_keys=False, default_flow_style=False,
                                 allow_unicode=True, width=120))
    return "".join(parts)


def to_json(rendered: Rendered) -> str:
    document = {
        "apiVersion": "v1",
        "kind": "List",
        "items": list(rendered.objects) + list(rendered.patches),
    }
    return json.dumps(document, indent=2, sort_keys=False, ensure_ascii=False) + "\n"

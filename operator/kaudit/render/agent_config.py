"""The agent's log configuration (conf.yaml) and the ConfigMap that carries it."""

from __future__ import annotations

from functools import lru_cache
from typing import Any

import jinja2

from kaudit.api.spec import AuditCollection
from kaudit.render.common import AGENT_CONFIG_KEY, CONFIG_HASH_ANNOTATION, metadata, object_name, sha256_hex

COMPONENT = "agent-config"
TEMPLATE = "kubernetes_audit.conf.yaml.j2"


@lru_cache(maxsize=1)
def _environment() -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.PackageLoader("kaudit.render", "templates"),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        autoescape=False,
    )


def agent_config_text(collection: AuditCollection) -> str:
    """conf.yaml for the agent's kubernetes_audit.d directory."""
    template = _environment().get_template(TEMPLATE)
    text: str = template.render(
        collection=collection.name,
        log_file=collection.api_server.log_file,
        source=collection.logs.source,
        service=collection.logs.service,
        tags=list(collection.logs.tags),
    )
    return text if text.endswith("\n") else text + "\n"


def agent_config_name(collection: AuditCollection) -> str:
    return object_name(collection.name, COMPONENT)


def agent_config_map(collection: AuditCollection, text: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": metadata(
            agent_config_name(collection), collection.agent.namespace, collection.name, COMPONENT,
            annotations={CONFIG_HASH_ANNOTATION: sha256_hex(text)},
        ),
        "data": {AGENT_CONFIG_KEY: text},
    }

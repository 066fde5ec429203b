"""The AuditCollection API: typed spec, defaults and validation (see :mod:`kaudit.api.spec`)."""

from kaudit.api.spec import (
    AGENT_MODES,
    API_GROUP,
    API_VERSION,
    KIND,
    AgentSpec,
    ApiServerSpec,
    AuditCollection,
    LogsSpec,
    ManagedAgentSpec,
    PolicySpec,
    parse_collection,
)

__all__ = [
    "AGENT_MODES",
    "API_GROUP",
    "API_VERSION",
    "KIND",
    "AgentSpec",
    "ApiServerSpec",
    "AuditCollection",
    "LogsSpec",
    "ManagedAgentSpec",
    "PolicySpec",
    "parse_collection",
]

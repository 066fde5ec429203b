"""The AuditCollection spec as typed, defaulted, validated values.

:func:`parse_collection` is the only way in: it takes the resource as a plain dict (what
``kubectl get -o yaml`` or a file gives), applies the same defaults as the CRD, and reports
every problem at once as :class:`~kaudit.errors.FieldError` values naming ``spec....`` paths.
Unknown fields are errors: a misspelt key must not silently fall back to a default.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable

from kaudit import __version__
from kaudit.documents import wrong_kind
from kaudit.errors import FieldError, InvalidInput, did_you_mean
from kaudit.k8s.quantity import parse_quantity
from kaudit.policy.document import FIXED_PROFILES, PolicyOptions, SelfAudit
from kaudit.policy.document import PROFILES as POLICY_PROFILES
from kaudit.policy.model import GROUP_RESOURCES_FIELDS, RULE_FIELDS, STAGES

if TYPE_CHECKING:  # imported where a spec names platform EKS: kaudit render's cold start does not pay for it
    from kaudit.platforms.eks.spec import EksSpec

API_GROUP = "kaudit.dev"
API_VERSION = f"{API_GROUP}/v1alpha1"
KIND = "AuditCollection"

PLATFORMS = ("SelfManaged", "EKS", "GKE", "AKS")
AGENT_MODES = ("Managed", "DaemonSet", "DatadogAgent", "None")
# The profiles spec.policy.profile may name: a platform's own fixed policy (EKS) is that platform's
# to apply, not one kaudit composes and installs.
PROFILES = tuple(profile for profile in POLICY_PROFILES if profile not in FIXED_PROFILES)
TAINT_EFFECTS = ("NoSchedule", "PreferNoSchedule", "NoExecute")
TOLERATION_OPERATORS = ("Exists", "Equal")

# Pinned to the agent release the Datadog Helm chart ships by default at the time of writing
# (agents.image.tag); no registry host, so the cluster's default registry or mirror applies.
DEFAULT_AGENT_IMAGE = "datadog/agent:7.81.1"
DEFAULT_INSTALLER_IMAGE = f"kaudit/kaudit:{__version__}"

# The node-side policy installer's component name: its objects are kaudit-<name>-policy-installer,
# its Leases carry it, and it is the longest suffix kaudit appends to a collection name; keeping the
# name short enough keeps every owned object's name a DNS label (<= 63 characters).
INSTALLER_COMPONENT = "policy-installer"
_LONGEST_NAME_AFFIXES = len("kaudit-") + len(f"-{INSTALLER_COMPONENT}")
MAX_COLLECTION_NAME = 63 - _LONGEST_NAME_AFFIXES

_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_CONFIG_KEY = re.compile(r"^[-._a-zA-Z0-9]+$")
_MINOR_VERSION = re.compile(r"^1\.[0-9]+$")
_LABEL_NAME = re.compile(r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?"
                         r"[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$")
_LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
_SITE = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)+$")


# spec.policy is what the policy engine composes from: one type, so no hand mapping between them.
# The parser fills its kubernetes_version from spec.apiServer and its self_audit (None when
# spec.policy.auditKaudit is false); the renderer names the real self-audit objects.
PolicySpec = PolicyOptions


@dataclass(frozen=True)
class ApiServerSpec:
    policy_file: str = "/etc/kubernetes/audit-policies/policy.yaml"
    log_file: str = "/var/log/kubernetes/apiserver/audit.log"
    log_max_size_mb: int = 100
    log_max_backups: int = 10
    log_max_age_days: int = 30
    kubernetes_version: str = ""
    install_policy: bool = True

    @property
    def log_dir(self) -> str:
        return self.log_file.rsplit("/", 1)[0] or "/"

    @property
    def policy_dir(self) -> str:
        return self.policy_file.rsplit("/", 1)[0] or "/"


@dataclass(frozen=True)
class DaemonSetRef:
    name: str = "datadog-agent"
    container: str = "agent"


@dataclass(frozen=True)
class DatadogAgentRef:
    name: str = "datadog"


@dataclass(frozen=True)
class SecretKeyRef:
    name: str = "datadog-secret"
    key: str = "api-key"


@dataclass(frozen=True)
class ManagedAgentSpec:
    image: str = DEFAULT_AGENT_IMAGE
    api_key_secret_ref: SecretKeyRef = SecretKeyRef()
    site: str = "datadoghq.com"
    resources: dict[str, Any] | None = None  # None = kaudit's default requests and limits
    node_selector: dict[str, Any] | None = None  # None = control-plane nodes (node affinity, both role labels)
    tolerations: tuple[dict[str, Any], ...] | None = None  # None = control-plane and legacy master NoSchedule
    priority_class_name: str = ""


@dataclass(frozen=True)
class AgentTarget:
    """The user's agent object an AuditCollection adapts (DaemonSet and DatadogAgent modes)."""

    api_group: str
    kind: str
    resource: str  # for kubectl
    name: str
    namespace: str

    @property
    def text(self) -> str:
        return f"{self.kind} {self.namespace}/{self.name}"


@dataclass(frozen=True)
class AgentSpec:
    mode: str = "Managed"
    namespace: str = "datadog"
    daemon_set: DaemonSetRef = DaemonSetRef()
    datadog_agent: DatadogAgentRef = DatadogAgentRef()
    managed: ManagedAgentSpec = ManagedAgentSpec()

    @property
    def target(self) -> AgentTarget | None:
        """The object kaudit patches instead of owning: None in Managed and None modes."""
        if self.mode == "DaemonSet":
            return AgentTarget("apps", "DaemonSet", "daemonset", self.daemon_set.name, self.namespace)
        if self.mode == "DatadogAgent":
            return AgentTarget("datadoghq.com", "DatadogAgent", "datadogagent", self.datadog_agent.name,
                               self.namespace)
        return None


@dataclass(frozen=True)
class LogsSpec:
    source: str = "kubernetes.audit"
    service: str = "audit"
    tags: tuple[str, ...] = ()


DETECTION_MODES = ("Report", "Refuse")
ALL_PACK_RULES = "*"
DEFAULT_DETECTION_RULES_KEY = "rules.json"


@dataclass(frozen=True)
class DetectionRulesRef:
    """A ConfigMap in the operator's namespace holding the user's own detection rules."""

    name: str
    key: str = DEFAULT_DETECTION_RULES_KEY


@dataclass(frozen=True)
class DetectionSpec:
    """``spec.detection``: the Cloud SIEM rules the policy must keep feeding (kaudit.detect.required).
    Pack rule ids are checked against the pack there: the pack is not this package's."""

    mode: str = "Report"  # Report | Refuse
    pack_rules: tuple[str, ...] = (ALL_PACK_RULES,)
    config_map: DetectionRulesRef | None = None

    @property
    def refuses(self) -> bool:
        return self.mode == "Refuse"


@dataclass(frozen=True)
class AuditCollection:
    name: str
    policy: PolicySpec = PolicySpec()
    api_server: ApiServerSpec = ApiServerSpec()
    agent: AgentSpec = AgentSpec()
    logs: LogsSpec = LogsSpec()
    # Where kube-apiserver runs (spec.platform): SelfManaged (kaudit delivers the policy and the
    # agent), or a managed control plane whose provider keeps the audit log (kaudit.platforms).
    platform: str = "SelfManaged"
    eks: EksSpec | None = None  # spec.eks, exactly when platform is EKS

    @property
    def managed_platform(self) -> bool:
        return self.platform != "SelfManaged"
    detection: DetectionSpec | None = None  # absent: no coverage is checked


# ---------------------------------------------------------------------------------------------
# Parsing. A small reader that records problems instead of raising, so one pass reports all.


def _quote(value: Any) -> str:
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict):
        return "(an object)"
    if isinstance(value, list):
        return "(a list)"
    return str(value)


def _type_name(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__


class _Reader:
    def __init__(self) -> None:
        self.errors: list[FieldError] = []

    def fail(self, path: str, message: str) -> None:
        self.errors.append(FieldError(path, message))

    def invalid(self, path: str, value: Any, why: str) -> None:
        self.fail(path, f"Invalid value: {_quote(value)}: {why}")

    def mapping(self, parent: dict[str, Any], key: str, path: str, known: tuple[str, ...]) -> dict[str, Any]:
        """The object at ``parent[key]`` (absent or null = {}); unknown keys reported."""
        value = parent.get(key)
        if value is None:
            return {}
        if not isinstance(value, dict):
            self.fail(path, f"Invalid value: expected an object, got {_type_name(value)}")
            return {}
        self.unknown(value, path, known)
        return value

    def unknown(self, value: dict[str, Any], path: str, known: tuple[str, ...]) -> None:
        for key in sorted(set(value) - set(known), key=str):
            self.fail(f"{path}.{key}", f'unknown field "{key}"{did_you_mean(key, known)}')

    def string(self, obj: dict[str, Any], key: str, path: str, default: str,
               check: Callable[[str], str | None] | None = None) -> str:
        value = obj.get(key, default)
        if value is None:
            return default
        if not isinstance(value, str):
            self.fail(f"{path}.{key}", f"Invalid value: expected a string, got {_type_name(value)}")
            return default
        if check is not None:
            problem = check(value)
            if problem:
                self.invalid(f"{path}.{key}", value, problem)
                return default
        return value

    def enum(self, obj: dict[str, Any], key: str, path: str, default: str, allowed: tuple[str, ...]) -> str:
        value = obj.get(key, default)
        if value is None:
            return default
        if value not in allowed or not isinstance(value, str):
            supported = ", ".join(f'"{a}"' for a in allowed)
            self.fail(f"{path}.{key}", f"Unsupported value: {_quote(value)}: supported values: {supported}")
            return default
        return value

    def boolean(self, obj: dict[str, Any], key: str, path: str, default: bool) -> bool:
        value = obj.get(key, default)
        if value is None:
            return default
        if not isinstance(value, bool):
            self.fail(f"{path}.{key}", f"Invalid value: {_quote(value)}: expected true or false")
            return default
        return value

    def integer(self, obj: dict[str, Any], key: str, path: str, default: int, minimum: int) -> int:
        value = obj.get(key, default)
        if value is None:
            return default
        if isinstance(value, bool) or not isinstance(value, int):
            self.fail(f"{path}.{key}", f"Invalid value: {_quote(value)}: expected an integer")
            return default
        if value < minimum:
            self.invalid(f"{path}.{key}", value, f"must be greater than or equal to {minimum}")
            return default
        return value

    def listing(self, obj: dict[str, Any], key: str, path: str) -> list[Any] | None:
        value = obj.get(key)
        if value is None:
            return None
        if not isinstance(value, list):
            self.fail(f"{path}.{key}", f"Invalid value: expected a list, got {_type_name(value)}")
            return None
        return value

    def string_list(self, obj: dict[str, Any], key: str, path: str, default: tuple[str, ...],
                    check: Callable[[str], str | None] | None = None) -> tuple[str, ...]:
        items = self.listing(obj, key, path)
        if items is None:
            return default
        result = []
        for i, item in enumerate(items):
            item_path = f"{path}.{key}[{i}]"
            if not isinstance(item, str):
                self.fail(item_path, f"Invalid value: expected a string, got {_type_name(item)}")
                continue
            problem = check(item) if check else None
            if problem:
                self.invalid(item_path, item, problem)
                continue
            result.append(item)
        return tuple(result)

    def string_map(self, obj: dict[str, Any], key: str, path: str) -> dict[str, Any] | None:
        value = obj.get(key)
        if value is None:
            return None
        if not isinstance(value, dict):
            self.fail(f"{path}.{key}", f"Invalid value: expected an object, got {_type_name(value)}")
            return None
        for k, v in value.items():
            if not isinstance(v, str):
                self.fail(f"{path}.{key}.{k}", f"Invalid value: expected a string, got {_type_name(v)}")
        return value


# Checks: return a reason the value is wrong, or None.


def _absolute_file(value: str) -> str | None:
    if not value.startswith("/"):
        return "must be an absolute path"
    if value.endswith("/"):
        return "must name a file, not a directory"
    if any(part in (".", "..") for part in value.split("/")):
        return "must not contain '.' or '..' segments"
    if any(c.isspace() or c in "\"'" for c in value) or "//" in value:
        return "must not contain whitespace, quotes or empty segments"
    if value.rsplit("/", 1)[0] == "":
        return "must be in a directory below /, which kaudit mounts into the agent"
    return None


def dns_label_problem(value: str) -> str | None:
    """Why ``value`` is not a DNS label (a namespace or container name), or None."""
    if len(value) > 63 or not _DNS_LABEL.match(value):
        return "must be a DNS label: at most 63 lowercase letters, digits and '-', starting and ending alphanumeric"
    return None


def _dns_subdomain(value: str) -> str | None:
    if len(value) > 253 or not _DNS_SUBDOMAIN.match(value):
        return "must be a DNS subdomain: lowercase letters, digits, '-' and '.', starting and ending alphanumeric"
    return None


def _non_empty_line(value: str) -> str | None:
    if not value.strip():
        return "must not be empty"
    if "\n" in value or "\r" in value:
        return "must be a single line"
    return None


def image_problem(value: str) -> str | None:
    """Why ``value`` cannot be a container image reference, or None."""
    if any(c.isspace() for c in value):
        return "must be a container image reference without whitespace"
    return None


def _site(value: str) -> str | None:
    if not _SITE.match(value):
        return "must be a Datadog site host name such as datadoghq.com or datadoghq.eu"
    return None


def _minor_version(value: str) -> str | None:
    if value and not _MINOR_VERSION.match(value):
        return 'must be empty or a Kubernetes minor version such as "1.33"'
    return None


def _config_key(value: str) -> str | None:
    if not _CONFIG_KEY.match(value) or len(value) > 253:
        return "must consist of alphanumeric characters, '-', '_' or '.'"
    return None


def _tag(value: str) -> str | None:
    if not value.strip() or any(c.isspace() for c in value):
        return "must be a non-empty tag without whitespace, such as env:prod"
    return None


# ---------------------------------------------------------------------------------------------


def parse_collection(resource: Any) -> AuditCollection:
    """Parse and validate an AuditCollection resource; raise InvalidInput listing every problem."""
    r = _Reader()
    if not isinstance(resource, dict):
        raise InvalidInput([FieldError("", f"expected an AuditCollection object, got {_type_name(resource)}")])
    other = wrong_kind(resource, KIND)
    if other is not None:  # one line saying what the document is, not one per field it lacks
        raise InvalidInput([other])
    if resource.get("apiVersion") != API_VERSION:
        r.fail("apiVersion", f"Unsupported value: {_quote(resource.get('apiVersion'))}: supported values: \"{API_VERSION}\"")
    if resource.get("kind") != KIND:
        r.fail("kind", f"Unsupported value: {_quote(resource.get('kind'))}: supported values: \"{KIND}\"")
    top_level = ("apiVersion", "kind", "metadata", "spec", "status")
    for key in sorted(set(resource) - set(top_level), key=str):
        r.fail(str(key), f'unknown field "{key}"{did_you_mean(key, top_level)}')
    raw_metadata = resource.get("metadata")
    # Any metadata key is fine (it is ObjectMeta's), but metadata itself must be an object.
    metadata = r.mapping(resource, "metadata", "metadata", tuple(raw_metadata) if isinstance(raw_metadata, dict) else ())
    name = _parse_name(r, metadata)
    spec = r.mapping(resource, "spec", "spec", ("platform", "eks", "policy", "apiServer", "agent", "logs", "detection"))
    platform = r.enum(spec, "platform", "spec", "SelfManaged", PLATFORMS)
    eks = _parse_eks(r, spec, platform)
    policy = _parse_policy(r, spec)  # problems are reported in the order of the spec's fields
    api_server = _parse_api_server(r, spec)
    agent, logs = _parse_agent(r, spec), _parse_logs(r, spec)
    if platform != "SelfManaged":
        _refuse_node_side(r, platform, {"policy": (policy, (PolicySpec(),)), "apiServer": (api_server, (ApiServerSpec(),)),
                                        "agent": (agent, (AgentSpec(), AgentSpec(mode="None"))),
                                        "logs": (logs, (LogsSpec(),))})
        agent = AgentSpec(mode="None")  # no agent reads the audit log there
    collection = AuditCollection(
        name=name,
        policy=dataclasses.replace(policy, kubernetes_version=api_server.kubernetes_version),
        api_server=api_server,
        agent=agent,
        logs=logs,
        platform=platform,
        eks=eks,
        detection=_parse_detection(r, spec, platform),
    )
    if r.errors:
        raise InvalidInput(r.errors)
    return collection


def _parse_eks(r: _Reader, spec: dict[str, Any], platform: str) -> EksSpec | None:
    from kaudit.platforms.eks.spec import parse_eks  # its regexes are compiled only where EKS is used

    if platform != "EKS":
        if spec.get("eks") is not None:
            r.fail("spec.eks", f"Forbidden: spec.eks applies to platform EKS, not {platform}")
        return None
    try:
        return parse_eks(spec.get("eks"), "spec.eks")
    except InvalidInput as exc:
        r.errors += exc.errors
        return None


# What a managed control plane keeps out of kaudit's hands, and why each node-side part of the
# spec would do nothing there. A part left at its defaults (the CRD fills them in) is fine; one
# that asks for something is refused rather than ignored (docs/eks.md).
_MANAGED_PLATFORM_LIMITS = {
    "policy": "the provider applies its own audit policy, which cannot be changed",
    "apiServer": "kube-apiserver runs on no node of the cluster: there are no flags or files to set",
    "agent": "the audit log is on no node, so no agent reads it: it reaches Datadog through the provider's "
             "logging (omit spec.agent, or set mode: None)",
    "logs": "the audit log reaches Datadog through the provider's logging, not through the Datadog Agent",
}


def _refuse_node_side(r: _Reader, platform: str, parts: dict[str, tuple[Any, tuple[Any, ...]]]) -> None:
    """``parts``: each node-side spec field's parsed value and the values that ask for nothing."""
    for key, (value, harmless) in parts.items():
        if value not in harmless:
            hint = " (what EKS records: 'kaudit policy simulate --profile EKS')" if key == "policy" and \
                platform == "EKS" else ""
            r.fail(f"spec.{key}", f"Forbidden: on platform {platform} {_MANAGED_PLATFORM_LIMITS[key]}{hint}")


def _parse_name(r: _Reader, metadata: dict[str, Any]) -> str:
    name = metadata.get("name")
    if not name:
        r.fail("metadata.name", "Required value: the AuditCollection needs a name")
        return "invalid"
    if not isinstance(name, str) or dns_label_problem(name):
        r.invalid("metadata.name", name, "must be a DNS label (lowercase letters, digits and '-')")
        return "invalid"
    if len(name) > MAX_COLLECTION_NAME:
        r.invalid("metadata.name", name,
                  f"must be at most {MAX_COLLECTION_NAME} characters, so that the names of the objects "
                  f"kaudit creates (kaudit-<name>-policy-installer) stay within 63")
        return "invalid"
    return name


def _parse_policy(r: _Reader, spec: dict[str, Any]) -> PolicySpec:
    path = "spec.policy"
    obj = r.mapping(spec, "policy", path,
                    ("profile", "rules", "omitReadOnly", "omitStages", "omitManagedFields", "auditKaudit"))
    rules = r.listing(obj, "rules", path) or []
    for i, rule in enumerate(rules):
        if not isinstance(rule, dict):
            r.fail(f"{path}.rules[{i}]", f"Invalid value: expected an object, got {_type_name(rule)}")
        else:
            _check_rule_fields(r, rule, f"{path}.rules[{i}]")
    default = PolicySpec()
    return PolicySpec(
        profile=r.enum(obj, "profile", path, default.profile, PROFILES),
        rules=tuple(rule for rule in rules if isinstance(rule, dict)),
        omit_read_only=r.boolean(obj, "omitReadOnly", path, default.omit_read_only),
        omit_stages=_parse_stages(r, obj, path, default.omit_stages),
        omit_managed_fields=r.boolean(obj, "omitManagedFields", path, default.omit_managed_fields),
        self_audit=SelfAudit() if r.boolean(obj, "auditKaudit", path, default.audit_kaudit) else None,
    )


def _check_rule_fields(r: _Reader, rule: dict[str, Any], path: str) -> None:
    """Unknown keys in a custom rule are errors: kube-apiserver would drop them silently, and a
    rule without its misspelt (or misplaced) constraint matches more than its author wrote.
    Everything else about the rule is the policy engine's to check."""
    for key in sorted(set(rule) - RULE_FIELDS, key=str):
        r.fail(f"{path}.{key}", f'unknown field "{key}": kube-apiserver would drop it silently and the rule '
                                f"would match more than written{did_you_mean(key, RULE_FIELDS)}")
    entries = rule.get("resources")
    for j, entry in enumerate(entries if isinstance(entries, list) else ()):
        if not isinstance(entry, dict):
            continue
        for key in sorted(set(entry) - GROUP_RESOURCES_FIELDS, key=str):
            why = ("verbs belongs on the rule, not inside a resources entry; kube-apiserver would drop it and the "
                   "rule would match every verb") if key == "verbs" else \
                "kube-apiserver would drop it silently and the rule would match more than written" + \
                did_you_mean(key, GROUP_RESOURCES_FIELDS)
            r.fail(f"{path}.resources[{j}].{key}", f'unknown field "{key}": {why}')


def _parse_stages(r: _Reader, obj: dict[str, Any], path: str, default: tuple[str, ...]) -> tuple[str, ...]:
    supported = ", ".join(f'"{s}"' for s in STAGES)
    stages = r.string_list(obj, "omitStages", path, default)
    raw = obj.get("omitStages")
    for i, stage in enumerate(raw if isinstance(raw, list) else ()):
        if isinstance(stage, str) and stage not in STAGES:
            r.fail(f"{path}.omitStages[{i}]", f"Unsupported value: {_quote(stage)}: supported values: {supported}")
    stages = tuple(stage for stage in stages if stage in STAGES)
    # kube-apiserver treats the list as a set; keep the user's order, drop repeats.
    return tuple(dict.fromkeys(stages))


def _parse_api_server(r: _Reader, spec: dict[str, Any]) -> ApiServerSpec:
    path = "spec.apiServer"
    obj = r.mapping(spec, "apiServer", path,
                    ("policyFile", "logFile", "logMaxSizeMB", "logMaxBackups", "logMaxAgeDays",
                     "kubernetesVersion", "installPolicy"))
    d = ApiServerSpec()

    def log_file(value: str) -> str | None:
        if value == "-":
            return 'kube-apiserver would write to its standard output ("-"), which no agent can read as a file'
        return _absolute_file(value)

    return ApiServerSpec(
        policy_file=r.string(obj, "policyFile", path, d.policy_file, _absolute_file),
        log_file=r.string(obj, "logFile", path, d.log_file, log_file),
        log_max_size_mb=r.integer(obj, "logMaxSizeMB", path, d.log_max_size_mb, 1),
        log_max_backups=r.integer(obj, "logMaxBackups", path, d.log_max_backups, 0),
        log_max_age_days=r.integer(obj, "logMaxAgeDays", path, d.log_max_age_days, 0),
        kubernetes_version=r.string(obj, "kubernetesVersion", path, d.kubernetes_version, _minor_version),
        install_policy=r.boolean(obj, "installPolicy", path, d.install_policy),
    )


def _parse_agent(r: _Reader, spec: dict[str, Any]) -> AgentSpec:
    path = "spec.agent"
    obj = r.mapping(spec, "agent", path, ("mode", "namespace", "daemonSet", "datadogAgent", "managed"))
    d = AgentSpec()
    ds = r.mapping(obj, "daemonSet", f"{path}.daemonSet", ("name", "container"))
    dda = r.mapping(obj, "datadogAgent", f"{path}.datadogAgent", ("name",))
    return AgentSpec(
        mode=r.enum(obj, "mode", path, d.mode, AGENT_MODES),
        namespace=r.string(obj, "namespace", path, d.namespace, dns_label_problem),
        daemon_set=DaemonSetRef(
            name=r.string(ds, "name", f"{path}.daemonSet", d.daemon_set.name, _dns_subdomain),
            container=r.string(ds, "container", f"{path}.daemonSet", d.daemon_set.container, dns_label_problem),
        ),
        datadog_agent=DatadogAgentRef(
            name=r.string(dda, "name", f"{path}.datadogAgent", d.datadog_agent.name, _dns_subdomain),
        ),
        managed=_parse_managed(r, obj, f"{path}.managed"),
    )


def _parse_managed(r: _Reader, agent: dict[str, Any], path: str) -> ManagedAgentSpec:
    obj = r.mapping(agent, "managed", path,
                    ("image", "apiKeySecretRef", "site", "resources", "nodeSelector", "tolerations",
                     "priorityClassName"))
    d = ManagedAgentSpec()
    secret = r.mapping(obj, "apiKeySecretRef", f"{path}.apiKeySecretRef", ("name", "key"))
    node_selector = r.string_map(obj, "nodeSelector", path)
    if node_selector:
        for key, value in node_selector.items():
            if not isinstance(key, str) or not _LABEL_NAME.match(key):
                r.invalid(f"{path}.nodeSelector", key, "must be a label key such as kubernetes.io/os")
            elif isinstance(value, str) and not _LABEL_VALUE.match(value):
                r.invalid(f"{path}.nodeSelector.{key}", value, "must be a valid label value")
    return ManagedAgentSpec(
        image=r.string(obj, "image", path, d.image, image_problem) or d.image,  # "" = the pinned default
        api_key_secret_ref=SecretKeyRef(
            name=r.string(secret, "name", f"{path}.apiKeySecretRef", d.api_key_secret_ref.name, _dns_subdomain),
            key=r.string(secret, "key", f"{path}.apiKeySecretRef", d.api_key_secret_ref.key, _config_key),
        ),
        site=r.string(obj, "site", path, d.site, _site),
        resources=_parse_resources(r, obj, path),
        node_selector=node_selector or None,
        tolerations=_parse_tolerations(r, obj, path),
        priority_class_name=r.string(obj, "priorityClassName", path, d.priority_class_name,
                                     lambda v: v and _dns_subdomain(v)),
    )


def _parse_resources(r: _Reader, managed: dict[str, Any], path: str) -> dict[str, Any] | None:
    path = f"{path}.resources"
    obj = r.mapping(managed, "resources", path, ("requests", "limits"))
    if not obj:
        return None
    result: dict[str, Any] = {}
    for part in ("requests", "limits"):
        amounts = r.mapping(obj, part, f"{path}.{part}", tuple((obj.get(part) or {}).keys()))
        for resource, amount in amounts.items():
            if (isinstance(amount, bool) or not isinstance(amount, (str, int, float))
                    or parse_quantity(str(amount)) is None):  # the API server would refuse the apply
                r.invalid(f"{path}.{part}.{resource}", amount, "must be a quantity such as 100m or 256Mi")
                continue
            result.setdefault(part, {})[str(resource)] = amount if isinstance(amount, str) else str(amount)
    return result or None


def _parse_tolerations(r: _Reader, managed: dict[str, Any], path: str) -> tuple[dict[str, Any], ...] | None:
    items = r.listing(managed, "tolerations", path)
    if not items:
        return None
    result = []
    for i, item in enumerate(items):
        item_path = f"{path}.tolerations[{i}]"
        if not isinstance(item, dict):
            r.fail(item_path, f"Invalid value: expected an object, got {_type_name(item)}")
            continue
        r.unknown(item, item_path, ("key", "operator", "value", "effect", "tolerationSeconds"))
        toleration: dict[str, Any] = {}
        key = r.string(item, "key", item_path, "")
        operator = r.enum(item, "operator", item_path, "Equal", TOLERATION_OPERATORS)
        value = r.string(item, "value", item_path, "")
        effect = item.get("effect") or ""
        if effect:
            effect = r.enum(item, "effect", item_path, "", TAINT_EFFECTS)
        if key:
            toleration["key"] = key
        toleration["operator"] = operator
        if operator == "Exists" and value:
            r.invalid(f"{item_path}.value", value, 'must be empty when operator is "Exists"')
        if not key and operator != "Exists":
            r.invalid(f"{item_path}.operator", operator, 'must be "Exists" when key is empty')
        if value:
            toleration["value"] = value
        if effect:
            toleration["effect"] = effect
        if "tolerationSeconds" in item:
            seconds = r.integer(item, "tolerationSeconds", item_path, 0, -(2**63))
            if effect != "NoExecute":
                r.invalid(f"{item_path}.effect", effect, 'must be "NoExecute" when tolerationSeconds is set')
            toleration["tolerationSeconds"] = seconds
        result.append(toleration)
    return tuple(result)


def _parse_logs(r: _Reader, spec: dict[str, Any]) -> LogsSpec:
    path = "spec.logs"
    obj = r.mapping(spec, "logs", path, ("source", "service", "tags"))
    d = LogsSpec()
    return LogsSpec(
        source=r.string(obj, "source", path, d.source, _non_empty_line),
        service=r.string(obj, "service", path, d.service, _non_empty_line),
        tags=tuple(dict.fromkeys(r.string_list(obj, "tags", path, d.tags, _tag))),
    )


def _parse_detection(r: _Reader, spec: dict[str, Any], platform: str) -> DetectionSpec | None:
    path = "spec.detection"
    if spec.get("detection") is None:
        return None
    obj = r.mapping(spec, "detection", path, ("mode", "packRules", "configMapRef"))
    d = DetectionSpec()
    pack = r.string_list(obj, "packRules", path, d.pack_rules, lambda v: None if v else "must not be empty")
    ref = None
    if obj.get("configMapRef") is not None:
        where = f"{path}.configMapRef"
        raw = r.mapping(obj, "configMapRef", where, ("name", "key"))
        name = r.string(raw, "name", where, "", _dns_subdomain) if raw.get("name") is not None else ""
        if raw.get("name") is None:
            r.fail(f"{where}.name", "Required value: the ConfigMap holding your detection rules")
        ref = DetectionRulesRef(name, r.string(raw, "key", where, DEFAULT_DETECTION_RULES_KEY, _config_key))
    mode = r.enum(obj, "mode", path, d.mode, DETECTION_MODES)
    if mode == "Refuse" and platform != "SelfManaged":
        # kaudit writes no policy there, so it has no change to refuse: Refuse would promise a guard it cannot keep.
        r.fail(f"{path}.mode", f"Forbidden: on platform {platform} {_MANAGED_PLATFORM_LIMITS['policy']}, so kaudit "
                               "has no policy change to refuse: use Report")
    return DetectionSpec(mode=mode, pack_rules=tuple(dict.fromkeys(pack)), config_map=ref)

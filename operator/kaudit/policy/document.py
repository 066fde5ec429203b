"""The contract between the policy engine and the rest of kaudit.

The renderer, the operator and the installer use only these types and
:func:`kaudit.policy.compose_policy`; everything else in the package is the engine's own business.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from kaudit.errors import FieldError

PROFILES = ("Default", "Datadog", "WriteRequestBodies", "AllRequestBodies", "None", "EKS")

# Profiles that are a managed platform's own policy, which cannot be changed there (name -> whose
# policy it is). They are composed exactly as the platform applies them: no self-audit rules, no
# custom rules, omitReadOnly, omitStages or omitManagedFields of kaudit's, so simulating a log or
# checking detection coverage against one tells what that platform really records.
FIXED_PROFILES = {"EKS": "the policy Amazon EKS applies to its control plane"}


@dataclass(frozen=True)
class SelfAudit:
    """kaudit's own objects, which every composed policy records changes to first (docs/security.md).

    The defaults are what kaudit renders for an AuditCollection named ``cluster`` with the operator
    in ``kaudit-system`` (tests/test_policy_self_audit.py keeps them in step with the renderer's
    names); ``kaudit render`` and the operator pass the real ones.
    """

    namespace: str = "kaudit-system"  # the operator namespace: policy ConfigMap, installer, RBAC
    policy_config_map: str = "kaudit-cluster-policy"  # the ConfigMap the installers read


@dataclass(frozen=True)
class PolicyOptions:
    """What ``spec.policy`` (plus ``spec.apiServer.kubernetesVersion``) asks for; the API's
    ``PolicySpec`` is this type."""

    profile: str = "Default"
    rules: tuple[dict[str, Any], ...] = ()  # audit.k8s.io/v1 PolicyRule objects as the user wrote them
    omit_read_only: bool = False
    omit_stages: tuple[str, ...] = ("RequestReceived",)
    omit_managed_fields: bool = True
    kubernetes_version: str = ""  # target minor such as "1.33"; "" = latest known
    # The self-audit rules that come before every other rule; None (spec.policy.auditKaudit: false)
    # leaves them out.
    self_audit: SelfAudit | None = SelfAudit()

    @property
    def audit_kaudit(self) -> bool:
        """spec.policy.auditKaudit: whether the self-audit rules come first."""
        return self.self_audit is not None


@dataclass(frozen=True)
class PolicyDocument:
    """A composed policy, ready to be written to the file kube-apiserver reads."""

    text: str  # the whole file: a header comment, then the YAML policy
    hash: str  # sha256 hex of the file's content after its header (see content_hash)
    rule_count: int
    warnings: tuple[FieldError, ...] = field(default_factory=tuple)  # lints; paths relative to the policy

    @property
    def short_hash(self) -> str:
        return self.hash[:12]


def split_header(text: str) -> tuple[str, str]:
    """(header, content): the header is the run of comment lines the file starts with."""
    lines = text.splitlines(keepends=True)
    count = 0
    while count < len(lines) and lines[count].startswith("#"):
        count += 1
    return "".join(lines[:count]), "".join(lines[count:])


def content_hash(text: str) -> str:
    """sha256 hex of a policy file's content after its header (what PolicyDocument.hash holds)."""
    import hashlib  # here: `kaudit --help` reads PROFILES from this module, and hashlib costs it 8 %

    return hashlib.sha256(split_header(text)[1].encode("utf-8")).hexdigest()

"""The audit-policy engine: kube-apiserver's loading, validation and rule evaluation, plus
kaudit's profiles and lints.

Public API (everything else is internal):

- ``compose_policy(options: PolicyOptions) -> PolicyDocument`` — the file for ``spec.policy``;
  raises ``InvalidInput`` with paths relative to ``spec.policy``.
- ``content_hash(text) -> str`` — the hash ``PolicyDocument.hash`` holds, from a whole file.
- ``load_policy(text_or_dict, kubernetes_version="") -> LoadResult`` — kube-apiserver's load:
  ``.policy`` (or None), ``.errors`` (FieldErrors), ``.unknown_fields``.
- ``validate_policy(policy, kubernetes_version="") -> list[FieldError]``.
- ``lint_policy(policy, unknown_fields=(), kubernetes_version="") -> list[FieldError]``.
- ``kaudit.policy.evaluate`` — the rule evaluator (see its docstring).
"""

from kaudit.policy.compose import compose_policy, content_hash
from kaudit.policy.document import PROFILES, PolicyDocument, PolicyOptions
from kaudit.policy.lint import lint_policy
from kaudit.policy.loader import LoadResult, load_policy
from kaudit.policy.model import Policy, PolicyRule, GroupResources
from kaudit.policy.validation import validate_policy

__all__ = [
    "PROFILES", "GroupResources", "LoadResult", "Policy", "PolicyDocument", "PolicyOptions", "PolicyRule",
    "compose_policy", "content_hash", "lint_policy", "load_policy", "validate_policy",
]

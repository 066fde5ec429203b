"""The audit-policy engine: kube-apiserver's loading, validation and rule evaluation, plus
kaudit's profiles and lints.

Public API (everything else is internal):

- ``compose_policy(options: PolicyOptions) -> PolicyDocument`` — the file for ``spec.policy``;
  raises ``InvalidInput`` with paths relative to ``spec.policy``.
- ``content_hash(text) -> str`` — the hash ``PolicyDocument.hash`` holds, from a whole file.
- ``load_policy(text_or_dict, kubernetes_version="") -> LoadResult`` — kube-apiserver's load:
  ``.policy`` (or None), ``.errors`` (FieldErrors), ``.unknown_fields``.
- ``validate_policy(policy, kubernetes_version="") -> list[FieldError]``.
- ``lint_policy(policy, unknown_fields=(), kubernetes_version="") -> list[FieldError]``;
  ``lint_loaded(load_result, kubernetes_version="")`` — the same for a loaded file, as every command lints it.
- ``kaudit.policy.evaluate`` — the rule evaluator (see its docstring).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from kaudit import lazy_exports

# Imported on first use, so importing kaudit.policy.document (the contract) stays cheap for
# commands that never touch the engine.
_EXPORTS = {
    "compose_policy": "compose", "content_hash": "document",
    "FIXED_PROFILES": "document", "PROFILES": "document", "PolicyDocument": "document", "PolicyOptions": "document", "SelfAudit": "document",
    "lint_loaded": "lint", "lint_policy": "lint",
    "LoadResult": "loader", "load_policy": "loader",
    "GroupResources": "model", "Policy": "model", "PolicyRule": "model",
    "validate_policy": "validation",
}
__all__ = sorted(_EXPORTS)


__getattr__ = lazy_exports(__name__, _EXPORTS)


# ``name as name``: the names are re-exported (mypy --strict checks that they are).
if TYPE_CHECKING:
    from kaudit.policy.compose import compose_policy as compose_policy
    from kaudit.policy.document import FIXED_PROFILES as FIXED_PROFILES
    from kaudit.policy.document import PROFILES as PROFILES
    from kaudit.policy.document import PolicyDocument as PolicyDocument
    from kaudit.policy.document import content_hash as content_hash
    from kaudit.policy.document import PolicyOptions as PolicyOptions
    from kaudit.policy.document import SelfAudit as SelfAudit
    from kaudit.policy.lint import lint_loaded as lint_loaded
    from kaudit.policy.lint import lint_policy as lint_policy
    from kaudit.policy.loader import LoadResult as LoadResult
    from kaudit.policy.loader import load_policy as load_policy
    from kaudit.policy.model import GroupResources as GroupResources
    from kaudit.policy.model import Policy as Policy
    from kaudit.policy.model import PolicyRule as PolicyRule
    from kaudit.policy.validation import validate_policy as validate_policy

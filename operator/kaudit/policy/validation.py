"""Validity of a decoded policy, as ``ValidatePolicy`` in
``k8s.io/apiserver/pkg/apis/audit/validation/validation.go`` decides it.

Same checks, same order (policy omitStages, then per rule: level, nonResourceURLs, resources,
omitStages, then the resources-vs-URLs conflict). Messages are kaudit's own words. One
deliberate difference: a bad ``group`` is reported at ``rules[i].resources[j].group`` (upstream
omits the ``[j]``), because a path that names the entry is more useful; the message then adds
upstream's path.
"""

from __future__ import annotations

import re
from typing import Iterable

from kaudit.errors import FieldError
from kaudit.policy.model import LEVELS, STAGES, GroupResources, Policy, PolicyRule

# Kubernetes 1.36 added group "*" (any API group) to rule resources; older servers refuse it.
GROUP_WILDCARD_SINCE = (1, 36)

_DNS_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*\Z")


def parse_minor(kubernetes_version: str) -> tuple[int, int] | None:
    """``"1.33"``, ``"v1.33.2"`` → ``(1, 33)``; ``""`` (newest) or unparsable → ``None``."""
    match = re.match(r"v?(\d+)\.(\d+)", kubernetes_version.strip())
    return (int(match.group(1)), int(match.group(2))) if match else None


def group_wildcard_supported(kubernetes_version: str) -> bool:
    minor = parse_minor(kubernetes_version)
    return minor is None or minor >= GROUP_WILDCARD_SINCE


def _quoted(values: Iterable[str]) -> str:
    return ", ".join(f'"{v}"' for v in values)


def validate_level(level: str, path: str) -> list[FieldError]:
    if level in LEVELS:
        return []
    if level == "":
        return [FieldError(path, "Required value")]
    return [FieldError(path, f'Unsupported value: "{level}": supported values: {_quoted(LEVELS)}')]


def validate_stages(stages: tuple[str, ...], path: str) -> list[FieldError]:
    return [
        FieldError(f"{path}[{i}]", f'Unsupported value: "{stage}": supported values: {_quoted(STAGES)}')
        for i, stage in enumerate(stages)
        if stage not in STAGES
    ]


def validate_non_resource_urls(urls: tuple[str, ...], path: str) -> list[FieldError]:
    errors = []
    for i, url in enumerate(urls):
        if url == "*":
            continue
        if not url.startswith("/"):
            errors.append(FieldError(f"{path}[{i}]", f'Invalid value: "{url}": a non-resource URL must start with "/" (or be "*")'))
        if "*" in url[:-1]:
            errors.append(FieldError(f"{path}[{i}]", f'Invalid value: "{url}": "*" is allowed only as the last character'))
    return errors


def _group_error(group: str) -> str | None:
    if len(group) > 253:
        return "an API group name has at most 253 characters"
    if not _DNS_SUBDOMAIN.match(group):
        return ("an API group name is a lower-case DNS subdomain: letters, digits, '-' and '.', "
                "starting and ending with a letter or digit (no version such as '/v1')")
    return None


def validate_resources(entries: tuple[GroupResources, ...], path: str, kubernetes_version: str) -> list[FieldError]:
    errors = []
    wildcard_ok = group_wildcard_supported(kubernetes_version)
    # kube-apiserver names these fields without the entry's index; the message says so, so that
    # its own error (in its log when it refuses to start) can be matched to ours.
    upstream = f" (kube-apiserver: {path}.group)"
    for i, entry in enumerate(entries):
        here = f"{path}[{i}]"
        if entry.group == "*" and not wildcard_ok:
            errors.append(FieldError(f"{here}.group", f'Invalid value: "*": group "*" needs kube-apiserver 1.36 or newer '
                                                      f"(target is {kubernetes_version}){upstream}"))
        elif entry.group and entry.group != "*":
            problem = _group_error(entry.group)
            if problem:
                errors.append(FieldError(f"{here}.group", f'Invalid value: "{entry.group}": {problem}{upstream}'))
        if entry.resource_names and not entry.resources:
            errors.append(FieldError(f"{here}.resourceNames", "Invalid value: resourceNames needs at least one entry in "
                                                              f"resources (kube-apiserver: {path}.resourceNames)"))
    return errors


def validate_rule(rule: PolicyRule, path: str, kubernetes_version: str = "") -> list[FieldError]:
    errors = validate_level(rule.level, f"{path}.level")
    errors += validate_non_resource_urls(rule.non_resource_urls, f"{path}.nonResourceURLs")
    errors += validate_resources(rule.resources, f"{path}.resources", kubernetes_version)
    errors += validate_stages(rule.omit_stages, f"{path}.omitStages")
    if rule.non_resource_urls and (rule.resources or rule.namespaces):
        errors.append(FieldError(f"{path}.nonResourceURLs",
                                 "Invalid value: a rule cannot combine nonResourceURLs with resources or namespaces"))
    return errors


def validate_policy(policy: Policy, kubernetes_version: str = "") -> list[FieldError]:
    """Every reason kube-apiserver (of ``kubernetes_version``; "" = newest) would refuse ``policy``.

    The zero-rules check is the loader's (it happens after validation upstream).
    """
    errors = validate_stages(policy.omit_stages, "omitStages")
    for i, rule in enumerate(policy.rules):
        errors += validate_rule(rule, f"rules[{i}]", kubernetes_version)
    return errors

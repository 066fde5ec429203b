"""The audit policy ConfigMap, the kube-apiserver flags and the steps left to the user."""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

from kaudit.api.spec import AuditCollection
from kaudit.errors import FieldError, InvalidInput
from kaudit.policy import compose_policy
from kaudit.policy.document import FIXED_PROFILES, PolicyDocument, PolicyOptions, SelfAudit
from kaudit.render.common import POLICY_HASH_ANNOTATION, metadata, object_name

COMPONENT = "policy"
POLICY_KEY = "policy.yaml"
SELF_AUDIT_OFF_WARNING = FieldError(
    "spec.policy.auditKaudit",
    "false: changes to AuditCollections, to kaudit's policy ConfigMap, installer and RBAC are not "
    "recorded by kaudit's own rules, so lowering the audit policy may leave no trace of what was put in")


def self_audit(collection_name: str, namespace: str) -> SelfAudit:
    """The objects the self-audit rules name: the operator namespace and the policy ConfigMap there."""
    return SelfAudit(namespace=namespace, policy_config_map=object_name(collection_name, COMPONENT))


def policy_options(collection: AuditCollection, namespace: str) -> PolicyOptions:
    """spec.policy with the self-audit rules naming this collection's objects in ``namespace``."""
    policy = collection.policy
    if not policy.audit_kaudit:
        return policy
    return dataclasses.replace(policy, self_audit=self_audit(collection.name, namespace))


def recording_policy(collection: AuditCollection, namespace: str) -> PolicyDocument | None:
    """The policy that records the collection's audit log: the one kaudit composes from
    spec.policy on a self-managed control plane, the provider's own where kaudit knows it
    (policy.document.FIXED_PROFILES: EKS), None where it does not (GKE, AKS). What the
    operator and ``kaudit rules check -f`` assess spec.detection under."""
    if collection.platform == "SelfManaged":
        return compose(policy_options(collection, namespace))
    if collection.platform in FIXED_PROFILES:
        return _fixed_policy(collection.platform)
    return None


@functools.cache
def _fixed_policy(platform: str) -> PolicyDocument:
    return compose_policy(PolicyOptions(profile=platform))  # fixed: composed once


def compose(options: PolicyOptions) -> PolicyDocument:
    """The policy engine's composition; its field paths are relative to ``spec.policy``."""
    try:
        return compose_policy(options)
    except InvalidInput as exc:
        raise exc.under("spec.policy") from None


def policy_config_map(collection: AuditCollection, document: PolicyDocument, namespace: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": metadata(
            object_name(collection.name, COMPONENT), namespace, collection.name, COMPONENT,
            annotations={POLICY_HASH_ANNOTATION: document.hash},
        ),
        "data": {POLICY_KEY: document.text},
    }


def api_server_flags(collection: AuditCollection) -> tuple[str, ...]:
    """Every audit flag, explicit: rotation defaults changed in Kubernetes 1.36 (unlimited before)."""
    api = collection.api_server
    return (
        f"--audit-policy-file={api.policy_file}",
        f"--audit-log-path={api.log_file}",
        f"--audit-log-maxsize={api.log_max_size_mb}",
        f"--audit-log-maxbackup={api.log_max_backups}",
        f"--audit-log-maxage={api.log_max_age_days}",
    )


def api_server_steps(collection: AuditCollection, namespace: str) -> list[str]:
    api = collection.api_server
    config_map = f"{namespace}/{object_name(collection.name, COMPONENT)}"
    steps = []
    if api.install_policy:
        steps.append(
            f"kaudit's policy installer writes {api.policy_file} on every control-plane node from "
            f"ConfigMap {config_map}; wait until the AuditCollection status reports it installed "
            f"on every node before you change kube-apiserver (a missing policy file stops it)."
        )
    else:
        steps.append(
            f"Copy key {POLICY_KEY} of ConfigMap {config_map} to {api.policy_file} on every "
            f"control-plane node before you change kube-apiserver (a missing or invalid policy "
            f"file stops it)."
        )
    steps.append(
        "Add these flags to kube-apiserver on every control-plane node: "
        + " ".join(api_server_flags(collection)) + "."
    )
    if api.policy_dir == api.log_dir:
        steps.append(
            f"Give the kube-apiserver pod a hostPath volume for {api.log_dir} (the policy and the audit "
            f"log, read-write, type DirectoryOrCreate)."
        )
    else:
        steps.append(
            f"Give the kube-apiserver pod two hostPath volumes: {api.policy_dir} (the policy, mounted "
            f"read-only) and {api.log_dir} (the audit log, read-write, type DirectoryOrCreate)."
        )
    steps.append(
        "kube-apiserver reads the policy only when it starts: restart it after the file is in "
        "place and again whenever the policy hash changes (on kubeadm nodes, editing "
        "/etc/kubernetes/manifests/kube-apiserver.yaml restarts it)."
    )
    return steps

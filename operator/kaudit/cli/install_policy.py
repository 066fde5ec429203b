"""``kaudit install-policy``: put an audit policy file in place on a control-plane node, safely."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from kaudit.cli.shared import version_argument
from kaudit.errors import KauditError

if TYPE_CHECKING:
    from kaudit.cli import Subparsers
    from kaudit.installer.lease import Identity
    from kaudit.installer.service import Reporter

# Imports are inside the functions: every command module is imported to build the parser (see kaudit.cli).
DESCRIPTION = """\
Validate an audit policy exactly as kube-apiserver loads it, then install it atomically at --to:
a temporary file in the same directory, fsync, rename, fsync of the directory; mode 0600; the
file it replaces is kept as <--to>.previous. Identical content is left alone (mtime unchanged).
An invalid policy is never written. A symlink at --to is refused.

Without --once it keeps running and installs again whenever --from changes (a mounted ConfigMap
is followed through the kubelet's updates, no restart needed) or the installed file is altered.

Outside Kubernetes (cloud-init, Ansible, a kubeadm pre-step) use --once: no API access is needed
and no report is sent; nothing approves the file there, so it installs any valid policy. In the
kaudit DaemonSet (--report) it installs only the policy the AuditCollection --collection approves
(its status.policy.fullHash, read afresh before every write): any other candidate is refused, the
installed file stays as it is, and the refusal is in the node report. It reports the installed
hash for its node (NODE_NAME) in a Lease in POD_NAMESPACE, with the pod's service account (token
and ca.crt in /var/run/secrets/kubernetes.io/serviceaccount, or in $KAUDIT_SERVICE_ACCOUNT_DIR).
"""

EPILOG = """\
examples:
  kaudit install-policy --from policy.yaml --to /etc/kubernetes/audit-policies/policy.yaml --once
  kaudit install-policy --from /etc/kaudit/policy/policy.yaml \\
      --to /etc/kubernetes/audit-policies/policy.yaml --collection cluster   # in the DaemonSet

exit status: 0 installed or already in place; 1 invalid policy, refused (not approved) policy or
unusable path (one line each, nothing changed at --to).
"""


def register(subparsers: Subparsers) -> None:
    parser = subparsers.add_parser(
        "install-policy",
        help="install an audit policy file on a node atomically (once, or following changes)",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--from", dest="source", required=True, metavar="FILE",
                        help="the policy to install (e.g. the mounted ConfigMap key)")
    parser.add_argument("--to", dest="target", required=True, metavar="FILE",
                        help="where kube-apiserver reads it (--audit-policy-file); its directory must exist")
    parser.add_argument("--once", action="store_true",
                        help="install once and exit instead of following --from")
    parser.add_argument("--interval", type=_positive, default=5.0, metavar="SECONDS",
                        help="how often to re-read --from and check --to when following (default: 5)")
    version_argument(parser)
    report = parser.add_mutually_exclusive_group()
    report.add_argument("--report", dest="report", action="store_true", default=None,
                        help="send the node report (default: on when NODE_NAME is set, as in the DaemonSet)")
    report.add_argument("--no-report", dest="report", action="store_false",
                        help="never contact the Kubernetes API")
    parser.add_argument("--collection", default=os.environ.get("KAUDIT_COLLECTION", ""), metavar="NAME",
                        help="the AuditCollection this installer serves; names the report (default: $KAUDIT_COLLECTION)")
    parser.add_argument("--heartbeat", type=_positive, default=60.0, metavar="SECONDS",
                        help="renew the node report at least this often (default: 60)")
    parser.set_defaults(func=run)


def _positive(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be greater than 0: {text!r}")
    return value


def _identity(args: argparse.Namespace) -> Identity:
    from kaudit.installer.lease import Identity

    node = os.environ.get("NODE_NAME", "")
    namespace = os.environ.get("POD_NAMESPACE", "")
    missing = [name for name, value in (("NODE_NAME", node), ("POD_NAMESPACE", namespace)) if not value]
    if missing:
        raise KauditError(f"--report: environment variable {' and '.join(missing)} not set (use --no-report outside Kubernetes)")
    if not args.collection:
        raise KauditError("--collection: required to send the report (or set KAUDIT_COLLECTION)")
    return Identity(args.collection, node, namespace,
                    os.environ.get("POD_NAME", ""), os.environ.get("POD_UID", ""))


def run(args: argparse.Namespace) -> int:
    from kaudit.cli.shared import check_kubernetes_version
    from kaudit.installer.follow import Outcome, install_from, policy_validator, policy_warnings, read_source

    # Validating for the newest version instead could install a policy the node's older
    # kube-apiserver refuses at start.
    check_kubernetes_version(args)
    source, target = Path(args.source), Path(args.target)
    reporting = args.report if args.report is not None else bool(os.environ.get("NODE_NAME"))
    # Before anything is written. Reporting means running in the cluster: there, only the
    # AuditCollection's approved policy goes in.
    reporter, approve = _in_cluster(args, target) if reporting else (None, None)
    validate = policy_validator(source, args.kubernetes_version)

    def lint(content: bytes) -> tuple[str, ...]:
        return policy_warnings(source, content, args.kubernetes_version)

    if not args.once:
        return _serve(source, target, validate, args, reporter, approve, lint)
    content = read_source(source)
    try:
        result = install_from(source, target, validate, approve, content)
    except KauditError as exc:
        _report_refusal(reporter, exc)
        raise
    warnings = lint(content)
    for warning in warnings:
        print(f"warning: {warning}", file=sys.stderr)
    if result.changed:
        kept = f" (previous kept as {result.previous})" if result.previous else ""
        print(f"installed policy {result.hash[:12]} at {target}{kept}")
    else:
        print(f"unchanged: policy {result.hash[:12]} already at {target}")
    if reporter is not None:
        reporter.record(Outcome(result=result, warnings=warnings))
    return 0


def _report_refusal(reporter: Reporter | None, exc: KauditError) -> None:
    from kaudit.installer.approval import NotApproved
    from kaudit.installer.follow import Outcome, Refusal

    if reporter is not None and isinstance(exc, NotApproved):
        reporter.record(Outcome(refused=Refusal(exc.candidate_hash, exc.reason)))


def _in_cluster(args: argparse.Namespace, target: Path) -> tuple[Reporter, Callable[[bytes], None]]:
    """The node report's sender and the approval check, on one API connection with the pod's
    service account."""
    from kaudit.installer.api import ApiClient, ConfigError
    from kaudit.installer.approval import Approval, api_fetch
    from kaudit.installer.lease import LeaseReporter
    from kaudit.installer.service import Reporter

    identity = _identity(args)
    try:
        client = ApiClient.in_cluster()
    except ConfigError as exc:  # not in a pod, or no service account token
        raise KauditError(f"--report: cannot reach the Kubernetes API from this pod: {exc}") from None
    reporter = Reporter(LeaseReporter(client), identity, target, heartbeat=args.heartbeat)
    return reporter, Approval(args.collection, api_fetch(client)).check


def _serve(source: Path, target: Path, validate: Callable[[bytes], str], args: argparse.Namespace,
           reporter: Reporter | None, approve: Callable[[bytes], None] | None,
           lint: Callable[[bytes], tuple[str, ...]]) -> int:
    import logging

    from kaudit.installer.service import serve

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    return serve(source, target, validate, interval=args.interval, reporter=reporter, approve=approve, lint=lint)

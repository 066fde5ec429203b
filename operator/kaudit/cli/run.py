"""``kaudit run``: the operator (kopf, cluster-wide)."""

from __future__ import annotations

import argparse
import os
import random
import socket
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from kaudit.cli import Subparsers
    from kaudit.reconcile.detection import SyncSettings

# Imports are inside the functions: every command module is imported to build the parser (see kaudit.cli).
HELP = "run the operator: reconcile AuditCollections in the cluster (needs in-cluster config or KUBECONFIG)"
DESCRIPTION = """\
Run kaudit's operator for the whole cluster. It watches AuditCollection resources and applies
what 'kaudit render' shows with server-side apply (field manager kaudit), keeps it in place when
someone edits or deletes it, and reports conditions Ready, PolicyValid, AgentConfigured and
PolicyInstalled in the resource's status.

Credentials: the pod's service account when running in a cluster, otherwise KUBECONFIG (or
~/.kube/config). Objects that are not agent-side live in POD_NAMESPACE (default kaudit-system).

Two or more replicas: kopf peering (crds/kopf-peering.yaml must be installed); each replica picks
a random priority and only the highest one works, the others pause until it is gone (kaudit's
own resync and watches ask the peering object first, so a paused replica does not act either).
"""
EPILOG = """\
endpoints:
  GET /healthz on --liveness-port   kopf's liveness probe (fails when the operator is stuck)
  GET /metrics on --metrics-port    Prometheus text: kaudit_reconciles_total, kaudit_reconcile_errors_total,
                                    kaudit_reconcile_duration_seconds, kaudit_api_requests_total
examples:
  kaudit run                                 # in a pod, with peering
  KUBECONFIG=~/.kube/config kaudit run --standalone --log-format text
"""


def register(subparsers: Subparsers) -> None:
    parser = subparsers.add_parser("run", help=HELP, description=DESCRIPTION, epilog=EPILOG,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--namespace", default=os.environ.get("POD_NAMESPACE", "kaudit-system"),
                        help="the operator's namespace, for the policy ConfigMap and the installer "
                             "(default: $POD_NAMESPACE or kaudit-system)")
    parser.add_argument("--image", default=os.environ.get("KAUDIT_IMAGE", ""),
                        help="image for the policy installer DaemonSet (default: $KAUDIT_IMAGE, else the "
                             "renderer's default kaudit/kaudit:<version>)")
    parser.add_argument("--liveness-port", type=int, default=8080, help="port of GET /healthz (0: off)")
    parser.add_argument("--metrics-port", type=int, default=9090, help="port of GET /metrics (0: off)")
    parser.add_argument("--resync-seconds", type=float, default=300.0,
                        help="how often every AuditCollection is reconciled even without a change (default 300)")
    parser.add_argument("--standalone", action="store_true",
                        help="no peering: for a single replica or a cluster without the kopf peering CRD")
    parser.add_argument("--peering", default="kaudit", help="name of the ClusterKopfPeering object (default kaudit)")
    parser.add_argument("--priority", type=int, default=None,
                        help="peering priority; the highest live replica works (default: random per start)")
    parser.add_argument("--log-format", choices=("json", "text"), default="json",
                        help="json: one JSON object per line (default); text: for a terminal")
    parser.add_argument("--verbose", action="store_true", help="debug logs")
    _register_detection_sync(parser)
    parser.set_defaults(func=run)


def _register_detection_sync(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group(
        "keeping spec.detection's rules in Datadog (off by default; keys from DD_API_KEY and DD_APP_KEY, "
        "which the chart takes from a Secret)")
    group.add_argument("--detection-sync", action="store_true",
                       help="sync the active collection's required detection rules to Datadog (docs/detection.md)")
    group.add_argument("--detection-sync-site", metavar="SITE", default=os.environ.get("DD_SITE") or "",
                       help="Datadog site: datadoghq.com (the default, unless $DD_SITE), datadoghq.eu, ...")
    group.add_argument("--detection-sync-cluster", metavar="NAME", default="",
                       help="scope the rules to kube_cluster_name:NAME (and own them as NAME)")
    group.add_argument("--detection-sync-owner", metavar="NAME", default="",
                       help="owner tag of the synced rules (default: the cluster, else the collection's name)")
    group.add_argument("--detection-sync-dry-run", action="store_true", help="plan only: read Datadog, write nothing")
    group.add_argument("--detection-sync-url", metavar="URL", default="", help=argparse.SUPPRESS)  # tests, proxies


def detection_sync_settings(args: argparse.Namespace) -> SyncSettings | None:
    """The operator's SyncSettings from the command line and the environment, or None when off;
    one error line per problem (checked before kopf starts)."""
    from kaudit.detect.sync import SITES, Credentials, check_tag_value
    from kaudit.errors import FieldError, InvalidInput
    from kaudit.reconcile.detection import SyncSettings

    if not args.detection_sync:
        return None
    errors = []
    for flag, value in (("--detection-sync-cluster", args.detection_sync_cluster),
                        ("--detection-sync-owner", args.detection_sync_owner)):
        problem = value and check_tag_value(value)
        if problem:
            errors.append(FieldError(flag, problem))
    site = args.detection_sync_site or SITES[0]
    if site not in SITES:
        errors.append(FieldError("--detection-sync-site", f"unsupported value {site!r}: supported values: "
                                                          f"{', '.join(SITES)}"))
    keys = {name: os.environ.get(name, "").strip() for name in ("DD_API_KEY", "DD_APP_KEY")}
    missing = [name for name, value in keys.items() if not value]
    if missing:
        errors.append(FieldError(" and ".join(missing), "not set (the Datadog API and application keys, for "
                                                        "--detection-sync)"))
    if errors:
        raise InvalidInput(errors)
    return SyncSettings(Credentials(keys["DD_API_KEY"], keys["DD_APP_KEY"]), site=site,
                        owner=args.detection_sync_owner, cluster=args.detection_sync_cluster,
                        dry_run=args.detection_sync_dry_run, url=args.detection_sync_url)


def run(args: argparse.Namespace) -> int:
    import asyncio
    import logging
    import sys

    # kopf imports the kubernetes client's model classes whenever that package is installed (kaudit
    # does not need it, but an environment may have it), only to recognise such objects in helpers
    # the operator does not use with them: kaudit passes plain dicts. Blocking the import saves
    # about 20 MiB of memory there.
    sys.modules.setdefault("kubernetes", None)  # type: ignore[arg-type]
    import kopf

    from kaudit.reconcile.handlers import REGISTRY
    from kaudit.reconcile.peering import PeeringIdentity
    from kaudit.reconcile.runtime import Options, operator_memo
    from kaudit.reconcile.service import OperatorConfig

    kopf.configure(verbose=args.verbose, log_format=kopf.LogFormat.JSON if args.log_format == "json"
                   else kopf.LogFormat.FULL)
    logging.getLogger("kaudit").setLevel(logging.DEBUG if args.verbose else logging.INFO)
    priority = args.priority if args.priority is not None else random.randint(1, 2**31 - 1)
    # kopf's key for this replica in the peering object, so kaudit's own background tasks can
    # tell whether kopf lets this replica work (kaudit.reconcile.peering).
    identity = f"{socket.gethostname()}/{os.getpid()}/{random.randrange(16**6):06x}"
    me = None if args.standalone else PeeringIdentity(args.peering, priority, identity)
    sync = detection_sync_settings(args)
    memo = operator_memo(Options(config=OperatorConfig(namespace=args.namespace, image=args.image,
                                                       detection_sync=sync),
                                 resync_interval=args.resync_seconds, peering=me, metrics_port=args.metrics_port))
    problem = asyncio.run(_preflight(None if args.standalone else args.peering))
    if problem:
        print(f"error: {problem}", file=sys.stderr)
        return 1

    liveness = f"http://0.0.0.0:{args.liveness_port}/healthz" if args.liveness_port else None
    # A peering name makes peering mandatory in kopf: replicas never run unpeered and fight.
    peering = ({"standalone": True} if args.standalone
               else {"peering_name": args.peering, "priority": priority, "identity": identity})
    asyncio.run(kopf.operator(registry=REGISTRY, memo=memo, clusterwide=True, liveness_endpoint=liveness,
                              **peering))
    return 0


async def _preflight(peering: str | None) -> str | None:
    """Refuse to start without working credentials (kopf would print a traceback and retry forever)
    or paused (kopf would wait silently for a missing peering object)."""
    from kaudit.errors import KauditError
    from kaudit.reconcile.runtime import default_login
    from kaudit.reconcile.preflight import api_problem, credentials, peering_problem

    try:
        info = credentials(default_login)
    except KauditError as exc:
        return str(exc)
    problem = await api_problem(info)
    if problem or peering is None:
        return problem
    return await peering_problem(info, peering)

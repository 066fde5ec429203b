"""``kaudit run``: the operator (kopf, cluster-wide)."""

from __future__ import annotations

import argparse
import os
import random
import socket
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from kaudit.cli import Subparsers

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
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import asyncio
    import logging
    import sys

    # kopf imports the kubernetes client's model classes when that package is installed (the
    # node-side installer needs it), only to recognise such objects in helpers the operator does not
    # use with them: kaudit passes plain dicts. Blocking the import saves about 20 MiB of memory.
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
    memo = operator_memo(Options(config=OperatorConfig(namespace=args.namespace, image=args.image),
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

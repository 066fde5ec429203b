"""What ``kaudit run`` checks before it hands over to kopf.

Credentials first (:func:`credentials`, :func:`api_problem`): kopf meets missing or broken
credentials with a traceback, and retries a missing kubeconfig every minute forever; kaudit says
what is wrong in one line and exits 1 within seconds, so a pod crash-loops with the reason in its
log and a person at a terminal sees it at once. No message quotes the kubeconfig's content (it
holds tokens and keys).

kopf with a peering name pauses every watch and handler until the ClusterKopfPeering object exists,
and says so only at DEBUG: an operator started without it looks healthy and does nothing, ever.
``kaudit run`` asks once before starting and refuses with one line that says what to create; a
peering object deleted later is logged as a warning by ``Runtime.is_active`` (handlers.py).
"""

from __future__ import annotations

import asyncio
import os
from typing import Any

import aiohttp
import kopf
import yaml

from kaudit.errors import KauditError
from kaudit.k8s import resources as r
from kaudit.k8s.client import ApiClient, ApiError, Connection, RetryPolicy

# A few quick tries: the check runs before the operator, so it must not hang a pod's start.
PREFLIGHT_RETRY = RetryPolicy(attempts=3, first_delay=0.2, max_delay=1.0)


def missing_peering_message(name: str) -> str:
    return (f'ClusterKopfPeering "{name}" not found, and kopf would pause this replica until it exists: '
            f"create it (kubectl apply -f crds/kopf-peering.yaml, then a ClusterKopfPeering named {name}; "
            "the Helm chart and manifests/ do both) or run a single replica with --standalone")


async def peering_problem(info: Any, name: str) -> str | None:
    """None when the peering object ``name`` exists; otherwise one sentence saying what to do."""
    client = ApiClient(Connection.from_connection_info(info, force_close=True), retry=PREFLIGHT_RETRY)
    try:
        body = await client.get(r.PEERINGS, None, name)  # a missing CRD is a 404 too
    except ApiError as exc:
        return f'cannot read ClusterKopfPeering "{name}": {exc}'
    finally:
        await client.close()
    return None if body is not None else missing_peering_message(name)


NO_CREDENTIALS = ("no Kubernetes credentials: not in a pod (no service account token) and neither KUBECONFIG "
                  "nor ~/.kube/config is there; set KUBECONFIG to your kubeconfig file")
API_TIMEOUT = 10.0  # seconds for the first request: a black-holed address must not hang the start


def credentials(login: Any) -> Any:
    """kopf's ConnectionInfo from ``login`` (kaudit's login handler), or :class:`KauditError` in one line."""
    where = os.environ.get("KUBECONFIG") or "~/.kube/config"
    try:
        info = login(settings=kopf.OperatorSettings(), logger=None)
    except FileNotFoundError as exc:
        raise KauditError(f"KUBECONFIG: {exc.filename}: no such file") from None
    except IsADirectoryError as exc:
        raise KauditError(f"KUBECONFIG: {exc.filename}: is a directory, not a file") from None
    except OSError as exc:
        raise KauditError(f"KUBECONFIG: {getattr(exc, 'filename', None) or where}: cannot read: {exc.strerror or exc}") from None
    except (yaml.YAMLError, UnicodeDecodeError):
        raise KauditError(f"KUBECONFIG: {where}: not a valid kubeconfig (not YAML)") from None
    except kopf.LoginError:
        raise KauditError(f"KUBECONFIG: {where}: no current-context is set (kubectl config use-context NAME)") from None
    except KeyError as exc:
        raise KauditError(f"KUBECONFIG: {where}: the current context refers to {exc.args[0]!r}, which the file does "
                          "not define") from None
    except (TypeError, AttributeError, ValueError):
        raise KauditError(f"KUBECONFIG: {where}: not a valid kubeconfig (contexts, clusters and users must be "
                          "lists of named entries)") from None
    if info is None:
        raise KauditError(NO_CREDENTIALS)
    if not info.server:
        raise KauditError(f"KUBECONFIG: {where}: the current context's cluster has no server")
    return info


async def api_problem(info: Any) -> str | None:
    """None when the API server answers with these credentials; otherwise why not, in one sentence."""
    connection = Connection.from_connection_info(info, force_close=True)
    try:
        async with connection.session.get(connection.server + "/version",
                                          timeout=aiohttp.ClientTimeout(total=API_TIMEOUT)) as response:
            status = response.status
    except (aiohttp.ClientError, asyncio.TimeoutError, OSError, ValueError) as exc:
        detail = "no answer" if isinstance(exc, asyncio.TimeoutError) else (str(exc) or type(exc).__name__)
        return f"cannot reach the Kubernetes API server at {connection.server}: {' '.join(detail.split())}"
    finally:
        await connection.session.close()
    if status in (401, 403):
        return (f"the Kubernetes API server at {connection.server} refuses these credentials (HTTP {status}); "
                "check the token or certificate in your kubeconfig")
    return None

"""A real Kubernetes control plane on loopback, for the real-cluster tests (no pytest in here).

The same idea as the Go ecosystem's envtest, with more parts: etcd, kube-apiserver,
kube-controller-manager, kube-scheduler and hollow nodes (kubemark ``--morph=kubelet``: they
register a Node and report scheduled pods Running; nothing runs in them). The binaries come from
the folder named by ``KAUDIT_K8S_ASSETS`` (``.ci/k8s-assets`` unpacks them); ``helm`` and
``kubectl`` are the pinned real ones of tests/helmtools.py.

Start one per test session (``ControlPlane(assets, workdir).start()``, ~15 s) and give each test
its own namespaces and names. Everything it starts runs in its own process group and is stopped
by :meth:`ControlPlane.stop`, also at interpreter exit and on SIGTERM; if the test process is
killed outright the children get SIGKILL from the kernel (``PR_SET_PDEATHSIG``).

Public interface (other tests code against these names):

* ``admin_kubeconfig: Path``, ``server: str`` (https URL), ``ca_file: Path``, ``audit_log: Path``,
  ``port: int`` (the apiserver's), ``workdir: Path``
* ``control_plane_nodes == ("cp-1", "cp-2")`` (label ``node-role.kubernetes.io/control-plane``,
  taint ``node-role.kubernetes.io/control-plane:NoSchedule``), ``worker_nodes == ("worker-1",)``
* ``kubectl(*args, kubeconfig=None, input=None, check=True)`` and ``helm(...)``: the real binaries,
  admin credentials unless ``kubeconfig`` is given; ``get(*args, kubeconfig=None)`` parses ``-o json``;
  ``apply(obj_or_yaml, *extra)`` pipes to ``kubectl apply -f -``
* ``api()``: this thread's ``Api`` (admin, one kept-alive HTTPS connection; ``Api(plane, kubeconfig)``
  for another identity), ``request(method, path, body) -> (status, dict)``, ``watch(path, timeout)``
* ``service_account_token(namespace, name)`` (a TokenRequest, as ``kubectl create token``) and
  ``kubeconfig_for_service_account(namespace, name) -> Path`` with such a token;
  ``wait_established(crd)``
  and ``kubeconfig_for_user(name) -> Path`` for a static-token user in ``STATIC_USERS`` (no groups,
  so no permission until a test binds one)
* ``audit_mark()`` and ``requests_since(mark, *, user=None, verbs=WRITE_VERBS)``: the apiserver's own
  JSON audit log (every request at Metadata, ResponseStarted and ResponseComplete stages), one
  dict per request (``verbs=None`` for every verb), the oracle for "how many writes did X send";
  ``wait_quiet_audit()`` waits until the log stops growing
* ``stop_apiserver()``, ``kill_apiserver()``, ``start_apiserver()``, ``restart_apiserver()``: same flags, same data, same
  serving certificate and tokens
* ``start_operator(*args, kubeconfig, namespace, env=None) -> Process``: ``kaudit run`` as a real
  process (``--liveness-port 0 --metrics-port 0`` unless given), output in ``Process.log``
* ``start_installer(node, *, collection, namespace, policy_dir, ...) -> Installer``: plays the policy
  installer DaemonSet's pod on ``node`` as a real ``kaudit install-policy`` process with that node's
  ``NODE_NAME``, ``POD_NAMESPACE``, ``POD_NAME``/``POD_UID`` (of the hollow installer pod there),
  ``KUBERNETES_SERVICE_HOST``/``PORT`` and the installer ServiceAccount's token in
  ``KAUDIT_SERVICE_ACCOUNT_DIR``; ``Installer.sync()`` copies the policy ConfigMap into its ``--from``
  file as the kubelet would; ``start_installers(collection=, namespace=, policy_dir=node -> Path)``
  starts one per control-plane node at once, each as soon as its pod is there
* ``wait_for(predicate, timeout, what)``: poll until truthy, else AssertionError naming ``what``
"""

from __future__ import annotations

import atexit
import concurrent.futures
import contextlib
import ctypes
import http.client
import json
import os
import queue
import secrets
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Sequence

import yaml

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tests"))
import helmtools  # noqa: E402  (tests/ is not a package)

ASSETS_ENV = "KAUDIT_K8S_ASSETS"
BINARIES = ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubemark")
WRITE_VERBS = frozenset({"create", "update", "patch", "delete", "deletecollection"})
CONTROL_PLANE_LABEL = "node-role.kubernetes.io/control-plane"
# Taints the node lifecycle controller puts on a node that is not (yet) Ready.
NODE_CONDITION_TAINTS = frozenset({"node.kubernetes.io/not-ready", "node.kubernetes.io/unreachable"})
ADMIN_USER = "kaudit-test-admin"
STATIC_USERS = ("alice", "bob", "carol")
SERVICE_ACCOUNT_DIR_ENV = "KAUDIT_SERVICE_ACCOUNT_DIR"  # kaudit.installer.api reads it
START_TIMEOUT = 60.0
KUBECTL_TIMEOUT = 120.0

# Every request at Metadata: who sent which verb to which object, with its response code. No
# RequestReceived stage: each request appears once (twice for a watch: started, completed).
AUDIT_POLICY = {
    "apiVersion": "audit.k8s.io/v1",
    "kind": "Policy",
    "omitStages": ["RequestReceived"],
    "rules": [{"level": "Metadata"}],
}


class PlaneError(AssertionError):
    """A part of the plane failed to start or a command failed; an AssertionError so pytest shows it plainly."""


def missing_assets(folder: str | None) -> str | None:
    """Why the plane cannot start from ``folder`` (the env variable's value), or None when it can."""
    hint = f"set {ASSETS_ENV} to a folder with {', '.join(BINARIES)}; .ci/run does it from ../shared/k8s"
    if not folder:
        return hint
    absent = [name for name in BINARIES if not os.access(Path(folder) / name, os.X_OK)]
    return f"{hint} ({folder} lacks {', '.join(absent)})" if absent else None


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for(predicate: Callable[[], Any], timeout: float = 30.0, what: str = "condition",
             interval: float = 0.2) -> Any:
    """Poll ``predicate`` until it returns something truthy (returned); AssertionError after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(interval)


def _die_with_parent() -> None:
    # Runs in the child before exec: its own process group, and SIGKILL when the test process dies.
    os.setsid()
    with contextlib.suppress(Exception):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


class _Spawner:
    """Starts every child from one thread that lives as long as the test process.

    PR_SET_PDEATHSIG fires when the *thread* that forked the child ends, not the process: a child
    started from a short-lived thread (a harness playing two kubelets at once) would get SIGKILL
    as soon as that thread returned.
    """

    def __init__(self) -> None:
        self._jobs: queue.Queue = queue.Queue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def spawn(self, popen: Callable[[], subprocess.Popen]) -> subprocess.Popen:
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._serve, name="plane-spawner", daemon=True)
                self._thread.start()
        done: concurrent.futures.Future = concurrent.futures.Future()
        self._jobs.put((popen, done))
        return done.result()

    def _serve(self) -> None:
        while True:
            popen, done = self._jobs.get()
            try:
                done.set_result(popen())
            except BaseException as exc:  # noqa: BLE001 - handed to the caller
                done.set_exception(exc)


_SPAWNER = _Spawner()


@dataclass
class Process:
    """A child in its own process group, its output (stdout and stderr) in ``log``."""

    name: str
    argv: list[str]
    log: Path
    env: dict[str, str] | None = None
    popen: subprocess.Popen | None = None
    started_at: float = 0.0  # time.time() just before the child was forked

    def start(self) -> "Process":
        self.log.parent.mkdir(parents=True, exist_ok=True)
        self.started_at = time.time()
        self.popen = _SPAWNER.spawn(self._popen)
        return self

    def _popen(self) -> subprocess.Popen:
        with self.log.open("ab") as out:
            return subprocess.Popen(self.argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                    env=self.env, preexec_fn=_die_with_parent)

    @property
    def running(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def stop(self, timeout: float = 15.0, sig: int = signal.SIGTERM) -> int | None:
        """Signal the whole process group, wait, then SIGKILL; the exit code (None if never started)."""
        if self.popen is None:
            return None
        if self.popen.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.popen.pid, sig)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.popen.pid, signal.SIGKILL)
                self.popen.wait(timeout)
        return self.popen.returncode

    def kill(self) -> int | None:
        return self.stop(timeout=5.0, sig=signal.SIGKILL)

    def restart(self) -> "Process":
        self.stop()
        return self.start()

    def tail(self, lines: int = 40) -> str:
        return "\n".join(self.output().splitlines()[-lines:])


@dataclass
class Installer:
    """The policy installer of one node, played by a local ``kaudit install-policy`` process."""

    plane: "ControlPlane"
    node: str
    namespace: str
    configmap: str
    source: Path
    target: Path
    process: Process

    def sync(self) -> str:
        """Write the policy ConfigMap's content into ``source`` (atomically, as the kubelet updates a mount)."""
        status, found = self.plane.api().request("GET", f"/api/v1/namespaces/{self.namespace}/configmaps/{self.configmap}")
        if status != 200:
            raise PlaneError(f"GET configmap {self.namespace}/{self.configmap}: {status} {found.get('message')}")
        content = found["data"][self.source.name]
        partial = self.source.with_name(f".{self.source.name}.partial")
        partial.write_text(content)
        partial.replace(self.source)
        return content

    def stop(self) -> int | None:
        return self.process.stop()


@dataclass
class ControlPlane:
    assets: Path
    workdir: Path
    control_plane_nodes: tuple[str, ...] = ("cp-1", "cp-2")
    worker_nodes: tuple[str, ...] = ("worker-1",)
    tools: helmtools.Tools | None = None
    server: str = ""
    port: int = 0
    _processes: dict[str, Process] = field(default_factory=dict)
    _children: list[Process] = field(default_factory=list)
    _tokens: dict[str, str] = field(default_factory=dict)
    _local: threading.local = field(default_factory=threading.local)

    # --- paths ----------------------------------------------------------------------------------

    @property
    def ca_file(self) -> Path:
        return self.workdir / "apiserver" / "apiserver.crt"  # kube-apiserver's self-signed serving cert

    @property
    def audit_log(self) -> Path:
        return self.workdir / "audit.log"

    @property
    def admin_kubeconfig(self) -> Path:
        return self.workdir / "kubeconfigs" / "admin.kubeconfig"

    @property
    def nodes(self) -> tuple[str, ...]:
        return self.control_plane_nodes + self.worker_nodes

    # --- life cycle -----------------------------------------------------------------------------

    def start(self) -> "ControlPlane":
        atexit.register(self.stop)
        _stop_on_sigterm()
        started = time.monotonic()
        self.tools = self.tools or helmtools.fetch_tools()
        self.workdir.mkdir(parents=True, exist_ok=True)
        try:
            self._write_identities()
            _compile_kaudit()
            self._start_etcd()
            self.port = free_port()
            self.server = f"https://127.0.0.1:{self.port}"
            self.start_apiserver()
            self._write_kubeconfigs()
            self._start_controllers()
            for node in self.nodes:
                self._start_node(node)
            self._wait_ready()
        except BaseException:
            self.stop()
            raise
        self.start_seconds = time.monotonic() - started
        return self

    def stop(self) -> None:
        """Stop every process this plane started, newest first; safe to call twice."""
        for child in reversed(self._children):
            child.stop()
        for process in reversed(list(self._processes.values())):
            process.stop()

    def _spawn(self, name: str, argv: list[str], env: dict[str, str] | None = None) -> Process:
        process = Process(name, argv, self.workdir / "logs" / f"{name}.log", env).start()
        self._processes[name] = process
        return process

    # --- identities -----------------------------------------------------------------------------

    def _write_identities(self) -> None:
        key = self.workdir / "sa.key"
        _run(["openssl", "genrsa", "-out", str(key), "2048"])
        _run(["openssl", "rsa", "-in", str(key), "-pubout", "-out", str(self.workdir / "sa.pub")])
        masters = "system:masters"
        identities = {ADMIN_USER: masters, "system:kube-controller-manager": masters,
                      "system:kube-scheduler": masters}
        identities.update({f"system:node:{node}": f"system:nodes,{masters}" for node in self.nodes})
        identities.update({user: "" for user in STATIC_USERS})
        lines = []
        for index, (user, groups) in enumerate(identities.items()):
            self._tokens[user] = secrets.token_hex(16)
            lines.append(f'{self._tokens[user]},{user},uid-{index},"{groups}"' if groups
                         else f"{self._tokens[user]},{user},uid-{index}")
        (self.workdir / "tokens.csv").write_text("\n".join(lines) + "\n")
        (self.workdir / "audit-policy.yaml").write_text(json.dumps(AUDIT_POLICY))

    def _write_kubeconfig(self, path: Path, user: str, token: str) -> Path:
        config = {
            "apiVersion": "v1", "kind": "Config", "current-context": "plane",
            "clusters": [{"name": "plane", "cluster": {"server": self.server,
                                                        "certificate-authority": str(self.ca_file)}}],
            "users": [{"name": user, "user": {"token": token}}],
            "contexts": [{"name": "plane", "context": {"cluster": "plane", "user": user}}],
        }
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(config, indent=1))
        path.chmod(0o600)
        return path

    def _write_kubeconfigs(self) -> None:
        self._write_kubeconfig(self.admin_kubeconfig, ADMIN_USER, self._tokens[ADMIN_USER])

    def _component_kubeconfig(self, user: str) -> Path:
        safe = user.replace(":", "-")
        return self._write_kubeconfig(self.workdir / "kubeconfigs" / f"{safe}.kubeconfig", user, self._tokens[user])

    def kubeconfig_for_user(self, name: str) -> Path:
        if name not in STATIC_USERS:
            raise PlaneError(f"no static user {name!r}; the plane has {', '.join(STATIC_USERS)}")
        return self._component_kubeconfig(name)

    def service_account_token(self, namespace: str, name: str, seconds: int = 86400) -> str:
        """A token for the ServiceAccount (TokenRequest, as ``kubectl create token`` and a kubelet ask for one)."""
        path = f"/api/v1/namespaces/{namespace}/serviceaccounts/{name}/token"
        status, answer = self.api().request("POST", path, {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
                                                            "spec": {"expirationSeconds": seconds}})
        if status != 201:
            raise PlaneError(f"POST {path}: {status} {answer.get('message')}")
        return answer["status"]["token"]

    def kubeconfig_for_service_account(self, namespace: str, name: str) -> Path:
        path = self.workdir / "kubeconfigs" / f"sa-{namespace}-{name}.kubeconfig"
        return self._write_kubeconfig(path, f"system:serviceaccount:{namespace}:{name}",
                                      self.service_account_token(namespace, name))

    # --- components -----------------------------------------------------------------------------

    def _start_etcd(self) -> None:
        client, peer = free_port(), free_port()
        self.etcd_url = f"http://127.0.0.1:{client}"
        self._spawn("etcd", [str(self.assets / "etcd"), "--data-dir", str(self.workdir / "etcd"),
                             "--listen-client-urls", self.etcd_url, "--listen-peer-urls", f"http://127.0.0.1:{peer}"])
        wait_for(lambda: _http_ok(f"{self.etcd_url}/health") or self._check_alive("etcd"), START_TIMEOUT,
                 "etcd to answer /health")

    def _apiserver_argv(self) -> list[str]:
        return [
            str(self.assets / "kube-apiserver"),
            f"--etcd-servers={self.etcd_url}",
            "--bind-address=127.0.0.1", f"--secure-port={self.port}",
            f"--cert-dir={self.ca_file.parent}",
            f"--token-auth-file={self.workdir / 'tokens.csv'}",
            "--authorization-mode=RBAC",
            "--service-account-issuer=https://kubernetes.default.svc",
            f"--service-account-key-file={self.workdir / 'sa.pub'}",
            f"--service-account-signing-key-file={self.workdir / 'sa.key'}",
            "--service-cluster-ip-range=10.96.0.0/24",
            "--allow-privileged=true",
            "--enable-admission-plugins=OwnerReferencesPermissionEnforcement",
            f"--audit-policy-file={self.workdir / 'audit-policy.yaml'}",
            f"--audit-log-path={self.audit_log}",
            "--audit-log-format=json",
            "--audit-log-maxsize=0",  # never rotate: marks are byte offsets into one file
        ]

    def start_apiserver(self) -> None:
        if "kube-apiserver" in self._processes and self._processes["kube-apiserver"].running:
            return
        self._spawn("kube-apiserver", self._apiserver_argv())
        wait_for(lambda: self._apiserver_ready() or self._check_alive("kube-apiserver"), START_TIMEOUT,
                 "kube-apiserver to be ready (/readyz)")

    def stop_apiserver(self) -> None:
        """SIGTERM; it stops listening at once but may linger for open watches: SIGKILL after 3 s."""
        process = self._processes.get("kube-apiserver")
        if process is not None:
            process.stop(timeout=3.0)

    def kill_apiserver(self) -> None:
        """SIGKILL, as a crash."""
        process = self._processes.get("kube-apiserver")
        if process is not None:
            process.kill()

    def restart_apiserver(self) -> None:
        self.stop_apiserver()
        self.start_apiserver()

    def _apiserver_ready(self) -> bool:
        if not self.ca_file.exists():
            return False
        context = ssl.create_default_context(cafile=str(self.ca_file))
        return _http_ok(f"{self.server}/readyz", context, self._tokens[ADMIN_USER])

    def _check_alive(self, name: str) -> bool:
        process = self._processes[name]
        if not process.running:
            raise PlaneError(f"{name} exited with {process.popen.returncode}; its log ({process.log}):\n"
                             f"{process.tail()}")
        return False

    def _start_controllers(self) -> None:
        controller = self._component_kubeconfig("system:kube-controller-manager")
        self._spawn("kube-controller-manager", [
            str(self.assets / "kube-controller-manager"), f"--kubeconfig={controller}", "--leader-elect=false",
            "--bind-address=127.0.0.1", f"--secure-port={free_port()}",
            f"--service-account-private-key-file={self.workdir / 'sa.key'}", f"--root-ca-file={self.ca_file}",
            "--controllers=*", "--use-service-account-credentials=false",
        ])
        scheduler = self._component_kubeconfig("system:kube-scheduler")
        self._spawn("kube-scheduler", [
            str(self.assets / "kube-scheduler"), f"--kubeconfig={scheduler}", "--leader-elect=false",
            "--bind-address=127.0.0.1", f"--secure-port={free_port()}",
        ])

    def _start_node(self, node: str) -> None:
        argv = [
            str(self.assets / "kubemark"), "--morph=kubelet", f"--name={node}",
            f"--kubeconfig={self._component_kubeconfig(f'system:node:{node}')}",
            "--use-host-image-service=false", f"--kubelet-port={free_port()}", "--kubelet-read-only-port=0",
            f"--cert-dir={self.workdir / 'nodes' / node}",
        ]
        if node in self.control_plane_nodes:
            argv += [f"--node-labels={CONTROL_PLANE_LABEL}=",
                     f"--register-with-taints={CONTROL_PLANE_LABEL}=:NoSchedule"]
        self._spawn(f"node-{node}", argv)

    def _wait_ready(self) -> None:
        def nodes_ready() -> bool:
            for name in self._processes:
                self._check_alive(name)
            listed = self.get("nodes")["items"]
            # Ready, and the node lifecycle controller has taken its not-ready taint off again (it
            # lingers a moment after Ready, and keeps plain pods off the node meanwhile).
            ready = {n["metadata"]["name"] for n in listed
                     if any(c["type"] == "Ready" and c["status"] == "True" for c in n["status"].get("conditions", []))
                     and not any(t["key"] in NODE_CONDITION_TAINTS for t in n["spec"].get("taints") or [])}
            return ready >= set(self.nodes)

        wait_for(nodes_ready, START_TIMEOUT, f"nodes {', '.join(self.nodes)} to be Ready", interval=0.5)
        # The controller manager works once namespaces get their ServiceAccount.
        wait_for(lambda: self.kubectl("get", "serviceaccount", "default", "-n", "default", check=False).returncode == 0,
                 START_TIMEOUT, "the default ServiceAccount (kube-controller-manager)", interval=0.5)

    # --- clients --------------------------------------------------------------------------------

    def api(self) -> "Api":
        """This thread's admin client on a kept-alive connection (an Api is not for several threads)."""
        client = getattr(self._local, "api", None)
        if client is None:
            client = self._local.api = Api(self)
        return client

    def kubectl(self, *args: str, kubeconfig: Path | None = None, input: str | None = None,
                check: bool = True, timeout: float = KUBECTL_TIMEOUT) -> subprocess.CompletedProcess:
        assert self.tools is not None
        return _tool(self.tools.kubectl, args, kubeconfig or self.admin_kubeconfig, input, check, timeout,
                     self._tool_env("kubectl"))

    def helm(self, *args: str, kubeconfig: Path | None = None, input: str | None = None,
             check: bool = True, timeout: float = KUBECTL_TIMEOUT) -> subprocess.CompletedProcess:
        assert self.tools is not None
        return _tool(self.tools.helm, args, kubeconfig or self.admin_kubeconfig, input, check, timeout,
                     self._tool_env("helm"))

    def _tool_env(self, name: str) -> dict[str, str]:
        # Keep helm and kubectl away from the user's configuration, caches and plugins.
        home = self.workdir / "tool-home" / name
        env = {key: value for key, value in os.environ.items() if key != "KUBECONFIG"}
        env.update({key: str(home / key.lower()) for key in ("HELM_CACHE_HOME", "HELM_CONFIG_HOME", "HELM_DATA_HOME")})
        env["HOME"] = str(home)
        return env

    def get(self, *args: str, kubeconfig: Path | None = None) -> dict:
        return json.loads(self.kubectl("get", *args, "-o", "json", kubeconfig=kubeconfig).stdout)

    def get_or_none(self, *args: str, kubeconfig: Path | None = None) -> dict | None:
        done = self.kubectl("get", *args, "-o", "json", "--ignore-not-found", kubeconfig=kubeconfig)
        return json.loads(done.stdout) if done.stdout.strip() else None

    def apply(self, body: dict | str, *args: str, kubeconfig: Path | None = None) -> subprocess.CompletedProcess:
        text = body if isinstance(body, str) else json.dumps(body)
        return self.kubectl("apply", "-f", "-", *args, input=text, kubeconfig=kubeconfig)

    # --- the audit log --------------------------------------------------------------------------

    def audit_mark(self) -> int:
        """A point in the audit log (its size now); pass it to :meth:`requests_since`."""
        return self.audit_log.stat().st_size if self.audit_log.exists() else 0

    def audit_events_since(self, mark: int) -> list[dict]:
        with self.audit_log.open("rb") as handle:
            handle.seek(mark)
            data = handle.read()
        complete = data[: data.rfind(b"\n") + 1]  # a line being written is not an event yet
        return [json.loads(line) for line in complete.splitlines() if line.strip()]

    def requests_since(self, mark: int, *, user: str | None = None,
                       verbs: Iterable[str] | None = WRITE_VERBS) -> list[dict]:
        """One audit event per request since ``mark`` (its last stage), by ``user`` and of ``verbs``."""
        wanted = None if verbs is None else frozenset(verbs)
        by_id: dict[str, dict] = {}
        for event in self.audit_events_since(mark):
            if user is not None and event.get("user", {}).get("username") != user:
                continue
            if wanted is not None and event.get("verb") not in wanted:
                continue
            by_id[event["auditID"]] = event  # ResponseComplete replaces ResponseStarted
        return list(by_id.values())

    def wait_quiet_audit(self, seconds: float = 1.0, timeout: float = 30.0) -> None:
        """Wait until the audit log has not grown for ``seconds`` of requests by non-plane users."""
        def settled() -> bool:
            mark = self.audit_mark()
            time.sleep(seconds)
            return not [e for e in self.audit_events_since(mark) if not _plane_user(e)]
        wait_for(settled, timeout, "the audit log to settle", interval=0)

    # --- kaudit processes -----------------------------------------------------------------------

    def start_operator(self, *args: str, kubeconfig: Path, namespace: str, env: dict[str, str] | None = None,
                       name: str = "operator") -> Process:
        """``kaudit run ARGS`` as a real process with ``kubeconfig``; stopped at teardown at the latest."""
        argv = [sys.executable, "-m", "kaudit", "run", *args]
        for flag in ("--liveness-port", "--metrics-port"):
            if flag not in args:
                argv += [flag, "0"]
        environment = {**_kaudit_env(), "KUBECONFIG": str(kubeconfig), "POD_NAMESPACE": namespace, **(env or {})}
        process = Process(name, argv, self.workdir / "logs" / f"{name}-{len(self._children)}.log", environment)
        self._children.append(process.start())
        return process

    def start_installer(self, node: str, *, collection: str, namespace: str, policy_dir: Path,
                        service_account: str | None = None, args: Sequence[str] = (),
                        wait_pod: float = 60.0) -> Installer:
        """Play the policy installer's pod on ``node`` (see the module docstring) as its kubelet does
        once the pod is bound there: a token for the pod's ServiceAccount, the ConfigMap volume's
        content, then the container's process. One API request each, as quick as the kubelet's own
        (its pod informer already has the pod; the image is cached). Safe from several threads."""
        prefix = f"kaudit-{collection}"
        service_account = service_account or f"{prefix}-policy-installer"
        pod = self._installer_pod(node, namespace, service_account, wait_pod)
        home = self.workdir / "installers" / f"{collection}-{node}-{secrets.token_hex(4)}"
        (home / "serviceaccount").mkdir(parents=True, exist_ok=True)
        (home / "source").mkdir(exist_ok=True)
        (home / "serviceaccount" / "token").write_text(self.service_account_token(namespace, service_account))
        (home / "serviceaccount" / "ca.crt").write_bytes(self.ca_file.read_bytes())
        source = home / "source" / "policy.yaml"
        target = Path(policy_dir) / "policy.yaml"
        environment = {**_kaudit_env(), "NODE_NAME": node, "POD_NAMESPACE": namespace,
                       "POD_NAME": pod["metadata"]["name"], "POD_UID": pod["metadata"]["uid"],
                       "KUBERNETES_SERVICE_HOST": "127.0.0.1", "KUBERNETES_SERVICE_PORT": str(self.port),
                       SERVICE_ACCOUNT_DIR_ENV: str(home / "serviceaccount")}
        argv = [sys.executable, "-m", "kaudit", "install-policy", "--from", str(source), "--to", str(target),
                "--collection", collection, "--report", "--interval", "0.2", *args]
        process = Process(f"installer-{node}", argv, home / "installer.log", environment)
        installer = Installer(self, node, namespace, f"{prefix}-policy", source, target, process)
        installer.sync()
        self._children.append(process.start())
        return installer

    def start_installers(self, *, collection: str, namespace: str, policy_dir: Callable[[str], Path],
                         args: Sequence[str] = (), nodes: Sequence[str] | None = None) -> list[Installer]:
        """:meth:`start_installer` on each control-plane node (or ``nodes``) at once, each as soon as
        its pod is there, as every node's kubelet acts on its own; in node order."""
        chosen = list(self.control_plane_nodes if nodes is None else nodes)
        with concurrent.futures.ThreadPoolExecutor(len(chosen), thread_name_prefix="kubelet") as pool:
            started = [pool.submit(self.start_installer, node, collection=collection, namespace=namespace,
                                   policy_dir=policy_dir(node), args=args) for node in chosen]
            return [future.result() for future in started]

    def wait_established(self, crd: str, timeout: float = 60.0) -> None:
        """Until the CustomResourceDefinition ``crd`` serves its resource. Not ``kubectl wait
        --for=condition=Established``: right after the create, before the first status, it fails
        (".status.conditions accessor error") instead of waiting."""
        def established() -> bool:
            status, found = self.api().request("GET", f"/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{crd}")
            conditions = (found.get("status") or {}).get("conditions") or [] if status == 200 else []
            return any(c["type"] == "Established" and c["status"] == "True" for c in conditions)
        wait_for(established, timeout, f"CustomResourceDefinition {crd} to be Established", interval=0.05)

    def _installer_pod(self, node: str, namespace: str, service_account: str, timeout: float) -> dict:
        path = f"/api/v1/namespaces/{namespace}/pods?fieldSelector=spec.nodeName%3D{node}"

        def find() -> dict | None:
            status, listed = self.api().request("GET", path)
            return next((p for p in listed.get("items", []) if p["spec"].get("serviceAccountName") == service_account
                         and not p["metadata"].get("deletionTimestamp")), None) if status == 200 else None
        return wait_for(find, timeout, f"an installer pod ({service_account}) on {node}", interval=0.02)


class Api:
    """A bare HTTPS client on one kept-alive connection, for traffic kubectl is too slow for (a
    kubelet's few requests, a tight writer loop, thousands of creates). One per thread."""

    def __init__(self, plane: ControlPlane, kubeconfig: Path | None = None):
        config = json.loads((kubeconfig or plane.admin_kubeconfig).read_text())
        self._token = config["users"][0]["user"]["token"]
        self._context = ssl.create_default_context(cafile=str(plane.ca_file))
        self._port = plane.port
        self._connection: http.client.HTTPSConnection | None = None

    def request(self, method: str, path: str, body: dict | None = None,
                content_type: str = "application/json") -> tuple[int, dict]:
        for attempt in (1, 2):  # once more on a connection the server closed meanwhile
            if self._connection is None:
                self._connection = http.client.HTTPSConnection("127.0.0.1", self._port, context=self._context,
                                                               timeout=60)
            try:
                self._connection.request(method, path, body=None if body is None else json.dumps(body),
                                         headers={"Authorization": f"Bearer {self._token}",
                                                  "Content-Type": content_type})
                response = self._connection.getresponse()
                data = response.read()
                return response.status, (json.loads(data) if data else {})
            except (http.client.HTTPException, OSError):
                self._connection.close()
                self._connection = None
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    def watch(self, path: str, timeout: float) -> Iterator[dict]:
        """The events of a watch on ``path`` (a list URL), each as the server sends it, on a
        connection of its own; ends after ``timeout`` seconds (the server's timeoutSeconds)."""
        joiner = "&" if "?" in path else "?"
        connection = http.client.HTTPSConnection("127.0.0.1", self._port, context=self._context, timeout=timeout + 5)
        try:
            connection.request("GET", f"{path}{joiner}watch=1&timeoutSeconds={max(1, round(timeout))}",
                               headers={"Authorization": f"Bearer {self._token}"})
            response = connection.getresponse()
            if response.status != 200:
                raise PlaneError(f"watch {path}: {response.status} {response.read()[:200]!r}")
            for line in iter(response.readline, b""):
                if line.strip():
                    yield json.loads(line)
        finally:
            connection.close()

    def close(self) -> None:
        if self._connection is not None:
            self._connection.close()


def _plane_user(event: dict) -> bool:
    name = event.get("user", {}).get("username", "")
    return name.startswith(("system:node:", "system:kube-", "system:apiserver")) or name == ADMIN_USER


def _compile_kaudit() -> None:
    # The image ships kaudit compiled (the Dockerfile's compileall), so each container start reads
    # bytecode; the kaudit processes here do the same instead of compiling every module at every
    # start (with PYTHONDONTWRITEBYTECODE nothing would ever be cached). Beside the sources, as any
    # import would write them; git ignores them.
    _run([sys.executable, "-m", "compileall", "-q", "-j", "0", str(REPO / "operator" / "kaudit")])


def _kaudit_env() -> dict[str, str]:
    # Find the checkout's kaudit even when it is not installed, and never the user's cluster.
    env = {key: value for key, value in os.environ.items()
           if key not in ("KUBECONFIG", "KUBERNETES_SERVICE_HOST", "KUBERNETES_SERVICE_PORT")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO / "operator"), env.get("PYTHONPATH")]))
    env["PYTHONUNBUFFERED"] = "1"
    return env


def _tool(binary: Path, args: Sequence[str], kubeconfig: Path, input: str | None, check: bool, timeout: float,
          env: dict[str, str]) -> subprocess.CompletedProcess:
    argv = [str(binary), f"--kubeconfig={kubeconfig}", *args]
    done = subprocess.run(argv, input=input, capture_output=True, text=True, env=env, timeout=timeout)
    if check and done.returncode != 0:
        raise PlaneError(f"{binary.name} {' '.join(args)} exited {done.returncode}:\n{done.stderr.strip()}")
    return done


def _run(argv: list[str]) -> None:
    done = subprocess.run(argv, capture_output=True, text=True)
    if done.returncode != 0:
        raise PlaneError(f"{' '.join(argv)} exited {done.returncode}: {done.stderr.strip()}")


def _http_ok(url: str, context: ssl.SSLContext | None = None, token: str | None = None) -> bool:
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"} if token else {})
    try:
        with urllib.request.urlopen(request, timeout=2, context=context) as response:
            return response.status == 200
    except (urllib.error.URLError, OSError, ssl.SSLError):
        return False


def _stop_on_sigterm() -> None:
    # SIGTERM would end the test process without atexit handlers; make it a normal exit instead.
    if signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
        signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))


def load_yaml_documents(text: str) -> list[dict]:
    return [doc for doc in yaml.safe_load_all(text) if doc]

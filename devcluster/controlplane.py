"""A real Kubernetes control plane for the tests and the local clusters, after envtest.

It runs etcd, kube-apiserver, kube-controller-manager (all controllers: garbage collector,
service accounts, node lifecycle, ...) and kube-scheduler as local processes on 127.0.0.1,
with certificates made by `openssl` in a temporary directory and free ports. There are no
kubelets: pods are scheduled (spec.nodeName is set) but never run; `add_node` fakes a
node that stays Ready.

The binaries (Kubernetes K8S_VERSION of hack/control-plane/versions.env, or
$RESNET50_K8S_VERSION; etcd; kubectl) come from `hack/control-plane/build.sh`, which builds
them from the Go module proxy into a cache outside the repository. They are looked up, one
by one, in:

1. $KUBEBUILDER_ASSETS
2. $RESNET50_CONTROL_PLANE_DIR/bin
3. ${XDG_CACHE_HOME:-$HOME/.cache}/resnet50-operator/control-plane/<K8S_VERSION>/bin
4. $PATH (etcd and kubectl only)

Use from Python (only the standard library, plus the `kubernetes` client for `api_client`)::

    from devcluster.controlplane import ControlPlane, binaries_available

    reason = binaries_available()
    if reason:
        pytest.skip(reason)
    with ControlPlane() as cp:          # or cp = ControlPlane().start(); ...; cp.stop()
        core = kubernetes.client.CoreV1Api(cp.api_client())
        ...                             # or os.environ["KUBECONFIG"] = str(cp.kubeconfig)

or from a shell (what hack/control-plane/start.sh and stop.sh run)::

    python3 -m devcluster controlplane start [--dir DIR]   # prints the kubeconfig's path
    python3 -m devcluster controlplane stop  [--dir DIR]

Things a test should know about this cluster (they are Kubernetes', not this file's):

* The ServiceAccount admission plugin is on, so a pod can only be created in a namespace
  once the controller-manager has made its "default" ServiceAccount: `create_namespace`
  waits for that (and start() waits for it in "default").
* Pod Security admission is on (as in every cluster since v1.25): a namespace labelled
  pod-security.kubernetes.io/enforce=restricted refuses pods that do not pass that level.
* The node lifecycle controller marks a node whose Lease is not renewed Unknown after
  `node_monitor_grace_period` (40 s by default); `add_node` renews the Lease.
* A pod deleted on a node without a kubelet stays Terminating until it is deleted again
  with grace period 0.
* The garbage collector rediscovers API resources every 30 s, so dependents of a custom
  resource whose CRD was created after start() may take 30-40 s to be collected; CRDs given
  as `ControlPlane(crds=[...])` are created before kube-controller-manager starts, and
  their dependents go within a second.

The processes get SIGTERM if the thread that started them dies (even by SIGKILL), so a
killed test run leaves no control plane behind (the CLI's `start` detaches them instead).

They are supervised: one that exits while the control plane is up (a kube-scheduler or
kube-controller-manager that lost its leader election exits, and would leave pods Pending)
is started again with the same arguments, after a back-off of 1 s that doubles up to 30 s
and starts over once a process has run for 60 s; its log says so. A `ControlPlane` in a
Python process has a thread for that. The CLI's `start` leaves a small supervisor process
(`controlplane supervise`, recorded in the state file) that starts the control plane and
watches it; `stop` has it stop the processes, so that nothing is restarted meanwhile.
"""

from __future__ import annotations

import argparse
import atexit
import base64
import contextlib
import ctypes
import datetime
import json
import os
import secrets
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

VERSIONS_FILE = Path(__file__).resolve().parents[1] / "hack" / "control-plane" / "versions.env"
COMPONENTS = ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler")
SERVICE_CIDR = "10.0.0.0/24"
SERVICE_IP = "10.0.0.1"  # first address of SERVICE_CIDR: the `kubernetes` Service
BUILD_HINT = "build them with `hack/control-plane/build.sh` (about 15 minutes, once per machine)"
STATE_FILE = "control-plane.json"
ETCD_SHM_PREFIX = "resnet50-etcd-"
# Restarts of a process that exited: back-off from MIN doubling to MAX, back to MIN once the
# process has run RESET seconds.
RESTART_DELAY_MIN, RESTART_DELAY_MAX, RESTART_RESET = 1.0, 30.0, 60.0
SUPERVISE_INTERVAL = 0.5
# The line by which `controlplane supervise` tells `start` how its start went.
RESULT_PREFIX = "devcluster-controlplane-result "


class ControlPlaneError(RuntimeError):
    """The control plane could not be started (the message carries the log's tail)."""


# --------------------------------------------------------------------------- binaries


def pinned_versions() -> dict[str, str]:
    """KEY=value lines of hack/control-plane/versions.env (K8S_VERSION, ETCD_VERSION)."""
    lines = VERSIONS_FILE.read_text().splitlines()
    return dict(line.split("=", 1) for line in lines if line and not line.startswith("#"))


def k8s_version() -> str:
    """The Kubernetes release the tests run on: $RESNET50_K8S_VERSION or the pinned one."""
    return os.environ.get("RESNET50_K8S_VERSION") or pinned_versions()["K8S_VERSION"]


def default_cache_dir() -> Path:
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(cache) / "resnet50-operator" / "control-plane" / k8s_version()


def search_dirs() -> list[Path]:
    """Directories searched for the binaries, first match wins (per binary)."""
    dirs = []
    if os.environ.get("KUBEBUILDER_ASSETS"):
        dirs.append(Path(os.environ["KUBEBUILDER_ASSETS"]))
    if os.environ.get("RESNET50_CONTROL_PLANE_DIR"):
        dirs.append(Path(os.environ["RESNET50_CONTROL_PLANE_DIR"]) / "bin")
    dirs.append(default_cache_dir() / "bin")
    return dirs


def find_binaries() -> tuple[dict[str, Path], list[str]]:
    """Return ({name: path} of what was found, [names not found]) for COMPONENTS and kubectl."""
    found: dict[str, Path] = {}
    for name in (*COMPONENTS, "kubectl"):
        for d in search_dirs():
            p = d / name
            if p.is_file() and os.access(p, os.X_OK):
                found[name] = p
                break
        else:
            if name in ("etcd", "kubectl") and shutil.which(name):
                found[name] = Path(shutil.which(name))  # type: ignore[arg-type]
    missing = [n for n in COMPONENTS if n not in found]
    return found, missing


def binaries_available() -> str | None:
    """None if a control plane can be started here, else the reason why not."""
    if sys.platform != "linux":
        return f"the test control plane runs on Linux only (this is {sys.platform})"
    _, missing = find_binaries()
    if missing:
        where = ", ".join(str(d) for d in search_dirs())
        return f"control-plane binaries not found: {', '.join(missing)} (searched {where}); " + (
            BUILD_HINT
        )
    if not shutil.which("openssl"):
        return "`openssl` is not installed (apt-get install openssl); it makes the certificates"
    return None


# --------------------------------------------------------------------------- certificates


def _run(cmd: list[str], cwd: Path) -> None:
    r = subprocess.run(cmd, cwd=cwd, stdin=subprocess.DEVNULL, capture_output=True, text=True)
    if r.returncode != 0:
        raise ControlPlaneError(f"{' '.join(cmd)} failed ({r.returncode}):\n{r.stderr.strip()}")


def _openssl_cert(
    d: Path,
    name: str,
    cn: str,
    *,
    ca: str | None,
    org: str | None = None,
    server_sans: list[str] | None = None,
    client: bool = False,
) -> None:
    """Make d/name.key and d/name.crt: a self-signed CA when ca is None, else signed by d/ca.*.

    A private openssl config is used, so the machine's openssl.cnf does not matter.
    """
    dn = f"CN = {cn}\n" + (f"O = {org}\n" if org else "")
    if ca is None:
        ext = (
            "basicConstraints = critical, CA:TRUE\n"
            "keyUsage = critical, digitalSignature, keyEncipherment, keyCertSign, cRLSign\n"
            "subjectKeyIdentifier = hash\n"
        )
    else:
        usages = (["serverAuth"] if server_sans else []) + (["clientAuth"] if client else [])
        ext = (
            "basicConstraints = critical, CA:FALSE\n"
            "keyUsage = critical, digitalSignature, keyEncipherment\n"
            f"extendedKeyUsage = {', '.join(usages)}\n"
            "authorityKeyIdentifier = keyid\n"
        )
        if server_sans:
            ext += f"subjectAltName = {', '.join(server_sans)}\n"
    cnf = d / f"{name}.cnf"
    cnf.write_text(
        "[req]\nprompt = no\ndistinguished_name = dn\n"
        f"[dn]\n{dn}[ext]\n{ext}"
    )
    key_args = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    if ca is None:
        _run(["openssl", "req", "-x509", "-new", *key_args, "-sha256", "-days", "30",
              "-config", cnf.name, "-extensions", "ext",
              "-keyout", f"{name}.key", "-out", f"{name}.crt"], d)
    else:
        _run(["openssl", "req", "-new", *key_args, "-config", cnf.name,
              "-keyout", f"{name}.key", "-out", f"{name}.csr"], d)
        _run(["openssl", "x509", "-req", "-in", f"{name}.csr", "-sha256", "-days", "30",
              "-CA", f"{ca}.crt", "-CAkey", f"{ca}.key",
              "-set_serial", str(secrets.randbits(63)),
              "-extfile", cnf.name, "-extensions", "ext", "-out", f"{name}.crt"], d)
        (d / f"{name}.csr").unlink()
    cnf.unlink()


def make_pki(d: Path, address: str = "127.0.0.1") -> None:
    """All the keys and certificates of one control plane, into d."""
    d.mkdir(parents=True, exist_ok=True)
    _openssl_cert(d, "ca", "resnet50-test-ca", ca=None)
    _openssl_cert(d, "front-proxy-ca", "resnet50-test-front-proxy-ca", ca=None)
    sans = [
        "IP:127.0.0.1", f"IP:{SERVICE_IP}", "DNS:localhost", "DNS:kubernetes",
        "DNS:kubernetes.default", "DNS:kubernetes.default.svc",
        "DNS:kubernetes.default.svc.cluster.local",
    ]
    if address != "127.0.0.1":
        sans.append(f"IP:{address}")
    _openssl_cert(d, "apiserver", "kube-apiserver", ca="ca", server_sans=sans)
    _openssl_cert(d, "admin", "admin", org="system:masters", ca="ca", client=True)
    # How the apiserver authenticates to kubelets (logs, exec): as a member of masters.
    _openssl_cert(d, "apiserver-kubelet-client", "kube-apiserver-kubelet-client",
                  org="system:masters", ca="ca", client=True)
    _openssl_cert(d, "controller-manager", "system:kube-controller-manager", ca="ca", client=True)
    _openssl_cert(d, "scheduler", "system:kube-scheduler", ca="ca", client=True)
    _openssl_cert(d, "front-proxy-client", "front-proxy-client", ca="front-proxy-ca", client=True)
    _run(["openssl", "genrsa", "-out", "sa.key", "2048"], d)
    _run(["openssl", "rsa", "-in", "sa.key", "-pubout", "-out", "sa.pub"], d)
    for p in d.glob("*.key"):
        p.chmod(0o600)


def write_kubeconfig(path: Path, server: str, pki: Path, user: str, name: str) -> None:
    """A kubeconfig with the certificates embedded (JSON, which is also YAML)."""
    def b64(name: str) -> str:
        return base64.b64encode((pki / name).read_bytes()).decode()

    cfg = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": name, "cluster": {
            "server": server, "certificate-authority-data": b64("ca.crt")}}],
        "users": [{"name": user, "user": {
            "client-certificate-data": b64(f"{user}.crt"),
            "client-key-data": b64(f"{user}.key")}}],
        "contexts": [{"name": name, "context": {"cluster": name, "user": user}}],
        "current-context": name,
        "preferences": {},
    }
    path.write_text(json.dumps(cfg, indent=2) + "\n")
    path.chmod(0o600)


def client_kubeconfig(workdir: Path, user: str, group: str | None = None) -> Path:
    """A kubeconfig for `user` (in `group`) of the control plane started in workdir, with a
    certificate signed by its CA: how a kubelet (system:node:NAME in system:nodes) or
    kube-proxy (system:kube-proxy) authenticates. Written to workdir/<user>.kubeconfig."""
    state = json.loads((workdir / STATE_FILE).read_text())
    pki = workdir / "pki"
    name = user.replace(":", "-")
    _openssl_cert(pki, name, user, org=group, ca="ca", client=True)
    (pki / f"{name}.key").chmod(0o600)
    path = workdir / f"{name}.kubeconfig"
    write_kubeconfig(path, state["server"], pki, name, "resnet50-test")
    return path


# --------------------------------------------------------------------------- processes


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _log_tail(path: Path, lines: int = 40) -> str:
    try:
        text = path.read_text(errors="replace").splitlines()
    except OSError as e:
        return f"(no log: {e})"
    return "\n".join(text[-lines:])


def _proc_start_time(pid: int) -> str | None:
    """Field 22 of /proc/PID/stat: identifies a process beyond its (reusable) pid."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[19]


def _running(pid: int, start_time: str | None) -> bool:
    """Whether the process `pid` that started at `start_time` still runs (a zombie does not)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return False
    return start_time is not None and fields[19] == start_time and fields[0] not in "ZX"


def _write_atomically(path: Path, text: str) -> None:
    """Readers (stop, a sweep of stale etcd directories) see the old text or the new one."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    tmp.replace(path)


def _parent_death_signal() -> Any:
    """preexec_fn that has the child killed (SIGTERM) if the thread that started it dies."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        prctl = libc.prctl
    except (OSError, AttributeError):
        return None

    def preexec() -> None:
        prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG

    return preexec


def _sweep_stale_etcd_dirs(shm: Path) -> None:
    """Remove etcd data left in memory by control planes whose process was killed (-9)."""
    for d in shm.glob(ETCD_SHM_PREFIX + "*"):
        try:
            pid, start_time = (d / "owner").read_text().split()
            stale = _proc_start_time(int(pid)) != start_time
        except (OSError, ValueError):  # no owner yet: a start in progress, or one killed early
            stale = time.time() - d.stat().st_mtime > 3600
        if stale:
            shutil.rmtree(d, ignore_errors=True)


def _remove_workdir(d: Path, *, created: bool) -> None:
    """Remove a control plane's files: the whole directory if it made it, else its own entries."""
    if created:
        shutil.rmtree(d, ignore_errors=True)
        return
    for sub in ("pki", "logs", "etcd", "apiserver-certs", "kubeconfig",
                "controller-manager.kubeconfig", "scheduler.kubeconfig", STATE_FILE):
        p = d / sub
        if p.is_dir():
            shutil.rmtree(p, ignore_errors=True)
        else:
            p.unlink(missing_ok=True)


class _Process:
    def __init__(self, name: str, argv: list[str], log: Path, *, detach: bool) -> None:
        self.name, self.argv, self.log = name, argv, log
        self.detach = detach
        self.restarts = 0
        self._delay = 0.0  # the back-off before the last restart
        self._restart_at: float | None = None  # when it exited: when to start it again
        # Tied to the starting thread only if that is the main thread: a test's other thread
        # may end before the control plane does.
        self._launch(tie_to_thread=threading.current_thread() is threading.main_thread())

    def _launch(self, *, tie_to_thread: bool) -> None:
        preexec = _parent_death_signal() if tie_to_thread and not self.detach else None
        with open(self.log, "ab") as out:
            out.write(f"$ {' '.join(self.argv)}\n".encode())
            out.flush()
            self.popen = subprocess.Popen(
                self.argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                start_new_session=True, preexec_fn=preexec,
            )
        self.pid = self.popen.pid
        self.start_time = _proc_start_time(self.pid)
        self.started = time.monotonic()

    def supervise(self) -> str | None:
        """Restart the process once its back-off has passed if it exited. Called by the
        supervising thread, which the restarted process is tied to (see ControlPlane.stop).
        Returns "exited" when it first sees the exit, "restarted", or None."""
        rc = self.popen.poll()
        if rc is None:
            return None
        now = time.monotonic()
        if self._restart_at is None:
            ran = now - self.started
            fresh = ran >= RESTART_RESET or not self._delay
            self._delay = RESTART_DELAY_MIN if fresh else min(self._delay * 2, RESTART_DELAY_MAX)
            self._restart_at = now + self._delay
            self._ran = ran
            return "exited"
        if now < self._restart_at:
            return None
        self._restart_at = None
        self.restarts += 1
        how = f"code {rc}" + (f" (signal {-rc})" if rc < 0 else "")
        note = (f"devcluster: {self.name} exited with {how} after {self._ran:.1f}s; restarted "
                f"after {self._delay:g}s (restart {self.restarts})")
        with open(self.log, "a") as out:
            out.write(note + "\n")
        try:
            self._launch(tie_to_thread=True)
        except OSError as e:  # its binary went away: keep trying, further apart
            with open(self.log, "a") as out:
                out.write(f"devcluster: {self.name} did not start: {e}\n")
            self.started = now
            return None
        print(note, file=sys.stderr, flush=True)
        return "restarted"

    def check_alive(self) -> None:
        rc = self.popen.poll()
        if rc is not None:
            raise ControlPlaneError(
                f"{self.name} exited with code {rc} while starting; the end of its log "
                f"({self.log}):\n{_log_tail(self.log)}"
            )

    def stop(self, timeout: float = 10.0) -> None:
        if self.popen.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    self.popen.kill()
                self.popen.wait(5)


# --------------------------------------------------------------------------- the control plane


class ControlPlane:
    """etcd + kube-apiserver + kube-controller-manager + kube-scheduler on 127.0.0.1.

    Attributes once started: `kubeconfig` (Path, admin = system:masters), `server` (URL),
    `workdir` (certificates, kubeconfigs, logs/NAME.log, etcd's data).
    """

    def __init__(
        self,
        *,
        workdir: str | os.PathLike[str] | None = None,
        keep_workdir: bool = False,
        start_timeout: float = 120.0,
        node_monitor_grace_period: str | None = None,
        apiserver_args: list[str] | tuple[str, ...] = (),
        controller_manager_args: list[str] | tuple[str, ...] = (),
        scheduler_args: list[str] | tuple[str, ...] = (),
        verbosity: int = 0,
        detach: bool = False,
        crds: list[dict[str, Any] | str | os.PathLike[str]] | tuple[Any, ...] = (),
        address: str = "127.0.0.1",
    ) -> None:
        """
        workdir: where to put everything (default: a new temporary directory, removed by
            stop() unless keep_workdir or $RESNET50_CONTROL_PLANE_KEEP=1).
        node_monitor_grace_period: kube-controller-manager's --node-monitor-grace-period
            (e.g. "1h" to keep nodes without a renewed Lease Ready; Kubernetes' default 40s).
        *_args: extra command-line flags, e.g. apiserver_args=["--disable-admission-plugins=
            ServiceAccount"].
        detach: leave the processes running when this Python process exits, and leave their
            supervision to the caller: `supervise()` (the CLI's supervisor process).
        crds: CustomResourceDefinitions (dicts, or paths of YAML files, which may hold several
            documents) to create, and wait for, before kube-controller-manager starts: its
            garbage collector then knows the custom resources from the start, instead of
            finding them at its next 30-second discovery.
        address: the host address the apiserver listens on and advertises. The default,
            loopback, serves processes on this machine; real nodes' containers need an
            address of the host that they can reach (hack/real-node.sh gives eth0's), which
            is then also the `kubernetes` Service's endpoint.
        """
        self._workdir_arg = Path(workdir) if workdir is not None else None
        self.keep_workdir = keep_workdir or os.environ.get("RESNET50_CONTROL_PLANE_KEEP") == "1"
        self.start_timeout = start_timeout
        self.node_monitor_grace_period = node_monitor_grace_period
        self.extra_args = {
            "kube-apiserver": list(apiserver_args),
            "kube-controller-manager": list(controller_manager_args),
            "kube-scheduler": list(scheduler_args),
        }
        self.verbosity = verbosity
        self.crds = list(crds)
        self.address = address
        self.detach = detach
        self.workdir: Path | None = None
        self.kubeconfig: Path | None = None
        self.server: str | None = None
        self.ports: dict[str, int] = {}
        self.startup_seconds: float | None = None
        self.timings: dict[str, float] = {}  # seconds from start() to each step's end
        self._procs: list[_Process] = []
        self._etcd_dir: Path | None = None
        self._created_workdir = False
        self._heartbeats: list[threading.Thread] = []
        self._stopping = threading.Event()
        self._supervisor: threading.Thread | None = None
        self._ssl: ssl.SSLContext | None = None
        self._t0 = 0.0
        self.supervisor_state: dict[str, Any] | None = None  # the CLI's, for the state file

    # -- lifecycle

    def __enter__(self) -> ControlPlane:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> ControlPlane:
        reason = binaries_available()
        if reason:
            raise ControlPlaneError(reason)
        bins, _ = find_binaries()
        t0 = self._t0 = time.monotonic()
        if self._workdir_arg is None:
            self.workdir = Path(tempfile.mkdtemp(prefix="resnet50-control-plane-"))
            self._created_workdir = True
        else:
            self.workdir = self._workdir_arg
            self._created_workdir = not self.workdir.exists()
            self.workdir.mkdir(parents=True, exist_ok=True)
        if not self.detach:
            atexit.register(self.stop)
        try:
            for attempt in range(3):
                try:
                    self._start(bins)
                    break
                except ControlPlaneError as e:
                    # A free port taken by someone else between our check and the bind.
                    if attempt == 2 or "address already in use" not in str(e):
                        raise
                    self._stop_processes()
                    self.timings.clear()
        except BaseException as e:
            self.stop()
            if isinstance(e, ControlPlaneError) and not self.keep_workdir:
                raise ControlPlaneError(
                    f"{e}\n(the control plane's files were removed; "
                    "RESNET50_CONTROL_PLANE_KEEP=1 keeps them)"
                ) from None
            raise
        self.startup_seconds = time.monotonic() - t0
        if not self.detach:
            self._supervisor = threading.Thread(target=self.supervise, args=(self._stopping,),
                                                name="control-plane-supervisor", daemon=True)
            self._supervisor.start()
        return self

    def supervise(self, until: threading.Event) -> None:
        """Restart processes that exit (see the module's docstring) until `until` is set or
        stop() is called. start() runs this in a thread unless `detach`."""
        while not until.wait(SUPERVISE_INTERVAL) and not self._stopping.is_set():
            for p in list(self._procs):
                event = p.supervise()
                if event and p.name == "etcd":
                    # Its data directory in /dev/shm is swept once its owner is gone: while
                    # etcd is down, the supervising process owns it.
                    me = os.getpid()
                    self._write_etcd_owner(*((me, _proc_start_time(me)) if event == "exited"
                                             else (p.pid, p.start_time)))
                if event == "restarted" and self.detach:
                    self._write_state()  # the new pid, for `stop`

    def _write_etcd_owner(self, pid: int, start_time: str | None) -> None:
        if self._etcd_dir is not None and self.workdir is not None \
                and self._etcd_dir.parent != self.workdir:
            _write_atomically(self._etcd_dir.parent / "owner", f"{pid} {start_time}\n")

    def _start(self, bins: dict[str, Path]) -> None:
        wd = self.workdir
        assert wd is not None
        pki, logs = wd / "pki", wd / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        make_pki(pki, self.address)
        self.timings["certificates"] = time.monotonic() - self._t0
        self.ports = {
            "etcd": free_port(), "etcd-peer": free_port(), "apiserver": free_port()
        }
        self.server = f"https://{self.address}:{self.ports['apiserver']}"
        self.kubeconfig = wd / "kubeconfig"
        write_kubeconfig(self.kubeconfig, self.server, pki, "admin", "resnet50-test")
        write_kubeconfig(wd / "controller-manager.kubeconfig", self.server, pki,
                         "controller-manager", "resnet50-test")
        write_kubeconfig(wd / "scheduler.kubeconfig", self.server, pki, "scheduler",
                         "resnet50-test")
        self._ssl = ssl.create_default_context(cafile=str(pki / "ca.crt"))
        self._ssl.load_cert_chain(str(pki / "admin.crt"), str(pki / "admin.key"))
        deadline = time.monotonic() + self.start_timeout
        v = f"--v={self.verbosity}"

        # etcd: in memory (/dev/shm) when there is room, as fsync on a disk slows every write.
        # A restart (supervise) finds its data there: --initial-cluster-state=new is ignored
        # once the data directory holds a member, and the ports stay the same.
        self._etcd_dir = self._etcd_data_dir(wd)
        shutil.rmtree(self._etcd_dir, ignore_errors=True)  # a retry starts from an empty store
        etcd_url = f"http://127.0.0.1:{self.ports['etcd']}"
        peer_url = f"http://127.0.0.1:{self.ports['etcd-peer']}"
        etcd = self._spawn("etcd", [
            str(bins["etcd"]), "--name=default", f"--data-dir={self._etcd_dir}",
            f"--listen-client-urls={etcd_url}", f"--advertise-client-urls={etcd_url}",
            f"--listen-peer-urls={peer_url}", f"--initial-advertise-peer-urls={peer_url}",
            f"--initial-cluster=default={peer_url}", "--initial-cluster-state=new",
            "--logger=zap", "--log-level=warn",
        ])
        self._write_etcd_owner(etcd.pid, etcd.start_time)  # lets a later start remove it
        self._wait(etcd, "etcd /health", lambda: self._etcd_healthy(etcd_url), deadline)

        apiserver = self._spawn("kube-apiserver", [
            str(bins["kube-apiserver"]),
            f"--etcd-servers={etcd_url}",
            f"--bind-address={self.address}", f"--advertise-address={self.address}",
            f"--secure-port={self.ports['apiserver']}",
            f"--cert-dir={wd / 'apiserver-certs'}",
            f"--tls-cert-file={pki / 'apiserver.crt'}",
            f"--tls-private-key-file={pki / 'apiserver.key'}",
            f"--client-ca-file={pki / 'ca.crt'}",
            f"--service-account-key-file={pki / 'sa.pub'}",
            f"--service-account-signing-key-file={pki / 'sa.key'}",
            "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
            f"--service-cluster-ip-range={SERVICE_CIDR}",
            # A loopback address cannot be an Endpoint of the `kubernetes` Service.
            "--endpoint-reconciler-type=" + ("none" if self.address == "127.0.0.1" else "lease"),
            # Kubelets by their node's address (kubectl logs/exec), as kubeadm sets it up.
            "--kubelet-preferred-address-types=InternalIP,Hostname",
            f"--kubelet-client-certificate={pki / 'apiserver-kubelet-client.crt'}",
            f"--kubelet-client-key={pki / 'apiserver-kubelet-client.key'}",
            "--authorization-mode=Node,RBAC",
            "--allow-privileged=true",
            f"--requestheader-client-ca-file={pki / 'front-proxy-ca.crt'}",
            "--requestheader-allowed-names=front-proxy-client",
            "--requestheader-username-headers=X-Remote-User",
            "--requestheader-group-headers=X-Remote-Group",
            "--requestheader-extra-headers-prefix=X-Remote-Extra-",
            f"--proxy-client-cert-file={pki / 'front-proxy-client.crt'}",
            f"--proxy-client-key-file={pki / 'front-proxy-client.key'}",
            v, *self.extra_args["kube-apiserver"],
        ])
        self._wait(apiserver, "kube-apiserver /readyz",
                   lambda: self._get("/readyz")[0] == 200, deadline)

        if self.crds:
            self._create_crds(apiserver, deadline)

        cm_args = [
            str(bins["kube-controller-manager"]),
            f"--kubeconfig={wd / 'controller-manager.kubeconfig'}",
            "--controllers=*",
            "--use-service-account-credentials=true",
            f"--service-account-private-key-file={pki / 'sa.key'}",
            f"--root-ca-file={pki / 'ca.crt'}",
            f"--cluster-signing-cert-file={pki / 'ca.crt'}",
            f"--cluster-signing-key-file={pki / 'ca.key'}",
            "--leader-elect=true",  # its Lease tells us it is up
            "--bind-address=127.0.0.1", "--secure-port=0",
        ]
        if self.node_monitor_grace_period:
            cm_args.append(f"--node-monitor-grace-period={self.node_monitor_grace_period}")
        cm = self._spawn("kube-controller-manager",
                         [*cm_args, v, *self.extra_args["kube-controller-manager"]])
        sched = self._spawn("kube-scheduler", [
            str(bins["kube-scheduler"]),
            f"--kubeconfig={wd / 'scheduler.kubeconfig'}",
            "--leader-elect=true",
            "--bind-address=127.0.0.1", "--secure-port=0",
            v, *self.extra_args["kube-scheduler"],
        ])
        lease = "/apis/coordination.k8s.io/v1/namespaces/kube-system/leases/"
        self._wait(cm, "kube-controller-manager's leader Lease",
                   lambda: self._get(lease + "kube-controller-manager")[0] == 200, deadline)
        self._wait(sched, "kube-scheduler's leader Lease",
                   lambda: self._get(lease + "kube-scheduler")[0] == 200, deadline)
        # Pods can be created in "default" once its ServiceAccount exists.
        self._wait(cm, "ServiceAccount default/default",
                   lambda: self._has_default_service_account("default"), deadline)
        if self.detach:
            self._write_state()

    def stop(self) -> None:
        """Stop every process (scheduler and controller-manager first, etcd last), remove files."""
        self._stopping.set()
        # The supervisor first: nothing is restarted from here on. Processes it restarted
        # are tied to its thread and get SIGTERM as it ends; _stop_processes waits for them.
        if self._supervisor is not None:
            self._supervisor.join()
            self._supervisor = None
        for t in self._heartbeats:
            t.join(timeout=5)
        self._heartbeats.clear()
        self._stop_processes()
        if self.workdir is not None and not self.keep_workdir:
            _remove_workdir(self.workdir, created=self._created_workdir)
        with contextlib.suppress(Exception):
            atexit.unregister(self.stop)

    def _stop_processes(self) -> None:
        for p in reversed(self._procs):
            p.stop()
        self._procs.clear()
        if self._etcd_dir is not None and self._etcd_dir.parent != self.workdir:
            shutil.rmtree(self._etcd_dir.parent, ignore_errors=True)
        self._etcd_dir = None

    def pids(self) -> dict[str, int]:
        """{name: pid} of the processes now: a restarted one has a new pid."""
        return {p.name: p.pid for p in self._procs}

    # -- kubernetes client helpers

    def api_client(self) -> Any:
        """A new kubernetes.client.ApiClient for the admin user (system:masters)."""
        from kubernetes import config

        if self.kubeconfig is None:
            raise ControlPlaneError("the control plane is not started")
        return config.new_client_from_config(config_file=str(self.kubeconfig))

    def env(self) -> dict[str, str]:
        """Environment variables that point a child process (an operator, kubectl) here."""
        return {"KUBECONFIG": str(self.kubeconfig)}

    def create_namespace(self, name: str, timeout: float = 60.0,
                         labels: dict[str, str] | None = None) -> Any:
        """Create a namespace and wait until pods can be created in it (its default SA)."""
        from kubernetes import client

        core = client.CoreV1Api(self.api_client())
        ns = core.create_namespace(client.V1Namespace(
            metadata=client.V1ObjectMeta(name=name, labels=labels)))
        deadline = time.monotonic() + timeout
        while not self._has_default_service_account(name):
            if time.monotonic() > deadline:
                raise ControlPlaneError(f"ServiceAccount {name}/default not made in {timeout}s")
            time.sleep(0.2)
        return ns

    def add_node(
        self,
        name: str,
        *,
        gpus: int = 8,
        cpu: str = "64",
        memory: str = "512Gi",
        pods: int = 110,
        labels: dict[str, str] | None = None,
        heartbeat: bool = True,
    ) -> Any:
        """Create a Node that the scheduler sees as Ready with `gpus` nvidia.com/gpu.

        With heartbeat its Lease in kube-node-lease is renewed every 10 s (until stop()) so
        the node lifecycle controller keeps it Ready, as a kubelet would.
        """
        api = self.api_client()
        node = register_node(api, name, gpus=gpus, cpu=cpu, memory=memory, pods=pods,
                             labels=labels)
        if heartbeat:
            t = threading.Thread(target=keep_lease_fresh,
                                 args=(api, name, node.metadata.uid, self._stopping),
                                 name=f"node-heartbeat-{name}", daemon=True)
            t.start()
            self._heartbeats.append(t)
        return node

    # -- internals

    def _spawn(self, name: str, argv: list[str]) -> _Process:
        assert self.workdir is not None
        p = _Process(name, argv, self.workdir / "logs" / f"{name}.log", detach=self.detach)
        self._procs.append(p)
        return p

    def _wait(self, proc: _Process, what: str, ready: Any, deadline: float) -> None:
        last: object = None
        while True:
            proc.check_alive()
            for other in self._procs:
                other.check_alive()
            try:
                if ready():
                    self.timings[what] = time.monotonic() - self._t0
                    return
            except (OSError, ValueError, ssl.SSLError) as e:
                last = e
            if time.monotonic() > deadline:
                raise ControlPlaneError(
                    f"timed out after {self.start_timeout:.0f}s waiting for {what}"
                    f"{f' (last error: {last})' if last else ''}; the end of {proc.name}'s log "
                    f"({proc.log}):\n{_log_tail(proc.log)}"
                )
            time.sleep(0.1)

    @staticmethod
    def _etcd_data_dir(wd: Path) -> Path:
        shm = Path("/dev/shm")
        with contextlib.suppress(OSError):
            if shm.is_dir() and os.access(shm, os.W_OK) and shutil.disk_usage(shm).free > 2**30:
                _sweep_stale_etcd_dirs(shm)
                return Path(tempfile.mkdtemp(prefix=ETCD_SHM_PREFIX, dir=shm)) / "data"
        return wd / "etcd"

    @staticmethod
    def _etcd_healthy(url: str) -> bool:
        with urllib.request.urlopen(url + "/health", timeout=2) as r:
            return json.loads(r.read()).get("health") == "true"

    def _get(self, path: str) -> tuple[int, bytes]:
        try:
            with urllib.request.urlopen(self.server + path, timeout=5, context=self._ssl) as r:
                return r.status, r.read()
        except urllib.error.HTTPError as e:
            return e.code, e.read()

    def _request(self, method: str, path: str, body: Any) -> tuple[int, bytes]:
        req = urllib.request.Request(
            self.server + path, method=method, data=json.dumps(body).encode(),
            headers={"Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(req, timeout=10, context=self._ssl) as r:
                return r.status, r.read()
        except urllib.error.HTTPError as e:
            return e.code, e.read()

    def _create_crds(self, apiserver: _Process, deadline: float) -> None:
        docs: list[dict[str, Any]] = []
        for crd in self.crds:
            if isinstance(crd, dict):
                docs.append(crd)
            else:
                import yaml  # a dependency of the kubernetes client

                docs.extend(d for d in yaml.safe_load_all(Path(crd).read_text()) if d)
        path = "/apis/apiextensions.k8s.io/v1/customresourcedefinitions"
        for doc in docs:
            code, body = self._request("POST", path, doc)
            if code != 201:
                raise ControlPlaneError(
                    f"creating CRD {doc.get('metadata', {}).get('name')} failed ({code}): "
                    f"{body.decode(errors='replace')[:2000]}"
                )

        def established(name: str) -> bool:
            code, body = self._get(f"{path}/{name}")
            status = json.loads(body).get("status") or {} if code == 200 else {}
            conds = status.get("conditions") or []
            return any(c["type"] == "Established" and c["status"] == "True" for c in conds)

        for doc in docs:
            name = doc["metadata"]["name"]
            self._wait(apiserver, f"CRD {name} Established",
                       lambda name=name: established(name), deadline)

    def _has_default_service_account(self, namespace: str) -> bool:
        return self._get(f"/api/v1/namespaces/{namespace}/serviceaccounts/default")[0] == 200

    def _write_state(self) -> None:
        assert self.workdir is not None
        state = {
            "kubeconfig": str(self.kubeconfig),
            "server": self.server,
            "created_workdir": self._created_workdir,
            "etcd_dir": str(self._etcd_dir),
            "processes": [{"name": p.name, "pid": p.pid, "start_time": p.start_time,
                           "log": str(p.log)} for p in self._procs],
        }
        if self.supervisor_state:
            state["supervisor"] = self.supervisor_state
        _write_atomically(self.workdir / STATE_FILE, json.dumps(state, indent=2) + "\n")


# --------------------------------------------------------------------------- nodes


def register_node(api: Any, name: str, *, gpus: int = 8, cpu: str = "64",
                  memory: str = "512Gi", pods: int = 110,
                  labels: dict[str, str] | None = None) -> Any:
    """Create a Node with `gpus` nvidia.com/gpu, its status Ready, and its first Lease.

    The status is written through the status subresource, as a kubelet writes it. Without
    later Lease renewals (keep_lease_fresh) the node lifecycle controller marks it Unknown
    after its grace period.
    """
    from kubernetes import client

    core = client.CoreV1Api(api)
    node = core.create_node(client.V1Node(metadata=client.V1ObjectMeta(
        name=name, labels={"kubernetes.io/hostname": name, **(labels or {})})))
    now = datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0).isoformat()
    resources = {"cpu": cpu, "memory": memory, "pods": str(pods), "nvidia.com/gpu": str(gpus)}
    core.patch_node_status(name, {"status": {
        "capacity": resources, "allocatable": resources,
        "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady",
                        "message": "node without a kubelet, kept Ready by its Lease",
                        "lastHeartbeatTime": now, "lastTransitionTime": now}],
        "addresses": [{"type": "InternalIP", "address": "127.0.0.1"},
                      {"type": "Hostname", "address": name}],
    }})
    renew_node_lease(api, name, node.metadata.uid)
    return core.read_node(name)


def renew_node_lease(api: Any, name: str, uid: str) -> None:
    """Create or renew the node's Lease in kube-node-lease: the kubelet's heartbeat."""
    from kubernetes import client
    from kubernetes.client.rest import ApiException

    coord = client.CoordinationV1Api(api)
    now = datetime.datetime.now(datetime.timezone.utc)
    spec = client.V1LeaseSpec(holder_identity=name, lease_duration_seconds=40, renew_time=now)
    try:
        lease = coord.read_namespaced_lease(name, "kube-node-lease")
        lease.spec = spec
        coord.replace_namespaced_lease(name, "kube-node-lease", lease)
    except ApiException as e:
        if e.status != 404:
            raise
        owner = client.V1OwnerReference(api_version="v1", kind="Node", name=name, uid=uid)
        coord.create_namespaced_lease("kube-node-lease", client.V1Lease(
            metadata=client.V1ObjectMeta(name=name, owner_references=[owner]), spec=spec))


def keep_lease_fresh(api: Any, name: str, uid: str, stopping: threading.Event,
                     every: float = 10.0) -> None:
    """Renew the node's Lease every `every` seconds until `stopping` is set."""
    from kubernetes.client.rest import ApiException

    while not stopping.wait(every):
        try:
            renew_node_lease(api, name, uid)
        except ApiException as e:
            if e.status == 404:  # the node (and so its Lease) was deleted
                return
        except Exception:  # the apiserver may be going away; try again later
            pass


# --------------------------------------------------------------------------- command line


def _default_run_dir() -> Path:
    return Path(tempfile.gettempdir()) / "resnet50-operator-control-plane"


def _terminate(name: str, pid: int, start_time: str | None, timeout: float = 10) -> None:
    """SIGTERM, up to `timeout` seconds to exit, then SIGKILL; nothing if it is gone."""
    if not _running(pid, start_time):
        return
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while _running(pid, start_time) and time.monotonic() < deadline:
        time.sleep(0.1)
    if _running(pid, start_time):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    print(f"stopped {name} (pid {pid})", file=sys.stderr)


def _stop_dir(d: Path) -> int:
    state_path = d / STATE_FILE
    if not state_path.is_file():
        print(f"no control plane state in {d} ({STATE_FILE} missing); nothing to stop",
              file=sys.stderr)
        return 0
    state = json.loads(state_path.read_text())
    supervisor = state.get("supervisor")
    if supervisor:
        # It stops the processes itself (it is their parent: nothing is restarted meanwhile,
        # no zombie is left), in up to 15 s each. What it leaves (it was killed, say) is
        # stopped below, by the pids it last recorded.
        _terminate("the supervisor and its processes", supervisor["pid"],
                   supervisor["start_time"], timeout=15 * len(state["processes"]) + 10)
        state = json.loads(state_path.read_text())
    for p in reversed(state["processes"]):
        _terminate(p["name"], p["pid"], p["start_time"])
    etcd_dir = Path(state.get("etcd_dir") or d / "etcd")
    if etcd_dir.parent != d:
        shutil.rmtree(etcd_dir.parent, ignore_errors=True)
    _remove_workdir(d, created=bool(state.get("created_workdir")))
    return 0


def _start_detached(args: argparse.Namespace) -> int:
    """`start`: run `supervise` in a session of its own, report how its start went."""
    d: Path = args.dir
    if (d / STATE_FILE).exists():
        print(f"a control plane is already recorded in {d}; run stop first", file=sys.stderr)
        return 1
    if d.exists() and any(d.iterdir()):
        print(f"{d} exists and is not empty; give another --dir", file=sys.stderr)
        return 1
    package_root = str(Path(__file__).resolve().parents[1])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [package_root, *filter(None, [os.environ.get("PYTHONPATH")])])}
    argv = [sys.executable, "-m", "devcluster", "controlplane", "supervise", "--dir", str(d),
            "--timeout", str(args.timeout), "--address", args.address]
    if args.node_monitor_grace_period:
        argv += ["--node-monitor-grace-period", args.node_monitor_grace_period]
    # Its output comes here until it is ready (then it goes to logs/supervisor.log): neither
    # it nor the control plane holds on to this command's stdout or stderr.
    sup = subprocess.Popen(argv, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, start_new_session=True, text=True)
    assert sup.stdout is not None
    output = sup.stdout.read().splitlines()
    result = next((json.loads(line[len(RESULT_PREFIX):]) for line in output
                   if line.startswith(RESULT_PREFIX)), None)
    other = "\n".join(line for line in output if not line.startswith(RESULT_PREFIX))
    if result is None or "error" in result:
        rc = sup.wait()
        why = result["error"] if result else f"its supervisor exited with code {rc}"
        print(f"control plane failed to start: {why}" + (f"\n{other}" if other else ""),
              file=sys.stderr)
        return 1
    print(f"control plane ready in {result['startup_seconds']:.1f}s: {result['server']}",
          file=sys.stderr)
    print("  " + ", ".join(f"{k}: {v:.1f}s" for k, v in result["timings"].items()),
          file=sys.stderr)
    print(f"supervised by pid {sup.pid}; logs: {d / 'logs'}; stop it with: "
          f"hack/control-plane/stop.sh --dir {d}", file=sys.stderr)
    print(f"export KUBECONFIG={result['kubeconfig']}", file=sys.stderr)
    print(result["kubeconfig"])
    return 0


class _Terminated(BaseException):
    """SIGTERM while starting: ControlPlane.start stops what it started."""


def _supervise(args: argparse.Namespace) -> int:
    """`supervise` (run by `start`): start the control plane, report on stdout, restart
    what exits until SIGTERM, then stop the processes (`stop` removes the files)."""
    def terminated(*_: object) -> None:
        raise _Terminated

    signal.signal(signal.SIGTERM, terminated)
    me = os.getpid()
    cp = ControlPlane(workdir=args.dir, detach=True, start_timeout=args.timeout,
                      node_monitor_grace_period=args.node_monitor_grace_period,
                      address=args.address)
    log = args.dir / "logs" / "supervisor.log"
    cp.supervisor_state = {"pid": me, "start_time": _proc_start_time(me), "log": str(log)}
    try:
        cp.start()  # on failure it stops what it started and removes its files
    except (ControlPlaneError, _Terminated) as e:
        print(RESULT_PREFIX + json.dumps({"error": str(e) or "terminated"}), flush=True)
        return 1
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    print(RESULT_PREFIX + json.dumps({
        "kubeconfig": str(cp.kubeconfig), "server": cp.server,
        "startup_seconds": cp.startup_seconds, "timings": cp.timings}), flush=True)
    fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(fd, 1)  # which closes the pipe to `start`, which then returns
    os.dup2(fd, 2)
    os.close(fd)
    print(f"supervising the control plane in {args.dir} (pid {me})", file=sys.stderr, flush=True)
    cp.supervise(stop)
    print("SIGTERM: stopping the processes", file=sys.stderr, flush=True)
    cp._stop_processes()
    return 0


def main(argv: list[str] | None = None, prog: str | None = None) -> int:
    ap = argparse.ArgumentParser(prog=prog, description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    st = sub.add_parser("start", help="start a control plane that outlives this command")
    sv = sub.add_parser("supervise", help="what `start` runs in the background: start a "
                        "control plane, restart its processes when they exit; SIGTERM stops it")
    for p in (st, sv):
        p.add_argument("--dir", type=Path, default=_default_run_dir(),
                       help="its state, certificates and logs (default: %(default)s)")
        p.add_argument("--timeout", type=float, default=180.0)
        p.add_argument("--node-monitor-grace-period", default=None)
        p.add_argument("--address", default="127.0.0.1",
                       help="host address to listen on and advertise (default: %(default)s)")
    kc = sub.add_parser("kubeconfig", help="write a kubeconfig with a client certificate for "
                        "USER of the control plane in --dir; prints its path")
    kc.add_argument("--dir", type=Path, default=_default_run_dir())
    kc.add_argument("--user", required=True, help="e.g. system:node:NAME or system:kube-proxy")
    kc.add_argument("--group", default=None, help="e.g. system:nodes")
    sp = sub.add_parser("stop", help="stop the control plane started with `start`")
    sp.add_argument("--dir", type=Path, default=_default_run_dir())
    sub.add_parser("check", help="say whether the binaries are there")
    sub.add_parser("bin-dir", help="print the directory of the kubectl that the tests use")
    args = ap.parse_args(argv)

    if args.cmd == "check":
        reason = binaries_available()
        found, _ = find_binaries()
        for name, path in found.items():
            print(f"{name}: {path}")
        if reason:
            print(reason, file=sys.stderr)
            return 1
        return 0
    if args.cmd == "bin-dir":
        found, _ = find_binaries()
        if "kubectl" not in found:
            print(binaries_available() or "kubectl not found; " + BUILD_HINT, file=sys.stderr)
            return 1
        print(found["kubectl"].parent)
        return 0
    if args.cmd == "stop":
        return _stop_dir(args.dir)
    if args.cmd == "kubeconfig":
        print(client_kubeconfig(args.dir, args.user, args.group))
        return 0
    if args.cmd == "supervise":
        return _supervise(args)
    return _start_detached(args)


if __name__ == "__main__":
    sys.exit(main())

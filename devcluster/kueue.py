"""Kueue (sigs.k8s.io/kueue) on the test control plane: its manager as a local process.

Kueue is the cluster's queue: it admits a workload (here: a group of plain pods) when its
ClusterQueue has the quota for all of it, keeps it waiting otherwise, and preempts lower
priority workloads for higher ones. This module runs Kueue's own manager, built from the Go
module proxy by `hack/kueue/build.sh`, out of the cluster against a running ControlPlane:

* it installs Kueue's CRDs (the copies the build keeps in its cache) and waits until they
  are Established; those that Kueue converts between API versions (v1beta1 <-> v1beta2)
  get a conversion webhook pointing at this process;
* it writes a Kueue Configuration (`--config`): internal certificate management off,
  webhooks served on 127.0.0.1:<free port> with a certificate for IP 127.0.0.1 signed by a
  CA of its own (made with openssl, as the control plane's), leader election off, metrics
  and health on free ports, the on-demand visibility API server off, and the `pod`
  integration (plain pods) with `manageJobsWithoutQueueName: false`: only pods labelled
  `kueue.x-k8s.io/queue-name` are Kueue's;
* it creates the MutatingWebhookConfiguration and ValidatingWebhookConfiguration of the
  webhooks it needs (pods and Kueue's own objects), taken from Kueue's
  config/components/webhook/manifests.yaml, with `clientConfig.url` at that port and the
  CA as caBundle; pods of kube-system and kueue-system are left out, as upstream's
  kustomization does. stop() deletes them again: with failurePolicy Fail, webhooks of a
  stopped Kueue would refuse every pod of the cluster.

Kueue runs with the control plane's admin kubeconfig (system:masters), so it needs no RBAC
objects; a Kueue under a restricted identity would need those of Kueue's
config/components/rbac/role.yaml (the build copies it into the cache).

The binary is looked up in $RESNET50_KUEUE_DIR/bin, then
${XDG_CACHE_HOME:-$HOME/.cache}/resnet50-operator/kueue/<KUEUE_VERSION>/bin, where
KUEUE_VERSION is hack/kueue/versions.env's (or $RESNET50_KUEUE_VERSION).

Use from Python::

    from devcluster.kueue import Kueue, kueue_available

    reason = kueue_available()          # None, or why not (then skip, or fail in CI)
    with ControlPlane() as cp, Kueue(cp) as kueue:
        ...                             # kueue.log: its log file

or from a shell, against a control plane of `python -m devcluster controlplane start`::

    python3 -m devcluster kueue check
    python3 -m devcluster kueue run --kubeconfig KUBECONFIG   # until Ctrl-C
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from devcluster.controlplane import (
    ControlPlane,
    _log_tail,
    _openssl_cert,
    _parent_death_signal,
    binaries_available,
    free_port,
)

VERSIONS_FILE = Path(__file__).resolve().parents[1] / "hack" / "kueue" / "versions.env"
BUILD_HINT = "build it with `hack/kueue/build.sh` (about 9 minutes, once per machine)"
KUEUE_NAMESPACE = "kueue-system"  # Kueue's own namespace (Configuration.namespace)
WEBHOOK_CONFIGURATION = "resnet50-devcluster-kueue"  # the name of both webhook configurations
# The API groups and resources of the integrations this module can wire up: the webhooks of
# other frameworks (Job, JobSet, ...) are left out of the webhook configurations.
FRAMEWORK_RESOURCES = {"pod": ("", "pods"), "batch/job": ("batch", "jobs")}
# Namespaces whose pods Kueue never sees (upstream's kustomization of the pod webhooks).
UNMANAGED_NAMESPACES = ("kube-system", KUEUE_NAMESPACE)


class KueueError(RuntimeError):
    """Kueue could not be started (the message carries the end of its log)."""


# --------------------------------------------------------------------------- where it is


def pinned_version() -> str:
    """KUEUE_VERSION of hack/kueue/versions.env, or $RESNET50_KUEUE_VERSION."""
    if os.environ.get("RESNET50_KUEUE_VERSION"):
        return os.environ["RESNET50_KUEUE_VERSION"]
    for line in VERSIONS_FILE.read_text().splitlines():
        if line.startswith("KUEUE_VERSION="):
            return line.split("=", 1)[1]
    raise KueueError(f"no KUEUE_VERSION= line in {VERSIONS_FILE}")


def search_dirs() -> list[Path]:
    """Where a build of hack/kueue/build.sh may be, first match wins."""
    dirs = []
    if os.environ.get("RESNET50_KUEUE_DIR"):
        dirs.append(Path(os.environ["RESNET50_KUEUE_DIR"]))
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    dirs.append(Path(cache) / "resnet50-operator" / "kueue" / pinned_version())
    return dirs


def find_kueue() -> Path | None:
    """The directory of a complete build (bin/kueue, config/), or None."""
    for d in search_dirs():
        binary = d / "bin" / "kueue"
        if binary.is_file() and os.access(binary, os.X_OK) and \
                (d / "config" / "webhook" / "manifests.yaml").is_file():
            return d
    return None


def kueue_available() -> str | None:
    """None if a control plane with Kueue can be started here, else the reason why not."""
    reason = binaries_available()
    if reason:
        return reason
    if find_kueue() is None:
        where = ", ".join(str(d) for d in search_dirs())
        return f"Kueue {pinned_version()} not found (searched {where}); {BUILD_HINT}"
    return None


# --------------------------------------------------------------------------- what it installs


def load_yaml(path: Path) -> list[dict[str, Any]]:
    import yaml  # a dependency of the kubernetes client

    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def converted_crds(kueue_dir: Path) -> set[str]:
    """Names of the CRDs that upstream's kustomization gives a conversion webhook: those
    whose patches/webhook_in_*.yaml it applies (it leaves some commented out)."""
    crd_dir = kueue_dir / "config" / "crd"
    patches = [p["path"] for p in load_yaml(crd_dir / "kustomization.yaml")[0]["patches"]]
    return {load_yaml(crd_dir / p)[0]["metadata"]["name"]
            for p in patches if Path(p).name.startswith("webhook_in_")}


def crd_manifests(kueue_dir: Path, client_config: dict[str, Any]) -> list[dict[str, Any]]:
    """Kueue's CRDs, with the conversion webhook where upstream has one."""
    converted = converted_crds(kueue_dir)
    crds = []
    for path in sorted((kueue_dir / "config" / "crd" / "bases").glob("*.yaml")):
        for crd in load_yaml(path):
            if crd["metadata"]["name"] in converted:
                crd["spec"]["conversion"] = {"strategy": "Webhook", "webhook": {
                    "clientConfig": {**client_config, "url": client_config["url"] + "/convert"},
                    "conversionReviewVersions": ["v1"]}}
            crds.append(crd)
    return crds


def _wanted(webhook: dict[str, Any], frameworks: tuple[str, ...]) -> bool:
    """Whether a webhook of upstream's manifests is for Kueue's objects or a framework on."""
    wanted = {FRAMEWORK_RESOURCES[f] for f in frameworks}
    for rule in webhook["rules"]:
        for group in rule["apiGroups"]:
            if group == "kueue.x-k8s.io":
                return True
            if any((group, r.split("/")[0]) in wanted for r in rule["resources"]):
                return True
    return False


def webhook_configurations(kueue_dir: Path, base_url: str, ca_bundle: str,
                           frameworks: tuple[str, ...]) -> list[dict[str, Any]]:
    """Upstream's two webhook configurations, cut down to what `frameworks` needs, pointing
    at base_url. Workload-like webhooks of a framework (pods, jobs) skip the unmanaged
    namespaces, as upstream's kustomization does for pods."""
    out = []
    for doc in load_yaml(kueue_dir / "config" / "webhook" / "manifests.yaml"):
        hooks = []
        for hook in doc["webhooks"]:
            if not _wanted(hook, frameworks):
                continue
            path = hook["clientConfig"]["service"]["path"]
            hook["clientConfig"] = {"url": base_url + path, "caBundle": ca_bundle}
            if "kueue.x-k8s.io" not in hook["rules"][0]["apiGroups"]:
                hook["namespaceSelector"] = {"matchExpressions": [{
                    "key": "kubernetes.io/metadata.name", "operator": "NotIn",
                    "values": list(UNMANAGED_NAMESPACES)}]}
            hooks.append(hook)
        out.append({"apiVersion": doc["apiVersion"], "kind": doc["kind"],
                    "metadata": {"name": WEBHOOK_CONFIGURATION}, "webhooks": hooks})
    return out


def configuration(ports: dict[str, int], cert_dir: Path,
                  frameworks: tuple[str, ...]) -> dict[str, Any]:
    """Kueue's Configuration (config.kueue.x-k8s.io/v1beta2) for a process on 127.0.0.1."""
    return {
        "apiVersion": "config.kueue.x-k8s.io/v1beta2",
        "kind": "Configuration",
        "namespace": KUEUE_NAMESPACE,
        # Only pods (jobs) that name a LocalQueue are Kueue's: other tests' pods on the same
        # control plane are left alone.
        "manageJobsWithoutQueueName": False,
        # Its certificates come from us (cert_dir); Kueue's own rotation would make one for
        # a Service's DNS name, which the apiserver cannot reach here.
        "internalCertManagement": {"enable": False},
        "webhook": {"host": "127.0.0.1", "port": ports["webhook"], "certDir": str(cert_dir)},
        "metrics": {"bindAddress": f"127.0.0.1:{ports['metrics']}"},
        "health": {"healthProbeBindAddress": f"127.0.0.1:{ports['health']}"},
        "leaderElection": {"leaderElect": False},
        "clientConnection": {"qps": 50, "burst": 100},
        "integrations": {"frameworks": list(frameworks)},
        # An aggregated API server that would need an APIService and a Service to be reached.
        "featureGates": {"VisibilityOnDemand": False},
    }


# --------------------------------------------------------------------------- the process


class Kueue:
    """Kueue's manager against a started ControlPlane; `with Kueue(cp) as kueue: ...`.

    Attributes once started: `log` (its log file), `ports` (webhook, metrics, health),
    `config_path`, `startup_seconds` and `timings` (seconds from start() to each step).
    """

    def __init__(self, control_plane: ControlPlane, *,
                 workdir: str | os.PathLike[str] | None = None,
                 frameworks: tuple[str, ...] = ("pod",), start_timeout: float = 120.0,
                 log_level: int = 2) -> None:
        """
        workdir: certificates, configuration and log (default: a new directory in the
            control plane's workdir, or a temporary one; removed by stop() unless
            $RESNET50_CONTROL_PLANE_KEEP=1).
        frameworks: Kueue integrations to enable; their webhooks must be in
            FRAMEWORK_RESOURCES.
        log_level: its --zap-log-level (2 logs each admission and preemption decision).
        """
        unknown = [f for f in frameworks if f not in FRAMEWORK_RESOURCES]
        if unknown:
            raise ValueError(f"frameworks {unknown} are not wired up here "
                             f"(known: {', '.join(FRAMEWORK_RESOURCES)})")
        self.control_plane = control_plane
        self.frameworks = tuple(frameworks)
        self.start_timeout = start_timeout
        self.log_level = log_level
        self._workdir_arg = Path(workdir) if workdir is not None else None
        self.keep_workdir = os.environ.get("RESNET50_CONTROL_PLANE_KEEP") == "1"
        self.workdir: Path | None = None
        self.log: Path | None = None
        self.config_path: Path | None = None
        self.ports: dict[str, int] = {}
        self.startup_seconds: float | None = None
        self.timings: dict[str, float] = {}
        self._popen: subprocess.Popen | None = None
        self._created_workdir = False
        self._t0 = 0.0

    # -- lifecycle

    def __enter__(self) -> Kueue:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> Kueue:
        reason = kueue_available()
        if reason:
            raise KueueError(reason)
        if self.control_plane.kubeconfig is None:
            raise KueueError("the control plane is not started")
        self._t0 = time.monotonic()
        try:
            self._start(find_kueue())  # type: ignore[arg-type]
        except BaseException:
            self.stop()
            raise
        self.startup_seconds = time.monotonic() - self._t0
        return self

    def _start(self, kueue_dir: Path) -> None:
        self._make_workdir()
        assert self.workdir is not None
        certs = self.workdir / "certs"
        ca_bundle = make_certificates(certs)
        self.ports = {"webhook": free_port(), "metrics": free_port(), "health": free_port()}
        base_url = f"https://127.0.0.1:{self.ports['webhook']}"
        self._step("certificates")

        self._install_crds(crd_manifests(kueue_dir, {"url": base_url, "caBundle": ca_bundle}))
        self._step("CRDs Established")

        self.config_path = self.workdir / "config.yaml"
        self.config_path.write_text(json.dumps(
            configuration(self.ports, certs, self.frameworks), indent=2) + "\n")
        self._spawn(kueue_dir / "bin" / "kueue", certs)
        self._wait("its /readyz (webhook server listening)", self._ready)

        self._apply_webhooks(webhook_configurations(kueue_dir, base_url, ca_bundle,
                                                    self.frameworks))
        if "pod" in self.frameworks:
            self._wait("the apiserver calling its pod webhooks", self._pod_webhooks_answer)
        self._step("webhooks answering")

    def stop(self) -> None:
        """Remove the webhook configurations (so nothing waits on a Kueue that is gone), stop
        the process (SIGTERM, then SIGKILL after 10 s), remove the workdir. The CRDs and
        Kueue's objects stay on the control plane."""
        with contextlib.suppress(Exception):  # the control plane may be gone already
            self._delete_webhooks()
        if self._popen is not None and self._popen.poll() is None:
            self._popen.send_signal(signal.SIGTERM)
            try:
                self._popen.wait(10)
            except subprocess.TimeoutExpired:
                self._popen.kill()
                self._popen.wait(5)
        self._popen = None
        if self._created_workdir and self.workdir is not None and not self.keep_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def pid(self) -> int | None:
        return self._popen.pid if self._popen is not None else None

    # -- steps

    def _make_workdir(self) -> None:
        if self._workdir_arg is not None:
            self.workdir = self._workdir_arg
            self._created_workdir = not self.workdir.exists()
            self.workdir.mkdir(parents=True, exist_ok=True)
            return
        parent = self.control_plane.workdir
        self.workdir = Path(tempfile.mkdtemp(prefix="kueue-", dir=parent))
        self._created_workdir = True

    def _spawn(self, binary: Path, certs: Path) -> None:
        """Start the manager with the admin kubeconfig; its output goes to workdir/kueue.log.
        It gets SIGTERM if the thread that started it dies (as the control plane's do)."""
        assert self.workdir is not None and self.config_path is not None
        self.log = self.workdir / "kueue.log"
        argv = [str(binary), f"--config={self.config_path}",
                f"--kubeconfig={self.control_plane.kubeconfig}",
                f"--zap-log-level={self.log_level}"]
        # Read by hack/kueue/build.sh's one change to upstream's main.go: where the metrics
        # endpoint's certificate is (upstream: /etc/kueue/metrics/certs).
        env = {**os.environ, "KUEUE_METRICS_CERT_DIR": str(certs)}
        env.pop("KUBECONFIG", None)  # --kubeconfig wins anyway; this keeps it unambiguous
        tied = threading.current_thread() is threading.main_thread()
        with open(self.log, "ab") as out:
            out.write(f"$ {' '.join(argv)}\n".encode())
            out.flush()
            self._popen = subprocess.Popen(
                argv, env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                start_new_session=True, preexec_fn=_parent_death_signal() if tied else None)

    def _ready(self) -> bool:
        url = f"http://127.0.0.1:{self.ports['health']}/readyz"
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                return r.status == 200
        except urllib.error.HTTPError:
            return False

    def _pod_webhooks_answer(self) -> bool:
        """Whether the apiserver now calls both pod webhooks: a dry-run pod of a queue comes
        back gated by the mutating one, and a bad pod group is refused by the validating
        one (the apiserver loads webhook configurations asynchronously)."""
        from kubernetes import client
        from kubernetes.client.rest import ApiException

        core = client.CoreV1Api(self.control_plane.api_client())
        probe = probe_pod(group_total="2")
        made = core.create_namespaced_pod("default", probe, dry_run="All")
        gates = [g.name for g in made.spec.scheduling_gates or []]
        if "kueue.x-k8s.io/admission" not in gates:
            return False
        try:
            core.create_namespaced_pod("default", probe_pod(group_total="not-a-number"),
                                       dry_run="All")
        except ApiException as e:
            return "vpod.kb.io" in (e.body or "")
        return False

    def _install_crds(self, crds: list[dict[str, Any]]) -> None:
        """Create Kueue's CRDs (or replace them: a second Kueue on the same control plane has
        another port) and wait until each is Established."""
        from kubernetes import client
        from kubernetes.client.rest import ApiException

        ext = client.ApiextensionsV1Api(self.control_plane.api_client())
        for crd in crds:
            name = crd["metadata"]["name"]
            try:
                ext.create_custom_resource_definition(crd)
            except ApiException as e:
                if e.status != 409:
                    raise KueueError(f"creating CRD {name} failed ({e.status}): "
                                     f"{(e.body or '')[:2000]}") from None
                crd["metadata"]["resourceVersion"] = \
                    ext.read_custom_resource_definition(name).metadata.resource_version
                ext.replace_custom_resource_definition(name, crd)

        def established(name: str) -> bool:
            conds = ext.read_custom_resource_definition(name).status.conditions or []
            return any(c.type == "Established" and c.status == "True" for c in conds)

        for crd in crds:
            name = crd["metadata"]["name"]
            self._wait(f"CRD {name} Established", lambda n=name: established(n),
                       needs_process=False)

    def _apply_webhooks(self, configs: list[dict[str, Any]]) -> None:
        from kubernetes import client
        from kubernetes.client.rest import ApiException

        adm = client.AdmissionregistrationV1Api(self.control_plane.api_client())
        for cfg in configs:
            create, replace, read = (
                (adm.create_mutating_webhook_configuration,
                 adm.replace_mutating_webhook_configuration,
                 adm.read_mutating_webhook_configuration)
                if cfg["kind"] == "MutatingWebhookConfiguration" else
                (adm.create_validating_webhook_configuration,
                 adm.replace_validating_webhook_configuration,
                 adm.read_validating_webhook_configuration))
            try:
                create(cfg)
            except ApiException as e:
                if e.status != 409:
                    raise
                cfg["metadata"]["resourceVersion"] = read(WEBHOOK_CONFIGURATION) \
                    .metadata.resource_version
                replace(WEBHOOK_CONFIGURATION, cfg)

    def _delete_webhooks(self) -> None:
        from kubernetes import client
        from kubernetes.client.rest import ApiException

        if self.control_plane.kubeconfig is None:
            return
        adm = client.AdmissionregistrationV1Api(self.control_plane.api_client())
        for delete in (adm.delete_mutating_webhook_configuration,
                       adm.delete_validating_webhook_configuration):
            try:
                delete(WEBHOOK_CONFIGURATION)
            except ApiException as e:
                if e.status != 404:
                    raise

    def _step(self, what: str) -> None:
        self.timings[what] = time.monotonic() - self._t0

    def _wait(self, what: str, ready: Any, *, needs_process: bool = True) -> None:
        """Poll ready() until it is true; fail with the end of Kueue's log if the process
        exits or start_timeout passes."""
        deadline = self._t0 + self.start_timeout
        last: object = None
        while True:
            if needs_process:
                self._check_alive()
            try:
                if ready():
                    self._step(what)
                    return
            except Exception as e:  # not listening yet, the apiserver busy: try again
                last = e
            if time.monotonic() > deadline:
                log = f"; the end of its log ({self.log}):\n{_log_tail(self.log)}" \
                    if self.log else ""
                raise KueueError(f"timed out after {self.start_timeout:.0f}s waiting for "
                                 f"{what}{f' (last error: {last})' if last else ''}{log}")
            time.sleep(0.2)

    def _check_alive(self) -> None:
        rc = self._popen.poll() if self._popen is not None else None
        if rc is not None and self.log is not None:
            raise KueueError(f"kueue exited with code {rc} while starting; the end of its log "
                             f"({self.log}):\n{_log_tail(self.log)}")


def make_certificates(d: Path) -> str:
    """A CA and the serving certificate for IP 127.0.0.1 into d, as tls.crt and tls.key (the
    names Kueue's webhook and metrics servers read); returns the CA as a caBundle."""
    d.mkdir(parents=True, exist_ok=True)
    _openssl_cert(d, "ca", "resnet50-test-kueue-ca", ca=None)
    _openssl_cert(d, "serving", "kueue-webhook", ca="ca",
                  server_sans=["IP:127.0.0.1", "DNS:localhost"])
    (d / "serving.crt").rename(d / "tls.crt")
    (d / "serving.key").rename(d / "tls.key")
    for p in d.glob("*.key"):
        p.chmod(0o600)
    return base64.b64encode((d / "ca.crt").read_bytes()).decode()


def probe_pod(group_total: str) -> dict[str, Any]:
    """A pod that Kueue's webhooks act on: of a queue, in a group of `group_total` pods."""
    return {
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "kueue-webhook-probe", "labels": {
            "kueue.x-k8s.io/queue-name": "probe",
            "kueue.x-k8s.io/pod-group-name": "kueue-webhook-probe"},
            "annotations": {"kueue.x-k8s.io/pod-group-total-count": group_total}},
        "spec": {"containers": [{"name": "probe", "image": "probe", "command": ["true"]}]},
    }


# --------------------------------------------------------------------------- command line


def main(argv: list[str] | None = None, prog: str | None = None) -> int:
    ap = argparse.ArgumentParser(prog=prog, description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    sub.add_parser("check", help="say whether Kueue's build is there")
    run = sub.add_parser("run", help="run Kueue against a control plane until SIGTERM/Ctrl-C")
    run.add_argument("--kubeconfig", type=Path, required=True,
                     help="the admin kubeconfig of `python -m devcluster controlplane start`")
    run.add_argument("--workdir", type=Path, default=None)
    args = ap.parse_args(argv)

    if args.cmd == "check":
        reason = kueue_available()
        if reason:
            print(reason, file=sys.stderr)
            return 1
        print(find_kueue())
        return 0
    cp = ControlPlane()
    cp.kubeconfig = args.kubeconfig  # only its kubeconfig is used: it is not ours to stop
    kueue = Kueue(cp, workdir=args.workdir)  # by default a temporary one, removed at the end
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    with kueue:
        print(f"Kueue ready in {kueue.startup_seconds:.1f}s; log: {kueue.log}", file=sys.stderr)
        stop.wait()
    return 0


if __name__ == "__main__":
    sys.exit(main())

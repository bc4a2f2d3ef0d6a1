"""A node simulator for the local control plane: Nodes whose pods run as real local processes.

In the spirit of KWOK, but the containers really run. For the test control plane (see
controlplane.py), which has no kubelet, it does what a kubelet would:

* registers Nodes with GPU capacity and keeps their Leases fresh, so the scheduler binds
  pods to them and the node lifecycle controller keeps them Ready;
* for every pod bound to one of its nodes, runs the first container's command and args as
  a local process (in its own session) with the pod's environment, `fieldRef` values
  resolved, and the trainer's output in a log file per pod;
* maps the pod's volumes to local directories: hostPath as is (a missing `Directory` fails
  the mount, as on a node), a PersistentVolumeClaim to one directory per claim, emptyDir to a
  directory per pod (emptyDir at /dev/shm: the machine's /dev/shm). There are no mount
  namespaces, so the mount paths are rewritten in the args, env values and working dir to
  those directories, and readOnly is not enforced;
* reports pod status through the API as a kubelet does: Running with containerStatuses,
  then Succeeded or Failed with the exit code (128+N after signal N), the reason
  (Completed, Error, or OOMKilled when `kill(..., oom=True)` simulates the OOM killer) and
  the termination message: what the process wrote to its terminationMessagePath (a file per
  pod), else on failure the log's tail (FallbackToLogsOnError); a volume it cannot mount
  leaves the pod ContainerCreating with a FailedMount Warning Event;
* on pod deletion sends SIGTERM to the container's main process, SIGKILL to all of its
  processes after the grace period, and finalises the deletion (grace period 0). When the
  main process ends, the rest of its processes are killed too, as when a container's PID 1
  exits. A container's processes are those whose environment carries its
  NODESIM_POD_UID (torchrun starts its workers in sessions of their own, so a process
  group would miss them).

The one liberty it takes: pod DNS names (<pod>.<service>.<namespace>.svc) do not resolve on
the test machine, so it points the rendezvous address (MASTER_ADDR, PET_MASTER_ADDR) at
127.0.0.1, where every pod of the job runs. And what it leaves out: init containers (the
hostPath checkpoint's `checkpoint-dir` is not needed where the trainer runs as the test's
user), images, users and permissions, limits. The real node of hack/real-node.sh and
tests/node/ cover those (docs/real-node.md lists what differed).

Use from Python::

    with NodeSimulator(api_client, workdir, nodes=2, gpus=8) as sim:
        ...                       # sim.log_text(namespace, pod), sim.kill(namespace, pod)

or from a shell (what hack/local-cluster.sh runs)::

    python3 -m devcluster nodes --kubeconfig KUBECONFIG --workdir DIR [--nodes 2 --gpus 8]
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import logging
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from devcluster.controlplane import keep_lease_fresh, register_node

log = logging.getLogger("nodesim")
LOOPBACK = "127.0.0.1"
POD_MARKER = "NODESIM_POD_UID"  # in the environment of every process of a container
RENDEZVOUS_VARIABLES = ("MASTER_ADDR", "PET_MASTER_ADDR")
# What a kubelet keeps of a failed container's log as its termination message.
TERMINATION_LOG_LINES, TERMINATION_LOG_BYTES = 80, 2048


class PodSetupError(Exception):
    """The pod cannot start on this node; `reason` is the kubelet's Event reason."""

    def __init__(self, message: str, reason: str = "FailedCreatePodContainer") -> None:
        super().__init__(message)
        self.reason = reason


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class Container:
    """The local process standing for one pod's container."""

    namespace: str
    name: str
    uid: str
    proc: subprocess.Popen
    log: Path
    started_at: str
    oom: bool = False  # killed by kill(..., oom=True): reported as OOMKilled
    term_sent_at: float | None = None
    reported: bool = False


class NodeSimulator:
    def __init__(self, api: Any, workdir: Path, *, nodes: int = 2, gpus: int = 8,
                 cpu: str = "16", memory: str = "64Gi", name_prefix: str = "sim-node",
                 poll_interval: float = 0.2) -> None:
        self.api = api
        self.workdir = Path(workdir)
        self.node_names = [f"{name_prefix}-{i}" for i in range(nodes)]
        self.node_resources = {"gpus": gpus, "cpu": cpu, "memory": memory}
        self.poll_interval = poll_interval
        self.containers: dict[str, Container] = {}  # by pod uid
        self.logs: dict[tuple[str, str], Path] = {}  # (namespace, pod name) -> newest log
        self._failed_setup: set[str] = set()
        self._stopping = threading.Event()
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()

    # -- lifecycle

    def __enter__(self) -> NodeSimulator:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> NodeSimulator:
        from kubernetes import client

        self.core = client.CoreV1Api(self.api)
        self.workdir.mkdir(parents=True, exist_ok=True)
        for name in self.node_names:
            node = register_node(self.api, name, gpus=self.node_resources["gpus"],
                                 cpu=self.node_resources["cpu"],
                                 memory=self.node_resources["memory"])
            self._thread(keep_lease_fresh, self.api, name, node.metadata.uid, self._stopping)
        self._thread(self._loop)
        return self

    def stop(self) -> None:
        """Kill every container process and stop; the Nodes stay registered."""
        self._stopping.set()
        for t in self._threads:
            t.join(timeout=15)
        with self._lock:
            for c in self.containers.values():
                self._signal_processes(c, signal.SIGKILL)
                c.proc.wait()

    def _thread(self, target: Any, *args: Any) -> None:
        # Not supervised as the control plane's processes are: _loop and keep_lease_fresh
        # catch what fails and try again next round, so none ends before stop() (a heartbeat
        # ends only when its Node is deleted).
        t = threading.Thread(target=target, args=args, daemon=True,
                             name=f"nodesim-{target.__name__}")
        t.start()
        self._threads.append(t)

    # -- what tests use

    def container(self, namespace: str, pod: str) -> Container | None:
        """The newest container of the pod named so (pods of later attempts reuse names)."""
        with self._lock:
            found = [c for c in self.containers.values()
                     if (c.namespace, c.name) == (namespace, pod)]
        return found[-1] if found else None

    def log_text(self, namespace: str, pod: str) -> str:
        path = self.logs.get((namespace, pod))
        return path.read_text(errors="replace") if path and path.exists() else ""

    def kill(self, namespace: str, pod: str, sig: int = signal.SIGKILL,
             oom: bool = False) -> None:
        """Send `sig` to the pod's main process; oom: report it as the OOM killer's doing."""
        c = self.container(namespace, pod)
        if c is None or c.proc.poll() is not None:
            raise LookupError(f"pod {namespace}/{pod} has no running process")
        c.oom = oom
        c.proc.send_signal(sig)

    def signal_all(self, namespace: str, pod: str, sig: int) -> None:
        """Send `sig` to every process of the pod's container (SIGSTOP: a hung pod)."""
        c = self.container(namespace, pod)
        if c is None:
            raise LookupError(f"pod {namespace}/{pod} has no container")
        self._signal_processes(c, sig)

    # -- the kubelet's loop

    def _loop(self) -> None:
        while not self._stopping.wait(self.poll_interval):
            try:
                self._sync()
            except Exception:  # the apiserver may be restarting: try again next round
                log.exception("node simulator sync failed")

    def _sync(self) -> None:
        pods = [p for p in self.core.list_pod_for_all_namespaces().items
                if p.spec.node_name in self.node_names]
        seen = {p.metadata.uid for p in pods}
        with self._lock:
            for pod in pods:
                self._sync_pod(pod)
            for uid in [u for u in self.containers if u not in seen]:
                c = self.containers.pop(uid)  # deleted with grace 0 by someone else
                self._signal_processes(c, signal.SIGKILL)
                c.proc.wait()

    def _sync_pod(self, pod: Any) -> None:
        uid = pod.metadata.uid
        c = self.containers.get(uid)
        if c is None and not pod.metadata.deletion_timestamp and \
                pod.status.phase == "Pending" and uid not in self._failed_setup:
            c = self._start(pod)
        if c is not None and not c.reported and c.proc.poll() is not None:
            self._signal_processes(c, signal.SIGKILL)  # PID 1 is gone: so is the container
            self._report_exit(pod, c)
        if pod.metadata.deletion_timestamp:
            self._stop_for_deletion(pod, c)

    def _start(self, pod: Any) -> Container | None:
        ns, name, uid = pod.metadata.namespace, pod.metadata.name, pod.metadata.uid
        pod_dir = self.workdir / "pods" / ns / f"{name}-{uid[:8]}"
        try:
            argv, env, cwd = self._container_process(pod, pod_dir)
        except PodSetupError as exc:
            self._failed_setup.add(uid)
            self._patch_status(ns, name, "Pending", {"waiting": {"reason": "ContainerCreating"}},
                               ready=False)
            self._warn(pod, exc.reason, str(exc))
            return None
        log_path = pod_dir / "container.log"
        with open(log_path, "ab") as out:
            proc = subprocess.Popen(argv, env=env, cwd=cwd, stdout=out, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL, start_new_session=True)
        c = Container(ns, name, uid, proc, log_path, _now())
        self.containers[uid] = c
        self.logs[(ns, name)] = log_path
        self._patch_status(ns, name, "Running", {"running": {"startedAt": c.started_at}},
                           ready=True, start_time=c.started_at)
        log.info("%s/%s: started pid %d on %s", ns, name, proc.pid, pod.spec.node_name)
        return c

    def _container_process(self, pod: Any, pod_dir: Path) -> tuple[list[str], dict, Path]:
        container = pod.spec.containers[0]
        mounts = self._mounts(pod, pod_dir)

        def local(text: str) -> str:
            for mount_path, directory in mounts:
                text = re.sub(rf"(^|[=:,]){re.escape(mount_path)}(?=/|$|[:,])",
                              lambda m, d=directory: m.group(1) + str(d), text)
            return text

        env = {"PATH": os.pathsep.join([str(Path(sys.executable).parent),
                                        os.environ.get("PATH", os.defpath)]),
               "HOME": str(pod_dir / "home"), "LANG": "C.UTF-8", POD_MARKER: pod.metadata.uid}
        (pod_dir / "home").mkdir(parents=True, exist_ok=True)
        for var in container.env or []:
            env[var.name] = local(self._env_value(pod, var))
        for name in RENDEZVOUS_VARIABLES:
            if name in env:
                env[name] = LOOPBACK
        argv = [local(a) for a in (container.command or []) + (container.args or [])]
        if not argv:
            raise PodSetupError("the container has neither command nor args (this node "
                                "runs commands, not images)")
        executable = shutil.which(argv[0], path=env["PATH"])
        if executable is None:
            raise PodSetupError(f"executable file not found in $PATH: {argv[0]!r}")
        cwd = Path(local(container.working_dir)) if container.working_dir else pod_dir
        return [executable, *argv[1:]], env, cwd

    def _mounts(self, pod: Any, pod_dir: Path) -> list[tuple[str, Path]]:
        """(mountPath, local directory) of the first container, longest paths first."""
        volumes = {v.name: v for v in pod.spec.volumes or []}
        out = []
        for m in pod.spec.containers[0].volume_mounts or []:
            if m.mount_path.startswith("/var/run/secrets/"):
                continue
            v = volumes.get(m.name)
            if v is None:
                raise PodSetupError(f"volume {m.name!r} is not defined")
            if v.empty_dir is not None and m.mount_path == "/dev/shm":
                continue  # the machine's own shared memory
            directory = self._volume_dir(pod, v, pod_dir)
            if m.sub_path:
                directory = directory / m.sub_path
                directory.mkdir(parents=True, exist_ok=True)
            out.append((m.mount_path.rstrip("/") or "/", directory))
        path = pod.spec.containers[0].termination_message_path
        if path:  # a file the kubelet provides, read back when the container ends
            out.append((path, pod_dir / "termination-log"))
        return sorted(out, key=lambda pair: -len(pair[0]))

    def _volume_dir(self, pod: Any, v: Any, pod_dir: Path) -> Path:
        if v.host_path is not None:
            path, kind = Path(v.host_path.path), v.host_path.type or ""
            if kind == "DirectoryOrCreate":
                path.mkdir(parents=True, exist_ok=True)
            elif kind == "Directory" and not path.is_dir():
                raise PodSetupError(f'MountVolume.SetUp failed for volume "{v.name}": '
                                    f"hostPath type check failed: {path} is not a directory",
                                    "FailedMount")
            return path
        if v.persistent_volume_claim is not None:
            path = self.workdir / "claims" / pod.metadata.namespace / \
                v.persistent_volume_claim.claim_name
        elif v.empty_dir is not None:
            path = pod_dir / "volumes" / v.name
        else:
            raise PodSetupError(f'MountVolume.SetUp failed for volume "{v.name}": this node '
                                "mounts hostPath, persistentVolumeClaim and emptyDir volumes "
                                "only", "FailedMount")
        path.mkdir(parents=True, exist_ok=True)
        return path

    @staticmethod
    def _env_value(pod: Any, var: Any) -> str:
        if var.value_from is None:
            return var.value or ""
        ref = var.value_from.field_ref
        if ref is None:
            raise PodSetupError(f"env {var.name}: only value and fieldRef are supported here")
        fields = {
            "metadata.name": pod.metadata.name,
            "metadata.namespace": pod.metadata.namespace,
            "metadata.uid": pod.metadata.uid,
            "spec.nodeName": pod.spec.node_name,
            "spec.serviceAccountName": pod.spec.service_account_name or "",
            "status.hostIP": LOOPBACK,
            "status.podIP": LOOPBACK,
        }
        labelled = re.fullmatch(r"metadata\.(labels|annotations)\['(.+)'\]", ref.field_path)
        if labelled:
            return (getattr(pod.metadata, labelled.group(1)) or {}).get(labelled.group(2), "")
        if ref.field_path not in fields:
            raise PodSetupError(f"env {var.name}: unsupported fieldRef {ref.field_path}")
        return fields[ref.field_path]

    def _report_exit(self, pod: Any, c: Container) -> None:
        rc = c.proc.returncode
        code = 128 - rc if rc < 0 else rc  # death by signal N: a shell's 128+N
        reason = "OOMKilled" if c.oom else "Completed" if code == 0 else "Error"
        terminated = {"exitCode": code, "reason": reason, "startedAt": c.started_at,
                      "finishedAt": _now()}
        written = c.log.parent / "termination-log"
        message = written.read_text(errors="replace") if written.exists() else ""
        if not message.strip() and code != 0:
            message = _log_tail(c.log)
        if message:
            terminated["message"] = message[-4096:]  # the kubelet's limit
        self._patch_status(c.namespace, c.name, "Succeeded" if code == 0 else "Failed",
                           {"terminated": terminated}, ready=False)
        c.reported = True
        log.info("%s/%s: exited with %d (%s)", c.namespace, c.name, code, reason)

    def _stop_for_deletion(self, pod: Any, c: Container | None) -> None:
        if c is not None and c.proc.poll() is None:
            if c.term_sent_at is None:
                c.term_sent_at = time.monotonic()
                c.proc.send_signal(signal.SIGTERM)
                return
            grace = pod.metadata.deletion_grace_period_seconds or 0
            if time.monotonic() - c.term_sent_at < grace:
                return
            self._signal_processes(c, signal.SIGKILL)
            c.proc.wait()
        with contextlib.suppress(Exception):  # already gone: nothing to finalise
            self.core.delete_namespaced_pod(pod.metadata.name, pod.metadata.namespace,
                                            grace_period_seconds=0)
        if c is not None:
            self.containers.pop(c.uid, None)

    def _warn(self, pod: Any, reason: str, message: str) -> None:
        """A Warning Event on the pod, as the kubelet posts one."""
        now = datetime.datetime.now(datetime.timezone.utc)
        meta = pod.metadata
        with contextlib.suppress(Exception):
            self.core.create_namespaced_event(meta.namespace, {
                "metadata": {"generateName": f"{meta.name}.", "namespace": meta.namespace},
                "involvedObject": {"apiVersion": "v1", "kind": "Pod", "name": meta.name,
                                   "namespace": meta.namespace, "uid": meta.uid},
                "type": "Warning", "reason": reason, "message": message,
                "source": {"component": "kubelet", "host": pod.spec.node_name},
                "firstTimestamp": now, "lastTimestamp": now, "count": 1,
            })

    @staticmethod
    def _signal_processes(c: Container, sig: int) -> None:
        """Signal every process of the container, wherever its session or parent."""
        marker = f"{POD_MARKER}={c.uid}".encode()
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            with contextlib.suppress(OSError):
                if marker in (entry / "environ").read_bytes().split(b"\0"):
                    os.kill(int(entry.name), sig)

    def _patch_status(self, namespace: str, name: str, phase: str, state: dict[str, Any],
                      ready: bool, start_time: str | None = None) -> None:
        status = kubelet_status(phase, state, ready, hostIP=LOOPBACK, podIP=LOOPBACK)
        if start_time:
            status["startTime"] = start_time
        try:
            self.core.patch_namespaced_pod_status(name, namespace, {"status": status})
        except Exception as exc:  # deleted meanwhile
            log.debug("%s/%s: status not written: %s", namespace, name, exc)


def kubelet_status(phase: str, state: dict[str, Any], ready: bool,
                   **fields: Any) -> dict[str, Any]:
    """A pod's status as a kubelet writes it, for its one container "trainer" in `state`."""
    now, ready_text = _now(), "True" if ready else "False"
    return {
        "phase": phase,
        "conditions": [
            {"type": "PodScheduled", "status": "True", "lastTransitionTime": now},
            {"type": "Ready", "status": ready_text, "lastTransitionTime": now},
            {"type": "ContainersReady", "status": ready_text, "lastTransitionTime": now},
        ],
        "containerStatuses": [{"name": "trainer", "ready": ready, "restartCount": 0,
                               "image": "trainer", "imageID": "", "state": state}],
        **fields,
    }


def _log_tail(path: Path) -> str:
    with contextlib.suppress(OSError):
        lines = path.read_text(errors="replace").splitlines()[-TERMINATION_LOG_LINES:]
        return "\n".join(lines)[-TERMINATION_LOG_BYTES:]
    return ""


def main(argv: list[str] | None = None, prog: str | None = None) -> int:
    ap = argparse.ArgumentParser(prog=prog, description=__doc__.split("\n\n")[0])
    ap.add_argument("--kubeconfig", required=True, type=Path)
    ap.add_argument("--workdir", required=True, type=Path,
                    help="pod logs, emptyDir and PVC directories")
    ap.add_argument("--nodes", type=int, default=2)
    ap.add_argument("--gpus", type=int, default=8, help="nvidia.com/gpu of each node")
    ap.add_argument("--cpu", default="16")
    ap.add_argument("--memory", default="64Gi")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")

    from kubernetes import config

    api = config.new_client_from_config(config_file=str(args.kubeconfig))
    sim = NodeSimulator(api, args.workdir, nodes=args.nodes, gpus=args.gpus, cpu=args.cpu,
                        memory=args.memory)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    with sim:
        log.info("nodes %s ready; pod logs under %s", ", ".join(sim.node_names),
                 args.workdir / "pods")
        stop.wait()
    return 0


if __name__ == "__main__":
    sys.exit(main())

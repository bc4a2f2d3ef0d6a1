"""Leader election on a coordination.k8s.io/v1 Lease: of the operator's replicas, only the
holder of the Lease runs kopf; the others wait until they can take it.

The decisions are pure functions of the Lease's spec and the time (tests/operator/
test_leader.py); `Elector` is the thin shell that reads and writes the Lease. Every write
carries the resourceVersion that was read, so of two replicas that decide to take the Lease
at the same moment one write wins and the other gets 409 Conflict.

Expiry is measured on the local monotonic clock from when a replica *saw* the Lease
change, as client-go does, not from the holder's renewTime: clocks of different machines
may disagree, one clock's rate with itself does not (much).
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import socket
import threading
import time
import urllib.parse
from collections.abc import Callable, Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

log = logging.getLogger(__name__)

LEASE_NAME = "resnet50-operator"
DEFAULT_NAMESPACE = "resnet50-operator"  # the Deployment's, when POD_NAMESPACE is unset
# kube-scheduler's and kube-controller-manager's values (15 s, 10 s, 2 s): a standby takes
# over at most about 17 s after its leader died, and a few slow API calls never cost the
# leadership.
LEASE_DURATION = 15  # s without a change of the Lease after which a standby may take it
RENEW_INTERVAL = 5.0  # the leader renews three times per duration: a failed try is harmless
# A leader that has not renewed for this long stops (exits): 5 s before any standby may take
# the Lease, a margin for a slow last request and for the standby's late look.
RENEW_DEADLINE = 10.0
RETRY_INTERVAL = 2.0  # how often a standby looks, and a leader retries a failed renewal
REQUEST_TIMEOUT = 4.0  # of one API call: a hung call must not outlast the renew deadline
VERBS = ("get", "create", "update")  # what Elector calls on leases (manifests/operator/rbac.yaml)


# ------------------------------------------------------------------ pure decisions


def identity() -> str:
    """Who holds the Lease: the pod's name (its hostname) and the process id."""
    return f"{socket.gethostname()}_{os.getpid()}"


def lease_namespace(watched: str | None, env: Mapping[str, str] = os.environ) -> str:
    """Where the Lease lives: the one namespace the operator watches, else its own."""
    return watched or env.get("POD_NAMESPACE") or DEFAULT_NAMESPACE


def may_take(spec: Mapping[str, Any] | None, me: str, unchanged_since: float,
             now: float) -> bool:
    """Whether `me` may write itself as the holder of a Lease whose spec is `spec` (None: no
    Lease yet), which this replica has seen unchanged since `unchanged_since` (monotonic s).
    Free when there is no holder (none yet, or released), ours to renew when `me` holds it,
    else only once it has expired: unchanged for its holder's lease duration."""
    holder = (spec or {}).get("holderIdentity")
    if not holder or holder == me:
        return True
    duration = (spec or {}).get("leaseDurationSeconds") or LEASE_DURATION
    return now - unchanged_since >= duration


def must_stop(renewed_at: float, now: float) -> bool:
    """Whether a leader that last renewed at `renewed_at` (monotonic s, when it sent the
    request that succeeded) must stop acting: it may soon not be the leader any more."""
    return now - renewed_at >= RENEW_DEADLINE


def micro_time(when: dt.datetime) -> str:
    """A MicroTime as the API writes it."""
    return when.astimezone(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def claimed(spec: Mapping[str, Any] | None, me: str, now: dt.datetime) -> dict[str, Any]:
    """The spec that takes (a new acquireTime, one more transition) or renews the Lease."""
    spec = spec or {}
    taking = spec.get("holderIdentity") != me
    transitions = spec.get("leaseTransitions", 0) + (1 if taking and spec else 0)
    return {"holderIdentity": me, "leaseDurationSeconds": LEASE_DURATION,
            "acquireTime": micro_time(now) if taking else spec.get("acquireTime"),
            "renewTime": micro_time(now), "leaseTransitions": transitions}


def released(spec: Mapping[str, Any]) -> dict[str, Any]:
    """The spec of a Lease given up: no holder, so that a standby takes it at once."""
    return {k: v for k, v in spec.items() if k != "holderIdentity"}


# ------------------------------------------------------------------ the shell


def _exit(reason: str) -> None:
    # The simplest way to stop acting for certain: kopf's own shutdown would go on handling
    # for a while. The Deployment starts the container again, and it waits as a standby.
    log.critical("leadership lost: %s; exiting", reason)
    logging.shutdown()
    os._exit(1)


class Elector:
    """Takes, renews and releases the Lease `namespace`/LEASE_NAME for `me`."""

    def __init__(self, leases: Any, namespace: str, me: str,
                 lost: Callable[[str], None] = _exit,
                 clock: Callable[[], float] = time.monotonic) -> None:
        """leases: a kubernetes.client.CoordinationV1Api; lost: called when the leadership
        is lost while kopf runs."""
        self.leases, self.namespace, self.me, self.lost, self.clock = (
            leases, namespace, me, lost, clock)
        self.holder: str | None = None  # as last read
        self.renewed_at: float | None = None  # monotonic; set while we hold the Lease
        self._seen: tuple[str, float] | None = None  # (resourceVersion, when first seen)
        self._stop = threading.Event()
        self._renewer: threading.Thread | None = None

    def _read(self, timeout: float) -> dict[str, Any] | None:
        from kubernetes.client.rest import ApiException
        try:
            response = self.leases.read_namespaced_lease(
                LEASE_NAME, self.namespace, _preload_content=False, _request_timeout=timeout)
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise
        return json.loads(response.data)

    def try_take(self, timeout: float = REQUEST_TIMEOUT) -> bool:
        """One try to take or renew the Lease; whether we hold it now."""
        from kubernetes.client.rest import ApiException
        sent = self.clock()  # a successful write happened after this: renewed_at
        lease = self._read(timeout)
        seen = self.clock()  # the Lease as read was written before this: unchanged_since
        metadata = {"name": LEASE_NAME, "namespace": self.namespace}
        if lease is not None:
            version = lease["metadata"]["resourceVersion"]
            if self._seen is None or self._seen[0] != version:
                self._seen = (version, seen)
            spec = lease.get("spec") or {}
            self.holder = spec.get("holderIdentity")
            if not may_take(spec, self.me, self._seen[1], seen):
                return False
            metadata["resourceVersion"] = version
        body = {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": metadata,
                "spec": claimed(lease and lease.get("spec"), self.me,
                                dt.datetime.now(dt.timezone.utc))}
        try:
            if lease is None:
                self.leases.create_namespaced_lease(self.namespace, body,
                                                    _request_timeout=timeout)
            else:
                self.leases.replace_namespaced_lease(LEASE_NAME, self.namespace, body,
                                                     _request_timeout=timeout)
        except ApiException as exc:
            if exc.status == 409:  # another replica wrote first: read again next time
                return False
            raise
        self.holder, self.renewed_at = self.me, sent
        return True

    def wait_until_leader(self) -> None:
        """Return once we hold the Lease; until then try every RETRY_INTERVAL."""
        waiting_for: str | None = None
        while True:
            try:
                if self.try_take():
                    log.info("acquired the lease %s/%s as %s", self.namespace, LEASE_NAME,
                             self.me)
                    return
                if self.holder != waiting_for:
                    waiting_for = self.holder
                    log.info("waiting for the lease held by %s (%s/%s)", waiting_for,
                             self.namespace, LEASE_NAME)
            except Exception as exc:  # the API unreachable or refusing: try again
                log.warning("could not take the lease %s/%s: %s", self.namespace,
                            LEASE_NAME, exc)
            time.sleep(RETRY_INTERVAL)

    def keep_renewing(self) -> None:
        """Renew the Lease in a thread until release(); call lost() once it cannot."""
        self._renewer = threading.Thread(target=self._renew, name="lease", daemon=True)
        self._renewer.start()

    def _renew(self) -> None:
        wait = RENEW_INTERVAL
        while not self._stop.wait(wait):
            assert self.renewed_at is not None
            left = RENEW_DEADLINE - (self.clock() - self.renewed_at)
            held = False
            try:
                held = left > 0 and self.try_take(timeout=min(REQUEST_TIMEOUT, left))
            except Exception as exc:
                log.warning("could not renew the lease %s/%s: %s", self.namespace,
                            LEASE_NAME, exc)
            if self._stop.is_set():
                return
            if not held and self.holder not in (None, self.me):
                self.lost(f"the lease is held by {self.holder}")
                return
            if must_stop(self.renewed_at, self.clock()):
                self.lost(f"the lease was not renewed for {RENEW_DEADLINE:g} s")
                return
            wait = RENEW_INTERVAL if held else RETRY_INTERVAL

    def release(self) -> None:
        """Stop renewing and give the Lease up, so that a standby takes over at once."""
        self._stop.set()
        if self._renewer:
            self._renewer.join(REQUEST_TIMEOUT + 1)
        if self.renewed_at is None:  # never held it: stopped while waiting
            return
        try:
            lease = self._read(REQUEST_TIMEOUT)
            if lease is None or (lease.get("spec") or {}).get("holderIdentity") != self.me:
                return
            self.leases.replace_namespaced_lease(LEASE_NAME, self.namespace, {
                "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                "metadata": {"name": LEASE_NAME, "namespace": self.namespace,
                             "resourceVersion": lease["metadata"]["resourceVersion"]},
                "spec": released(lease["spec"])}, _request_timeout=REQUEST_TIMEOUT)
            log.info("released the lease %s/%s", self.namespace, LEASE_NAME)
        except Exception as exc:
            log.warning("could not release the lease %s/%s (a standby takes it when it "
                        "expires): %s", self.namespace, LEASE_NAME, exc)


def coordination_api() -> Any:
    """A CoordinationV1Api of its own, configured as handlers.configure() configures theirs."""
    from kubernetes import client, config
    configuration = client.Configuration()
    try:
        config.load_incluster_config(client_configuration=configuration)
    except config.ConfigException:
        config.load_kube_config(client_configuration=configuration)
    return client.CoordinationV1Api(client.ApiClient(configuration))


# ------------------------------------------------------------------ health while waiting


class _Standby(BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 (the standard library's name)
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.end_headers()
        self.wfile.write(b"standby\n")

    def log_message(self, *_: Any) -> None:
        pass


def serve_health(url: str) -> ThreadingHTTPServer:
    """Answer the Deployment's probes while kopf, whose endpoint this is, does not run yet:
    without it a standby would be restarted by its liveness probe. Shut it down (shutdown(),
    server_close()) before kopf starts, which binds the same port."""
    parts = urllib.parse.urlsplit(url)
    server = ThreadingHTTPServer((parts.hostname or "0.0.0.0", parts.port or 80), _Standby)
    threading.Thread(target=server.serve_forever, name="standby-health", daemon=True).start()
    return server

"""Leader election (leader.py): the pure decisions, and the Elector against a fake Lease API
that behaves as the apiserver does (resourceVersion-checked writes)."""

from __future__ import annotations

import copy
import datetime as dt
import json
from types import SimpleNamespace

import pytest
from kubernetes.client.rest import ApiException

from resnet50_operator import leader
from resnet50_operator.leader import (
    LEASE_DURATION,
    RENEW_DEADLINE,
    Elector,
    claimed,
    lease_namespace,
    may_take,
    must_stop,
    released,
)

NOW = dt.datetime(2026, 12, 1, 22, 14, 22, 123456, tzinfo=dt.timezone.utc)
HELD = {"holderIdentity": "other_7", "leaseDurationSeconds": 15,
        "acquireTime": "2026-12-01T22:00:00.000000Z",
        "renewTime": "2026-12-01T22:14:20.000000Z", "leaseTransitions": 3}

# ------------------------------------------------------------------ the pure decisions


@pytest.mark.parametrize("spec, unchanged_for, expected", [
    pytest.param(None, 0, True, id="no-lease-yet"),
    pytest.param({}, 0, True, id="empty-spec"),
    pytest.param(released(HELD), 0, True, id="released"),
    pytest.param({**HELD, "holderIdentity": "me_1"}, 0, True, id="ours-to-renew"),
    pytest.param(HELD, 0, False, id="held-just-seen"),
    pytest.param(HELD, 14.9, False, id="held-not-yet-expired"),
    pytest.param(HELD, 15, True, id="expired"),
    pytest.param({**HELD, "leaseDurationSeconds": 60}, 30, False, id="holders-duration"),
    pytest.param({**HELD, "leaseDurationSeconds": None}, LEASE_DURATION, True,
                 id="no-duration-ours"),
])
def test_may_take(spec, unchanged_for, expected):
    assert may_take(spec, "me_1", unchanged_since=100.0, now=100.0 + unchanged_for) is expected


def test_a_leader_stops_well_before_a_standby_may_take_over():
    assert not must_stop(renewed_at=100.0, now=100.0 + RENEW_DEADLINE - 0.1)
    assert must_stop(renewed_at=100.0, now=100.0 + RENEW_DEADLINE)
    # The margin covers a slow last request and a standby that looked late.
    assert LEASE_DURATION - RENEW_DEADLINE >= 5
    assert leader.RENEW_INTERVAL + leader.REQUEST_TIMEOUT < RENEW_DEADLINE


def test_taking_a_new_lease():
    assert claimed(None, "me_1", NOW) == {
        "holderIdentity": "me_1", "leaseDurationSeconds": 15,
        "acquireTime": "2026-12-01T22:14:22.123456Z",
        "renewTime": "2026-12-01T22:14:22.123456Z", "leaseTransitions": 0}


@pytest.mark.parametrize("spec", [HELD, released(HELD)], ids=["expired", "released"])
def test_taking_over_counts_a_transition(spec):
    spec = claimed(spec, "me_1", NOW)
    assert spec["holderIdentity"] == "me_1" and spec["leaseTransitions"] == 4
    assert spec["acquireTime"] == spec["renewTime"] == "2026-12-01T22:14:22.123456Z"


def test_renewing_keeps_the_acquire_time():
    spec = claimed({**HELD, "holderIdentity": "me_1"}, "me_1", NOW)
    assert spec["acquireTime"] == HELD["acquireTime"] and spec["leaseTransitions"] == 3
    assert spec["renewTime"] == "2026-12-01T22:14:22.123456Z"


def test_releasing_clears_only_the_holder():
    assert released(HELD) == {k: v for k, v in HELD.items() if k != "holderIdentity"}


@pytest.mark.parametrize("watched, env, expected", [
    pytest.param("ml", {"POD_NAMESPACE": "ops"}, "ml", id="the-watched-namespace"),
    pytest.param(None, {"POD_NAMESPACE": "ops"}, "ops", id="the-operators-own"),
    pytest.param(None, {}, "resnet50-operator", id="default"),
])
def test_lease_namespace(watched, env, expected):
    assert lease_namespace(watched, env) == expected


def test_identity_is_host_and_process(monkeypatch):
    monkeypatch.setattr(leader.socket, "gethostname", lambda: "resnet50-operator-5d8f-x2")
    monkeypatch.setattr(leader.os, "getpid", lambda: 1)
    assert leader.identity() == "resnet50-operator-5d8f-x2_1"


# ------------------------------------------------------------------ the Elector


class FakeLeases:
    """CoordinationV1Api's lease calls as the apiserver answers them: 404, 409 on create of
    an existing Lease, 409 on an update with a stale resourceVersion."""

    def __init__(self):
        self.lease: dict | None = None
        self.version = 0
        self.fail: Exception | None = None

    def _check(self):
        if self.fail:
            raise self.fail

    def _store(self, body):
        self.version += 1
        self.lease = copy.deepcopy(body)
        self.lease["metadata"]["resourceVersion"] = str(self.version)

    def read_namespaced_lease(self, name, namespace, _preload_content, _request_timeout):
        self._check()
        if self.lease is None:
            raise ApiException(status=404)
        return SimpleNamespace(data=json.dumps(self.lease).encode())

    def create_namespaced_lease(self, namespace, body, _request_timeout):
        self._check()
        if self.lease is not None:
            raise ApiException(status=409)
        self._store(body)

    def replace_namespaced_lease(self, name, namespace, body, _request_timeout):
        self._check()
        if body["metadata"].get("resourceVersion") != self.lease["metadata"]["resourceVersion"]:
            raise ApiException(status=409)
        self._store(body)

    def holder(self):
        return self.lease["spec"].get("holderIdentity")


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


def elector(leases, me, clock, lost=None):
    return Elector(leases, "ns", me, lost=lost or (lambda reason: None), clock=clock)


def test_one_of_two_replicas_leads_and_the_other_takes_over_once_it_expires():
    leases, clock = FakeLeases(), Clock()
    a, b = elector(leases, "a_1", clock), elector(leases, "b_2", clock)
    assert a.try_take() and leases.holder() == "a_1"
    assert not b.try_take() and b.holder == "a_1"
    clock.now += LEASE_DURATION - 1
    assert not b.try_take()
    assert a.try_take()  # renewed: b's wait starts again from what it sees next
    clock.now += LEASE_DURATION - 1
    assert not b.try_take()
    clock.now += LEASE_DURATION  # a stopped renewing
    assert b.try_take() and leases.holder() == "b_2"
    assert leases.lease["spec"]["leaseTransitions"] == 1
    assert not a.try_take() and a.holder == "b_2"


def test_of_two_replicas_taking_at_once_one_wins():
    leases, clock = FakeLeases(), Clock()
    a, b = elector(leases, "a_1", clock), elector(leases, "b_2", clock)
    leases._store({"metadata": {"name": "resnet50-operator"}, "spec": released(HELD)})
    read = leases.read_namespaced_lease
    # b reads between a's read and a's write: both decide the Lease is free.
    def read_then_b_takes(*args, **kwargs):
        response = read(*args, **kwargs)
        leases.read_namespaced_lease = read
        assert b.try_take()
        return response
    leases.read_namespaced_lease = read_then_b_takes
    assert not a.try_take()
    assert leases.holder() == "b_2"


def test_release_lets_a_standby_take_over_at_once():
    leases, clock = FakeLeases(), Clock()
    a, b = elector(leases, "a_1", clock), elector(leases, "b_2", clock)
    assert a.try_take() and not b.try_take()
    a.release()
    assert leases.holder() is None and leases.lease["spec"]["leaseDurationSeconds"] == 15
    assert b.try_take()
    a.release()  # not ours any more: left alone
    assert leases.holder() == "b_2"


def test_a_leader_that_cannot_renew_gives_up_before_the_lease_expires(monkeypatch):
    leases, clock = FakeLeases(), Clock()
    lost = []
    a = elector(leases, "a_1", clock, lost=lost.append)
    assert a.try_take()
    leases.fail = ApiException(status=503)
    waits = []

    def wait(seconds):  # the renew loop's sleep: the clock moves instead
        waits.append(seconds)
        clock.now += seconds
        return bool(lost)
    monkeypatch.setattr(a._stop, "wait", wait)
    a._renew()
    assert lost == [f"the lease was not renewed for {RENEW_DEADLINE:g} s"]
    assert waits[0] == leader.RENEW_INTERVAL and set(waits[1:]) == {leader.RETRY_INTERVAL}
    assert clock.now - 1000.0 < LEASE_DURATION


def test_a_leader_whose_lease_was_taken_gives_up_at_once(monkeypatch):
    leases, clock = FakeLeases(), Clock()
    lost = []
    a = elector(leases, "a_1", clock, lost=lost.append)
    assert a.try_take()
    spec = {**leases.lease["spec"], "holderIdentity": "b_2"}
    leases._store({**leases.lease, "spec": spec})
    monkeypatch.setattr(a._stop, "wait", lambda seconds: bool(lost))
    a._renew()
    assert lost == ["the lease is held by b_2"]


def test_a_standby_answers_the_probes_until_kopf_takes_the_port():
    import socket
    import urllib.request

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}/healthz"
    server = leader.serve_health(url)
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            assert response.status == 200
    finally:
        server.shutdown()
        server.server_close()
    with socket.socket() as s:  # free again for kopf's liveness endpoint
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", port))

"""reconcile_one's order of writes, with the API faked: pods are created before the status
that counts them is written, and deleted only after the status that explains it."""

from __future__ import annotations

import datetime as dt
import http.server
import io
import json
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.error
from types import SimpleNamespace

import hostile_metrics
import pytest
from kubernetes import client
from kubernetes.client.rest import ApiException

from resnet50_operator import handlers, render
from resnet50_operator.settings import OperatorSettings


def pod(index: int, phase: str, **terminated: object) -> dict:
    state = {"terminated": terminated} if terminated else {"running": {}}
    return {"metadata": {"name": f"r50-{index}", "uid": f"u{index}", "labels": {
        render.NODE_INDEX_LABEL: str(index), render.ATTEMPT_LABEL: "0"}},
        "status": {"phase": phase, "containerStatuses": [{"name": "trainer", "state": state}]}}


class FakeApi:
    """The calls reconcile_one makes, on one training whose status write may conflict."""

    def __init__(self, status: dict, pods: list[dict], conflict: bool) -> None:
        self.body = {"metadata": {"name": "r50", "namespace": "ml", "uid": "uid-1",
                                  "resourceVersion": "7", "generation": 1},
                     "spec": {"nodes": 2, "gpusPerNode": 8,
                              "dataset": {"persistentVolumeClaim": {"claimName": "d"}}},
                     "status": status}
        self.pods, self.conflict = pods, conflict
        self.calls: list[str] = []
        self.patched: dict = {}

    def get_namespaced_custom_object(self, *args):
        return self.body

    def list_namespaced_pod(self, namespace, label_selector):
        return SimpleNamespace(items=self.pods)

    def read_namespaced_service(self, name, namespace):
        return {}

    def list_namespaced_event(self, namespace, field_selector):
        return SimpleNamespace(items=[])

    def patch_namespaced_custom_object_status(self, *args):
        self.calls.append("status")
        self.patched = args[-1]["status"]
        if self.conflict:
            raise ApiException(status=409)

    def create_namespaced_pod(self, namespace, body):
        self.calls.append(f"create {body['metadata']['name']}")

    def delete_namespaced_pod(self, name, namespace, grace_period_seconds=None):
        self.calls.append(f"delete {name}")

    def create_namespaced_event(self, namespace, body):
        self.calls.append(f"event {body['reason']}")


def new_memo(api: FakeApi | None = None) -> SimpleNamespace:
    memo = SimpleNamespace(settings=OperatorSettings(), core=api, custom=api)
    handlers.keep_per_training_state(memo)
    return memo


def reconcile_one(api: FakeApi) -> list[str]:
    handlers.reconcile_one(new_memo(api), "ml", "r50")
    return api.calls


RUNNING = {"phase": "Running", "podsCreated": True, "startTime": "2026-11-22T00:00:00Z",
           "nodes": {"ready": 2, "total": 2}}
ONE_FAILED = [pod(0, "Running"), pod(1, "Failed", exitCode=2, reason="Error")]


@pytest.mark.parametrize(("conflict", "calls"), [
    (False, ["status", "delete r50-0", "event ConfigurationError"]),
    (True, ["status"]),  # nothing deleted: the next trigger decides again, on the same pods
])
def test_pods_are_deleted_only_after_the_status_that_explains_it(conflict, calls):
    assert reconcile_one(FakeApi(RUNNING, ONE_FAILED, conflict)) == calls


@pytest.mark.parametrize("conflict", [False, True])
def test_pods_are_created_before_the_status_that_counts_them(conflict):
    calls = reconcile_one(FakeApi({}, [], conflict))
    assert calls[:3] == ["create r50-0", "create r50-1", "status"]


TERMINATING = ApiException(status=403, reason="Forbidden")
TERMINATING.body = ('{"kind":"Status","message":"pods \\"r50-0\\" is forbidden: unable to create '
                    'new content in namespace ml because it is being terminated","reason":'
                    '"Forbidden","details":{"causes":[{"reason":"NamespaceTerminating"}]},'
                    '"code":403}')


def test_a_namespace_being_deleted_is_no_error(monkeypatch):
    """What the apiserver answers to anything new in a namespace being deleted: the
    training goes with it, so nothing is raised (a traceback every 5 s otherwise)."""
    api = FakeApi({}, [], conflict=False)

    def refuse(namespace, body):
        api.calls.append(f"refused {body.get('reason') or body['metadata']['name']}")
        raise TERMINATING

    monkeypatch.setattr(api, "create_namespaced_pod", refuse)
    monkeypatch.setattr(api, "create_namespaced_event", refuse)
    assert reconcile_one(api)[:3] == ["refused r50-0", "refused r50-1", "status"]


def refusing(api: FakeApi, monkeypatch, code: int, message: str, after: int = 0) -> None:
    """The apiserver refuses every pod after the first `after`."""
    created = []
    refusal = ApiException(status=code, reason="Refused")
    refusal.body = json.dumps({"kind": "Status", "message": message, "code": code})

    def create(namespace, body):
        if len(created) >= after:
            raise refusal
        created.append(body["metadata"]["name"])
        api.calls.append(f"create {body['metadata']['name']}")

    monkeypatch.setattr(api, "create_namespaced_pod", create)


QUOTA = 'pods "r50-1" is forbidden: exceeded quota: compute, requested: pods=1, used: pods=1, ' \
    'limited: pods=1'


def test_a_refusal_that_may_pass_leaves_the_training_waiting_and_saying_why(monkeypatch):
    """A ResourceQuota full for now: nothing counts as created (the next pass creates the
    missing pod), the Running condition says why in the user's words, and an Event too."""
    api = FakeApi({}, [], conflict=False)
    refusing(api, monkeypatch, 403, QUOTA, after=1)
    assert reconcile_one(api) == ["create r50-0", "status", "event QuotaExceeded"]
    assert api.patched["phase"] == "Pending" and not api.patched.get("podsCreated")
    running = next(c for c in api.patched["conditions"] if c["type"] == "Running")
    assert (running["status"], running["reason"]) == ("False", "QuotaExceeded")
    assert running["message"] == ("ResourceQuota compute in namespace ml refuses pod r50-1 "
                                  "(the 2nd of 2 pods): requested pods=1, used pods=1, "
                                  "limited pods=1")


def test_the_same_refusal_is_told_once(monkeypatch):
    api = FakeApi({}, [], conflict=False)
    refusing(api, monkeypatch, 403, QUOTA)
    reconcile_one(api)
    api.body["status"], api.calls = api.patched, []
    assert reconcile_one(api) == []  # nothing new to write or tell


@pytest.mark.parametrize(("code", "message", "phase", "reason"), [
    (400, 'Pod in version "v1" cannot be handled as a Pod: json: cannot unmarshal string into '
     'Go struct field Toleration.spec.tolerations.tolerationSeconds of type int64', "Failed",
     "InvalidSpec"),
    (403, 'pods "r50-0" is forbidden: no PriorityClass with name urgent was found',
     "Pending", "PriorityClassNotFound"),
    (403, 'pods "r50-0" is forbidden: error looking up service account ml/trainer: '
     'serviceaccount "trainer" not found', "Pending", "ServiceAccountNotFound"),
    (403, 'pods is forbidden: User "system:serviceaccount:x:y" cannot create resource "pods"',
     "Pending", "Forbidden"),
    (500, 'Internal error occurred: failed calling webhook "policy.example.com": context '
     'deadline exceeded', "Pending", "CreateFailed"),
])
def test_every_refusal_becomes_the_trainings_condition_and_event(monkeypatch, code, message,
                                                                 phase, reason):
    api = FakeApi({}, [], conflict=False)
    refusing(api, monkeypatch, code, message)
    assert reconcile_one(api) == ["status", f"event {reason}"]
    assert api.patched["phase"] == phase
    assert reason in {c["reason"] for c in api.patched["conditions"]}


def test_a_training_is_judged_hung_only_after_a_fresh_read_of_its_progress(monkeypatch):
    """The periodic read (every 15 s) may come after the hang deadline: the trainer's last
    report must be read before it is restarted for NoProgress. The read runs in the
    background; the pass after it sees the progress."""
    long_ago, now = "2026-11-22T00:00:00Z", handlers.reconcile.now_utc()
    status = {**RUNNING, "training": {"globalStep": 10, "lastProgressTime": long_ago},
              "conditions": [{"type": "Running", "status": "True", "reason": "AllNodesRunning",
                              "lastTransitionTime": long_ago}]}
    master = pod(0, "Running")
    master["status"]["podIP"] = "10.0.0.7"
    master["spec"] = {"containers": [{"ports": [{"name": "metrics", "containerPort": 9402}]}]}
    reads: list[str] = []

    class Response(io.BytesIO):
        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

    def open_url(url, timeout):
        reads.append(url)
        return Response(b"resnet50_global_step 11\n")

    monkeypatch.setattr(handlers._DIRECT, "open", open_url)
    api = FakeApi(status, [master, pod(1, "Running")], conflict=False)
    memo = new_memo(api)
    memo.progress_read[("ml", "r50")] = time.monotonic()  # just read
    handlers.reconcile_one(memo, "ml", "r50")
    memo.readers.shutdown(wait=True)  # the read it started is done
    assert reads == ["http://10.0.0.7:9402/metrics"]
    assert not [c for c in api.calls if c.startswith("delete")]
    handlers.reconcile_one(memo, "ml", "r50")
    assert not [c for c in api.calls if c.startswith("delete")]
    assert api.patched["training"]["globalStep"] == 11
    assert api.patched["training"]["lastProgressTime"] >= now.isoformat()[:19]


def test_progress_is_read_from_the_pod_directly_whatever_proxy_is_set():
    """HTTP_PROXY may be set for the operator's egress; no proxy reaches a pod IP."""
    class Metrics(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 (http.server's naming)
            body = b"resnet50_epoch 3\n"
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Metrics)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    env = {k: v for k, v in os.environ.items() if k.lower() != "no_proxy"}
    env["http_proxy"] = env["HTTP_PROXY"] = "http://127.0.0.1:9"  # nothing listens there
    read = f"from resnet50_operator import handlers; print(handlers.read_gauges('127.0.0.1', " \
        f"{server.server_address[1]}))"
    try:  # a fresh interpreter: urllib reads the proxy variables when it builds an opener
        run = subprocess.run([sys.executable, "-c", read], env=env, capture_output=True,
                             text=True, timeout=60)
    finally:
        server.shutdown()
        server.server_close()
    assert (run.returncode, run.stdout) == (0, "{'epoch': 3.0}\n"), run.stderr


def test_what_is_kept_per_training_goes_with_it():
    memo = new_memo()
    memo.locks[("ml", "r50")], memo.progress_read[("ml", "r50")] = threading.Lock(), 1.0
    memo.readings[("ml", "r50")] = handlers.Reading(0, handlers.reconcile.now_utc(), {})
    handlers.on_training_event(type="DELETED", namespace="ml", name="r50", memo=memo)
    assert (memo.locks, memo.progress_read, memo.readings) == ({}, {}, {})


def test_one_trainings_error_does_not_stop_the_sweep_for_the_others(monkeypatch, caplog):
    listed = [{"metadata": {"namespace": ns, "name": name}}
              for ns, name in (("a", "poison"), ("b", "healthy"), ("b", "other"))]
    api = SimpleNamespace(list_cluster_custom_object=lambda *args: {"items": listed})
    reconciled = []

    def reconcile_one(memo, namespace, name):
        if name == "poison":
            raise ApiException(status=403, reason="exceeded quota")
        reconciled.append(f"{namespace}/{name}")

    monkeypatch.setattr(handlers, "reconcile_one", reconcile_one)
    memo = new_memo()
    memo.custom = api
    handlers.sweep_once(memo)
    assert reconciled == ["b/healthy", "b/other"]
    assert [r.getMessage() for r in caplog.records] == ["a/poison: reconcile failed"]


@pytest.mark.parametrize(("kind", "error"), [("huge", ValueError), ("slow", TimeoutError)])
def test_a_hostile_metrics_endpoint_is_cut_short(monkeypatch, kind, error):
    monkeypatch.setattr(handlers, "METRICS_READ_SECONDS", 1.0)
    # the path tells the server which answer to give
    monkeypatch.setattr(handlers, "_DIRECT", _prefixing(handlers._DIRECT, f"/{kind}"))
    started = time.monotonic()
    with hostile_metrics.serving() as port, pytest.raises(error):
        handlers.read_gauges("127.0.0.1", port)
    assert time.monotonic() - started < 2.5  # the deadline and at most one receive more


def _prefixing(opener, prefix):
    """An opener that asks for PREFIX/metrics instead of /metrics."""
    return SimpleNamespace(open=lambda url, timeout: opener.open(
        url.replace("/metrics", f"{prefix}/metrics"), timeout=timeout))


def test_a_burst_of_triggers_costs_two_passes(monkeypatch):
    """256 pods starting send 256 events: while a pass runs, one more waits for the lock
    and the others return at once, as that one will see their changes."""
    memo, passes, release = new_memo(), [], threading.Event()

    def one_pass(memo, namespace, name):
        passes.append(name)
        release.wait(10)

    monkeypatch.setattr(handlers, "_reconcile", one_pass)
    triggers = [threading.Thread(target=handlers.reconcile_one, args=(memo, "ml", "r50"))
                for _ in range(20)]
    for t in triggers:
        t.start()
    returned = [t for t in triggers if not t.join(0.05) and not t.is_alive()]
    assert len(returned) >= 18 and passes == ["r50"]  # one runs, one waits
    release.set()
    for t in triggers:
        t.join(10)
    assert passes == ["r50", "r50"]


def test_metrics_reads_run_beside_the_passes_a_few_at_a_time(monkeypatch):
    """Twenty trainings whose /metrics trickles: each pass returns at once, and no more than
    METRICS_READERS reads are under way at a time."""
    monkeypatch.setattr(handlers, "METRICS_READ_SECONDS", 0.3)
    reading, most, lock, read = [0], [0], threading.Lock(), handlers.read_gauges

    def counted(ip, port):
        with lock:
            reading[0] += 1
            most[0] = max(most[0], reading[0])
        try:
            return read(ip, port)
        finally:
            with lock:
                reading[0] -= 1

    monkeypatch.setattr(handlers, "read_gauges", counted)
    status = {**RUNNING, "conditions": [{"type": "Running", "status": "True",
                                         "reason": "AllNodesRunning"}]}
    master = pod(0, "Running")
    master["status"]["podIP"] = "127.0.0.1"
    api = FakeApi(status, [master, pod(1, "Running")], conflict=False)
    memo = new_memo(api)
    with hostile_metrics.serving() as port:
        master["spec"] = {"containers": [{"ports": [{"name": "metrics", "containerPort": port}]}]}
        for i in range(20):
            api.body["metadata"]["name"] = f"r50-{i}"
            started = time.monotonic()
            handlers.reconcile_one(memo, "ml", f"r50-{i}")
            assert time.monotonic() - started < 0.25  # the read is not waited for
        memo.readers.shutdown(wait=True)
    assert len(memo.readings) == 20 and all(not r.gauges for r in memo.readings.values())
    assert most[0] == handlers.METRICS_READERS


def test_a_pod_that_answers_without_progress_is_a_reading_but_one_not_reached_is_not(
        monkeypatch):
    """A closed port (torchrun still waits for the other nodes) or an answer cut short (a
    stopped trainer) is a reading without progress, on which a hang can be judged; a pod
    not reached at all (a NetworkPolicy drops the reads) is no news."""
    memo = new_memo()
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    monkeypatch.setattr(handlers, "reconcile_one", lambda memo, ns, name: None)
    handlers._read(memo, ("ml", "closed"), 3, "127.0.0.1", port, judge=False)
    assert (memo.readings[("ml", "closed")].attempt, memo.readings[("ml", "closed")].gauges) \
        == (3, {})
    for name, error in (("slow", TimeoutError("metrics not read within 3 s")),
                        ("dropped", urllib.error.URLError(TimeoutError("timed out")))):
        monkeypatch.setattr(handlers, "read_gauges",
                            lambda ip, port, e=error: (_ for _ in ()).throw(e))
        handlers._read(memo, ("ml", name), 0, "10.0.0.7", 9402, judge=False)
    assert ("ml", "slow") in memo.readings and ("ml", "dropped") not in memo.readings
    assert not memo.reading  # none still marked as under way


def warning(uid, reason, at, type_="Warning", message="m"):
    return {"type": type_, "reason": reason, "message": message, "lastTimestamp": at,
            "involvedObject": {"kind": "Pod", "uid": uid}}


def test_the_newest_warning_of_each_pod_is_kept_from_the_watch():
    w = handlers.reconcile.PodWarnings(limit=2)
    w.note(warning("a", "FailedMount", "2026-11-22T00:00:02Z", message="no such dir"))
    w.note(warning("a", "BackOff", "2026-11-22T00:00:01Z"))  # older, arrived late
    w.note(warning("a", "FailedScheduling", "2026-11-22T00:00:03Z"))  # the pod says that
    w.note(warning("a", "Pulled", "2026-11-22T00:00:04Z", type_="Normal"))
    assert w.newest("a") == ("FailedMount", "no such dir")
    w.note(warning("b", "FailedMount", "2026-11-22T00:00:05Z"))
    w.note(warning("c", "FailedMount", "2026-11-22T00:00:06Z"))
    assert (w.newest("a"), w.newest("c")) == (None, ("FailedMount", "m"))  # a was oldest
    w.forget("c")
    assert w.newest("c") is None


def test_a_pod_the_kubernetes_client_refuses_fails_the_training(monkeypatch):
    """The client checks the Pod's types before sending it (a string tolerationSeconds)."""
    api = FakeApi({}, [], conflict=False)
    api.body["spec"]["scheduling"] = {"tolerations": [{"key": "gpu", "operator": "Exists",
                                                       "tolerationSeconds": "soon"}]}
    real = client.CoreV1Api(client.ApiClient())  # refuses before it would send anything
    monkeypatch.setattr(api, "create_namespaced_pod", real.create_namespaced_pod)
    assert reconcile_one(api) == ["status", "event InvalidSpec"]
    failed = next(c for c in api.patched["conditions"] if c["type"] == "Failed")
    assert failed["message"] == (
        "the Kubernetes client refused pod r50-0: spec.tolerations.0.tolerationSeconds: Input "
        "should be a valid integer (got 'soon')")


def listed(name: str, **status: object) -> dict:
    return {"metadata": {"namespace": "ml", "name": name}, "spec": {
        "nodes": 1, "gpusPerNode": 8, "dataset": {"persistentVolumeClaim": {"claimName": "d"}},
        "runPolicy": {"activeDeadlineSeconds": 600}}, "status": status}


def test_the_sweep_passes_only_over_trainings_that_time_changes(monkeypatch):
    """An idle training costs no request between resyncs: the sweep passes over those whose
    deadline (or back-off, TTL, hang deadline) has come, and over every one a resync
    interval after its last pass."""
    started_long_ago = handlers.reconcile.timestamp(
        handlers.reconcile.now_utc() - dt.timedelta(seconds=601))
    items = [listed("idle", phase="Pending", startTime=handlers.reconcile.timestamp(
                 handlers.reconcile.now_utc())),
             listed("past-deadline", phase="Pending", startTime=started_long_ago),
             listed("never-seen", phase="Pending")]
    passes = []
    monkeypatch.setattr(handlers, "reconcile_one", lambda memo, ns, name: passes.append(name))
    memo = new_memo()
    memo.custom = SimpleNamespace(list_cluster_custom_object=lambda *a: {"items": items})
    now = time.monotonic()
    memo.last_pass.update({("ml", "idle"): now, ("ml", "past-deadline"): now})
    handlers.sweep_once(memo)
    assert passes == ["past-deadline", "never-seen"]
    memo.last_pass[("ml", "idle")] = now - memo.settings.resync_interval_seconds
    passes.clear()
    handlers.sweep_once(memo)
    assert "idle" in passes


def test_a_read_that_brings_news_passes_over_its_training(monkeypatch):
    memo, passes = new_memo(), []
    monkeypatch.setattr(handlers, "reconcile_one", lambda memo, ns, name: passes.append(name))
    gauges = iter([{"global_step": 10.0}, {"global_step": 10.0}, {"global_step": 11.0}])
    monkeypatch.setattr(handlers, "read_gauges", lambda ip, port: next(gauges))
    for _ in range(3):
        handlers._read(memo, ("ml", "r50"), 0, "10.0.0.7", 9402, judge=False)
    assert passes == ["r50", "r50"]  # the first reading, and the step that moved
    monkeypatch.setattr(handlers, "read_gauges", lambda ip, port: {"global_step": 11.0})
    handlers._read(memo, ("ml", "r50"), 0, "10.0.0.7", 9402, judge=True)  # to be judged
    assert passes == ["r50", "r50", "r50"]


def test_the_pods_of_a_deleted_training_cost_no_pass(monkeypatch):
    memo, passes = new_memo(), []
    monkeypatch.setattr(handlers, "reconcile_one", lambda memo, ns, name: passes.append(name))
    labels = {render.TRAINING_LABEL: "r50"}
    handlers.on_training_event(type="DELETED", namespace="ml", name="r50", memo=memo)
    handlers.on_pod_event(type="DELETED", uid="u0", namespace="ml", labels=labels, memo=memo)
    assert passes == []
    handlers.on_training_event(type="ADDED", namespace="ml", name="r50", memo=memo)
    handlers.on_pod_event(type="ADDED", uid="u0", namespace="ml", labels=labels, memo=memo)
    assert passes == ["r50", "r50"]  # a new training of the same name


def test_a_pods_warning_passes_over_its_training(monkeypatch):
    memo, passes = new_memo(), []
    monkeypatch.setattr(handlers, "reconcile_one", lambda memo, ns, name: passes.append(name))
    handlers.on_pod_event(type="ADDED", uid="u1", namespace="ml",
                          labels={render.TRAINING_LABEL: "r50"}, memo=memo)
    for uid in ("u1", "someone-elses"):
        handlers.on_pod_warning(type="ADDED", body=warning(uid, "FailedMount",
                                                           "2026-11-22T00:00:02Z"), memo=memo)
    assert passes == ["r50", "r50"]
    assert memo.pod_warnings.newest("u1") == ("FailedMount", "m")


@pytest.mark.parametrize(("old", "new", "fields"), [
    ({"nodes": 2}, {"nodes": 3}, ["spec.nodes"]),
    ({"restartPolicy": {"maxRestarts": 3}}, {"restartPolicy": {"maxRestarts": 5}}, []),
    ({"runPolicy": {"suspend": False}}, {"runPolicy": {"suspend": True}}, []),
    ({"runPolicy": {}}, {"runPolicy": {"terminationGracePeriodSeconds": 600}},
     ["spec.runPolicy.terminationGracePeriodSeconds"]),  # the pods carry it
], ids=["nodes", "restart-policy", "suspend", "grace-period"])
def test_a_spec_change_warns_of_what_waits_for_the_next_attempt(old, new, fields):
    assert handlers.changed_for_the_next_attempt(old, new) == fields

"""Each reconcile rule on its own, table by table: whether it decides, and what it adds.

test_reconcile.py runs the rules together, through reconcile(); these tables pin down what
each one does, so that a rule can be changed or moved knowing what it is responsible for.
"""

from __future__ import annotations

import datetime as dt

import pytest
from cases import training

from resnet50_operator.gang import GangView
from resnet50_operator.reconcile import rules
from resnet50_operator.reconcile.decision import CreateObject, DeletePod, DeleteTraining
from resnet50_operator.reconcile.observe import Disruption, PodView, timestamp
from resnet50_operator.settings import OperatorSettings
from resnet50_operator.spec import ResNet50TrainingStatus, TrainingProgress

NOW = dt.datetime(2026, 11, 22, 12, 0, 0, tzinfo=dt.timezone.utc)


def at(seconds: float) -> str:
    return timestamp(NOW + dt.timedelta(seconds=seconds))


def pod(index, phase="Running", attempt=0, **kw):
    return PodView(name=f"r50-{index}", index=index, attempt=attempt, phase=phase, **kw)


def apply(rule, status=None, pods=(), spec=None, service=True, progress=None, read_at=NOW,
          gang=None):
    """(whether the rule decided, the actions as (kind, name) pairs, the new status, events);
    the progress was read at `read_at`, by default just now."""
    st = ResNet50TrainingStatus(**{"start_time": at(0), "pods_created": True, **(status or {})})
    p = rules.Pass(training(spec), st, list(pods), service, NOW, OperatorSettings(), 1,
                   progress, read_at, gang)
    decided = rule(p)
    return decided, [_action(a) for a in p.actions], p.status, [(e.type, e.reason)
                                                                 for e in p.events]


def _action(a):
    if isinstance(a, CreateObject):
        return ("create", a.body["metadata"]["name"])
    if isinstance(a, DeletePod):
        return ("delete!" if a.force else "delete", a.name)
    assert isinstance(a, DeleteTraining)
    return ("delete", "training")


def test_the_rules_run_in_the_documented_order():
    assert [r.__name__ for r in rules.RULES] == [
        "finished", "allowed", "first_seen", "suspended", "resumed", "past_deadline",
        "old_attempt_pods", "backing_off", "ensure_service", "record_progress", "failed",
        "succeeded", "topology_kept", "gang_ready", "create_pods", "readiness"]


@pytest.mark.parametrize(("status", "pods", "spec", "decided", "actions"), [
    ({"phase": "Running"}, [pod(0)], None, False, []),
    ({"phase": "Succeeded"}, [pod(0, "Succeeded"), pod(1, "Running")], None, True,
     [("delete", "r50-1")]),
    ({"phase": "Failed", "completion_time": at(-30)}, [], {"runPolicy":
     {"ttlSecondsAfterFinished": 60}}, True, []),
    ({"phase": "Failed", "completion_time": at(-60)}, [], {"runPolicy":
     {"ttlSecondsAfterFinished": 60}}, True, [("delete", "training")]),
], ids=["active", "leftover-pod-stopped", "ttl-not-yet", "ttl-passed"])
def test_finished(status, pods, spec, decided, actions):
    assert apply(rules.finished, status, pods, spec)[:2] == (decided, actions)


@pytest.mark.parametrize(("start", "created"), [(None, True), (at(-5), False)])
def test_first_seen(start, created):
    decided, _, st, _ = apply(rules.first_seen, {"start_time": start})
    assert not decided
    assert st.start_time == (at(0) if created else start)
    assert [c.type for c in st.conditions] == (["Created"] if created else [])


@pytest.mark.parametrize(("suspend", "phase", "decided", "attempt", "events"), [
    (False, "Running", False, 0, []),
    (True, "Running", True, 1, [("Normal", "Suspended")]),
    (True, "Suspended", True, 0, []),  # already suspended: no new attempt, no new Event
])
def test_suspended(suspend, phase, decided, attempt, events):
    d, actions, st, ev = apply(rules.suspended, {"phase": phase}, [pod(0), pod(1)],
                               {"runPolicy": {"suspend": suspend}})
    assert (d, st.attempt, ev) == (decided, attempt, events)
    assert actions == ([("delete", "r50-0"), ("delete", "r50-1")] if suspend else [])


@pytest.mark.parametrize(("phase", "pending", "clock"), [
    ("Suspended", True, at(0)), ("Running", False, at(-300))])
def test_resumed(phase, pending, clock):
    d, _, st, ev = apply(rules.resumed, {"phase": phase, "start_time": at(-300)})
    assert not d
    assert (st.phase == "Pending", st.start_time) == (pending, clock)
    assert ev == ([("Normal", "Resumed")] if pending else [])


@pytest.mark.parametrize(("deadline", "decided"), [(None, False), (301, False), (300, True)])
def test_past_deadline(deadline, decided):
    d, actions, st, _ = apply(rules.past_deadline, {"phase": "Running", "start_time": at(-300)},
                              [pod(0)], {"runPolicy": {"activeDeadlineSeconds": deadline}})
    assert d == decided
    assert (st.phase, actions) == (("Failed", [("delete", "r50-0")]) if decided
                                   else ("Running", []))


@pytest.mark.parametrize(("pods", "decided", "actions"), [
    ([pod(0, attempt=1)], False, []),
    ([pod(0, attempt=0), pod(1, attempt=1)], True, [("delete", "r50-0")]),
    # deleted long enough ago on a node that never confirms: forced
    ([pod(0, attempt=0, deleting=True, deletion_deadline=NOW - dt.timedelta(seconds=61))],
     True, [("delete!", "r50-0")]),
    ([pod(0, attempt=0, deleting=True, deletion_deadline=NOW)], True, []),  # waited for
])
def test_old_attempt_pods(pods, decided, actions):
    assert apply(rules.old_attempt_pods, {"attempt": 1}, pods)[:2] == (decided, actions)


@pytest.mark.parametrize(("restart_at", "decided"), [(None, False), (at(1), True),
                                                     (at(0), False)])
def test_backing_off(restart_at, decided):
    assert apply(rules.backing_off, {"restart_at": restart_at})[0] == decided


@pytest.mark.parametrize(("exists", "actions"), [(True, []), (False, [("create", "r50")])])
def test_ensure_service(exists, actions):
    assert apply(rules.ensure_service, service=exists)[:2] == (False, actions)


@pytest.mark.parametrize(("gauges", "step"), [(None, None), ({"global_step": 7}, 7)])
def test_record_progress(gauges, step):
    decided, _, st, _ = apply(rules.record_progress, progress=gauges)
    assert not decided
    assert (st.training.global_step if st.training else None) == step


RUNNING = {"phase": "Running", "attempt_start_time": at(-900)}
HUNG = {**RUNNING, "training": TrainingProgress(global_step=10, last_progress_time=at(-700))}


@pytest.mark.parametrize(("status", "pods", "decided", "phase", "reason"), [
    (RUNNING, [pod(0), pod(1)], False, "Running", None),
    (RUNNING, [pod(0), pod(1, "Failed", exit_code=137, container_reason="OOMKilled")], True,
     "Restarting", "OOMKilled"),
    (RUNNING, [pod(0), pod(1, "Failed", exit_code=2)], True, "Failed", "ConfigurationError"),
    (RUNNING, [pod(0)], True, "Restarting", "PodDeleted"),  # pod 1 vanished
    ({**RUNNING, "restarts": 3}, [pod(0), pod(1, "Failed", exit_code=143)], True, "Failed",
     "Terminated"),  # budget spent; the cause is kept in lastFailure
    (HUNG, [pod(0), pod(1)], True, "Restarting", "NoProgress"),
], ids=["healthy", "oom-killed", "config-error", "pod-vanished", "budget-spent", "hung"])
def test_failed(status, pods, decided, phase, reason):
    conditions = [{"type": "Running", "status": "True", "reason": "AllNodesRunning",
                   "lastTransitionTime": at(-900)}]
    d, _, st, _ = apply(rules.failed, {**status, "conditions": conditions}, pods,
                        {"runPolicy": {"progressDeadlineSeconds": 600}})
    assert (d, st.phase) == (decided, phase)
    assert (st.last_failure.reason if st.last_failure else None) == reason


# Kubernetes' DisruptionTarget condition, set 30 s before the pass, when `kubectl drain` evicted
# the pod; its trainer then stopped on SIGTERM, saved a checkpoint and exited 143.
EVICTED = Disruption("EvictionByEvictionAPI", "Eviction API: evicting", NOW - dt.timedelta(
    seconds=30))


def stopped(index, **kw):
    """A pod whose trainer stopped on SIGTERM (contract.EXIT_STOPPED)."""
    return pod(index, "Failed", exit_code=143, container_reason="Error",
               container_message="resnet50-train: stopped by SIGTERM", **kw)


def later(seconds):
    return NOW + dt.timedelta(seconds=seconds)


# phase, restarts, disruptions, events
DISRUPTED = ("Restarting", 0, 1, [("Normal", "Disrupted")])
COUNTED = ("Restarting", 1, 0, [("Warning", "Restarting")])


@pytest.mark.parametrize(("status", "pods", "restart_policy", "reason", "outcome"), [
    (RUNNING, [pod(0), stopped(1, finished_at=NOW, disruption=EVICTED)], {},
     "EvictionByEvictionAPI", DISRUPTED),
    # its peer's collective broke a moment later: one incident, one disruption
    (RUNNING, [pod(0, "Failed", exit_code=1, finished_at=later(2)),
               stopped(1, finished_at=NOW, disruption=EVICTED)], {},
     "EvictionByEvictionAPI", DISRUPTED),
    # the peer stopped with it while the evicted pod still wrote its checkpoint: the
    # disruption began before either ended
    (RUNNING, [stopped(0, finished_at=later(-25)),
               stopped(1, finished_at=later(-5), disruption=EVICTED)], {},
     "EvictionByEvictionAPI", DISRUPTED),
    (RUNNING, [pod(0), pod(1, deleting=True, disruption=EVICTED)], {},
     "EvictionByEvictionAPI", DISRUPTED),  # seen before its trainer stopped
    (RUNNING, [pod(0), pod(1, "Unknown")], {}, "NodeLost", DISRUPTED),
    (RUNNING, [pod(0), pod(1, "Failed", pod_reason="NodeLost")], {}, "NodeLost", DISRUPTED),
    (RUNNING, [pod(0), pod(1, "Failed", exit_code=137, pod_reason="Evicted",
                       pod_message="The node was low on resource: memory.")], {},
     "Evicted", DISRUPTED),  # the kubelet's eviction, without the condition
    # deleted without the condition (kubectl delete pod): a failure, as for a Job
    (RUNNING, [pod(0), pod(1, deleting=True)], {}, "PodDeleted", COUNTED),
    (RUNNING, [pod(0), stopped(1)], {}, "Terminated", COUNTED),  # SIGTERM, no condition
    ({**RUNNING, "restarts": 3}, [pod(0), stopped(1, disruption=EVICTED)], {},
     "EvictionByEvictionAPI", ("Restarting", 3, 1, [("Normal", "Disrupted")])),
    ({**RUNNING, "disruptions": 2}, [pod(0), stopped(1, disruption=EVICTED)],
     {"maxDisruptions": 2}, "EvictionByEvictionAPI",
     ("Failed", 0, 2, [("Warning", "DisruptionLimitExceeded")])),
    ({**RUNNING, "disruptions": 1}, [pod(0), stopped(1, disruption=EVICTED)],
     {"maxDisruptions": 2}, "EvictionByEvictionAPI", ("Restarting", 0, 2, DISRUPTED[3])),
    ({**RUNNING, "disruptions": 100}, [pod(0), stopped(1, disruption=EVICTED)], {},
     "EvictionByEvictionAPI", ("Restarting", 0, 101, DISRUPTED[3])),  # no limit
], ids=["evicted-143", "peer-exits-1-after", "peer-stopped-first", "evicted-still-running",
        "node-unknown", "node-lost", "kubelet-evicted", "deleted-by-a-user",
        "sigterm-without-condition", "restart-budget-spent", "disruption-budget-spent",
        "disruption-budget-left", "no-disruption-limit"])
def test_failed_after_a_disruption(status, pods, restart_policy, reason, outcome):
    d, _, st, events = apply(rules.failed, status, pods, {"restartPolicy": restart_policy})
    assert d and st.last_failure.reason == reason
    assert (st.phase, st.restarts, st.disruptions, events) == outcome
    if st.phase == "Restarting":
        disrupted = outcome[2] > status.get("disruptions", 0)
        assert st.restart_history[-1].disruption == disrupted
        assert (st.restart_at is None) == disrupted  # a disruption restarts without back-off


def test_a_disruption_says_it_does_not_count_against_max_restarts():
    p = rules.Pass(training(), ResNet50TrainingStatus(**{
        "start_time": at(0), "pods_created": True, **RUNNING, "restarts": 1,
        "disruptions": 1}), [pod(0), stopped(1, finished_at=NOW, disruption=EVICTED)], True,
        NOW, OperatorSettings(), 1)
    rules.failed(p)
    (event,) = p.events
    assert (event.type, event.reason) == ("Normal", "Disrupted")
    assert event.message == (
        "disruption 2, not counted against maxRestarts (1 of 3 restarts used); restarting at "
        "once after pod r50-1 exit code 143 (EvictionByEvictionAPI): resnet50-train: stopped "
        "by SIGTERM\nEviction API: evicting")
    restarting = next(c for c in p.status.conditions if c.type == "Restarting")
    assert (restarting.status, restarting.reason) == ("True", "EvictionByEvictionAPI")
    assert p.status.restart_history[-1].message == \
        "pod r50-1 exit code 143 (EvictionByEvictionAPI): Eviction API: evicting"
    assert (p.status.attempt, p.status.pods_created) == (1, False)


def test_the_disruption_limit_names_its_field():
    _, _, st, _ = apply(rules.failed, {**RUNNING, "disruptions": 3},
                        [pod(0), stopped(1, disruption=EVICTED)],
                        {"restartPolicy": {"maxDisruptions": 3}})
    failed = next(c for c in st.conditions if c.type == "Failed")
    assert failed.reason == "DisruptionLimitExceeded"
    assert failed.message.startswith("disruption budget of 3 "
                                     "(spec.restartPolicy.maxDisruptions) spent; last "
                                     "disruption: pod r50-1 exit code 143")


@pytest.mark.parametrize(("first_progress", "read_at", "phase", "reason"), [
    (600, NOW, "Restarting", "StartupTimeout"),  # all running for 900 s, never a report
    (600, NOW - dt.timedelta(seconds=400), "Running", None),  # read before the deadline
    (1200, NOW, "Running", None),
    (0, NOW, "Running", None),  # off
])
def test_failed_before_the_first_progress(first_progress, read_at, phase, reason):
    conditions = [{"type": "Running", "status": "True", "reason": "AllNodesRunning",
                   "lastTransitionTime": at(-900)}]
    _, _, st, _ = apply(rules.failed, {**RUNNING, "conditions": conditions},
                        [pod(0), pod(1)],
                        {"runPolicy": {"firstProgressDeadlineSeconds": first_progress}},
                        read_at=read_at)
    assert st.phase == phase
    assert (st.last_failure.reason if st.last_failure else None) == reason


@pytest.mark.parametrize(("pods", "decided"), [
    ([pod(0, "Succeeded"), pod(1, "Succeeded")], True),
    ([pod(0, "Succeeded"), pod(1, "Running")], False),
    ([pod(0, "Succeeded")], False),
])
def test_succeeded(pods, decided):
    d, _, st, _ = apply(rules.succeeded, {"phase": "Running"}, pods)
    assert (d, st.phase) == (decided, "Succeeded" if decided else "Running")


def test_allowed():
    """The admin's policy (its own tables: test_policy.py) fails a training before its
    pods are created, and leaves an attempt already created alone."""
    too_big = {"nodes": 65}
    d, _, st, events = apply(rules.allowed, {"pods_created": False}, [], too_big)
    assert (d, st.phase, events) == (True, "Failed", [("Warning", "NotAllowed")])
    failed = next(c for c in st.conditions if c.type == "Failed")
    assert "RESNET50_OPERATOR_MAX_NODES: 64" in failed.message
    assert apply(rules.allowed, {"pods_created": True}, [], too_big)[0] is False
    assert apply(rules.allowed, {"pods_created": False}, [], {"nodes": 64})[0] is False


@pytest.mark.parametrize(("status", "pods", "created"), [
    ({"pods_created": True}, [], []),
    ({"pods_created": False}, [], ["r50-0", "r50-1"]),
    ({"pods_created": False}, [pod(0, "Pending")], ["r50-1"]),  # a pass cut short before
])
def test_create_pods(status, pods, created):
    d, actions, st, _ = apply(rules.create_pods, status, pods)
    assert not d and st.pods_created
    assert [name for kind, name in actions if kind == "create"] == created


CHECKPOINTED = {"checkpoint": {"persistentVolumeClaim": {"claimName": "runs"}}}
NEXT_ATTEMPT = {"pods_created": False, "phase": "Restarting", "world_size": 16}


@pytest.mark.parametrize(("status", "spec", "held", "advice"), [
    (NEXT_ATTEMPT, {"nodes": 2}, False, None),  # 2 x 8 as before
    (NEXT_ATTEMPT, {"nodes": 3}, True, "x the batch size of the preset or trainer"),
    ({**NEXT_ATTEMPT, "batch_size": 48}, {"nodes": 3, "training": {"batchSize": 48}}, True,
     "set spec.training.batchSize to 32"),
    ({**NEXT_ATTEMPT, "batch_size": 48}, {"nodes": 3, "training": {"batchSize": 32}}, False,
     None),  # 16 x 48 == 24 x 32
    ({**NEXT_ATTEMPT, "batch_size": 50}, {"nodes": 3, "training": {"batchSize": 50}}, True,
     "no batch size keeps the global batch of 800 with 24"),
    (NEXT_ATTEMPT, {"nodes": 3, "training": {"batchSize": 20}}, False, None),  # the user's call
    ({**NEXT_ATTEMPT, "world_size": None}, {"nodes": 3}, False, None),  # never created
    ({**NEXT_ATTEMPT, "pods_created": True}, {"nodes": 3}, False, None),  # applies next time
], ids=["same", "more-nodes", "advice", "batch-kept", "no-batch-fits", "user-batch",
        "first-attempt", "running"])
def test_topology_kept(status, spec, held, advice):
    d, actions, st, events = apply(rules.topology_kept, status, [], {**CHECKPOINTED, **spec})
    assert (d, actions) == (held, [])
    if held:
        running = next(c for c in st.conditions if c.type == "Running")
        assert (running.status, running.reason) == ("False", "TopologyChanged")
        assert advice in running.message and events == [("Warning", "TopologyChanged")]


def test_without_checkpoint_storage_any_topology_starts_afresh():
    assert apply(rules.topology_kept, NEXT_ATTEMPT, [], {"nodes": 3})[0] is False


def test_an_attempt_records_its_topology():
    _, _, st, _ = apply(rules.create_pods, {"pods_created": False}, [],
                        {"nodes": 3, "training": {"batchSize": 40}})
    assert (st.world_size, st.batch_size) == (24, 40)


@pytest.mark.parametrize(("pods", "phase", "reason", "events"), [
    ([pod(0), pod(1)], "Running", "AllNodesRunning", [("Normal", "Running")]),
    ([pod(0), pod(1, "Pending")], "Pending", "WaitingForPods", []),
    ([pod(0), pod(1, "Pending", unschedulable="0/3 nodes are available")], "Pending",
     "Unschedulable", [("Warning", "Unschedulable")]),
    ([pod(0), pod(1, "Pending", container_reason="ErrImagePull")], "Pending",
     "ErrImagePull", [("Warning", "ErrImagePull")]),
])
def test_readiness(pods, phase, reason, events):
    d, _, st, ev = apply(rules.readiness, {"phase": "Pending", "attempt_start_time": at(-10)},
                         pods)
    running = next(c for c in st.conditions if c.type == "Running")
    assert (d, st.phase, running.reason, ev) == (True, phase, reason, events)


def gang_spec(mode, **more):
    return {"scheduling": {"gang": {"mode": mode, **more}}}


KUEUE = gang_spec("kueue", queue="team-a")
VOLCANO = gang_spec("volcano")
NOT_CREATED = {"pods_created": False}


@pytest.mark.parametrize(("status", "spec", "seen", "decided", "reason", "created"), [
    (NOT_CREATED, {}, GangView(installed=False), False, None, []),  # mode none: not asked
    ({"pods_created": True}, KUEUE, GangView(installed=False), False, None, []),  # running
    (NOT_CREATED, KUEUE, GangView(installed=False), True, "GangSchedulerMissing", []),
    (NOT_CREATED, KUEUE, GangView(queue_exists=False), True, "QueueNotFound", []),
    (NOT_CREATED, KUEUE, GangView(), False, None, []),  # Kueue needs no object of ours
    (NOT_CREATED, VOLCANO, GangView(installed=False, group_exists=False), True,
     "GangSchedulerMissing", []),
    (NOT_CREATED, VOLCANO, GangView(group_exists=False), False, None, ["r50"]),
    (NOT_CREATED, VOLCANO, GangView(), False, None, []),  # the PodGroup of an earlier attempt
], ids=["mode-none", "pods-created", "kueue-missing", "queue-missing", "kueue-ready",
        "volcano-missing", "podgroup-created", "podgroup-kept"])
def test_gang_ready(status, spec, seen, decided, reason, created):
    d, actions, st, events = apply(rules.gang_ready, status, [], spec, gang=seen)
    assert (d, actions) == (decided, [("create", name) for name in created])
    if reason:
        running = next(c for c in st.conditions if c.type == "Running")
        assert (running.status, running.reason) == ("False", reason)
        assert events == [("Warning", reason)]
        again = apply(rules.gang_ready, {**status, "conditions": st.conditions}, [], spec,
                      gang=seen)
        assert again[3] == []  # told once


def test_pods_a_gang_scheduler_holds_are_looked_at_each_sweep():
    held = {"phase": "Pending", "pods_created": True, "attempt_start_time": at(-5)}
    assert rules.next_wakeup(training(KUEUE), ResNet50TrainingStatus(**held)) == NOW - \
        dt.timedelta(seconds=5)
    assert rules.next_wakeup(training(), ResNet50TrainingStatus(**held)) is None
    running = {**held, "phase": "Running"}
    assert rules.next_wakeup(training(KUEUE), ResNet50TrainingStatus(**running)) is None


def test_a_missing_gang_scheduler_says_which_and_is_looked_at_again_each_sweep():
    _, _, st, _ = apply(rules.gang_ready, NOT_CREATED, [], KUEUE, gang=GangView(installed=False))
    running = next(c for c in st.conditions if c.type == "Running")
    assert running.message == (
        "gang mode kueue, but Kueue is not installed: this cluster serves no "
        "kueue.x-k8s.io/v1beta2 localqueues; install it, or set spec.scheduling.gang.mode to "
        "another mode or none")
    assert rules.next_wakeup(training(KUEUE), st) is not None


@pytest.mark.parametrize(("spec", "pods", "seen", "reason", "message"), [
    (KUEUE, [pod(0, "Pending", gates=("kueue.x-k8s.io/admission",)),
             pod(1, "Pending", gates=("kueue.x-k8s.io/admission",))], GangView(),
     "WaitingForAdmission", "waiting for admission in Kueue LocalQueue team-a: 2 of 2 pods "
     "gated; none is placed until the whole group fits the queue's quota"),
    (VOLCANO, [pod(0, "Pending"), pod(1, "Pending")],
     GangView(unschedulable=("NotEnoughResources", "2/2 tasks in gang unschedulable: "
                             "pod group is not ready, 2 Pending, 2 minAvailable")),
     "NotEnoughResources", "PodGroup r50: 2/2 tasks in gang unschedulable: pod group is not "
     "ready, 2 Pending, 2 minAvailable"),
], ids=["kueue-gated", "volcano-podgroup"])
def test_readiness_says_what_the_gang_scheduler_waits_for(spec, pods, seen, reason, message):
    _, _, st, events = apply(rules.readiness, {"phase": "Pending"}, pods, spec, gang=seen)
    running = next(c for c in st.conditions if c.type == "Running")
    assert (st.phase, running.reason, running.message) == ("Pending", reason, message)
    assert events == [("Warning", reason)]


def test_readiness_fails_past_the_startup_timeout():
    d, _, st, _ = apply(rules.readiness, {"phase": "Pending", "attempt_start_time": at(-60)},
                        [pod(0), pod(1, "Pending")], {"runPolicy": {"startupTimeoutSeconds": 60}})
    assert (d, st.phase) == (True, "Failed")
    assert next(c for c in st.conditions if c.type == "Failed").reason == "StartupTimeout"


def test_a_training_waiting_in_kueues_queue_is_not_past_its_startup_timeout():
    gated = [pod(i, "Pending", gates=("kueue.x-k8s.io/admission",)) for i in (0, 1)]
    _, _, st, _ = apply(rules.readiness, {"phase": "Pending", "attempt_start_time": at(-600)},
                        gated, {**KUEUE, "runPolicy": {"startupTimeoutSeconds": 60}})
    assert st.phase == "Pending"


@pytest.mark.parametrize(("status", "run_policy", "wakeup"), [
    ({"phase": "Pending"}, {}, None),  # only an event can change it
    ({"phase": "Restarting", "restart_at": at(30)}, {}, at(30)),
    ({"phase": "Pending"}, {"activeDeadlineSeconds": 600}, at(600)),
    ({"phase": "Suspended"}, {"activeDeadlineSeconds": 600}, None),  # not while suspended
    ({"phase": "Failed", "completion_time": at(10)}, {"ttlSecondsAfterFinished": 60}, at(70)),
    ({"phase": "Pending", "attempt_start_time": at(5)}, {"startupTimeoutSeconds": 100},
     at(105)),
    ({"phase": "Running", "conditions": [{"type": "Running", "status": "True",
                                          "reason": "AllNodesRunning",
                                          "lastTransitionTime": at(20)}]},
     {"firstProgressDeadlineSeconds": 900}, at(920)),
    ({"phase": "Pending", "restart_at": at(50)}, {"activeDeadlineSeconds": 40}, at(40)),
    ({"phase": "Pending", "conditions": [{"type": "Running", "status": "False",
                                          "reason": "QuotaExceeded",
                                          "lastTransitionTime": at(3)}]}, {}, at(3)),
], ids=["idle", "back-off", "deadline", "suspended", "ttl", "startup-timeout",
        "first-progress", "earliest", "refused"])
def test_next_wakeup(status, run_policy, wakeup):
    st = ResNet50TrainingStatus(**{"start_time": at(0), **status})
    found = rules.next_wakeup(training({"runPolicy": run_policy}), st)
    assert (timestamp(found) if found else None) == wakeup

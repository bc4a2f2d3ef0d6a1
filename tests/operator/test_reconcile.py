"""The operator's decisions, table by table, without any server."""

import datetime as dt

import pytest
from cases import training

from resnet50_operator.reconcile import (
    CreateObject,
    DeletePod,
    DeleteTraining,
    PodView,
    classify,
    observe_pod,
    parse_time,
    progress_status,
    reconcile,
    reject,
    timestamp,
)
from resnet50_operator.reconcile.observe import Disruption
from resnet50_operator.spec import Condition, NodeCount, ResNet50TrainingStatus
from resnet50_trainer import contract

NOW = dt.datetime(2026, 11, 22, 12, 0, 0, tzinfo=dt.timezone.utc)


def later(seconds):
    return NOW + dt.timedelta(seconds=seconds)


def pod(index, phase="Running", attempt=0, **kw):
    return PodView(name=f"r50-{index}", index=index, attempt=attempt, phase=phase, **kw)


def status(**kw):
    base = {"start_time": timestamp(NOW), "pods_created": True}
    base.update(kw)
    return ResNet50TrainingStatus(**base)


def run(st, pods, t=None, service=True, now=NOW, settings=None, generation=1, read_at=None):
    """read_at: when the master's progress was last read (by default: just now)."""
    from resnet50_operator.settings import OperatorSettings

    return reconcile(t or training(), st, pods, service, now, settings or OperatorSettings(),
                     generation, {}, read_at or now)


def created(decision):
    return [a.body["metadata"]["name"] for a in decision.actions if isinstance(a, CreateObject)]


def deleted(decision):
    return [(a.name, a.force) for a in decision.actions if isinstance(a, DeletePod)]


def condition(decision, type_):
    return next(c for c in decision.status.conditions if c.type == type_)


# ------------------------------------------------------------------ creation and phases


def test_a_new_training_gets_its_service_and_one_pod_per_node():
    d = run(ResNet50TrainingStatus(), [], service=False)
    assert created(d) == ["r50", "r50-0", "r50-1"]
    assert d.status.pods_created and d.status.phase == "Pending"
    assert d.status.start_time == timestamp(NOW) and d.status.gpus == 16
    assert d.status.ready == "0/2" and d.status.observed_generation == 1
    assert condition(d, "Created").status == "True"
    assert [(e.type, e.reason) for e in d.events] == [("Normal", "Created")]


def test_creation_is_idempotent_after_a_partial_create():
    """The operator died after creating pod 0 and before writing status."""
    d = run(status(pods_created=False), [pod(0, "Pending")])
    assert created(d) == ["r50-1"]


def test_nothing_is_created_twice():
    d = run(status(), [pod(0, "Pending"), pod(1, "Pending")])
    assert d.actions == []


def test_all_pods_running_is_phase_running():
    d = run(status(phase="Pending"), [pod(0), pod(1)])
    assert d.status.phase == "Running" and d.status.ready == "2/2"
    assert condition(d, "Running").status == "True"
    assert [e.reason for e in d.events] == ["Running"]


def test_an_unchanged_running_job_emits_no_event_and_keeps_transition_times():
    first = run(status(phase="Pending"), [pod(0), pod(1)])
    again = run(first.status, [pod(0), pod(1)], now=later(60))
    assert again.events == [] and again.actions == []
    assert condition(again, "Running").last_transition_time == timestamp(NOW)


@pytest.mark.parametrize(
    ("pods", "reason", "message"),
    [
        pytest.param([pod(0), pod(1, "Pending", unschedulable="0/3 nodes are available: 3 "
                                                          "Insufficient nvidia.com/gpu.")],
                     "Unschedulable", "pod r50-1: 0/3 nodes are available: 3 Insufficient "
                     "nvidia.com/gpu.", id="unschedulable"),
        pytest.param([pod(0, "Pending", container_reason="ImagePullBackOff",
                          container_message="Back-off pulling image \"t:1\""), pod(1)],
                     "ImagePullBackOff", "pod r50-0: Back-off pulling image \"t:1\"",
                     id="image-pull"),
        pytest.param([pod(0), pod(1, "Pending")], "WaitingForPods", "1 of 2 node(s) running",
                     id="starting"),
    ],
)
def test_pending_says_why(pods, reason, message):
    d = run(status(), pods)
    assert d.status.phase == "Pending"
    running = condition(d, "Running")
    assert (running.status, running.reason, running.message) == ("False", reason, message)


def test_all_pods_succeeded_is_success_and_the_pods_stay():
    d = run(status(phase="Running"), [pod(0, "Succeeded"), pod(1, "Succeeded")])
    assert d.status.phase == "Succeeded" and d.status.completion_time == timestamp(NOW)
    assert d.actions == [] and condition(d, "Succeeded").status == "True"


def test_master_done_before_the_worker_is_still_running():
    d = run(status(phase="Running"), [pod(0, "Succeeded"), pod(1)])
    assert d.status.phase == "Running"


# ------------------------------------------------------------------ failures


@pytest.mark.parametrize(
    ("failed", "retryable", "reason"),
    [
        pytest.param(pod(1, "Failed", exit_code=137, container_reason="OOMKilled"), True,
                     "OOMKilled", id="oom-137"),
        pytest.param(pod(1, "Failed", exit_code=143, container_reason="Error"), True, "Terminated",
                     id="sigterm-143"),
        pytest.param(pod(1, "Failed", pod_reason="Evicted", pod_message="low on memory"), True,
                     "Evicted", id="evicted"),
        pytest.param(pod(1, "Unknown"), True, "NodeLost", id="node-lost"),
        pytest.param(pod(1, "Running", deleting=True), True, "PodDeleted", id="deleted"),
        pytest.param(pod(1, "Failed", exit_code=143, container_reason="Error",
                         disruption=Disruption("PreemptionByScheduler", "default-scheduler: "
                                               "preempting to accommodate a higher priority "
                                               "pod")), True, "PreemptionByScheduler",
                     id="preempted-143"),
        pytest.param(pod(1, "Failed", exit_code=2, container_reason="Error",
                         disruption=Disruption("WorkloadEvictedDueToPreempted", "Preempted")), True,
                     "WorkloadEvictedDueToPreempted", id="condition-wins-over-an-exit-code"),
        pytest.param(pod(1, "Failed", exit_code=2, container_reason="Error"), False,
                     "ConfigurationError", id="config-error-2"),
        pytest.param(pod(1, "Failed", exit_code=3, container_reason="Error"), False,
                     "DataError", id="data-error-3"),
        pytest.param(pod(1, "Failed", exit_code=4, container_reason="Error"), False,
                     "AccessDenied", id="access-denied-4"),
        pytest.param(pod(1, "Failed", exit_code=1, container_reason="Error"), False, "Error",
                     id="crash-1"),
        pytest.param(pod(1, "Failed", exit_code=127, container_reason="Error"), False, "Error",
                     id="not-found-127"),
    ],
)
def test_failures_are_classified(failed, retryable, reason):
    failure = classify(failed)
    assert (failure.retryable, failure.reason) == (retryable, reason)
    assert failure.disruption == (reason in ("Evicted", "NodeLost", "PreemptionByScheduler",
                                             "WorkloadEvictedDueToPreempted"))


def test_healthy_pods_are_not_failures():
    assert classify(pod(0)) is None and classify(pod(0, "Succeeded")) is None
    done = pod(0, "Succeeded", disruption=Disruption("EvictionByEvictionAPI", ""))
    assert classify(done) is None  # evicted after it finished: nothing lost


def test_observe_the_disruption_target_condition():
    body = {"metadata": {"name": "r50-0", "labels": {"resnet50.dev/node-index": "0",
                                                     "resnet50.dev/attempt": "0"}},
            "status": {"phase": "Running", "conditions": [
                {"type": "DisruptionTarget", "status": "True", "reason": "DeletionByTaintManager",
                 "message": "Taint manager: deleting due to NoExecute taint",
                 "lastTransitionTime": "2026-11-22T12:00:00Z"}]}}
    assert observe_pod(body).disruption == Disruption(
        "DeletionByTaintManager", "Taint manager: deleting due to NoExecute taint", NOW)
    body["status"]["conditions"][0]["status"] = "False"  # the pod GC cleared it
    assert observe_pod(body).disruption is None
    # Kueue (v0.17) marks the pods of a workload it stops with a condition of its own.
    body["status"]["conditions"] = [{
        "type": "TerminationTarget", "status": "True", "reason": "WorkloadEvictedDueToPreempted",
        "message": "Preempted to accommodate a workload (UID: 1) due to prioritization in "
                   "the ClusterQueue", "lastTransitionTime": "2026-11-22T12:00:00Z"}]
    assert observe_pod(body).disruption.reason == "WorkloadEvictedDueToPreempted"


def test_after_a_disruption_the_next_attempt_starts_once_the_old_pods_are_gone():
    evicted = pod(1, "Running", deleting=True, deletion_deadline=later(120),
                  disruption=Disruption("EvictionByEvictionAPI", "Eviction API: evicting"))
    d = run(status(phase="Running"), [pod(0), evicted])
    assert deleted(d) == [("r50-0", False)]  # the evicted pod is being deleted already
    st = d.status
    assert (st.phase, st.restarts, st.disruptions, st.restart_at) == ("Restarting", 0, 1, None)
    waiting = run(st, [pod(0, attempt=0, deleting=True), evicted], now=later(60))
    assert created(waiting) == []  # the evicted pod is still writing its checkpoint
    assert created(run(st, [], now=later(61))) == ["r50-0", "r50-1"]


def test_a_retryable_failure_restarts_the_whole_group():
    oom = pod(1, "Failed", exit_code=137, container_reason="OOMKilled",
              container_message="epoch 3 step 10")
    d = run(status(phase="Running"), [pod(0), oom])
    assert deleted(d) == [("r50-0", False), ("r50-1", False)]
    st = d.status
    assert (st.phase, st.restarts, st.attempt, st.pods_created) == ("Restarting", 1, 1, False)
    assert st.restart_at == timestamp(later(10))
    assert st.restart_history[0].reason == "OOMKilled" and st.restart_history[0].attempt == 0
    assert st.restart_history[0].message == "pod r50-1 exit code 137 (OOMKilled): epoch 3 step 10"
    assert st.last_failure.exit_code == 137 and st.last_failure.message == "epoch 3 step 10"
    assert condition(d, "Restarting").status == "True"
    (event,) = d.events
    assert event.type == "Warning" and event.reason == "Restarting"
    assert "restart 1 of 3 in 10 s after pod r50-1 exit code 137 (OOMKilled)" in event.message


def test_a_pod_that_disappeared_restarts_the_group():
    d = run(status(phase="Running"), [pod(0)])
    assert d.status.phase == "Restarting" and d.status.last_failure.reason == "PodDeleted"


@pytest.mark.parametrize(("restarts", "wait"), [(0, 10), (1, 20), (2, 40), (5, 300)])
def test_back_off_doubles_up_to_its_limit(restarts, wait):
    t = training(restartPolicy={"maxRestarts": 10})
    d = run(status(restarts=restarts), [pod(0), pod(1, "Failed", exit_code=137)], t=t)
    assert d.status.restart_at == timestamp(later(wait))


def test_a_configuration_error_fails_at_once_and_keeps_the_failed_pod():
    bad = pod(1, "Failed", exit_code=2, container_message="resnet50-train: error: data path "
              "/data does not exist")
    d = run(status(phase="Running"), [pod(0), bad])
    assert d.status.phase == "Failed" and d.status.restarts == 0
    assert deleted(d) == [("r50-0", False)]  # the survivor stops; the failed pod keeps its logs
    failed = condition(d, "Failed")
    assert failed.reason == "ConfigurationError"
    assert failed.message.startswith("pod r50-1 exit code 2 (ConfigurationError): "
                                     "resnet50-train: error: data path /data does not exist")
    assert [e.type for e in d.events] == ["Warning"]


@pytest.mark.parametrize(
    ("pods", "phase", "reason"),
    [
        pytest.param([pod(0, "Failed", exit_code=1, finished_at=later(1)),
                      pod(1, "Failed", exit_code=137, finished_at=NOW)],
                     "Restarting", "Killed", id="peer-exits-1-after-a-kill"),
        pytest.param([pod(0, "Failed", exit_code=1, finished_at=NOW),
                      pod(1, "Failed", exit_code=137, finished_at=NOW)],
                     "Restarting", "Killed", id="same-second"),
        pytest.param([pod(0, "Failed", exit_code=1, finished_at=NOW),
                      pod(1, "Failed", exit_code=137, finished_at=later(60))],
                     "Failed", "Error", id="crash-first-then-a-kill"),
        pytest.param([pod(0, "Failed", exit_code=2, finished_at=NOW),
                      pod(1, "Failed", exit_code=1, finished_at=NOW)],
                     "Failed", "ConfigurationError", id="config-error-and-its-echo"),
    ],
)
def test_the_first_failure_is_the_cause_and_its_echoes_are_not(pods, phase, reason):
    d = run(status(phase="Running"), pods)
    assert (d.status.phase, d.status.last_failure.reason) == (phase, reason)


def test_the_restart_budget_runs_out():
    d = run(status(restarts=3, attempt=3), [pod(0, attempt=3),
                                            pod(1, "Failed", attempt=3, exit_code=137)])
    assert d.status.phase == "Failed"
    assert condition(d, "Failed").reason == "RestartLimitExceeded"
    assert "restart budget of 3 spent; last failure: pod r50-1 exit code 137" in \
        condition(d, "Failed").message


@pytest.mark.parametrize("new_nodes", [1, 3])
def test_an_edit_of_nodes_waits_for_the_next_attempt(new_nodes):
    running = status(phase="Running", nodes=NodeCount(ready=2, total=2))
    t = training(nodes=new_nodes)
    d = run(running, [pod(0), pod(1)], t=t)
    assert (d.status.phase, d.status.ready, created(d), deleted(d)) == ("Running", "2/2", [], [])
    d = run(running, [pod(0, "Succeeded"), pod(1, "Succeeded")], t=t)
    assert d.status.phase == "Succeeded"
    restarted = run(running, [pod(0), pod(1, "Failed", exit_code=137)], t=t).status
    d = run(restarted, [], t=t, now=later(60))  # after the back-off
    assert len(created(d)) == new_nodes and d.status.ready == f"0/{new_nodes}"


# ------------------------------------------------------------------ between attempts


def test_the_old_attempt_is_deleted_before_the_new_one_is_created():
    st = status(phase="Restarting", attempt=1, pods_created=False, restarts=1)
    d = run(st, [pod(0, attempt=0), pod(1, "Failed", attempt=0, deleting=True,
                                        deletion_deadline=later(30))])
    assert deleted(d) == [("r50-0", False)] and created(d) == []


def test_a_pod_stuck_terminating_is_force_deleted():
    """No kubelet (a lost node) ever confirms the deletion."""
    st = status(phase="Restarting", attempt=1, pods_created=False)
    stuck = pod(0, attempt=0, deleting=True, deletion_deadline=NOW)
    assert deleted(run(st, [stuck], now=later(59))) == []
    assert deleted(run(st, [stuck], now=later(60))) == [("r50-0", True)]


def test_back_off_then_the_next_attempt_is_created():
    st = status(phase="Restarting", attempt=1, pods_created=False, restarts=1,
                restart_at=timestamp(later(10)))
    assert run(st, [], now=later(5)).actions == []
    d = run(st, [], now=later(10))
    assert created(d) == ["r50-0", "r50-1"]
    pods = [a.body for a in d.actions if isinstance(a, CreateObject)]
    assert {p["metadata"]["labels"]["resnet50.dev/attempt"] for p in pods} == {"1"}
    assert d.status.phase == "Pending" and condition(d, "Restarting").status == "False"


# ------------------------------------------------------------------ run policy


def test_suspend_deletes_the_pods_and_resume_starts_a_new_attempt():
    t = training(runPolicy={"suspend": True})
    d = run(status(phase="Running"), [pod(0), pod(1)], t=t)
    assert deleted(d) == [("r50-0", False), ("r50-1", False)]
    assert (d.status.phase, d.status.attempt, d.status.restarts) == ("Suspended", 1, 0)
    resumed = run(d.status, [], now=later(100))
    assert resumed.status.phase == "Pending" and created(resumed) == ["r50-0", "r50-1"]
    assert resumed.status.start_time == timestamp(later(100))
    assert condition(resumed, "Suspended").status == "False"


def test_active_deadline_fails_the_training():
    t = training(runPolicy={"activeDeadlineSeconds": 3600})
    assert run(status(phase="Running"), [pod(0), pod(1)], t=t, now=later(3599)).actions == []
    d = run(status(phase="Running"), [pod(0), pod(1)], t=t, now=later(3600))
    assert d.status.phase == "Failed" and condition(d, "Failed").reason == "DeadlineExceeded"
    assert deleted(d) == [("r50-0", False), ("r50-1", False)]


def test_ttl_after_finished_deletes_the_training():
    t = training(runPolicy={"ttlSecondsAfterFinished": 600})
    done = status(phase="Succeeded", completion_time=timestamp(NOW))
    assert run(done, [pod(0, "Succeeded")], t=t, now=later(599)).actions == []
    assert run(done, [pod(0, "Succeeded")], t=t, now=later(600)).actions == [DeleteTraining()]


def test_a_finished_training_is_left_alone():
    d = run(status(phase="Failed"), [pod(0, "Failed", exit_code=2)])
    assert d.actions == [] and d.events == []


def test_a_finished_training_stops_pods_its_last_decision_left_running():
    """The operator writes the status before it deletes: stopped in between, the next
    decision finds the survivors of a failed training and stops them."""
    d = run(status(phase="Failed"), [pod(0), pod(1, "Failed", exit_code=2)])
    assert deleted(d) == [("r50-0", False)] and d.events == []


# ------------------------------------------------------------------ invalid specs


def test_the_restart_history_keeps_one_line_of_a_long_log():
    tail = "\n".join([f"step {i}" for i in range(300)] + ["RuntimeError: NCCL timeout", ""])
    crash = pod(1, "Failed", exit_code=137, container_message=tail)
    d = run(status(phase="Running"), [pod(0), crash])
    assert d.status.restart_history[0].message == \
        "pod r50-1 exit code 137 (Killed): RuntimeError: NCCL timeout"
    assert d.status.last_failure.message.endswith("step 299\nRuntimeError: NCCL timeout")
    (event,) = d.events
    assert event.message.endswith("step 299\nRuntimeError: NCCL timeout")


def test_a_refused_pod_ends_the_running_condition_too():
    waiting = run(ResNet50TrainingStatus(), [], service=False).status  # Running=False, waiting
    d = reject(waiting, "the apiserver refused pod r50-0: forbidden", NOW, generation=1)
    running = condition(d, "Running")
    assert (running.status, running.reason) == ("False", "InvalidSpec")
    assert running.message == "the apiserver refused pod r50-0: forbidden"


def test_an_invalid_spec_fails_once_and_a_fixed_one_starts_afresh():
    d = reject(ResNet50TrainingStatus(), "spec.nodes: too many", NOW, generation=1)
    assert d.status.phase == "Failed" and condition(d, "Failed").reason == "InvalidSpec"
    assert [e.reason for e in d.events] == ["InvalidSpec"]
    assert reject(d.status, "spec.nodes: too many", NOW, generation=1).events == []
    same_generation = run(d.status, [], generation=1)
    assert same_generation.status.phase == "Failed" and same_generation.actions == []
    fixed = run(d.status, [], generation=2, service=False)
    assert fixed.status.phase == "Pending" and created(fixed) == ["r50", "r50-0", "r50-1"]


# ------------------------------------------------------------------ observation


def test_observe_a_pod_as_the_api_returns_it():
    body = {
        "metadata": {"name": "r50-1", "labels": {"resnet50.dev/node-index": "1",
                                                 "resnet50.dev/attempt": "2"},
                     "deletionTimestamp": "2026-11-22T12:00:30Z"},
        "status": {"phase": "Failed", "containerStatuses": [{"name": "trainer", "state": {
            "terminated": {"exitCode": 137, "reason": "OOMKilled", "message": "tail",
                           "finishedAt": "2026-11-22T12:00:00Z"}}}]},
    }
    view = observe_pod(body)
    assert (view.index, view.attempt, view.exit_code, view.container_reason) == (
        1, 2, 137, "OOMKilled")
    assert view.finished_at == NOW
    assert view.deleting and view.deletion_deadline == later(30)


PREPARED = {"name": "checkpoint-dir", "state": {"terminated": {"exitCode": 0}}}
INITIALIZING = {"name": "trainer", "state": {"waiting": {"reason": "PodInitializing"}}}


@pytest.mark.parametrize(
    ("init", "main", "seen"),
    [
        pytest.param(PREPARED, {"name": "trainer", "state": {"terminated": {"exitCode": 4}}},
                     (4, ""), id="init-done-trainer-failed"),
        pytest.param({"name": "checkpoint-dir", "state": {"terminated": {
            "exitCode": 4, "reason": "Error", "message": "cannot create /checkpoints/r50"}}},
            INITIALIZING, (4, "cannot create /checkpoints/r50"), id="init-failed"),
        pytest.param({"name": "checkpoint-dir", "state": {"waiting": {
            "reason": "ErrImageNeverPull", "message": "image t:1 is not present"}}},
            INITIALIZING, (None, "image t:1 is not present"), id="init-image-missing"),
        pytest.param(PREPARED, INITIALIZING, (None, ""), id="init-done-trainer-starting"),
    ],
)
def test_an_init_containers_failure_or_pull_error_is_the_pods(init, main, seen):
    body = {"metadata": {"name": "r50-0", "labels": {"resnet50.dev/node-index": "0",
                                                     "resnet50.dev/attempt": "0"}},
            "status": {"phase": "Pending", "initContainerStatuses": [init],
                       "containerStatuses": [main]}}
    view = observe_pod(body)
    assert (view.exit_code, view.container_message) == seen


def test_observe_the_schedulers_reason():
    body = {"metadata": {"name": "r50-0", "labels": {"resnet50.dev/node-index": "0",
                                                     "resnet50.dev/attempt": "0"}},
            "status": {"phase": "Pending", "conditions": [
                {"type": "PodScheduled", "status": "False", "reason": "Unschedulable",
                 "message": "0/1 nodes are available: 1 Insufficient nvidia.com/gpu."}]}}
    assert observe_pod(body).unschedulable.endswith("Insufficient nvidia.com/gpu.")


@pytest.mark.parametrize("text", ["2026-11-22T12:00:30Z", "2026-11-22T12:00:30+00:00"])
def test_times_parse_as_the_api_and_the_client_write_them(text):
    assert parse_time(text) == later(30)


def test_pods_without_our_labels_are_ignored():
    assert observe_pod({"metadata": {"name": "other", "labels": {}}, "status": {}}) is None


# ------------------------------------------------------------------ progress


GAUGES = {"epoch": 3, "epochs": 90, "step": 120, "steps_per_epoch": 5005, "global_step": 10130,
          "loss": 2.345678, "learning_rate": 0.1, "images_per_second": 2471.6,
          "top1_accuracy": 41.237, "top5_accuracy": 67.5, "eta_seconds": 3 * 3600 + 12 * 60,
          "checkpoint_epoch": 2, "checkpoint_timestamp_seconds": NOW.timestamp() - 60}


def test_progress_becomes_the_status_kubectl_shows():
    p = progress_status(None, GAUGES, NOW)
    assert (p.epoch, p.step, p.global_step, p.images_per_second) == ("3/90", "120/5005", 10130,
                                                                     2471)
    assert (p.loss, p.top1, p.top5, p.eta) == (2.3457, 41.24, 67.5, "3h12m")
    assert p.last_checkpoint.epoch == 2 and p.last_checkpoint.time == timestamp(later(-60))
    assert p.last_progress_time == timestamp(NOW)


def test_unchanged_progress_changes_nothing_and_only_steps_move_the_progress_time():
    first = progress_status(None, GAUGES, NOW)
    assert progress_status(first, dict(GAUGES), later(15)) is first  # no patch to send
    assert progress_status(first, {}, later(15)) is first
    moved = progress_status(first, {**GAUGES, "global_step": 10140, "step": 130}, later(30))
    assert moved.last_progress_time == timestamp(later(30)) and moved.step == "130/5005"


def running_with_progress(progress_at, running_since=NOW):
    st = status(phase="Running", training=progress_status(None, GAUGES, progress_at))
    return st.model_copy(update={"conditions": [Condition(
        type="Running", status="True", reason="AllNodesRunning",
        last_transition_time=timestamp(running_since))]})


def test_a_training_without_progress_for_its_deadline_is_restarted():
    t = training(runPolicy={"progressDeadlineSeconds": 600})
    d = run(running_with_progress(NOW), [pod(0), pod(1)], t=t, now=later(601))
    assert d.status.phase == "Restarting" and d.status.restarts == 1
    assert d.status.last_failure.reason == "NoProgress"
    assert "no training progress for 600 s" in d.events[0].message
    assert run(running_with_progress(NOW), [pod(0), pod(1)], t=t,
               now=later(599)).status.phase == "Running"
    # judged only on a read made after the deadline: the trainer may have moved since
    assert run(running_with_progress(NOW), [pod(0), pod(1)], t=t, now=later(601),
               read_at=later(590)).status.phase == "Running"


def running_without_progress(since=NOW):
    st = status(phase="Running")
    return st.model_copy(update={"conditions": [Condition(
        type="Running", status="True", reason="AllNodesRunning",
        last_transition_time=timestamp(since))]})


def test_a_training_that_never_reports_progress_is_restarted_for_its_startup():
    """--nnodes 3 in extraArgs with 2 pods: every pod runs, the rendezvous never completes."""
    t = training(runPolicy={"firstProgressDeadlineSeconds": 900})
    assert run(running_without_progress(), [pod(0), pod(1)], t=t,
               now=later(899)).status.phase == "Running"
    d = run(running_without_progress(), [pod(0), pod(1)], t=t, now=later(901))
    assert (d.status.phase, d.status.restarts) == ("Restarting", 1)
    assert d.status.last_failure.reason == "StartupTimeout"
    assert "no training progress within 900 s of all pods running" in d.events[0].message
    assert d.status.restart_history[0].reason == "StartupTimeout"


def test_the_first_progress_deadline_can_be_turned_off():
    t = training(runPolicy={"firstProgressDeadlineSeconds": 0})
    assert run(running_without_progress(), [pod(0), pod(1)], t=t,
               now=later(10 ** 6)).status.phase == "Running"


def test_the_progress_clock_starts_again_when_an_attempt_runs():
    t = training(runPolicy={"progressDeadlineSeconds": 600})
    st = running_with_progress(NOW, running_since=later(500))  # progress from an older attempt
    assert run(st, [pod(0), pod(1)], t=t, now=later(700)).status.phase == "Running"


def test_before_the_first_progress_only_the_first_progress_deadline_counts():
    t = training(runPolicy={"progressDeadlineSeconds": 600,
                            "firstProgressDeadlineSeconds": 3600})
    silent = running_with_progress(NOW).model_copy(update={"training": None})
    assert run(silent, [pod(0), pod(1)], t=t, now=later(3599)).status.phase == "Running"


def test_the_final_figures_come_from_the_masters_termination_message():
    final = contract.render_gauges({**GAUGES, "epoch": 90, "top1_accuracy": 76.13, "finished": 1,
                         "eta_seconds": 0}, comments=False)
    d = run(status(phase="Running"), [pod(0, "Succeeded", container_message=final),
                                       pod(1, "Succeeded")])
    assert d.status.phase == "Succeeded"
    assert (d.status.training.epoch, d.status.training.top1, d.status.training.eta) == (
        "90/90", 76.13, "0s")


def test_a_new_reason_to_wait_is_a_warning_event_once():
    mount = pod(1, "Pending", container_reason="ContainerCreating",
                warning=("FailedMount", 'MountVolume.SetUp failed for volume "data"'))
    d = run(status(phase="Pending"), [pod(0), mount])
    assert [(e.type, e.reason) for e in d.events] == [("Warning", "FailedMount")]
    assert condition(d, "Running").message == ('pod r50-1: MountVolume.SetUp failed for volume '
                                               '"data"')
    assert run(d.status, [pod(0), mount]).events == []


def test_pods_not_running_within_the_startup_timeout_fail_the_training():
    t = training(runPolicy={"startupTimeoutSeconds": 300})
    pull = pod(1, "Pending", container_reason="ImagePullBackOff",
               container_message='Back-off pulling image "trainer:typo"')
    st = status(phase="Pending", attempt_start_time=timestamp(NOW))
    assert run(st, [pod(0), pull], t=t, now=later(299)).status.phase == "Pending"
    d = run(st, [pod(0), pull], t=t, now=later(300))
    assert d.status.phase == "Failed" and condition(d, "Failed").reason == "StartupTimeout"
    assert 'Back-off pulling image "trainer:typo"' in condition(d, "Failed").message


def test_a_training_the_policy_refused_starts_afresh_once_its_spec_is_edited():
    refused = run(status(pods_created=False), [], t=training(nodes=65))
    assert refused.status.phase == "Failed"
    assert run(refused.status, [], t=training(nodes=65)).status.phase == "Failed"  # unchanged
    fixed = run(refused.status, [], t=training(nodes=4), generation=2)
    assert fixed.status.phase == "Pending" and created(fixed) == [f"r50-{i}" for i in range(4)]

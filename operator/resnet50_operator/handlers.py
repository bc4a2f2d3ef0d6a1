"""kopf wiring only: read the world, call the pure core, apply what it returns.

Four triggers lead to the same reconcile_one(namespace, name):
  * a watch event of the training (created, spec or status changed);
  * a watch event of one of its pods (labelled with the training's name), or a Warning
    Event of one;
  * a sweep that lists the trainings every reconcile interval and passes over those that
    time alone changes (the end of a restart back-off, deadlines, TTLs: next_wakeup), and
    over each at least every resync interval (pods stuck Terminating, a missed event);
  * a read of a running training's progress that found something new.
Deliberately no per-object kopf timer or daemon: kopf puts a finalizer on every object
that has one, and a training could then not be deleted while the operator is down.

reconcile_one reads the training and lists its pods from the API (a consistent read, so
a pod created a moment ago is never mistaken for a deleted one), holds a per-training
lock so two triggers never decide at once, and writes the status with the resourceVersion
it read, so a decision made on stale data is rejected rather than applied (its pods are
created before that write and deleted only after it). While a training runs, the
master's progress endpoint is read in the background, at most once every progress
interval, and each pass uses the last reading (see keep_per_training_state for what is
kept in memory). Whatever the apiserver refuses to create becomes the training's condition
and Event (refusals.py), and each training of the sweep is its own failure domain.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import logging
import threading
import time
import urllib.error
import urllib.request
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import kopf
import pydantic
from kubernetes import client, config
from kubernetes.client.rest import ApiException

from resnet50_operator import gang, overrides, reconcile, refusals, render
from resnet50_operator.settings import OperatorSettings
from resnet50_operator.spec import GROUP, KIND, PLURAL, VERSION, ResNet50TrainingStatus
from resnet50_trainer import contract

log = logging.getLogger(__name__)
# A pod's metrics endpoint is the tenant's code: whatever it serves, a read takes no longer
# and no more memory than this (the trainer's own text is under 2 KB), and happens on one
# of METRICS_READERS threads of its own, never under a training's lock nor on the thread
# of the sweep or a watch: a hostile endpoint delays only other trainings' progress reads.
METRICS_READ_SECONDS = 3.0
METRICS_READ_BYTES = 1 << 20
METRICS_READERS = 8
# Fields that act at once; any other spec change reaches the pods at the next attempt only.
_ACT_AT_ONCE = ("runPolicy", "restartPolicy")
# Of those, the ones the pods carry (render.pod_values): they too wait for the next attempt.
_CARRIED_BY_THE_PODS = (("runPolicy", "terminationGracePeriodSeconds"),)
_ACTIVE = ("Pending", "Running", "Restarting")


@kopf.on.startup()
def configure(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    # Our own Events say what happened; of kopf's log echo keep only handler errors.
    settings.posting.level = logging.ERROR
    try:
        config.load_incluster_config()
    except config.ConfigException:
        config.load_kube_config()
    if "settings" not in memo:  # __main__ passes them; `kopf run` alone reads the environment
        memo.settings = OperatorSettings.from_env()
    memo.core = client.CoreV1Api()
    memo.custom = client.CustomObjectsApi()
    keep_per_training_state(memo)
    memo.stopping = threading.Event()
    threading.Thread(target=_sweep, args=(memo,), name="sweep", daemon=True).start()


def keep_per_training_state(memo: kopf.Memo) -> None:
    """What the operator keeps in memory, per training (namespace, name); losing it costs
    at most one early read of a training's progress."""
    memo.locks = defaultdict(threading.Lock)
    memo.queued = set()  # trainings with a pass waiting for their lock
    memo.queued_lock = threading.Lock()
    memo.pod_warnings = reconcile.PodWarnings()  # per pod, from the watch of Events
    memo.pod_training = {}  # pod uid -> its training's key, from the watch of pods
    memo.last_pass = {}  # time.monotonic() of its last pass
    memo.gone = {}  # deleted trainings -> time.monotonic(): their pods' events are echoes
    memo.masters = {}  # (attempt, ip, port) of its master pod, as its last pass saw it
    memo.progress_read = {}  # time.monotonic() when its last read of progress started
    memo.readings = {}  # its last completed Reading
    memo.reading = set()  # trainings whose progress is being read now
    memo.reading_lock = threading.Lock()
    memo.readers = ThreadPoolExecutor(METRICS_READERS, thread_name_prefix="metrics")


@kopf.on.cleanup()
def stop_sweeping(memo: kopf.Memo, **_: Any) -> None:
    memo.stopping.set()
    memo.readers.shutdown(wait=False, cancel_futures=True)  # a read under way ends in 3 s


@kopf.on.event(GROUP, VERSION, PLURAL)
def on_training_event(type: str, namespace: str, name: str, memo: kopf.Memo,
                      **_: Any) -> None:
    if type != "DELETED":
        memo.gone.pop((namespace, name), None)
        reconcile_one(memo, namespace, name)
    else:  # what the operator kept per training goes with it
        for kept in (memo.progress_read, memo.readings, memo.locks, memo.last_pass,
                     memo.masters):
            kept.pop((namespace, name), None)
        memo.gone[(namespace, name)] = time.monotonic()


@kopf.on.event("", "v1", "pods", labels={render.TRAINING_LABEL: kopf.PRESENT})
def on_pod_event(type: str, uid: str, namespace: str, labels: kopf.Labels, memo: kopf.Memo,
                 **_: Any) -> None:
    key = (namespace, labels[render.TRAINING_LABEL])
    if type == "DELETED":
        memo.pod_warnings.forget(uid)
        memo.pod_training.pop(uid, None)
    else:
        memo.pod_training[uid] = key
    if key not in memo.gone:  # the garbage collector deleting a deleted training's pods
        reconcile_one(memo, *key)


@kopf.on.event("", "v1", "events", field="involvedObject.kind", value="Pod")
def on_pod_warning(type: str, body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    """Why a pod does not start (FailedMount, ...): kept for the passes of its training,
    and told to it now."""
    if type == "DELETED" or body.get("type") != "Warning":
        return
    memo.pod_warnings.note(dict(body))
    key = memo.pod_training.get(body.get("involvedObject", {}).get("uid"))
    if key is not None:
        reconcile_one(memo, *key)


@kopf.on.update(GROUP, VERSION, PLURAL, field="spec")
def warn_spec_change(body: kopf.Body, status: kopf.Status, old: Any, new: Any,
                     memo: kopf.Memo, **_: Any) -> None:
    if status.get("phase") not in _ACTIVE:
        return
    fields = changed_for_the_next_attempt(old or {}, new or {})
    if fields:
        _post_event(memo, dict(body), reconcile.Event(
            "Warning", "SpecChanged", f"{', '.join(fields)} changed while the training is "
            f"{status.get('phase')}: the running pods keep the old values; the next attempt "
            "(after a restart or suspend) uses the new ones"))


def changed_for_the_next_attempt(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """The fields an edit of the spec changed whose new values reach only the next
    attempt's pods: any but runPolicy and restartPolicy, which every pass reads, and of
    those the ones the pods carry."""
    fields = [f"spec.{key}" for key in sorted(set(old) | set(new))
              if old.get(key) != new.get(key) and key not in _ACT_AT_ONCE]
    return fields + [f"spec.{section}.{key}" for section, key in _CARRIED_BY_THE_PODS
                     if (old.get(section) or {}).get(key) != (new.get(section) or {}).get(key)]


def _sweep(memo: kopf.Memo) -> None:
    interval = memo.settings.reconcile_interval_seconds
    while not memo.stopping.wait(interval):
        try:
            sweep_once(memo)
        except Exception:  # the list failed: the next sweep tries again
            log.exception("sweep failed")


def sweep_once(memo: kopf.Memo) -> None:
    """One list of the trainings; a pass over each that time alone changes or that has had
    none for the resync interval, and a progress read for each running one that is due
    (its pass comes when the read finds news). An idle training so costs no API request
    between resyncs. Each training is its own failure domain: an error on one is logged
    with its name and the sweep goes on to the next, so one training's bad spec or refused
    pod never stops the back-offs, deadlines and TTLs of the others."""
    namespaces = [memo.settings.namespace] if memo.settings.namespace else [None]
    now = reconcile.now_utc()
    for namespace in namespaces:
        for item in _list_trainings(memo, namespace):
            key = (item["metadata"]["namespace"], item["metadata"]["name"])
            try:
                if _due(memo, key, item, now):
                    reconcile_one(memo, *key)
                elif (master := memo.masters.get(key)) and _progress_due(memo, key):
                    _start_read(memo, key, *master, judge=False)
            except Exception:
                log.exception("%s/%s: reconcile failed", *key)
    stale = time.monotonic() - memo.settings.resync_interval_seconds
    for key in [k for k, at in memo.gone.items() if at < stale]:
        memo.gone.pop(key, None)


def _due(memo: kopf.Memo, key: tuple[str, str], item: dict[str, Any], now: dt.datetime
         ) -> bool:
    """Whether the sweep passes over this training: time changes what a rule decides
    (reconcile.next_wakeup), or its last pass is a resync interval old."""
    last = memo.last_pass.get(key)
    if last is None or time.monotonic() - last >= memo.settings.resync_interval_seconds:
        return True
    try:
        training = render.parse_training(item)
    except ValueError:  # rejected: nothing of it changes with time
        return False
    wakeup = reconcile.next_wakeup(
        training, ResNet50TrainingStatus.model_validate(item.get("status") or {}))
    return wakeup is not None and now >= wakeup


def _list_trainings(memo: kopf.Memo, namespace: str | None) -> list[dict[str, Any]]:
    if namespace:
        return memo.custom.list_namespaced_custom_object(GROUP, VERSION, namespace,
                                                         PLURAL)["items"]
    return memo.custom.list_cluster_custom_object(GROUP, VERSION, PLURAL)["items"]


def reconcile_one(memo: kopf.Memo, namespace: str, name: str) -> None:
    """One pass over the training, unless one is already waiting for its lock: that pass
    reads the world after this trigger too, so a burst of pod events (a 256-pod attempt
    starting) costs two passes, not one per pod."""
    key = (namespace, name)
    with memo.queued_lock:
        if key in memo.queued:
            return
        memo.queued.add(key)
    with memo.locks[key]:
        with memo.queued_lock:
            memo.queued.discard(key)
        memo.last_pass[key] = time.monotonic()
        _reconcile(memo, namespace, name)


def _reconcile(memo: kopf.Memo, namespace: str, name: str) -> None:
    try:
        body = memo.custom.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL,
                                                        name)
    except ApiException as exc:
        if exc.status == 404:
            return
        raise
    meta = body["metadata"]
    if meta.get("deletionTimestamp"):
        return  # the garbage collector removes the pods and the Service
    current = ResNet50TrainingStatus.model_validate(body.get("status") or {})
    now = reconcile.now_utc()
    try:
        training = render.parse_training(body)
    except ValueError as exc:
        decision = reconcile.reject(current, str(exc), now, meta.get("generation"))
    else:
        pods, service_exists = _observe(memo, training)
        reading = _progress(memo, training, current, pods)
        decision = reconcile.reconcile(
            training, current, pods, service_exists, now, memo.settings,
            meta.get("generation"), reading and reading.gauges, reading and reading.at,
            _observe_gang(memo, training, current, pods))
    # Creations first: a status that says "created" always has its pods. Deletions only
    # once the status that explains them is written (a new attempt, a finished phase):
    # otherwise a lost write leaves the next decision a pod gone for no recorded reason,
    # which reads as a failure.
    refused = _create(memo, decision, body)
    if refused and refused.for_good:  # what only the apiserver checks (Pod Security, ...)
        decision = reconcile.reject(decision.status, refused.message, now,
                                    meta.get("generation"))
    elif refused:  # a quota, a missing ServiceAccount: the status as it was, saying why
        decision = reconcile.refused(current, refused.reason, refused.message, now,
                                     meta.get("generation"))
    new = decision.status.model_dump(by_alias=True, mode="json")
    if new != current.model_dump(by_alias=True, mode="json") and \
            not _patch_status(memo, body, new):
        return  # changed meanwhile: the next trigger decides again, and tells it then
    _delete(memo, decision, body)
    for event in decision.events:
        _post_event(memo, body, event)


def _observe(memo: kopf.Memo, t: render.Training) -> tuple[list[reconcile.PodView], bool]:
    selector = ",".join(f"{k}={v}" for k, v in render.selector_labels(t).items())
    listed = memo.core.list_namespaced_pod(t.namespace, label_selector=selector)
    api = client.ApiClient()
    pods = [reconcile.observe_pod(api.sanitize_for_serialization(p)) for p in listed.items]
    pods = _with_warnings(memo, [p for p in pods if p is not None])
    try:
        memo.core.read_namespaced_service(t.service, t.namespace)
        service_exists = True
    except ApiException as exc:
        if exc.status != 404:
            raise
        service_exists = False
    return pods, service_exists


def _observe_gang(memo: kopf.Memo, t: render.Training, status: ResNet50TrainingStatus,
                  pods: list[reconcile.PodView]) -> reconcile.GangView | None:
    """The gang scheduler of spec.scheduling.gang, read only while it matters: before the
    pods of an attempt are created (is it installed, is the queue or the PodGroup there)
    and while some wait to be scheduled (the PodGroup's reason, or the reason in the
    attempt's Kueue Workload)."""
    mode = gang.mode(t)
    waiting = any(p.phase == "Pending" for p in pods if p.attempt == status.attempt)
    if mode == "none" or (status.pods_created and not waiting):
        return None
    api = gang.APIS[mode]
    name = t.spec.scheduling.gang.queue if mode == "kueue" else t.name
    if mode == "kueue" and status.pods_created:  # why Kueue holds the attempt's group
        return reconcile.GangView(pending=gang.kueue_pending(_get_or_empty(
            memo, gang.KUEUE_WORKLOADS, t.namespace,
            gang.kueue_group_name(t, status.attempt))))
    try:
        found = memo.custom.get_namespaced_custom_object(api.group, api.version, t.namespace,
                                                         api.plural, name)
    except ApiException as exc:
        if exc.status != 404:
            raise
        installed = _serves(memo, api)
        return reconcile.GangView(installed=installed, queue_exists=mode != "kueue",
                                  group_exists=mode == "kueue")
    return reconcile.GangView(unschedulable=gang.unschedulable(found))


def _get_or_empty(memo: kopf.Memo, api: gang.GangApi, namespace: str,
                  name: str) -> dict[str, Any]:
    try:
        return memo.custom.get_namespaced_custom_object(api.group, api.version, namespace,
                                                        api.plural, name)
    except ApiException as exc:
        if exc.status in (403, 404):  # not there (yet), or RBAC without workloads
            return {}
        raise


def _serves(memo: kopf.Memo, api: gang.GangApi) -> bool:
    """Whether the cluster serves api's resource (its CRD installed)."""
    try:
        listed = memo.custom.get_api_resources(api.group, api.version)
    except ApiException as exc:
        if exc.status == 404:
            return False
        raise
    return any(r.name == api.plural for r in listed.resources)


def _with_warnings(memo: kopf.Memo, pods: list[reconcile.PodView]) -> list[reconcile.PodView]:
    """Pending pods with their newest Warning Event, as the watch of Events last saw it."""
    return [dataclasses.replace(p, warning=warning) if p.phase == "Pending" and (
        warning := memo.pod_warnings.newest(p.uid)) else p for p in pods]


@dataclasses.dataclass(frozen=True)
class Reading:
    """The master's gauges as read at `at` in `attempt`; empty if the pod answered without
    them (nothing listening, a timeout, not the trainer's text)."""

    attempt: int
    at: dt.datetime
    gauges: dict[str, float]


def _progress(memo: kopf.Memo, t: render.Training, status: ResNet50TrainingStatus,
              pods: list[reconcile.PodView]) -> Reading | None:
    """The last reading of the current attempt's progress; and a new read started in the
    background when the last is old enough, or older than the training's hang deadline
    (it is judged only on a read made after that)."""
    key = (t.namespace, t.name)
    reading = memo.readings.get(key)
    if reading is not None and reading.attempt != status.attempt:
        reading = None
    master = next((p for p in pods if p.index == 0 and p.attempt == status.attempt
                   and p.phase == "Running" and p.ip and p.metrics_port), None)
    if master is None or status.phase != "Running":
        memo.masters.pop(key, None)
        return reading
    memo.masters[key] = (status.attempt, master.ip, master.metrics_port)
    hang = reconcile.hang_deadline(status, t.spec.run_policy)
    overdue = hang is not None and reconcile.now_utc() >= hang and (
        reading is None or reading.at < hang)
    if _progress_due(memo, key) or overdue:
        _start_read(memo, key, *memo.masters[key], judge=overdue)
    return reading


def _progress_due(memo: kopf.Memo, key: tuple[str, str]) -> bool:
    return time.monotonic() >= memo.progress_read.get(key, -1e9) + \
        memo.settings.progress_interval_seconds


def _start_read(memo: kopf.Memo, key: tuple[str, str], attempt: int, ip: str, port: int,
                judge: bool) -> None:
    """A read of the master's gauges on a reader thread, unless one is under way."""
    with memo.reading_lock:
        if key in memo.reading:
            return
        memo.reading.add(key)
    memo.progress_read[key] = time.monotonic()
    memo.readers.submit(_read, memo, key, attempt, ip, port, judge)


def _read(memo: kopf.Memo, key: tuple[str, str], attempt: int, ip: str, port: int,
          judge: bool) -> None:
    """On a reader thread: one read of a master's gauges, kept for the training's passes;
    and a pass now when it brought news, or the training waits to be judged on it."""
    at = reconcile.now_utc()
    try:
        try:
            reading: Reading | None = Reading(attempt, at, read_gauges(ip, port))
        except urllib.error.URLError as exc:
            if isinstance(exc, urllib.error.HTTPError) or \
                    isinstance(exc.reason, ConnectionRefusedError):
                # the pod answered, its trainer does not serve (yet): no progress
                reading = Reading(attempt, at, {})
            else:  # the pod was not reached: no news, which judges nothing, so that a
                # NetworkPolicy that drops the operator's reads makes no training look hung
                log.debug("%s/%s: progress not read: %s", *key, exc.reason)
                reading = None
        except (OSError, ValueError) as exc:
            # connected, but no usable answer in time: a stopped or hung trainer, or an
            # endpoint that is not the trainer's: no progress
            log.debug("%s/%s: progress not read: %s", *key, exc)
            reading = Reading(attempt, at, {})
        if reading is None:
            return
        before = memo.readings.get(key)
        memo.readings[key] = reading
    finally:
        with memo.reading_lock:
            memo.reading.discard(key)
    news = before is None or (before.attempt, before.gauges) != (attempt, reading.gauges)
    if news or judge:
        try:
            reconcile_one(memo, *key)
        except Exception:
            log.exception("%s/%s: reconcile failed", *key)


# Pod IPs are reached directly: an HTTP(S)_PROXY set for the operator's own egress would
# otherwise be asked for them, and no proxy can reach a pod network.
_DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))




def read_gauges(ip: str, port: int) -> dict[str, float]:
    """The trainer's progress gauges, from its metrics endpoint at ip:port. ValueError when
    the answer is larger than METRICS_READ_BYTES; TimeoutError when it is not all there
    after METRICS_READ_SECONDS, however slowly it trickles (the deadline is checked after
    each receive, which may itself wait as long)."""
    host = f"[{ip}]" if ":" in ip else ip
    deadline = time.monotonic() + METRICS_READ_SECONDS
    with _DIRECT.open(f"http://{host}:{port}/metrics", timeout=METRICS_READ_SECONDS) as response:
        body = bytearray()
        while chunk := response.read1(65536):  # one recv at a time: the deadline is checked
            body += chunk
            if len(body) > METRICS_READ_BYTES:
                raise ValueError(f"metrics larger than {METRICS_READ_BYTES} bytes")
            if time.monotonic() > deadline:
                raise TimeoutError(f"metrics not read within {METRICS_READ_SECONDS} s")
        return contract.parse_gauges(body.decode(errors="replace"))


def _create(memo: kopf.Memo, decision: reconcile.Decision, body: dict[str, Any]
            ) -> refusals.Refusal | None:
    """Create the decided objects, stopping at the first the apiserver refuses: why it did."""
    namespace, name = body["metadata"]["namespace"], body["metadata"]["name"]
    template = (body.get("spec") or {}).get("podTemplate")
    dry_run = template is not None  # its first pod: nothing is created if it is invalid
    for action in decision.actions:
        if not isinstance(action, reconcile.CreateObject):
            continue
        kind, object_name = action.body["kind"], action.body["metadata"]["name"]
        try:
            if dry_run and kind == "Pod":
                dry_run = False
                memo.core.create_namespaced_pod(namespace, action.body, dry_run="All")
            _create_object(memo, namespace, action.body)
        except ApiException as exc:
            message = _api_message(exc)
            if kind == "Pod":  # a field spec.podTemplate gave, named as the user wrote it
                message = overrides.in_spec_names(message, action.body, template)
            refusal = refusals.explain(exc.status, message, kind, object_name,
                                       namespace, _position(action, decision))
        except pydantic.ValidationError as exc:
            refusal = refusals.invalid_locally(kind, object_name, exc.errors())
        else:
            log.info("%s/%s: created %s %s", namespace, name, kind, object_name)
            continue
        if refusal:
            log.warning("%s/%s: %s", namespace, name, refusal.message)
            return refusal
    return None


def _create_object(memo: kopf.Memo, namespace: str, body: dict[str, Any]) -> None:
    """A Pod, the Service, or the gang scheduler's PodGroup (an existing one is kept: it
    belongs to this training, from an earlier attempt or an interrupted pass)."""
    if body["kind"] == "Pod":
        memo.core.create_namespaced_pod(namespace, body)
    elif body["kind"] == "Service":
        memo.core.create_namespaced_service(namespace, body)
    else:
        group, version = body["apiVersion"].split("/")
        plural = next(a.plural for a in gang.APIS.values() if a.api_version == body["apiVersion"]
                      and a.kind == body["kind"])
        try:
            memo.custom.create_namespaced_custom_object(group, version, namespace, plural, body)
        except ApiException as exc:
            if exc.status != 409:
                raise


def _position(action: reconcile.CreateObject, decision: reconcile.Decision) -> str:
    """"2nd of 3 pods", for a pod of the decided attempt."""
    index = action.body["metadata"].get("labels", {}).get(render.NODE_INDEX_LABEL)
    total = decision.status.nodes.total
    if action.body["kind"] != "Pod" or index is None or not total:
        return ""
    return f"{refusals.ordinal(int(index) + 1)} of {total} pods"


def _delete(memo: kopf.Memo, decision: reconcile.Decision, body: dict[str, Any]) -> None:
    namespace, name = body["metadata"]["namespace"], body["metadata"]["name"]
    for action in decision.actions:
        try:
            if isinstance(action, reconcile.DeletePod):
                memo.core.delete_namespaced_pod(
                    action.name, namespace, grace_period_seconds=0 if action.force else None)
                log.info("%s/%s: deleted pod %s%s", namespace, name, action.name,
                         " (forced)" if action.force else "")
            elif isinstance(action, reconcile.DeleteTraining):
                memo.custom.delete_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL,
                                                            name)
                log.info("%s/%s: deleted: ttlSecondsAfterFinished has passed", namespace, name)
        except ApiException as exc:
            if exc.status != 404:  # already gone: the world is as decided
                raise


def _gone(exc: ApiException) -> bool:
    """The training or its namespace is gone, or going: a 404, or the 403 with which the
    apiserver refuses anything new in a namespace being deleted (NamespaceTerminating)."""
    return exc.status == 404 or (exc.status == 403 and "NamespaceTerminating" in
                                 str(exc.body))


def _api_message(exc: ApiException) -> str:
    try:
        return json.loads(exc.body)["message"]
    except (TypeError, ValueError, KeyError):
        return str(exc.reason)


def _patch_status(memo: kopf.Memo, body: dict[str, Any], status: dict[str, Any]) -> bool:
    """Write the status as of the resourceVersion read; False if the training changed or
    went meanwhile."""
    meta = body["metadata"]
    patch = {"metadata": {"resourceVersion": meta["resourceVersion"]}, "status": status}
    try:
        memo.custom.patch_namespaced_custom_object_status(GROUP, VERSION, meta["namespace"],
                                                          PLURAL, meta["name"], patch)
    except ApiException as exc:
        if exc.status not in (404, 409):
            raise
        return False
    return True


def _post_event(memo: kopf.Memo, body: dict[str, Any], event: reconcile.Event) -> None:
    meta = body["metadata"]
    now = dt.datetime.now(dt.timezone.utc)
    try:
        _create_event(memo, meta, event, now)
    except ApiException as exc:  # the status says it too: an Event lost is no reason to stop
        if not _gone(exc):
            log.warning("%s/%s: event %s not posted: %s", meta["namespace"], meta["name"],
                        event.reason, _api_message(exc))


def _create_event(memo: kopf.Memo, meta: dict[str, Any], event: reconcile.Event,
                  now: dt.datetime) -> None:
    memo.core.create_namespaced_event(meta["namespace"], {
        "metadata": {"generateName": f"{meta['name']}.", "namespace": meta["namespace"]},
        "involvedObject": {"apiVersion": f"{GROUP}/{VERSION}", "kind": KIND,
                           "name": meta["name"], "namespace": meta["namespace"],
                           "uid": meta["uid"], "resourceVersion": meta["resourceVersion"]},
        "type": event.type, "reason": event.reason, "message": event.message,
        "source": {"component": "resnet50-operator"},
        "firstTimestamp": now, "lastTimestamp": now, "count": 1,
    })

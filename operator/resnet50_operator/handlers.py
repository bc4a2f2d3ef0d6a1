"""kopf wiring only: read the world, call the pure core, apply what it returns.

Every ResNet50Training is reconciled on a timer: its pods are listed from the API (a
consistent read, so a pod created a moment ago is never mistaken for a deleted one),
reconcile() decides, and this module creates/deletes objects, posts Events and patches
the status when it changed.
"""

from __future__ import annotations

import logging
from typing import Any

import kopf
from kubernetes import client, config
from kubernetes.client.rest import ApiException

from resnet50_operator import reconcile as core
from resnet50_operator import render
from resnet50_operator.settings import OperatorSettings
from resnet50_operator.spec import GROUP, PLURAL, VERSION, ResNet50TrainingStatus

SETTINGS = OperatorSettings.from_env()
# Fields that act at once; any other spec change reaches the pods at the next attempt only.
_APPLIED_AT_NEXT_ATTEMPT_EXEMPT = ("runPolicy", "restartPolicy")
_ACTIVE = ("Pending", "Running", "Restarting")


@kopf.on.startup()
def configure(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    settings.posting.enabled = False  # our Events say what happened; kopf's log echo is noise
    try:
        config.load_incluster_config()
    except config.ConfigException:
        config.load_kube_config()
    memo.core = client.CoreV1Api()
    memo.custom = client.CustomObjectsApi()


@kopf.timer(GROUP, VERSION, PLURAL, interval=SETTINGS.reconcile_interval_seconds,
            initial_delay=0)
def reconcile_training(body: kopf.Body, meta: kopf.Meta, status: kopf.Status,
                       patch: kopf.Patch, memo: kopf.Memo, logger: logging.Logger,
                       **_: Any) -> None:
    now = core.now_utc()
    current = ResNet50TrainingStatus.model_validate(dict(status))
    generation = meta.get("generation")
    try:
        training = render.parse_training(dict(body))
    except ValueError as exc:
        decision = core.reject(current, str(exc), now, generation)
    else:
        pods, service_exists = _observe(memo, training)
        decision = core.reconcile(training, current, pods, service_exists, now, SETTINGS,
                                  generation)
    _apply(decision, body, memo, logger)
    new = decision.status.model_dump(by_alias=True, mode="json")
    if new != current.model_dump(by_alias=True, mode="json"):
        patch.status.update(new)


@kopf.on.update(GROUP, VERSION, PLURAL, field="spec")
def warn_spec_change(body: kopf.Body, status: kopf.Status, old: Any, new: Any,
                     **_: Any) -> None:
    if status.get("phase") not in _ACTIVE:
        return
    old, new = old or {}, new or {}
    fields = [f"spec.{key}" for key in sorted(set(old) | set(new))
              if old.get(key) != new.get(key) and key not in _APPLIED_AT_NEXT_ATTEMPT_EXEMPT]
    if fields:
        kopf.event(body, type="Warning", reason="SpecChanged",
                   message=f"{', '.join(fields)} changed while the training is "
                   f"{status.get('phase')}: the running pods keep the old values; the next "
                   "attempt (after a restart or suspend) uses the new ones")


def _observe(memo: kopf.Memo, t: render.Training) -> tuple[list[core.PodView], bool]:
    selector = ",".join(f"{k}={v}" for k, v in render.selector_labels(t).items())
    listed = memo.core.list_namespaced_pod(t.namespace, label_selector=selector)
    api = client.ApiClient()
    pods = [core.observe_pod(api.sanitize_for_serialization(p)) for p in listed.items]
    try:
        memo.core.read_namespaced_service(t.service, t.namespace)
        service_exists = True
    except ApiException as exc:
        if exc.status != 404:
            raise
        service_exists = False
    return [p for p in pods if p is not None], service_exists


def _apply(decision: core.Decision, body: kopf.Body, memo: kopf.Memo,
           logger: logging.Logger) -> None:
    namespace = body["metadata"]["namespace"]
    for action in decision.actions:
        try:
            if isinstance(action, core.CreateObject):
                kind = action.body["kind"]
                create = (memo.core.create_namespaced_pod if kind == "Pod"
                          else memo.core.create_namespaced_service)
                create(namespace, action.body)
                logger.info("created %s %s", kind, action.body["metadata"]["name"])
            elif isinstance(action, core.DeletePod):
                memo.core.delete_namespaced_pod(action.name, namespace,
                                                grace_period_seconds=0 if action.force
                                                else None)
                logger.info("deleted pod %s%s", action.name, " (forced)" if action.force
                            else "")
            elif isinstance(action, core.DeleteTraining):
                memo.custom.delete_namespaced_custom_object(
                    GROUP, VERSION, namespace, PLURAL, body["metadata"]["name"])
        except ApiException as exc:
            # Already there / already gone: the world is as decided (an earlier run did it).
            if exc.status not in (404, 409):
                raise kopf.TemporaryError(f"{type(action).__name__}: {exc.reason}",
                                          delay=5) from exc
    for event in decision.events:
        kopf.event(body, type=event.type, reason=event.reason, message=event.message)

"""What the apiserver's refusal to create a training's pod or Service means for the training.

Pure: the handlers pass the answer's status code and message, and apply what comes back.
A refusal that only a spec edit can lift fails the training (InvalidSpec); one that may pass
by itself or by someone else's action (a ResourceQuota, a missing ServiceAccount or
PriorityClass, an admission webhook, the operator's own RBAC) leaves the training waiting
with the reason on its Running condition, and the next pass tries again. Either way the
training says why in its status and an Event: never only a traceback in the operator's log.
The Kubernetes client checks an object's types itself before sending it: its refusal is
one of the spec's (invalid_locally).
"""

from __future__ import annotations

import re
from typing import Any, NamedTuple

# The reasons of refusals that may pass: the training waits with one of them on its Running
# condition, and the sweep tries it again each interval (rules.next_wakeup), as nothing that
# lifts them (a quota raised, a ServiceAccount created) is an event of the training.
RETRIED = ("QuotaExceeded", "PriorityClassNotFound", "ServiceAccountNotFound", "Forbidden",
           "TooManyRequests", "CreateFailed")


class Refusal(NamedTuple):
    for_good: bool  # until the spec changes
    reason: str  # CamelCase, for the condition and the Event
    message: str


# "exceeded quota: compute, requested: pods=1, used: pods=2, limited: pods=2"
_QUOTA = re.compile(r"exceeded quota: (?P<quota>[^,]+), requested: (?P<requested>.*?), "
                    r"used: (?P<used>.*?), limited: (?P<limited>.*)$")
_PRIORITY_CLASS = re.compile(r"no PriorityClass with name (?P<name>\S+) was found")
_SERVICE_ACCOUNT = re.compile(r"service ?account \"?(?P<name>[^\s\"]+)\"? not found",
                              re.IGNORECASE)


def explain(code: int, message: str, kind: str, name: str, namespace: str,
            position: str = "") -> Refusal | None:
    """Why the apiserver refused to create `kind` `name`; None when nothing is wrong
    (it exists already; the namespace is going). `position`: e.g. "2nd of 3" for a pod."""
    if code == 409 or code == 404 or "being terminated" in message:
        return None
    if code in (400, 422) or "violates PodSecurity" in message:
        # 400: a field the apiserver cannot decode (a wrong-typed affinity or toleration);
        # 422: one it finds invalid; PodSecurity: the namespace's level forbids the pod.
        return Refusal(True, "InvalidSpec",
                       f"the apiserver refused {kind.lower()} {name}: {message}")
    what = f"{kind.lower()} {name}" + (f" (the {position})" if position else "")
    if match := _QUOTA.search(message):
        return Refusal(False, "QuotaExceeded", (
            f"ResourceQuota {match['quota']} in namespace {namespace} refuses {what}: "
            f"requested {match['requested']}, used {match['used']}, limited "
            f"{match['limited']}"))
    if match := _PRIORITY_CLASS.search(message):
        return Refusal(False, "PriorityClassNotFound", (
            f"PriorityClass {match['name']} (spec.scheduling.priorityClassName) does not "
            f"exist: {what} waits until it does"))
    if match := _SERVICE_ACCOUNT.search(message):
        return Refusal(False, "ServiceAccountNotFound", (
            f"ServiceAccount {match['name']} (spec.serviceAccountName) does not exist in "
            f"namespace {namespace}: {what} waits until it does"))
    if code == 403:
        return Refusal(False, "Forbidden", f"the apiserver forbids {what}: {message}")
    if code == 429:
        return Refusal(False, "TooManyRequests", f"the apiserver throttles {what}: {message}")
    # 5xx: an admission webhook that failed or timed out, an overloaded apiserver.
    return Refusal(False, "CreateFailed", f"creating {what} failed ({code}): {message}")


def invalid_locally(kind: str, name: str, errors: list[dict[str, Any]]) -> Refusal:
    """The Kubernetes client's own check of the object (pydantic errors) refused it before
    sending: a field of the wrong type, such as a string for tolerationSeconds."""
    problems = "; ".join(
        f"{'.'.join(str(part) for part in e['loc'][1:])}: {e['msg']} (got {e.get('input')!r})"
        for e in errors)  # loc[0] is the argument: the object itself
    return Refusal(True, "InvalidSpec", f"the Kubernetes client refused {kind.lower()} {name}: "
                   f"{problems}")


def ordinal(n: int) -> str:
    """1st, 2nd, 3rd, 4th, ..., 11th, 12th, 13th, 21st."""
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"

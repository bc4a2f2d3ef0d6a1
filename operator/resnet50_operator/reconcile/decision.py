"""What one reconcile pass decides: actions, Events, a new status and its conditions."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any

from resnet50_operator.reconcile.observe import timestamp
from resnet50_operator.spec import Condition, ResNet50TrainingStatus


@dataclass(frozen=True)
class CreateObject:
    body: dict[str, Any]


@dataclass(frozen=True)
class DeletePod:
    name: str
    force: bool = False  # grace period 0


@dataclass(frozen=True)
class DeleteTraining:
    pass


@dataclass(frozen=True)
class Event:
    type: str  # Normal or Warning
    reason: str
    message: str


Action = CreateObject | DeletePod | DeleteTraining


@dataclass
class Decision:
    status: ResNet50TrainingStatus
    actions: list[Action] = field(default_factory=list)
    events: list[Event] = field(default_factory=list)


def find_condition(conditions: list[Condition], type_: str) -> Condition | None:
    return next((c for c in conditions if c.type == type_), None)


def set_condition(conditions: list[Condition], type_: str, status: str, reason: str,
                  message: str, now: dt.datetime, generation: int | None) -> list[Condition]:
    """Conditions with `type_` set; its transition time moves only when its status does."""
    previous = find_condition(conditions, type_)
    changed = previous is None or previous.status != status
    new = Condition(
        type=type_, status=status, reason=reason, message=message,
        last_transition_time=timestamp(now) if changed else previous.last_transition_time,
        observed_generation=generation,
    )
    return [new if c.type == type_ else c for c in conditions] if previous else [*conditions, new]

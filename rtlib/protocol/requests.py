"""What a valid client request asks the server to do, as effects, sans-I/O.

:meth:`Session.receive` turns a frame into a :class:`~rtlib.protocol.session.Request`; :func:`plan` turns the
request into effects, without any I/O:

* a task request becomes one store effect (:class:`UpdateTask`, :class:`GetTask`, :class:`ListTasks`) that
  carries everything the store call and the requester's reply need (the update's event is framed here, once);
* a presence request goes to the instance's :class:`~rtlib.protocol.presence_machine.PresenceMachine`, whose
  effects are returned as they are.

The driver executes the effects (:mod:`rtlib.server.effects`: one table from effect type to store call) and
charges the connection's fan-out budget with what they made it write. The dispatch below is one table keyed by
the request's wire type, so adding a request type is one entry, not a branch in the driver.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from rtlib.protocol import events
from rtlib.protocol.presence_machine import Effect, PresenceMachine
from rtlib.protocol.schema import TaskGet, TaskList, TaskUpdate
from rtlib.protocol.session import Request, Session

__all__ = ["GetTask", "ListTasks", "RequestEffect", "UpdateTask", "plan"]


@dataclass(frozen=True, slots=True)
class UpdateTask:
    """Bump the task's version, write the changes and publish ``prefix + version + suffix`` (one script);
    then ack ``update``. ``atomic=False`` is the study mode: the publish is a second round trip."""

    session: Session
    update: TaskUpdate
    prefix: bytes
    suffix: bytes
    atomic: bool


@dataclass(frozen=True, slots=True)
class GetTask:
    """Read the task's version and fields; reply ``task.snapshot``."""

    session: Session
    get: TaskGet


@dataclass(frozen=True, slots=True)
class ListTasks:
    """Read one page of the workspace's tasks; reply ``task.list.result``."""

    session: Session
    request: TaskList


#: Everything a request can ask for: a task effect, or what the presence machine returns.
RequestEffect = UpdateTask | GetTask | ListTasks | Effect
Planned = list[RequestEffect]


def _update(session: Session, machine: PresenceMachine, payload: Any, type_: str, now: float) -> Planned:
    prefix, suffix = events.task_updated_parts(session.workspace_id, session.user_id, payload.taskId,
                                               payload.changes, now)
    return [UpdateTask(session, payload, prefix, suffix, session.config.publish_mode == "atomic")]


def _get(session: Session, machine: PresenceMachine, payload: Any, type_: str, now: float) -> Planned:
    return [GetTask(session, payload)]


def _list(session: Session, machine: PresenceMachine, payload: Any, type_: str, now: float) -> Planned:
    return [ListTasks(session, payload)]


def _presence(session: Session, machine: PresenceMachine, payload: Any, type_: str, now: float) -> Planned:
    return list(machine.receive(session, type_, payload.taskId, now))


def _pong(session: Session, machine: PresenceMachine, payload: Any, type_: str, now: float) -> Planned:
    return list(machine.pong(session, now))


#: Wire type -> the rule that plans it.
PLANNERS: dict[str, Callable[[Session, PresenceMachine, Any, str, float], Planned]] = {
    "task.update": _update,
    "task.get": _get,
    "task.list": _list,
    "presence.join": _presence,
    "presence.heartbeat": _presence,
    "presence.leave": _presence,
    "presence.pong": _pong,
}


def plan(session: Session, machine: PresenceMachine, request: Request, now: float) -> list[RequestEffect]:
    """The effects of one valid request of ``session`` at ``now`` (a type :func:`decode_client_frame` accepted)."""
    return PLANNERS[request.type](session, machine, request.payload, request.type, now)

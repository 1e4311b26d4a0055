"""Planning a request, sans-I/O: each wire type becomes the effects the executor carries out."""

from __future__ import annotations

import msgspec

from rtlib.protocol.config import ServerConfig
from rtlib.protocol.presence_machine import PresenceMachine
from rtlib.protocol.presence_protocol import Remove, Upsert
from rtlib.protocol.requests import PLANNERS, GetTask, ListTasks, UpdateTask, plan
from rtlib.protocol.schema import CLIENT_TYPES, PresencePong, PresenceRequest, TaskGet, TaskList, TaskUpdate
from rtlib.protocol.session import Request, Session

CONFIG = ServerConfig()


def _setup() -> tuple[Session, PresenceMachine]:
    session = Session("c1", "u1", "w1", CONFIG)
    machine = PresenceMachine(CONFIG.presence)
    machine.open(session)
    return session, machine


def test_every_client_type_has_a_planner() -> None:
    assert set(PLANNERS) == set(CLIENT_TYPES)


def test_an_update_frames_its_event_once_and_carries_what_the_ack_needs() -> None:
    session, machine = _setup()
    update = TaskUpdate(taskId="t1", changes={"title": msgspec.Raw(b'"x"')}, ref="r1")
    [effect] = plan(session, machine, Request("task.update", update), 10.0)
    assert isinstance(effect, UpdateTask) and effect.atomic and effect.update is update
    assert b'"type":"task.updated"' in effect.prefix and effect.suffix.endswith(b"}")


def test_reads_are_single_store_effects() -> None:
    session, machine = _setup()
    assert isinstance(plan(session, machine, Request("task.get", TaskGet(taskId="t1")), 1.0)[0], GetTask)
    assert isinstance(plan(session, machine, Request("task.list", TaskList()), 1.0)[0], ListTasks)


def test_presence_requests_go_through_the_machine() -> None:
    session, machine = _setup()
    [join] = plan(session, machine, Request("presence.join", PresenceRequest(taskId="t1")), 5.0)
    assert isinstance(join, Upsert) and session.tasks == {"t1"}
    plan(session, machine, Request("presence.join", PresenceRequest(taskId="t2")), 5.0)
    pong = plan(session, machine, Request("presence.pong", PresencePong(seq=1)), 6.0)
    assert [op.task_id for op in pong] == ["t1", "t2"]  # one batch: the executor runs it in one round trip
    [leave] = plan(session, machine, Request("presence.leave", PresenceRequest(taskId="t1")), 7.0)
    assert isinstance(leave, Remove)

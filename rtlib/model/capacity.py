"""Capacity planning: how many ``rtlib serve`` instances and Redis shards a load needs, and which resource runs
out first, from unit costs measured on a real machine (issue 22 item 5).

The rules are arithmetic over :class:`UnitCosts` (CPU microseconds per unit of work, bytes per connection) and a
:class:`Load`; there is no I/O in them. :func:`load_unit_costs` reads ``bench/results/unit_costs.json`` (written
by ``bench/cost/unit_costs.py``) into :class:`UnitCosts`, keeping where and when it was measured.

The model, per second of steady load:

* updates ``U = users x updates_per_user / 60``; each is delivered to ``recipients`` connections (rtlib sends a
  ``task.updated`` to every connection of the workspace, so by default the workspace's connections);
* heartbeats ``H = users x viewing x tasks_per_viewer / heartbeat_interval`` (task-level presence, timer mode);
  each costs a fixed part plus a part per viewer of its task (the heartbeat script returns the task's viewers);
* a workspace's pub/sub channel is subscribed by every instance holding one of its connections: with ``c``
  connections spread evenly at random over ``n`` instances, ``m(n) = n (1 - (1 - 1/n)^c)`` instances;
* server CPU, over all instances: ``U (request_us + m(n) update_us) + U recipients delivery_us
  + H (heartbeat_us + V heartbeat_viewer_us) + C idle_conn_us`` plus ``base`` per instance; memory
  ``C x bytes_per_connection`` plus ``base`` per instance;
* Redis CPU, over all shards: ``U (update_us + m(n) pubsub_msg_us) + H (heartbeat_us + V heartbeat_viewer_us)
  + n sweeps_per_s sweep_us``, plus ``base`` per shard. Workspaces hash to shards (``{ws}`` hash tags), so a
  shard carries ``1/k`` of them on average; one workspace is never split.

Each instance is one event loop and each Redis shard one thread, so each gets at most one core; the plan keeps
every one of them at or below ``headroom`` (default 70 %) of its core and of the instance's memory budget.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["DEFAULT_UNIT_COSTS", "Limits", "Load", "Plan", "Resource", "UnitCosts", "at", "load_unit_costs",
           "plan", "subscribed_instances"]

#: Where ``bench/cost/unit_costs.py`` writes its result, in a source checkout.
DEFAULT_UNIT_COSTS = Path(__file__).resolve().parents[2] / "bench" / "results" / "unit_costs.json"


@dataclass(frozen=True)
class UnitCosts:
    """CPU microseconds per unit of work and bytes per connection, as measured on one machine."""

    server_request_us: float  #: server CPU per task.update at the editor's instance (frame in, script, ack)
    server_delivery_us: float  #: server CPU per task.updated frame written to one connection
    server_update_us: float  #: server CPU per update per subscribed instance (pub/sub message in, framed once)
    server_heartbeat_us: float  #: server CPU per presence.heartbeat (frame in, script round trip), fixed part
    server_heartbeat_viewer_us: float  #: ... and per viewer of the task (the script returns them all: HKEYS)
    server_idle_conn_us: float  #: server CPU per idle connection per second (pings, timers)
    server_base_cores: float  #: one instance with no connections (sweeps, cluster counts, probes)
    server_conn_bytes: float  #: server RSS per idle connection
    server_base_bytes: float  #: one instance's RSS with no connections
    redis_update_us: float  #: Redis CPU per task.update script (version, history, publish)
    redis_pubsub_msg_us: float  #: Redis CPU per published message per subscribed instance (sharded pub/sub)
    redis_heartbeat_us: float  #: Redis CPU per heartbeat script, fixed part
    redis_heartbeat_viewer_us: float  #: ... and per viewer of the task (HKEYS of the task's viewers)
    redis_sweep_us: float  #: Redis CPU per sweep of one instance with nothing due (all shards together)
    redis_base_cores: float  #: one shard (cluster node) idle with the instances connected
    source: dict[str, Any] = field(default_factory=dict, compare=False)  #: machine, date, sample sizes

    def __post_init__(self) -> None:
        for name, value in asdict(self).items():
            if name != "source" and not (isinstance(value, int | float) and value >= 0 and math.isfinite(value)):
                raise ValueError(f"unit cost {name} must be a finite number >= 0, not {value!r}")


@dataclass(frozen=True)
class Load:
    """A product's steady load. Rates are per second unless named otherwise."""

    users: int  #: connected users at the peak
    workspaces: int  #: workspaces they are spread over (evenly)
    updates_per_user: float  #: task.update per user per minute
    recipients: float | None = None  #: connections each update reaches (default: the workspace's connections)
    connections_per_user: float = 1.0  #: tabs per user
    viewing: float = 0.5  #: share of connections with a task open (task-level presence)
    tasks_per_viewer: float = 1.0  #: tasks each viewing connection keeps presence on
    viewers_per_task: float = 1.0  #: users viewing the same task (each heartbeat's reply lists them all)
    heartbeat_interval: float = 30.0  #: seconds between a viewer's heartbeats (per task)
    sweep_interval: float = 5.0  #: seconds between an instance's presence sweeps

    def __post_init__(self) -> None:
        # In order: later checks divide by what earlier ones make sure is positive.
        checks = [(lambda: self.users >= 1, "users must be >= 1"),
                  (lambda: self.workspaces >= 1, "workspaces must be >= 1"),
                  (lambda: self.connections_per_user >= 1, "connections per user must be >= 1"),
                  (lambda: self.workspaces <= self.connections,
                   "workspaces cannot outnumber connections (every workspace needs a connection)"),
                  (lambda: self.updates_per_user >= 0, "updates per user must be >= 0"),
                  (lambda: 0 <= self.viewing <= 1, "viewing is a share, 0..1"),
                  (lambda: self.tasks_per_viewer >= 0, "tasks per viewer must be >= 0"),
                  (lambda: 1 <= self.viewers_per_task <= self.per_workspace,
                   "viewers per task must be 1..the workspace's connections"),
                  (lambda: self.heartbeat_interval > 0, "heartbeat interval must be > 0"),
                  (lambda: self.sweep_interval > 0, "sweep interval must be > 0"),
                  (lambda: self.recipients is None or 0 <= self.recipients <= self.per_workspace,
                   "recipients per update must be 0..the workspace's connections")]
        for ok, message in checks:
            if not ok():
                raise ValueError(message)

    @property
    def connections(self) -> float:
        return self.users * self.connections_per_user

    @property
    def per_workspace(self) -> float:
        return self.connections / self.workspaces

    @property
    def updates(self) -> float:
        return self.users * self.updates_per_user / 60.0

    @property
    def deliveries(self) -> float:
        return self.updates * (self.per_workspace if self.recipients is None else self.recipients)

    @property
    def heartbeats(self) -> float:
        return self.connections * self.viewing * self.tasks_per_viewer / self.heartbeat_interval


@dataclass(frozen=True)
class Limits:
    """What one instance and one shard may use: ``headroom`` of one core (of the memory budget)."""

    headroom: float = 0.7
    instance_memory_bytes: float = 2 * 1024**3
    max_instances: int = 100_000
    max_shards: int = 1_000

    def __post_init__(self) -> None:
        if not 0 < self.headroom <= 1:
            raise ValueError("headroom is a share of a core, 0 < headroom <= 1")
        if self.instance_memory_bytes <= 0 or self.max_instances < 1 or self.max_shards < 1:
            raise ValueError("instance memory, max instances and max shards must be positive")


@dataclass(frozen=True)
class Resource:
    """One resource at the plan's answer: used per instance (or shard), its limit, and the share of it."""

    name: str
    used: float
    limit: float
    unit: str

    @property
    def utilisation(self) -> float:
        return self.used / self.limit


@dataclass(frozen=True)
class Plan:
    """The answer: instances, shards, the resource closest to its limit, and every resource's numbers."""

    instances: int
    shards: int
    binding: str
    resources: tuple[Resource, ...]
    subscribed: float  #: instances subscribed to each workspace channel, m(n)
    pubsub_messages: float  #: messages Redis publishes to instances per second
    redis_cores: float  #: Redis CPU over all shards (cores)
    server_cores: float  #: server CPU over all instances (cores)
    load: Load
    limits: Limits

    @property
    def redis_per_shard(self) -> float:
        """Predicted Redis CPU of one shard, cores (the mean; workspaces hash to shards unevenly)."""
        return self.redis_cores / self.shards

    def resource(self, name: str) -> Resource:
        return next(r for r in self.resources if r.name == name)


def subscribed_instances(instances: int, per_workspace: float) -> float:
    """Expected instances holding at least one of a workspace's ``per_workspace`` connections, each connection
    placed on one of ``instances`` at random (a load balancer): ``n (1 - (1 - 1/n)^c)``."""
    if instances <= 1:
        return float(instances)
    return instances * (1.0 - (1.0 - 1.0 / instances) ** per_workspace)


def _server_cores(load: Load, u: UnitCosts, n: int) -> float:
    """Server CPU over ``n`` instances, cores (each instance's base included)."""
    m = subscribed_instances(n, load.per_workspace)
    us = (load.updates * (u.server_request_us + m * u.server_update_us) + load.deliveries * u.server_delivery_us
          + load.heartbeats * (u.server_heartbeat_us + load.viewers_per_task * u.server_heartbeat_viewer_us)
          + load.connections * u.server_idle_conn_us)
    return us / 1e6 + n * u.server_base_cores


def _redis_cores(load: Load, u: UnitCosts, n: int, k: int) -> float:
    """Redis CPU over ``k`` shards with ``n`` instances, cores (each shard's base included)."""
    m = subscribed_instances(n, load.per_workspace)
    us = (load.updates * (u.redis_update_us + m * u.redis_pubsub_msg_us)
          + load.heartbeats * (u.redis_heartbeat_us + load.viewers_per_task * u.redis_heartbeat_viewer_us)
          + n / load.sweep_interval * u.redis_sweep_us)
    return us / 1e6 + k * u.redis_base_cores


def plan(load: Load, units: UnitCosts, limits: Limits | None = None) -> Plan:
    """The fewest instances, then the fewest shards, that keep every instance and shard within ``headroom``.

    Raises ValueError when no number of instances or shards fits (a fixed cost alone above the headroom, or
    more than the limits' maxima)."""
    lim = limits or Limits()
    cpu_cap, mem_cap = lim.headroom, lim.headroom * lim.instance_memory_bytes
    if units.server_base_cores >= cpu_cap or units.server_base_bytes >= mem_cap or units.redis_base_cores >= cpu_cap:
        raise ValueError("an idle instance or shard alone is above the headroom: nothing fits")
    # Memory does not depend on n's pub/sub: the fewest instances it allows is a lower bound to start from.
    memory = load.connections * units.server_conn_bytes
    n = max(1, math.ceil(memory / (mem_cap - units.server_base_bytes)))
    # More instances subscribe more of them to each channel (m(n) grows), so search upwards, not by division.
    while _server_cores(load, units, n) / n > cpu_cap:
        n += 1
        if n > lim.max_instances:
            raise ValueError(f"more than {lim.max_instances} instances needed (the per-instance pub/sub cost grows "
                             "with the instances); raise --max-instances or lower the load")
    var = _redis_cores(load, units, n, 0)
    k = max(1, math.ceil(var / (cpu_cap - units.redis_base_cores)))
    if k > lim.max_shards:
        raise ValueError(f"more than {lim.max_shards} Redis shards needed")
    # One workspace lives on one shard: its own share must fit, however many shards there are.
    if var / load.workspaces + units.redis_base_cores > cpu_cap:
        raise ValueError("one workspace alone needs more than a shard's headroom of Redis CPU; shards cannot help")
    return at(load, units, n, k, lim)


def at(load: Load, units: UnitCosts, instances: int, shards: int, limits: Limits | None = None) -> Plan:
    """The numbers of a given deployment (``instances`` servers, ``shards`` Redis shards) under ``load``, fitting
    or not: what a validation run compares its measurement with."""
    if instances < 1 or shards < 1:
        raise ValueError("a deployment needs at least one instance and one shard")
    lim = limits or Limits()
    n, k = instances, shards
    server, redis = _server_cores(load, units, n), _redis_cores(load, units, n, k)
    resources = (Resource("server CPU per instance", server / n, 1.0, "cores"),
                 Resource("server memory per instance", load.connections * units.server_conn_bytes / n
                          + units.server_base_bytes, lim.instance_memory_bytes, "bytes"),
                 Resource("Redis CPU per shard", redis / k, 1.0, "cores"))
    binding = max(resources, key=lambda r: r.utilisation).name
    m = subscribed_instances(n, load.per_workspace)
    return Plan(instances=n, shards=k, binding=binding, resources=resources, subscribed=m,
                pubsub_messages=load.updates * m, redis_cores=redis, server_cores=server, load=load, limits=lim)


_FIELDS = [f for f in UnitCosts.__dataclass_fields__ if f != "source"]


def load_unit_costs(path: Path | str | None = None) -> UnitCosts:
    """Read ``unit_costs.json`` (its ``units`` object: each field's ``median``) into :class:`UnitCosts`; its
    ``meta`` (machine, date, sample sizes) becomes ``source``. Raises ValueError on a missing or bad file."""
    file = Path(path) if path is not None else DEFAULT_UNIT_COSTS
    try:
        data = json.loads(file.read_text())
        units = data["units"]
        values = {name: float(units[name]["median"]) for name in _FIELDS}
    except FileNotFoundError:
        raise ValueError(f"no unit costs at {file}: run python -m bench.cost.unit_costs, or pass one") from None
    except (KeyError, TypeError, json.JSONDecodeError) as exc:
        raise ValueError(f"{file} is not a unit_costs.json ({type(exc).__name__}: {exc})") from None
    return UnitCosts(**values, source={"path": str(file), **data.get("meta", {})})

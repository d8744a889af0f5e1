"""Several processes (hosts) as one JAX program: `jax.distributed.initialize`, configured from the
environment so that the same command runs on one machine, a GPU cluster or a TPU slice.

  TCRED_COORDINATOR=host:port   the address of process 0's coordinator service
  TCRED_NUM_PROCESSES=N         how many processes take part
  TCRED_PROCESS_ID=i            this process's index, 0 ≤ i < N
  TCRED_DISTRIBUTED=auto        instead of the three above: let JAX find them (Cloud TPU slices,
                                SLURM, Open MPI and the other clusters `jax.distributed` detects)

With none of these set, a process runs alone and nothing is initialised.

Every process runs the same program on global arrays (one jitted step, one sampler); what
happens on the host between them (decoding and scoring rollouts, choosing tree forks,
metrics) needs whole arrays: `to_host` gives every process the same global value
(`multihost_utils.process_allgather` of the arrays that span processes), so the host code
computes the same thing in every process. Files are written by `is_primary()` only. After start-up,
`jax.devices()` lists every process's devices, so `tcred.parallel.mesh.make_mesh` builds the
global mesh and each process holds the shards of its own devices. Must run before any other
JAX call of the process.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any, Mapping

import jax
import numpy as np
from jax.experimental import multihost_utils

ENV_COORDINATOR, ENV_PROCESSES, ENV_ID, ENV_MODE = (
    "TCRED_COORDINATOR", "TCRED_NUM_PROCESSES", "TCRED_PROCESS_ID", "TCRED_DISTRIBUTED")


@dataclasses.dataclass(frozen=True, kw_only=True)
class DistributedConfig:
  """How this process joins the others (module docstring).

  Attributes:
    coordinator: `host:port` of process 0's coordinator; None with `auto` or alone.
    num_processes, process_id: N processes, this one's index.
    auto: let `jax.distributed.initialize` detect the cluster (TPU slice, SLURM, MPI).
  """

  coordinator: str | None = None
  num_processes: int | None = None
  process_id: int | None = None
  auto: bool = False

  def __post_init__(self):
    explicit = (self.coordinator, self.num_processes, self.process_id)
    if self.auto and any(v is not None for v in explicit):
      raise ValueError(f"{ENV_MODE}=auto detects the cluster; leave {ENV_COORDINATOR}, {ENV_PROCESSES} and "
                       f"{ENV_ID} unset")
    if not self.auto and any(v is not None for v in explicit) and any(v is None for v in explicit):
      raise ValueError(f"set all of {ENV_COORDINATOR} (host:port), {ENV_PROCESSES} and {ENV_ID}, or none "
                       f"(got {ENV_COORDINATOR}={self.coordinator!r}, {ENV_PROCESSES}={self.num_processes!r}, "
                       f"{ENV_ID}={self.process_id!r})")
    if self.coordinator is not None:
      host, _, port = self.coordinator.rpartition(":")
      if not host or not port.isdigit():
        raise ValueError(f"{ENV_COORDINATOR} must be host:port, got {self.coordinator!r}")
      if self.num_processes < 1 or not 0 <= self.process_id < self.num_processes:
        raise ValueError(f"{ENV_PROCESSES} must be >= 1 and {ENV_ID} in [0, {ENV_PROCESSES}), got "
                         f"{self.num_processes} and {self.process_id}")

  @property
  def enabled(self) -> bool:
    return self.auto or self.coordinator is not None

  @classmethod
  def from_env(cls, environ: Mapping[str, str] | None = None) -> "DistributedConfig":
    env = os.environ if environ is None else environ
    mode = env.get(ENV_MODE, "")
    if mode not in ("", "auto"):
      raise ValueError(f"{ENV_MODE} must be 'auto' or unset, got {mode!r}")

    def integer(name):
      raw = env.get(name)
      if raw is None:
        return None
      try:
        return int(raw)
      except ValueError:
        raise ValueError(f"{name} must be an integer, got {raw!r}") from None

    return cls(coordinator=env.get(ENV_COORDINATOR), num_processes=integer(ENV_PROCESSES),
               process_id=integer(ENV_ID), auto=mode == "auto")


def initialize(config: DistributedConfig | None = None) -> bool:
  """Joins the other processes (`config` default: from the environment); False when running alone.

  On CPU the processes' collectives go through Gloo (the two-process launch on one machine).
  """
  config = DistributedConfig.from_env() if config is None else config
  if not config.enabled:
    return False
  if jax.config.jax_platforms in (None, "", "cpu") or os.environ.get("JAX_PLATFORMS", "") == "cpu":
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
  if config.auto:
    jax.distributed.initialize()
  else:
    jax.distributed.initialize(coordinator_address=config.coordinator, num_processes=config.num_processes,
                               process_id=config.process_id)
  return True


def is_primary() -> bool:
  """Whether this process writes the files of a run (process 0; True when running alone)."""
  return jax.process_index() == 0


def host_value(x) -> np.ndarray:
  """The global value of one array on the host: gathered from every process if it spans them
  (a collective: every process must call it), else `np.asarray` (a copy from its device)."""
  if isinstance(x, jax.Array) and not x.is_fully_addressable and not x.is_fully_replicated:
    return np.asarray(multihost_utils.process_allgather(x, tiled=True))
  return np.asarray(x)


def to_host(tree: Any) -> Any:
  """`host_value` of every array of `tree` (same structure; None leaves stay None)."""
  return jax.tree.map(host_value, tree)


def barrier(name: str) -> None:
  """Waits until every process reaches the barrier `name` (nothing when running alone)."""
  if jax.process_count() > 1:
    multihost_utils.sync_global_devices(name)

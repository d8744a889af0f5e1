"""A `jax.sharding.Mesh` with a data axis and a fully-sharded parameter (FSDP) axis, and where
each array of a run lives on it (DESIGN §7).

Nothing here changes the math: the train step, the sampler and the extras stay functions of
global arrays (`[B, G, T]` batches, whole parameter tensors) and are jitted once; placing their
inputs with `NamedSharding` (and constraining the new train state to the same placement) lets
XLA's SPMD partitioner split the work. A batch-pooled statistic, e.g. the forking mask's
quantile over every response token of the batch, is therefore pooled over the global batch,
exactly as on one device.

Placement rules (functions of an array's shape only, so parameters, AdamW moments and a
reference policy of the same shapes are placed alike):
  * parameters and optimizer state: the largest dimension divisible by the FSDP axis size is
    split over "fsdp" (ties: the first such dimension); arrays with fewer than
    `MIN_SHARD_ELEMENTS` elements, scalars and arrays with no divisible dimension are
    replicated. With `fsdp = 1` everything is replicated (plain data parallelism).
  * batches, rollouts, extras: the leading (prompt) dimension B is split over both axes,
    ("data", "fsdp"), the FSDP devices being data-parallel too; over "data" alone if only
    that divides B; replicated otherwise. The KV cache and decode buffers of the sampler are
    built inside its jitted function from the placed prompts; given the layout, the sampler
    constrains the cache to that split (`Layout.constrain_batch`), else it is inherited.

On one device (`MeshConfig` resolves to 1 × 1) no layout is built and every array stays where
it was: a default run on one device is the same program as before this module existed.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, ClassVar

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

DATA, FSDP = "data", "fsdp"  # mesh axis names
AXES = (DATA, FSDP)
MIN_SHARD_ELEMENTS = 1024  # smaller parameter arrays (norm scales, biases) are replicated


@dataclasses.dataclass(frozen=True, kw_only=True)
class MeshConfig:
  """The device mesh of a run: `data × fsdp` devices (`--set mesh.data=4 mesh.fsdp=2`).

  Attributes:
    data: devices on the data axis; None: every device not on the FSDP axis
      (the default, with `fsdp = 1`: every device on the data axis).
    fsdp: devices on the fully-sharded parameter axis.
  The product must equal the number of devices (`jax.device_count()`, every host's).
  The mesh is where a run computes, not what it computes: it is recorded in config.json
  but is not one of the settings that `--resume` or `tcred table` compare, so a run saved
  on one mesh resumes on another.
  """

  section: ClassVar[str] = "mesh"
  data: int | None = None
  fsdp: int = 1

  def __post_init__(self):
    for name in ("data", "fsdp"):
      value = getattr(self, name)
      if value is None and name == "data":
        continue
      if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        allowed = "an integer >= 1 or none (every device not on mesh.fsdp)" if name == "data" else "an integer >= 1"
        raise ValueError(f"mesh.{name} must be {allowed}, got {value!r}")

  def shape(self, devices: int) -> tuple[int, int]:
    """`(data, fsdp)` on `devices` devices.

    Raises:
      ValueError: if the product is not `devices`; the message lists the allowed shapes.
    """
    data = devices // self.fsdp if self.data is None else self.data
    if data * self.fsdp != devices or data < 1:
      allowed = ", ".join(f"mesh.data={d} mesh.fsdp={devices // d}" for d in range(1, devices + 1)
                          if devices % d == 0)
      got = (f"mesh.fsdp={self.fsdp} does not divide" if self.data is None
             else f"mesh.data × mesh.fsdp = {self.data} × {self.fsdp} = {self.data * self.fsdp} must equal")
      raise ValueError(f"{got} the number of devices, {devices}; allowed: {allowed}")
    return data, self.fsdp


def make_mesh(config: MeshConfig = MeshConfig(), devices: list | None = None) -> Mesh:
  """The `(data, fsdp)` mesh over `devices` (default: `jax.devices()`, every process's).

  Devices are laid out so that the FSDP axis is the faster-varying one: on a GPU node or TPU
  slice its all-gathers stay between neighbouring devices.
  """
  devices = jax.devices() if devices is None else list(devices)
  shape = config.shape(len(devices))
  return Mesh(np.asarray(devices, dtype=object).reshape(shape), AXES)


def param_spec(shape: tuple[int, ...], fsdp: int) -> P:
  """The `PartitionSpec` of a parameter or optimizer-state array of `shape` (module docstring)."""
  if fsdp == 1 or math.prod(shape) < MIN_SHARD_ELEMENTS:
    return P()
  divisible = [d for d, n in enumerate(shape) if n % fsdp == 0]
  if not divisible:
    return P()
  dim = max(divisible, key=lambda d: (shape[d], -d))  # the largest; the first among equals
  return P(*([None] * dim), FSDP)


def batch_spec(shape: tuple[int, ...], data: int, fsdp: int) -> P:
  """The `PartitionSpec` of a batch array of `shape`, leading dimension B (module docstring)."""
  if not shape:
    return P()
  if shape[0] % (data * fsdp) == 0:
    return P(AXES)
  if shape[0] % data == 0:
    return P(DATA)
  return P()


def _put(x, sharding: NamedSharding):
  """`x` (host array, or a jax.Array) placed with `sharding`; across processes each one
  contributes the shards of its own devices (every process must hold the same value)."""
  if isinstance(x, jax.Array) and not x.is_fully_addressable:
    return jax.device_put(x, sharding)
  if jax.process_count() == 1:
    return jax.device_put(x, sharding)
  host = np.asarray(x)
  return jax.make_array_from_callback(host.shape, sharding, lambda index: host[index])


@dataclasses.dataclass(frozen=True)
class Layout:
  """Where a run's arrays live on `mesh` (a static, hashable argument of the jitted train step)."""

  mesh: Mesh

  @property
  def data(self) -> int:
    return self.mesh.shape[DATA]

  @property
  def fsdp(self) -> int:
    return self.mesh.shape[FSDP]

  def state_shardings(self, tree: Any) -> Any:
    """`NamedSharding`s of a parameter / optimizer / train-state pytree (same structure)."""
    return jax.tree.map(lambda x: NamedSharding(self.mesh, param_spec(np.shape(x), self.fsdp)), tree)

  def batch_shardings(self, tree: Any) -> Any:
    """`NamedSharding`s of a batch / rollout pytree whose arrays lead with B."""
    return jax.tree.map(lambda x: NamedSharding(self.mesh, batch_spec(np.shape(x), self.data, self.fsdp)), tree)

  def replicated(self) -> NamedSharding:
    return NamedSharding(self.mesh, P())

  def place_state(self, tree: Any) -> Any:
    """Parameters, optimizer state or a whole `TrainState`, placed by the FSDP rule."""
    return jax.tree.map(_put, tree, self.state_shardings(tree))

  def place_batch(self, tree: Any) -> Any:
    """A batch (`Batch`, prompts, rollouts, extras), split over its leading dimension B."""
    return jax.tree.map(_put, tree, self.batch_shardings(tree))

  def place_replicated(self, tree: Any) -> Any:
    """Every array of `tree` on every device (PRNG keys, small tables)."""
    return jax.tree.map(lambda x: _put(x, self.replicated()), tree)

  def constrain_batch(self, tree: Any) -> Any:
    """Inside a jitted function: keeps batch arrays (leading B or N = B·G, e.g. the sampler's KV
    cache) on the placement of `place_batch`."""
    return jax.lax.with_sharding_constraint(tree, self.batch_shardings(tree))

  def constrain_state(self, tree: Any) -> Any:
    """Inside a jitted function: keeps a new state on the placement of `place_state`."""
    return jax.lax.with_sharding_constraint(tree, self.state_shardings(tree))


def layout_for(config: MeshConfig, devices: list | None = None) -> Layout | None:
  """The run's `Layout`, or None on a single device (nothing to place; module docstring).

  Raises:
    ValueError: if the mesh shape does not fit the devices (the message lists the allowed shapes).
  """
  mesh = make_mesh(config, devices)
  return None if mesh.size == 1 else Layout(mesh)


def check_batch(layout: Layout | None, prompts_per_step: int) -> None:
  """Refuses a batch of `prompts_per_step` prompts that the data axis cannot split evenly.

  Raises:
    ValueError: naming `rl.prompts_per_step` and the allowed values.
  """
  if layout is not None and prompts_per_step % layout.data:
    raise ValueError(f"rl.prompts_per_step={prompts_per_step} must be a multiple of mesh.data={layout.data} "
                     f"(each data-parallel device trains whole groups); allowed: "
                     f"{', '.join(str(layout.data * k) for k in range(1, 5))}, ...")

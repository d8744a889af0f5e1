"""Two (or more) JAX processes training as one program: the sharded RL train step across processes.

  # two processes on one machine, 2 simulated CPU devices each, a (2, 2) mesh over the 4 devices:
  for i in 0 1; do
    XLA_FLAGS=--xla_force_host_platform_device_count=2 TCRED_COORDINATOR=localhost:12355 \
    TCRED_NUM_PROCESSES=2 TCRED_PROCESS_ID=$i python -m tcred.testing.multihost --mesh 2x2 --out run.npz &
  done; wait
  # the same program in one process (4 devices), or on one device (--mesh 1x1):
  XLA_FLAGS=--xla_force_host_platform_device_count=4 python -m tcred.testing.multihost --mesh 2x2 --out one.npz

Every process builds the same policy (seeded) and the same batches (host arrays); each places
the shards of its own devices (`Layout.place_state` / `place_batch`), runs `--steps` jitted
train steps, and process 0 writes the metrics of every step and the final parameters
(gathered from every process) to `--out` (`.npz`). On a GPU node or TPU slice the same
command runs with one process per host (`tcred.parallel.distributed`).
"""

from __future__ import annotations

import argparse
import time

import jax
import jax.numpy as jnp
import numpy as np

from tcred.credit import make_credit
from tcred.losses.pg import LossConfig
from tcred.parallel import distributed
from tcred.parallel.mesh import Layout, MeshConfig, make_mesh
from tcred.testing.sharded import _dense_batch, _policy
from tcred.training.optim import adamw
from tcred.training.step import TrainState, rl_train_step


def main(argv: list[str] | None = None) -> int:
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--mesh", default="2x2", help="DATAxFSDP over every process's devices (1x1: one device)")
  p.add_argument("--steps", type=int, default=2)
  p.add_argument("--method", default="entropy-mask")
  p.add_argument("--out", required=True)
  args = p.parse_args(argv)
  distributed.initialize()  # before any JAX computation (imports do not start a backend)

  jax.config.update("jax_default_matmul_precision", "highest")
  data, fsdp = (int(v) for v in args.mesh.split("x"))
  layout = None if data * fsdp == 1 else Layout(make_mesh(MeshConfig(data=data, fsdp=fsdp)))
  graphdef, params = _policy()
  tx = adamw(1e-2, warmup=0, weight_decay=0.01, max_grad_norm=1.0)
  state = TrainState(params, tx.init(params), jnp.int32(0))
  if layout is not None:
    state = layout.place_state(state)
  rows, t0 = [], time.time()
  for step in range(args.steps):
    batch = jax.tree.map(jnp.asarray, _dense_batch(step)) if layout is None else layout.place_batch(_dense_batch(step))
    state, m = rl_train_step(state, batch, None, graphdef=graphdef, tx=tx, credit=make_credit(args.method),
                             loss_config=LossConfig(), temperature=1.0, chunk_size=64, layout=layout)
    rows.append({k: float(np.asarray(v.addressable_data(0))) for k, v in m.items()})  # replicated scalars
  leaves = [distributed.host_value(x) for x in jax.tree.leaves(state.params)]  # gathered from every process
  if jax.process_index() == 0:
    names = sorted(rows[0])
    np.savez(args.out, metric_names=np.array(names), metrics=np.array([[r[k] for k in names] for r in rows]),
             processes=jax.process_count(), devices=jax.device_count(), seconds=time.time() - t0,
             **{f"param_{i:03d}": x for i, x in enumerate(leaves)})
  distributed.barrier("tcred multihost done")
  print(f"process {jax.process_index()}/{jax.process_count()}: {jax.local_device_count()} of {jax.device_count()} "
        f"devices, {args.steps} steps, loss {rows[-1]['loss/total']:.6f}", flush=True)
  return 0


if __name__ == "__main__":
  raise SystemExit(main())

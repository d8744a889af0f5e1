"""Cost of the per-step agreement scalars (issue 25 item 5; `tcred.signals.agreement`) in the train step.

The real `rl_train_step` of an experiment (default `countdown-grpo`: its model, B prompts × G rollouts, the
task's prompt width P and response budget T, its credit method) on a random batch of those shapes, with
`agreement=False` ("off", the step before issue 25) and `agreement=True` ("on", the default now). Each side
runs in its own process, alternating (off, on, off, on, ...; `common.alternate_processes`), with the thread
pools pinned alike on both sides (`--threads`: XLA's intra-op threads and OMP/MKL threads), so that a
neighbour's load hits both sides alike. Reported: median step time (min–max) per side and the overhead.

Target (issue 25): the agreement scalars add at most 5% to the train step.

Usage:
  python benchmarks/agreement_cost.py                         # countdown-grpo, 3 rounds × 20 steps per side
  python benchmarks/agreement_cost.py --experiment countdown-mi-weight --rounds 2
  python benchmarks/agreement_cost.py --interleaved    # also both steps in turn inside one process
  python benchmarks/agreement_cost.py --out benchmarks/results/agreement_cost.md
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))


def _child(args) -> None:
  import jax
  import jax.numpy as jnp
  import numpy as np

  from common import init_params
  from tcred import experiments
  from tcred.tasks.registry import make_task_from_config
  from tcred.training.optim import adamw
  from tcred.training.step import Batch, TrainState, rl_train_step

  cfg = experiments.get_experiment(args.experiment)
  task = make_task_from_config(cfg.task, cfg.task_config)
  b, g, p, t = cfg.rl.prompts_per_step, cfg.rl.group_size, task.prompt_width, task.max_response_len
  graphdef, params = init_params(cfg.model, seed=0)
  rng = np.random.default_rng(0)
  v = cfg.model.vocab_size
  lengths = rng.integers(t // 2, t + 1, size=(b, g, 1))
  mask = np.arange(t)[None, None, :] < lengths
  extras = {name: jnp.asarray(rng.normal(size=(b, g, t)), jnp.float32) for name in cfg.credit.needs_extras}
  batch = Batch(prompt=jnp.asarray(rng.integers(1, v, (b, p))), prompt_valid=jnp.ones((b, p), bool),
                response=jnp.asarray(np.where(mask, rng.integers(1, v, (b, g, t)), 0)), mask=jnp.asarray(mask),
                old_logp=jnp.asarray(np.where(mask, -rng.uniform(0, 3, (b, g, t)), 0.0), jnp.float32),
                rewards=jnp.asarray(rng.integers(0, 2, (b, g)), jnp.float32), group_valid=jnp.ones((b,), bool),
                extras=extras)
  tx = adamw(cfg.rl.lr, warmup=0, weight_decay=cfg.rl.weight_decay, max_grad_norm=cfg.rl.max_grad_norm)
  step = lambda s, on: rl_train_step(s, batch, None, graphdef=graphdef, tx=tx, credit=cfg.credit,
                                     loss_config=cfg.loss, temperature=cfg.rl.temperature,
                                     chunk_size=cfg.rl.chunk_size, agreement=on)
  if args.side == "both":  # one process, the two compiled steps called in turn (off, on, off, on, ...)
    states = {on: TrainState(jax.tree.map(jnp.copy, params), tx.init(params), jnp.int32(0)) for on in (False, True)}
    for on in (False, True):
      states[on], m = step(states[on], on)
      jax.block_until_ready(m)
    times = {False: [], True: []}
    for _ in range(args.steps):
      for on in (False, True):
        t0 = time.perf_counter()
        states[on], m = step(states[on], on)
        jax.block_until_ready((states[on], m))
        times[on].append(time.perf_counter() - t0)
    print(json.dumps({"off": times[False], "on": times[True]}))
    return
  state = TrainState(params, tx.init(params), jnp.int32(0))
  step_one = lambda s: step(s, args.side == "on")
  t0 = time.perf_counter()
  state, m = step_one(state)
  jax.block_until_ready(m)
  compile_s = time.perf_counter() - t0
  times = []
  for _ in range(args.steps):
    t0 = time.perf_counter()
    state, m = step_one(state)
    jax.block_until_ready((state, m))
    times.append(time.perf_counter() - t0)
  print(json.dumps({"compile_s": compile_s, "times": times, "metrics": sorted(k for k in m if k.startswith("agree")),
                    "shape": [b, g, p, t]}))


def main() -> int:
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument("--experiment", default="countdown-grpo")
  ap.add_argument("--steps", type=int, default=20, help="timed steps per process (after the compiling one)")
  ap.add_argument("--rounds", type=int, default=3, help="processes per side, alternating")
  ap.add_argument("--threads", type=int, default=1, help="threads pinned on both sides (XLA intra-op, OMP, MKL)")
  ap.add_argument("--out", type=Path, default=None)
  ap.add_argument("--interleaved", action="store_true",
                  help="also time both steps called in turn inside one process (same allocator and load)")
  ap.add_argument("--side", choices=("off", "on", "both"), default=None, help=argparse.SUPPRESS)
  args = ap.parse_args()
  if args.side is not None:
    _child(args)
    return 0
  import common
  os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_cpu_multi_thread_eigen=false "
                             f"intra_op_parallelism_threads={args.threads}").strip()
  for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ[var] = str(args.threads)
  argv = ["--experiment", args.experiment, "--steps", str(args.steps)]
  load_before = common.load_average()[0]
  machine = common.machine_lines()  # with the load average before the runs
  runs = common.alternate_processes(__file__, ["off", "on"], args.rounds, argv)
  med = {side: common.median([x for r in rs for x in r["times"]]) for side, rs in runs.items()}
  lines = [f"# Agreement scalars: cost in the train step ({args.experiment})", "",
           f"Command: `{common.command(__file__, sys.argv[1:])}`", "",
           *machine, common.load_line(),
           *([f"- **LOADED: the 1-minute load average was {load_before:.2f} before the runs (limit "
              f"{common.MAX_LOAD:g}); both sides alternate, so load hits both alike, but the figures are not a "
              "result**"] if load_before > common.MAX_LOAD else []),
           f"- threads pinned on both sides: XLA_FLAGS='{os.environ['XLA_FLAGS']}', OMP/MKL/OPENBLAS = {args.threads}",
           f"- shapes [B, G, P, T] = {runs['on'][0]['shape']}; agreement scalars: {runs['on'][0]['metrics']}", "",
           "| side | median step (s) | all steps: median (min–max) | compile (s) |", "|---|---|---|---|"]
  for side, rs in runs.items():
    xs = [x for r in rs for x in r["times"]]
    lines.append(f"| agreement {side} | {med[side]:.4f} | {common.spread(xs)} | "
                 f"{common.median([r['compile_s'] for r in rs]):.1f} |")
  lines += ["", f"Overhead: {100 * (med['on'] / med['off'] - 1):+.1f}% of the step (median of "
                f"{args.rounds} × {args.steps} steps per side; target ≤ 5%)."]
  if args.interleaved:
    both = common.alternate_processes(__file__, ["both"], 1, argv)["both"][0]
    lines += ["", f"Interleaved in one process ({args.steps} steps each, off and on in turn): median "
                  f"{common.spread(both['off'])} s off, {common.spread(both['on'])} s on: "
                  f"{100 * (common.median(both['on']) / common.median(both['off']) - 1):+.1f}% (min to min "
                  f"{100 * (min(both['on']) / min(both['off']) - 1):+.1f}%)."]
  print("\n".join(lines))
  common.write(args.out, lines)
  return 0


if __name__ == "__main__":
  raise SystemExit(main())

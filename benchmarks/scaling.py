"""Memory per device, compile and step time of the sharded train step on 1, 2, 4, 8 devices (DESIGN §6, §7).

For `bench-27m` and a ≈ 1.2B-parameter Llama config (Llama-3.2-1B's shape: D = 2048, 16 layers,
32 heads, 8 key-value heads, intermediate 8192, V = 128,256, tied embeddings) the real
`rl_train_step` (GRPO outcome credit, AdamW, donated state) is lowered and compiled for a data
mesh (`mesh.data = n`) and an FSDP mesh (`mesh.fsdp = n`) of n simulated CPU devices, from
abstract inputs (`jax.ShapeDtypeStruct` with their `NamedSharding`): nothing of the 1B model is
allocated. Reported per device:
  state    parameters + AdamW moments as placed (`tcred.parallel.mesh` rules: the sum of each
           leaf's shard), and its ratio to one device's divided by n (FSDP target: within 10%
           of 1, i.e. the state divided by the axis size);
  compiled the compiled program's `memory_analysis()`: arguments (state + batch), outputs,
           temporaries (activations, gradients, gathered parameters), and the peak estimate
           arguments + outputs − aliased (donated) + temporaries;
  compile  seconds of `.lower().compile()`;
  step     seconds of one step after the first, on the simulated devices (`--run` models only;
           correctness only: the devices share this machine's cores, so no speed-up is expected).
Batch: B = 8 prompts × G = 2 responses, P = 32 prompt and T = 256 response tokens (the benchmark's
16 sequences of 288 tokens, in 8 prompts so that every data axis up to 8 splits it).

Usage (sets XLA_FLAGS itself when the devices are missing):
  python benchmarks/scaling.py --out benchmarks/results/scaling.md
  python benchmarks/scaling.py --quick       # tiny model, 1 and 2 devices (CI smoke test)
  # in parts (e.g. in parallel processes), then one report from their rows:
  python benchmarks/scaling.py --models llama-1b --rows-out 1b.json
  python benchmarks/scaling.py --models bench-27m --kinds fsdp --devices 2,4,8 --rows-out fsdp.json ...
  python benchmarks/scaling.py --report-from 1b.json fsdp.json ... --out benchmarks/results/scaling.md
"""

from __future__ import annotations

import os
import sys

if "--xla_force_host_platform_device_count" not in os.environ.get("XLA_FLAGS", ""):  # before JAX starts
  os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8").strip()

import argparse  # noqa: E402
import json  # noqa: E402
import dataclasses  # noqa: E402
import math  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from flax import nnx  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

from tcred.credit import make_credit  # noqa: E402
from tcred.losses.pg import LossConfig  # noqa: E402
from tcred.models.config import ModelConfig, model_preset  # noqa: E402
from tcred.models.decoder import Decoder  # noqa: E402
from tcred.parallel.mesh import Layout, MeshConfig, make_mesh  # noqa: E402
from tcred.training.optim import adamw  # noqa: E402
from tcred.training.step import Batch, TrainState, rl_train_step  # noqa: E402

LLAMA_1B = ModelConfig(vocab_size=128256, hidden_size=2048, intermediate_size=8192, num_hidden_layers=16,
                       num_attention_heads=32, num_key_value_heads=8, head_dim=64, rope_theta=500000.0,
                       rms_norm_eps=1e-5, tie_word_embeddings=True, max_position_embeddings=2048)
MODELS = {"bench-27m": model_preset("bench-27m"), "llama-1b": LLAMA_1B, "tiny": model_preset("tiny")}
FSDP_TOLERANCE = 0.10
MIB = 2.0 ** 20
B, G, P, T = 8, 2, 32, 256


def _layout(kind: str, n: int) -> Layout | None:
  if n == 1:
    return None
  config = MeshConfig(data=n, fsdp=1) if kind == "data" else MeshConfig(data=1, fsdp=n)
  return Layout(make_mesh(config, jax.devices()[:n]))


def _abstract(tree, shardings):
  return jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), tree, shardings)


def _batch(config: ModelConfig, b: int, g: int, p: int, t: int) -> Batch:
  rng = np.random.default_rng(0)
  return Batch(prompt=rng.integers(3, config.vocab_size, (b, p)).astype(np.int32), prompt_valid=np.ones((b, p), bool),
               response=rng.integers(3, config.vocab_size, (b, g, t)).astype(np.int32),
               mask=np.ones((b, g, t), bool), old_logp=np.full((b, g, t), -np.log(config.vocab_size), np.float32),
               rewards=(np.arange(b * g).reshape(b, g) % 2).astype(np.float32), group_valid=np.ones((b,), bool),
               extras={})


def _bytes_per_device(abstract) -> int:
  return sum(math.prod(x.sharding.shard_shape(x.shape)) * x.dtype.itemsize for x in jax.tree.leaves(abstract))


def measure(name: str, config: ModelConfig, kind: str, n: int, sizes, *, run_steps: int) -> dict:
  tx = adamw(1e-5, warmup=0, weight_decay=0.0, max_grad_norm=1.0)
  graphdef, params = nnx.split(nnx.eval_shape(lambda: Decoder(config, rngs=nnx.Rngs(0))))
  state = jax.eval_shape(lambda p: TrainState(p, tx.init(p), jnp.int32(0)), params)
  batch = _batch(config, *sizes)
  layout = _layout(kind, n)
  one = jax.sharding.SingleDeviceSharding(jax.devices()[0])
  state_sh = jax.tree.map(lambda _: one, state) if layout is None else layout.state_shardings(state)
  batch_sh = jax.tree.map(lambda _: one, batch) if layout is None else layout.batch_shardings(batch)
  a_state, a_batch = _abstract(state, state_sh), _abstract(jax.tree.map(jnp.asarray, batch), batch_sh)
  kw = dict(graphdef=graphdef, tx=tx, credit=make_credit("outcome"), loss_config=LossConfig(), temperature=1.0,
            layout=layout)
  t0 = time.perf_counter()
  compiled = rl_train_step.lower(a_state, a_batch, None, **kw).compile()
  compile_s = time.perf_counter() - t0
  mem = compiled.memory_analysis()
  row = {"model": name, "mesh": kind, "devices": n, "state": _bytes_per_device(a_state),
         "params": _bytes_per_device(a_state.params), "args": mem.argument_size_in_bytes,
         "out": mem.output_size_in_bytes, "temp": mem.temp_size_in_bytes, "alias": mem.alias_size_in_bytes,
         "compile_s": compile_s, "step_s": None}
  row["peak"] = row["args"] + row["out"] - row["alias"] + row["temp"]
  if run_steps:
    _, real = common.init_params(config)
    live = TrainState(real, tx.init(real), jnp.int32(0))
    live, placed = ((jax.device_put(live, one), jax.device_put(batch, one)) if layout is None
                    else (layout.place_state(live), layout.place_batch(batch)))
    live, m = compiled(live, placed, None)
    jax.block_until_ready(m)
    times = []
    for _ in range(run_steps):
      t0 = time.perf_counter()
      live, m = compiled(live, placed, None)
      jax.block_until_ready(m)
      times.append(time.perf_counter() - t0)
    row["step_s"], row["loss"] = float(np.median(times)), float(m["loss/total"])
  return row


def report(rows: list[dict], argv: list[str], quick: bool, sizes) -> tuple[list[str], bool]:
  lines = common.header("Sharded train step: memory per device, compile and step time", quick, argv, __file__)
  b, g, p, t = sizes
  lines += [f"Train step: GRPO (outcome credit), AdamW, donated state; batch B = {b} prompts × G = {g} responses, "
            f"P = {p} + T = {t} tokens; float32. Devices: simulated CPU devices "
            f"(`--xla_force_host_platform_device_count`), {jax.device_count()} in this process.", "",
            "Memory per device in MiB. *state*: parameters + AdamW moments as placed; *×n ratio*: (one device's "
            "state / n) / this state (FSDP target: within 10% of 1); *args/out/temp*: the compiled program's "
            "`memory_analysis()`; *peak*: args + out − aliased + temp. Times in seconds (compile: "
            "`.lower().compile()`; step: median of the steps after the first, on simulated devices that share "
            "the machine's cores: correctness only, no speed-up expected).", ""]
  ok = True
  for model in dict.fromkeys(r["model"] for r in rows):
    mine = [r for r in rows if r["model"] == model]
    base = next((r for r in mine if r["devices"] == 1), None)  # None: measured in another part
    params = sum(math.prod(x.shape) for x in jax.tree.leaves(nnx.eval_shape(
        lambda: Decoder(MODELS[model], rngs=nnx.Rngs(0)))))
    lines += [f"## {model} ({params / 1e6:,.1f}M parameters)", "",
              "| mesh | devices | params | state | ×n ratio | args | out | temp | peak | compile s | step s | loss |",
              "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in mine:
      ratio = math.nan if base is None else base["state"] / r["devices"] / r["state"]
      check = ""
      if r["mesh"] == "fsdp" and r["devices"] > 1 and base is not None:
        good = abs(ratio - 1) <= FSDP_TOLERANCE
        ok &= good
        check = " ✓" if good else " ✗"
      step = "—" if r["step_s"] is None else f"{r['step_s']:.2f}"
      loss = "—" if r.get("loss") is None else f"{r['loss']:.6f}"
      mesh = "one device" if r["devices"] == 1 else r["mesh"]
      lines.append(f"| {mesh} | {r['devices']} | {r['params'] / MIB:,.1f} | {r['state'] / MIB:,.1f} | "
                   f"{ratio:.3f}{check} | {r['args'] / MIB:,.1f} | {r['out'] / MIB:,.1f} | {r['temp'] / MIB:,.1f} | "
                   f"{r['peak'] / MIB:,.1f} | {r['compile_s']:.1f} | {step} | {loss} |")
    lines.append("")
  lines += [f"FSDP divides the state per device by the axis size within {FSDP_TOLERANCE:.0%}: "
            f"{'yes, on every FSDP mesh above' if ok else 'NO (✗ rows)'}.", ""]
  return lines, ok


def main(argv: list[str] | None = None) -> int:
  argv = sys.argv[1:] if argv is None else argv
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--models", default="bench-27m,llama-1b")
  parser.add_argument("--devices", default="1,2,4,8")
  parser.add_argument("--run", default="bench-27m", help="models whose step is also run and timed (comma list)")
  parser.add_argument("--steps", type=int, default=2, help="timed steps after the first, per mesh")
  parser.add_argument("--quick", action="store_true", help="tiny model, 1 and 2 devices, small batch (CI smoke test)")
  parser.add_argument("--kinds", default="data,fsdp", help="mesh kinds (comma list of data, fsdp)")
  parser.add_argument("--rows-out", type=Path, help="also write the measured rows (JSON)")
  parser.add_argument("--report-from", type=Path, nargs="+", help="no measuring: the report of these rows files")
  parser.add_argument("--out", type=Path, help="also write the report (Markdown) to this file")
  args = parser.parse_args(argv)
  if args.report_from:
    rows = [r for path in args.report_from for r in json.loads(path.read_text())]
    order = {m: i for i, m in enumerate(MODELS)}
    rows.sort(key=lambda r: (order[r["model"]], r["devices"] > 1, r["mesh"], r["devices"]))
    lines, ok = report(rows, argv, False, tuple(rows[0]["sizes"]))
    print("\n".join(lines))
    common.write(args.out, lines)
    return 0 if ok else 1
  models, devices, run = args.models.split(","), [int(n) for n in args.devices.split(",")], args.run.split(",")
  sizes = (B, G, P, T)
  if args.quick:
    models, devices, run, sizes = ["tiny"], [1, 2], ["tiny"], (2, 2, 4, 8)
  if max(devices) > jax.device_count():
    raise SystemExit(f"scaling.py: {max(devices)} devices asked for, {jax.device_count()} present")
  rows = []
  for name in models:
    for kind in args.kinds.split(","):
      for n in devices:
        if n == 1 and kind == "fsdp":
          continue
        row = measure(name, MODELS[name], kind, n, sizes, run_steps=args.steps if name in run else 0)
        rows.append({**row, "sizes": list(sizes)})
        if args.rows_out:
          args.rows_out.write_text(json.dumps(rows, indent=1))
        print(f"{name:10s} {kind:4s} x{n}: state {row['state'] / MIB:9.1f} MiB/device, temp {row['temp'] / MIB:9.1f}, "
              f"compile {row['compile_s']:.1f} s, step {row['step_s']}", file=sys.stderr, flush=True)
  lines, ok = report(rows, argv, args.quick, sizes)
  print("\n".join(lines))
  common.write(args.out, lines)
  return 0 if ok else 1


if __name__ == "__main__":
  common.run_main(main)

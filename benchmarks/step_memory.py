"""The train step's compiled memory as responses grow (issue 27 item 4): XLA's own account, no timing.

For each model and response length T (one prompt of `scaling_length.PROMPT` tokens, G responses), compiles
tcred's RL train step (`tcred.training.step.rl_train_step`, GRPO's outcome credit, as `train_step.JaxStep`
runs it) and records `memory_analysis()` of the compiled program: its temporaries (what the step allocates
beside its arguments and outputs), arguments and outputs, and the growth of the temporaries per doubling of T
(2.0 is linear). Nothing is run, so the machine's load does not matter; compiling qwen3-100m at T = 4096 takes a
few minutes and about 2 GB.

  python benchmarks/step_memory.py --out benchmarks/results/step_memory.md            # also writes .json
  python benchmarks/step_memory.py --models bench-27m --lengths 256,512 --layers 1      # a smaller probe
  python benchmarks/step_memory.py --render benchmarks/results/step_memory.json

`--layers N` overrides the models' layer count (a probe of the per-layer part: run it at 1 and at the model's
own count). The record names the commit of the code it compiled (`fingerprint._checkout_commit`), so a
before/after comparison is two records of two checkouts (`PYTHONPATH=<checkout> python ...`).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402
import scaling_length  # noqa: E402

TITLE = "The train step's compiled memory as responses grow"


def measure_point(model: str, group: int, length: int, layers: int | None) -> dict:
  """Compiles the step at one (G, T) and returns XLA's memory analysis of it, in bytes."""
  import jax

  import train_step
  from tcred.losses.pg import LossConfig
  from tcred.training.step import rl_train_step
  config = scaling_length.model_config(model)
  if layers is not None:
    config = config.replace(num_hidden_layers=layers)
  step = train_step.JaxStep(config, train_step.Sizes(model=model, b=1, g=group, p=scaling_length.PROMPT, t=length))
  jax.clear_caches()  # module-level constants are read while tracing: compile afresh
  compiled = rl_train_step.lower(step.state, step.batch, None, graphdef=step.graphdef, tx=step.tx,
                                 credit=step.credit, loss_config=LossConfig(), temperature=1.0).compile()
  m = compiled.memory_analysis()
  return {"model": model, "group": group, "length": length, "layers": config.num_hidden_layers,
          "temp_bytes": int(m.temp_size_in_bytes), "argument_bytes": int(m.argument_size_in_bytes),
          "output_bytes": int(m.output_size_in_bytes)}


def measure(args, argv: list[str]) -> dict:
  import fingerprint
  import tcred
  code = fingerprint._checkout_commit(Path(tcred.__file__).resolve().parent)  # pylint: disable=protected-access
  record = {**common.machine_record(TITLE, False, argv, __file__), "commit": code, "points": []}
  for model in args.models:
    for t in args.lengths:
      point = measure_point(model, args.group, t, args.layers)
      record["points"].append(point)
      print(f"[{model} G={args.group} T={t}] temporaries {point['temp_bytes'] / 1e9:.2f} GB", file=sys.stderr,
            flush=True)
  return record


def render(record: dict) -> list[str]:
  """The Markdown report of a record, and nothing else."""
  lines = common.header_lines(record) + [
      f"- code: commit {record['commit']}", "",
      "XLA's `memory_analysis()` of the compiled RL train step (one prompt, G responses of T tokens, GRPO): "
      "temporaries, arguments and outputs in GB (10^9 bytes); \"× a doubling\": the temporaries against the "
      "previous row's when T doubled (2.00 is linear in T).", "",
      "| model | layers | G | T | temporaries | × a doubling | arguments | outputs |",
      "|---|---:|---:|---:|---:|---:|---:|---:|"]
  previous = {}
  for p in record["points"]:
    key = (p["model"], p["layers"], p["group"])
    before = previous.get(key)
    growth = (f"{p['temp_bytes'] / before['temp_bytes']:.2f}" if before and p["length"] == 2 * before["length"]
              else "–")
    lines.append(f"| {p['model']} | {p['layers']} | {p['group']} | {p['length']} | {p['temp_bytes'] / 1e9:.2f} | "
                 f"{growth} | {p['argument_bytes'] / 1e9:.2f} | {p['output_bytes'] / 1e9:.2f} |")
    previous[key] = p
  return lines + [""]


def main(argv: list[str] | None = None) -> int:
  argv = list(sys.argv[1:] if argv is None else argv)
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--models", type=lambda s: s.split(","), default=["bench-27m", "qwen3-100m"])
  parser.add_argument("--lengths", type=scaling_length.int_list, default=[1024, 2048, 4096])
  parser.add_argument("--group", type=int, default=4, help="responses G (default 4, scaling_length's length series)")
  parser.add_argument("--layers", type=int, help="override the models' layer count (a probe)")
  parser.add_argument("--out", type=Path, help="write the report (Markdown) and its record (.json)")
  parser.add_argument("--render", type=Path, metavar="JSON", help="write the report again from a recorded JSON")
  args = parser.parse_args(argv)
  if args.render:
    print(common.render_from(args.render, args.out, render), end="")
    return 0
  scaling_length.check_models(args.models, parser)
  if not args.lengths:
    parser.error("--lengths: give at least one length")
  if args.group < 1 or (args.layers is not None and args.layers < 1):
    parser.error(f"--group and --layers must be positive integers, got {args.group} and {args.layers}")
  print(common.write_results(args.out, measure(args, argv), render), end="", flush=True)
  return 0


if __name__ == "__main__":
  common.run_main(main)

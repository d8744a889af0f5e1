"""Where the wall time of one jitted call goes, from an XLA trace (the profiles of performance.md).

Builds the train step or the sampler of the benchmarks (same sizes, `--quick`: tiny ones), warms it
up, traces one call with `jax.profiler` and splits that call's wall time among the XLA op events
running at each instant (each instant shared equally among the leaf events running then). XLA:CPU
emits op events only with `--xla_cpu_enable_xprof_traceme=true`, and output shapes come from
`--xla_dump_to`; both flags are set here before JAX starts. "No traced op running" is not idle
time on XLA:CPU: dots that run as Eigen contractions (e.g. weight gradients, which contract the
token axis) hand their work to the thread pool and end their own event early.

Usage:
  python benchmarks/xla_trace.py train_step
  python benchmarks/xla_trace.py sampler --top 30
  python benchmarks/xla_trace.py train_step --quick     # tiny model (CI smoke test)
"""

from __future__ import annotations

import os
import sys
import tempfile

if __name__ == "__main__":  # restart with huge pages first (as `tcred` does), before the flags below
  from tcred.runtime import reexec_with_huge_pages
  reexec_with_huge_pages()

_DUMP = tempfile.mkdtemp(prefix="tcred-xla-dump-")
if "jax" not in sys.modules:  # flags only take effect before XLA starts
  os.environ["XLA_FLAGS"] = " ".join(
      [os.environ.get("XLA_FLAGS", ""), "--xla_cpu_enable_xprof_traceme=true", f"--xla_dump_to={_DUMP}"]).strip()

import argparse  # noqa: E402
import collections  # noqa: E402
import glob  # noqa: E402
import gzip  # noqa: E402
import json  # noqa: E402
import re  # noqa: E402
from pathlib import Path  # noqa: E402

import jax  # noqa: E402
import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

# Trace events that are not XLA ops: Python frames ($...), runtime bookkeeping (Capitalised names),
# loop containers (their bodies' ops are traced themselves) and the `end:` markers inside ops.
_NOT_AN_OP = re.compile(r"^(\$|[A-Z]|while\b|end:|np\.asarray)")


def attribute(events: list[dict]) -> tuple[float, float, dict[str, float]]:
  """`(span, untraced, seconds per op name)` of Chrome-trace "X" events (`name`, `ts`, `dur` in µs,
  `tid`): keeps the leaf op events (none of the same thread nested inside), sweeps their start and end
  points and splits each instant equally among the events running then. `untraced` is the time inside
  the span with no op event running. All in seconds."""
  ops = [e for e in events if e.get("ph") == "X" and not _NOT_AN_OP.search(e["name"])]
  if not ops:
    return 0.0, 0.0, {}
  leaves = []
  by_thread = collections.defaultdict(list)
  for e in ops:
    by_thread[e.get("tid")].append(e)
  for es in by_thread.values():
    es.sort(key=lambda e: (e["ts"], -e["dur"]))
    for e, nxt in zip(es, es[1:] + [None]):  # sorted by start, longest first: a parent precedes its child
      end = e["ts"] + e["dur"]
      if nxt is None or not (nxt["ts"] < end and nxt["ts"] + nxt["dur"] <= end):
        leaves.append(e)
  points = sorted([(e["ts"], 1, e["name"]) for e in leaves] + [(e["ts"] + e["dur"], -1, e["name"]) for e in leaves])
  running: collections.Counter = collections.Counter()
  share: collections.Counter = collections.Counter()
  untraced, last = 0.0, points[0][0]
  for t, step, name in points:
    dt = t - last
    if dt > 0:
      n = sum(running.values())
      if n == 0:
        untraced += dt
      for op, count in running.items():
        share[op] += dt * count / n
    last = t
    running[name] += step
    if running[name] == 0:
      del running[name]
  return (points[-1][0] - points[0][0]) / 1e6, untraced / 1e6, {k: v / 1e6 for k, v in share.items()}


def output_shapes(dump_dir: str, module: str) -> dict[str, str]:
  """HLO instruction name -> its output shape, from `--xla_dump_to`'s optimised module `jit_<module>`."""
  files = sorted(glob.glob(f"{dump_dir}/*jit_{module}*after_optimizations.txt"))
  if not files:
    return {}
  text = Path(files[-1]).read_text()
  return {m.group(1): m.group(2) for m in re.finditer(r"%([\w.\-]+) = (\w+\[[\d,]*\])", text)}


def _train_step(quick: bool):
  import train_step as ts
  from tcred.models.config import model_preset
  from tcred.training.step import rl_train_step
  sz = ts.QUICK if quick else ts.FULL
  ours = ts.JaxStep(model_preset(sz.model), sz)
  return (lambda: float(ours())), rl_train_step.__name__


def _sampler(quick: bool):
  import sampler as sp
  from tcred.models.config import model_preset
  from tcred.sampling.sampler import sample_groups
  sz = sp.QUICK if quick else sp.FULL
  call = sp.ours_call(model_preset(sz.model), sz)
  return (lambda: np.asarray(call().tokens)), sample_groups.__name__


TARGETS = {"train_step": _train_step, "sampler": _sampler}


def main(argv: list[str] | None = None) -> int:
  argv = list(sys.argv[1:] if argv is None else argv)
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("target", choices=sorted(TARGETS), help="which benchmark's call to trace")
  parser.add_argument("--quick", action="store_true", help="tiny sizes (CI smoke test)")
  parser.add_argument("--top", type=int, default=25, help="rows per table")
  parser.add_argument("--out", type=Path, help="also write the report (Markdown) to this file")
  args = parser.parse_args(argv)
  call, module = TARGETS[args.target](args.quick)
  for _ in range(2):  # compile, then one warm call
    call()
  trace_dir = tempfile.mkdtemp(prefix="tcred-trace-")
  jax.profiler.start_trace(trace_dir, create_perfetto_trace=True)
  seconds, _ = common.time_once(call)
  jax.profiler.stop_trace()
  trace = glob.glob(f"{trace_dir}/plugins/profile/*/perfetto_trace.json.gz")
  events = json.load(gzip.open(trace[0])) if trace else []
  events = events["traceEvents"] if isinstance(events, dict) else events
  span, untraced, share = attribute(events)
  shapes = output_shapes(_DUMP, module)
  kind = lambda name: re.sub(r"\.\d+$", "", name)
  by_kind, by_shape = collections.Counter(), collections.Counter()
  count = collections.Counter()
  for name, s in share.items():
    by_kind[kind(name)] += s
    key = f"{kind(name)} → {shapes.get(name, '?')}"
    by_shape[key] += s
    count[key] += 1
  lines = common.header(f"XLA trace of one `{module}` call ({args.target})", args.quick, argv, __file__)
  lines += [f"- traced call {seconds:.3f} s; op events span {span:.3f} s, no traced op running {untraced:.3f} s; "
            f"{len(share)} distinct ops", "",
            "| op kind | ms |", "|---|---:|", *[f"| {k} | {v * 1e3:.1f} |" for k, v in by_kind.most_common(args.top)],
            "", "| op kind → output shape | ops | ms |", "|---|---:|---:|",
            *[f"| {k} | {count[k]} | {v * 1e3:.1f} |" for k, v in by_shape.most_common(args.top)], "",
            common.load_line()]
  print("\n".join(lines), flush=True)
  common.write(args.out, lines)
  return 0 if share else 1


if __name__ == "__main__":
  sys.exit(main())

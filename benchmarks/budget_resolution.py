"""The resolution a suite would have at shorter RL budgets, from its finished runs (issue 24).

The RL learning rate is constant after its warmup and the prompt stream is drawn step by step, so the first S steps
of a finished run are the run that `rl.steps=S` would make (same updates, same curve points up to step S). Cutting
every run's metrics at step S therefore gives the paired statistics the suite's table would print at a budget of S
steps (the curve's area, its tokens to the baseline's level, the resolution), computed by the table's own
`tables.paired_stats`; only the final evaluation (which the area does not use) is not available. Per budget and task
it prints the budget's share of the full runs' generated tokens (its cost), the oracle's gain over the baseline
(Δ area), the resolution (the pooled minimum detectable Δ area of the methods under test and the oracle) and their
ratio (issue 24's target: at most 1/3), the oracle's tokens to the baseline's final level at that budget as a share of
the baseline's (issue 24's other target: at most 0.5, its interval excluding 1), and each method's Δ area with its
Holm p.

  python benchmarks/budget_resolution.py credit-bases-k8 --steps 40,80,120,160 --out runs
"""

from __future__ import annotations

import argparse
import math
import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import common  # noqa: E402


def truncated(run: dict, steps: int) -> dict:
  """`run` with the metrics rows of steps ≤ `steps` only."""
  return {**run, "metrics": [row for row in run["metrics"] if row["step"] <= steps]}


def budget_rows(suite, runs: dict[str, list[dict]], budgets: list[int]) -> list[dict]:
  """Per (budget, task with a baseline): the budget's token share, the oracle's gain, the resolution, and the
  methods' Δ area and Holm p (`tables.paired_stats` on the runs cut at the budget)."""
  from tcred.evaluation import tables
  from tcred.experiments import get_experiment

  design = tables.Design.of(suite)  # the table's own design
  full = {task: sum(tables.eval_curve(r)["tokens"][-1] for n in names for r in runs[n])
          for task, names in tables.runs_by_task(suite, runs)}
  out = []
  for steps in budgets:
    cut = {n: [truncated(r, steps) for r in rs] for n, rs in runs.items()}
    for task, names in tables.runs_by_task(suite, cut):
      ps = tables.paired_stats(suite, cut, task, names, design)
      if ps is None or ps["x_max"] <= 0:
        continue
      used = sum(tables.eval_curve(r)["tokens"][-1] for n in names for r in cut[n])
      oracle = next((r for r in ps["rows"] if r["name"] == ps["oracle"]), None)
      out.append(dict(steps=steps, task=task, share=used / full[task], x_max=ps["x_max"], gain=ps["gain"],
                      resolution=ps["resolution"], units=ps["units"],
                      oracle_tokens=None if oracle is None else (oracle["ratio"], oracle["p_tokens"]),
                      methods=[(get_experiment(r["name"]).method, r["d_area"].estimate, r["p_area"], r["mde"])
                               for r in ps["rows"]]))
  return out


def render(rows: list[dict]) -> list[str]:
  lines = ["| steps | task | tokens (share of the full runs') | oracle's gain (points) | resolution (points) | "
           "resolution / gain | oracle's tokens to the baseline's level (Holm p) | units | "
           "method: Δ area (Holm p; MDE) |", "|---:|---|---:|---:|---:|---:|---:|---:|---|"]
  for r in rows:
    gain = "—" if r["gain"] is None else f"{100 * r['gain']:.1f}"
    ratio = "—" if r["gain"] is None or r["gain"] <= 0 else f"{r['resolution'] / r['gain']:.2f}"
    methods = "; ".join(f"{m} {100 * d:+.1f} ({p:.3f}; {100 * mde:.1f})" for m, d, p, mde in r["methods"])
    lines.append(f"| {r['steps']} | {r['task']} | {r['x_max']:,.0f} ({r['share']:.2f}) | {gain} | "
                 f"{100 * r['resolution']:.1f} | {ratio} | {_tokens(r.get('oracle_tokens'))} | {r['units']} | "
                 f"{methods} |")
  return lines


def _tokens(oracle) -> str:
  """The oracle's tokens to the baseline's final level as a share of the baseline's (issue 24's target: at most
  0.5, its interval excluding 1), with its interval and Holm p; "—" without an oracle."""
  if oracle is None:
    return "—"
  iv, p = oracle
  if not math.isfinite(iv.estimate):
    return "not reached by every seed"
  from tcred.evaluation import stats
  return f"{stats.format_interval(iv, 2)} ({'—' if math.isnan(p) else f'{p:.3f}'})"


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  common.add_suite_arguments(p)
  p.add_argument("--steps", default="40,80,120,160", help="comma-separated RL budgets in steps (default 40,80,120,160)")
  args = p.parse_args(argv)
  try:
    budgets = [int(s) for s in args.steps.split(",")]
  except ValueError:
    budgets = []
  if not budgets or min(budgets) < 1:
    print(f"budget_resolution: error: --steps must be comma-separated positive integers, got {args.steps!r}",
          file=sys.stderr)
    return 2
  loaded = common.load_suite("budget_resolution", args)
  if loaded is None:
    return 2
  suite, runs = loaded
  print("\n".join(render(budget_rows(suite, runs, budgets))))
  return 0


if __name__ == "__main__":
  sys.exit(main())

"""How much of a suite's paired area differences could be the noise of evaluating the learning curve (issue 24).

For each method of each task against the baseline of the same seed, the observed variance (over seeds) of the paired
area difference, beside an upper bound of the part that the curve's evaluation adds: each eval point's pass@1 is
a mean over `rl.eval_prompts × rl.eval_samples` samples, whose binomial variance p(1 − p) / n is carried through
the area's trapezoid weights (the area is linear in the points: the weights are `stats.curve_area` of unit vectors)
and summed over the two runs of a pair. It is an upper bound: the held-out prompts of an evaluation are shared by
the runs of a seed, so their spread in difficulty cancels in part. The base policy's point (0 tokens) is shared by
the pair and adds nothing.

  python benchmarks/eval_noise.py credit-bases --out runs        # the suite's runs under runs/credit-bases
"""

from __future__ import annotations

import argparse
import pathlib
import sys

import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import common  # noqa: E402


def area_weights(tokens: np.ndarray, x_max: float) -> np.ndarray:
  """`w` with `w @ pass1 == stats.curve_area(tokens, pass1, x_max)` for every `pass1`."""
  from tcred.evaluation import stats

  eye = np.eye(tokens.size)
  return np.array([stats.curve_area(tokens, eye[i], x_max) for i in range(tokens.size)])


def noise_rows(suite, runs: dict[str, list[dict]]) -> list[dict]:
  """Per (task, method): the seeds' variance of the paired area difference and the evaluation's bound."""
  from tcred.evaluation import tables
  from tcred.experiments import get_experiment

  rows = []
  for task, names in tables.runs_by_task(suite, runs):
    ref = tables.baseline_of(suite, task)
    if ref not in names:
      continue
    curves = {n: {r["seed"]: (tables.eval_curve(r), r["config"]["rl"]) for r in runs[n]} for n in names}
    x_max = min(float(c["tokens"][-1]) for n in names for c, _ in curves[n].values())

    def area_and_bound(curve, rl):
      w = area_weights(curve["tokens"], x_max)
      p = curve["pass1"]
      return float(w @ p), float((w[1:] ** 2) @ (p[1:] * (1 - p[1:]))) / (rl["eval_prompts"] * rl["eval_samples"])

    ab = {n: {s: area_and_bound(*v) for s, v in curves[n].items()} for n in names}
    for name in names:
      seeds = sorted(set(ab[name]) & set(ab[ref]))
      if name == ref or len(seeds) < 2:
        continue
      diff = np.array([ab[name][s][0] - ab[ref][s][0] for s in seeds])
      bound = float(np.mean([ab[name][s][1] + ab[ref][s][1] for s in seeds]))
      rows.append(dict(task=task, method=get_experiment(name).method, seeds=len(seeds),
                       variance=float(diff.var(ddof=1)), bound=bound))
  return rows


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  common.add_suite_arguments(p)
  args = p.parse_args(argv)
  loaded = common.load_suite("eval_noise", args)
  if loaded is None:
    return 2
  suite, runs = loaded
  print(f"| task | method − baseline | seeds | variance of the paired area differences (points²) | evaluation noise, "
        "upper bound (points²) | share |\n|---|---|---:|---:|---:|---:|")
  for r in noise_rows(suite, runs):
    print(f"| {r['task']} | {r['method']} | {r['seeds']} | {1e4 * r['variance']:.2f} | {1e4 * r['bound']:.2f} "
          f"| {r['bound'] / r['variance']:.2f} |")
  return 0


if __name__ == "__main__":
  sys.exit(main())

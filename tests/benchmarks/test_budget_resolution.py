"""benchmarks/budget_resolution.py: the paired statistics of runs cut at a budget are those of shorter runs."""

import json

import numpy as np
import pytest

from bench_support import load_benchmark
from tcred.evaluation import stats, tables
from tcred.experiments import Suite, get_experiment

budget = load_benchmark("budget_resolution")

SUITE = Suite(name="s", description="", experiments=("countdown-grpo", "countdown-dapo", "countdown-dr-grpo"),
              seeds=4, bases=2, oracle="dr-grpo")
# pass@1 at steps 1, 2, 3 (1000, 2000, 3000 tokens); base pass@1 0.2.
CURVES = {"countdown-grpo": lambda s: (0.3, 0.4, 0.45), "countdown-dapo": lambda s: (0.4 + 0.01 * s, 0.5, 0.5),
          "countdown-dr-grpo": lambda s: (0.5, 0.6 + 0.02 * s, 0.7 - 0.03 * s)}


def _run(root, name, seed, points):
  """A finished run's record as `tables.load_runs` returns it (its config.json written: the pairing check reads it)."""
  config = {**get_experiment(name).to_dict(), "seed": seed}
  config["sft"]["seed"] += seed % SUITE.bases
  run_dir = root / name / f"seed-{seed}"
  run_dir.mkdir(parents=True, exist_ok=True)
  (run_dir / "config.json").write_text(json.dumps(config))
  metrics = []
  for step, p in enumerate(points, start=1):
    metrics.append({"step": step, "counts/samples": 10 * step - 1, "counts/tokens_generated": 1000 * step - 1})
    metrics.append({"step": step, "eval/pass1": p, "counts/samples": 10 * step, "counts/tokens_generated": 1000 * step})
  return dict(experiment=name, seed=seed, run_dir=run_dir, summary={"task": "countdown", "base_pass1": 0.2},
              metrics=metrics, config=config)


def _runs(root, points):
  return {n: [_run(root, n, s, f(s)[:points]) for s in range(SUITE.seeds)] for n, f in CURVES.items()}


def test_cut_runs_give_the_statistics_of_shorter_runs(tmp_path):
  rows = budget.budget_rows(SUITE, _runs(tmp_path / "full", 3), [2, 3])
  assert [(r["steps"], r["task"]) for r in rows] == [(2, "countdown"), (3, "countdown")]
  design = tables.Design(2)
  for row, points in zip(rows, (2, 3)):
    short = _runs(tmp_path / f"short-{points}", points)
    ps = tables.paired_stats(SUITE, short, "countdown", list(CURVES), design)
    assert row["resolution"] == pytest.approx(ps["resolution"], rel=1e-12)
    assert row["gain"] == pytest.approx(ps["gain"], rel=1e-12)
    assert row["x_max"] == 1000 * points and row["share"] == pytest.approx(points / 3)
    oracle = next(r for r in ps["rows"] if r["name"] == "countdown-dr-grpo")
    ratio, p = row["oracle_tokens"]
    assert tuple(ratio) == pytest.approx(tuple(oracle["ratio"]), rel=1e-12)
    assert p == pytest.approx(oracle["p_tokens"], nan_ok=True)
    line = next(line for line in budget.render([row])[2:])
    assert f"| {ratio.estimate:.2f} [{ratio.low:.2f}, {ratio.high:.2f}] (" in line
  # By hand at 2 steps: the oracle's mean gain in area over [0, 2000] tokens (trapezoids: (0.5 y0 + y1 + 0.5 y2) / 2).
  area = lambda y: (0.5 * 0.2 + y[0] + 0.5 * y[1]) / 2
  gain = np.mean([area(CURVES["countdown-dr-grpo"](s)) - area(CURVES["countdown-grpo"](s)) for s in range(4)])
  assert rows[0]["gain"] == pytest.approx(gain, abs=1e-12)
  # ... and its resolution: the pooled variance of the base means of both methods' differences, 2 units.
  units = []
  for m in ("countdown-dapo", "countdown-dr-grpo"):
    d = np.array([area(CURVES[m](s)) - area(CURVES["countdown-grpo"](s)) for s in range(4)])
    units.append(np.array([d[[0, 2]].mean(), d[[1, 3]].mean()]))
  pooled = stats.mde_from_sd(float(np.sqrt(np.mean([np.var(u, ddof=1) for u in units]))), 2)
  assert rows[0]["resolution"] == pytest.approx(pooled, rel=1e-9)
  assert rows[0]["resolution"] != pytest.approx(rows[1]["resolution"], rel=1e-3)  # the budgets differ


def test_bad_arguments_exit_2(capsys):
  assert budget.main(["no-such-suite"]) == 2
  assert "no-such-suite" in capsys.readouterr().err
  assert budget.main(["suite-credit", "--steps", "40,x"]) == 2
  assert "--steps must be comma-separated positive integers, got '40,x'" in capsys.readouterr().err
  assert budget.main(["suite-credit", "--steps", "0"]) == 2

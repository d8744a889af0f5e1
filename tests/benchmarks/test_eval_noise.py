"""benchmarks/eval_noise.py: the area's weights and the evaluation-noise bound against hand computations."""

import numpy as np
import pytest

from bench_support import load_benchmark
from tcred.evaluation import stats
from tcred.experiments import Suite

noise = load_benchmark("eval_noise")


def test_area_weights_reproduce_curve_area():
  rng = np.random.default_rng(0)
  x = np.array([0.0, 100.0, 250.0, 400.0])
  for x_max in (400.0, 320.0, 100.0):
    w = noise.area_weights(x, x_max)
    for _ in range(3):
      y = rng.uniform(size=4)
      assert w @ y == pytest.approx(stats.curve_area(x, y, x_max), abs=1e-12)


def _run(name, seed, pass1, prompts=2, samples=2):
  metrics = [{"counts/samples": 10 * (i + 1), "counts/tokens_generated": 100 * (i + 1), "eval/pass1": p}
             for i, p in enumerate(pass1)]
  return dict(experiment=name, seed=seed, summary={"task": "countdown", "base_pass1": 0.2}, metrics=metrics,
              config={"rl": {"eval_prompts": prompts, "eval_samples": samples}})


def test_noise_rows_by_hand():
  suite = Suite(name="s", description="", experiments=("countdown-grpo", "countdown-dapo"), seeds=2, bases=1)
  grpo = {0: [0.5, 0.5], 1: [0.5, 0.5]}
  dapo = {0: [0.6, 0.8], 1: [0.4, 0.6]}
  runs = {"countdown-grpo": [_run("countdown-grpo", s, p) for s, p in grpo.items()],
          "countdown-dapo": [_run("countdown-dapo", s, p) for s, p in dapo.items()]}
  [row] = noise.noise_rows(suite, runs)
  # Points at 0, 100, 200 tokens: area = (0.5 y0 + y1 + 0.5 y2) / 2, so w = [1/4, 1/2, 1/4].
  area = lambda p: 0.25 * 0.2 + 0.5 * p[0] + 0.25 * p[1]
  d = [area(dapo[s]) - area(grpo[s]) for s in (0, 1)]
  assert row["method"] == "dapo" and row["seeds"] == 2
  assert row["variance"] == pytest.approx(np.var(d, ddof=1))
  var = lambda p: (0.25 * p[0] * (1 - p[0]) + 0.0625 * p[1] * (1 - p[1])) / 4  # weights squared, n = 2 x 2
  assert row["bound"] == pytest.approx(np.mean([var(dapo[s]) + var(grpo[s]) for s in (0, 1)]))


def test_unknown_suite_exits_2(capsys):
  assert noise.main(["no-such-suite"]) == 2
  assert "no-such-suite" in capsys.readouterr().err

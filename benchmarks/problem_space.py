"""How much of a task's problem space one SFT stream covers (issue 23: held out by problem).

For an experiment's task config and SFT settings, draws the SFT problem stream as SFT draws it
(`training_problems`, seed namespace `SFT_NAMESPACE`, `sft.steps` batches of `sft.batch_size`) without
excluding anything, and reports:
  * the distinct problem keys (`Task.problem_key`) and distinct prompts of the stream;
  * the size of the problem space: distinct keys in a larger independent sample (`--space-draws`
    draws) and the bias-corrected Chao1 estimate from it (a lower bound where most keys are singletons);
  * how many of the first `--held-out` held-out problems (`eval_problems`, distinct keys) have their key
    in the stream: what SFT saw of them before streams excluded held-out keys (with the exclusion a
    run's streams hold none).

    PYTHONPATH=. python benchmarks/problem_space.py countdown-grpo
    PYTHONPATH=. python benchmarks/problem_space.py countdown-grpo --set max_number=30 --set max_target=100
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from collections import Counter

import numpy as np

import tcred.experiments  # noqa: F401  (registers the experiments)
from tcred.experiments.registry import get_experiment
from tcred.tasks.registry import make_task_from_config
from tcred.training.data import SFT_NAMESPACE, eval_problems, training_problems


def chao1(counts: Counter) -> float:
  """Bias-corrected Chao1 estimate of the number of distinct keys: seen + f1 (f1 - 1) / (2 (f2 + 1))."""
  f1 = sum(1 for c in counts.values() if c == 1)
  f2 = sum(1 for c in counts.values() if c == 2)
  return len(counts) + f1 * (f1 - 1) / (2 * (f2 + 1))


def _value(text: str):
  for cast in (int, float):
    try:
      return cast(text)
    except ValueError:
      pass
  return text


def measure(experiment: str, overrides: dict, *, held_out: int, space_draws: int) -> dict:
  cfg = get_experiment(experiment)
  task_config = dataclasses.replace(cfg.task_config, **overrides)
  task = make_task_from_config(cfg.task, task_config)
  t0 = time.time()
  stream = [p for step in range(cfg.sft.steps)
            for p in training_problems(task, cfg.sft.batch_size, namespace=SFT_NAMESPACE, seed=cfg.sft.seed,
                                       step=step, exclude_keys=frozenset())]
  keys = Counter(task.problem_key(p) for p in stream)
  rng = np.random.default_rng([0x5BACE])
  space = Counter(task.problem_key(task.sample(rng)) for _ in range(space_draws))
  held = [task.problem_key(p) for p in eval_problems(task, held_out)]
  return {
      "experiment": experiment, "task_config": repr(task_config),
      "sft_stream": {"problems": len(stream), "distinct_keys": len(keys),
                     "distinct_prompts": len({p.prompt for p in stream})},
      "space": {"draws": space_draws, "distinct_keys": len(space), "chao1": round(chao1(space))},
      "held_out": {"problems": len(held), "keys_in_sft_stream": sum(k in keys for k in held)},
      "seconds": round(time.time() - t0, 1),
  }


def main(argv=None) -> int:
  ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  ap.add_argument("experiment", help="a registered experiment, e.g. countdown-grpo (its task config and SFT settings)")
  ap.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE", help="override a task config field")
  ap.add_argument("--held-out", type=int, default=256, help="held-out problems to check (default 256)")
  ap.add_argument("--space-draws", type=int, default=1_000_000, help="draws of the space sample (default 1e6)")
  args = ap.parse_args(argv)
  overrides = dict((k, _value(v)) for k, v in (item.split("=", 1) for item in args.set))
  print(json.dumps(measure(args.experiment, overrides, held_out=args.held_out, space_draws=args.space_draws)))
  return 0


if __name__ == "__main__":
  sys.exit(main())

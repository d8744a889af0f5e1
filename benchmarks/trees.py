"""Trees versus independent chains at equal depth (DESIGN §4.5, §6 "Trees").

For each task, the SFT base policy samples the same held-out prompts as
(a) G = 8 independent chains (`sample_groups`) and (b) trees of 8 leaves
(`sample_trees_and_score`: M chains, then forks), with the same token budget
per rollout (equal depth T). Reported per configuration:

- generated tokens per prompt (a shared prefix counts once; fork tokens count),
- leaf trajectories per generated token relative to chains (target ≥ 1.5×;
  every leaf is its own root-to-leaf path), and the stricter count of
  distinct response strings per generated token (a fork of a confident policy
  can reproduce its source's text),
- tokens fed through the model while decoding, which must equal the generated
  tokens (zero prefix recomputation: forks copy the KV cache and draw the fork
  token from the stored hidden state),
- the variance of the group-mean baseline (the mean leaf reward of a prompt,
  the baseline inside every group advantage) over repeated draws, and that
  variance × tokens (lower is a cheaper estimate per token),
- the distinct-token ratio tree/chains, which sets the tree experiments'
  prompts per step so that a step generates as many tokens as GRPO's.

Usage:
  python benchmarks/trees.py [--quick] [--tasks countdown graph-path] [--out benchmarks/results/trees.md]
The full mode loads (or builds, ~6 min each) the cached base policies of
countdown and graph-path; --quick uses a tiny random model on countdown.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path
from typing import NamedTuple

import jax
import numpy as np
from flax import nnx

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

from tcred.experiments import experiment_for, get_experiment  # noqa: E402
from tcred.models.config import model_preset  # noqa: E402
from tcred.models.decoder import Decoder  # noqa: E402
from tcred.tasks.registry import make_task_from_config  # noqa: E402
from tcred.training.config import TreeConfig  # noqa: E402
from tcred.training.data import eval_problems  # noqa: E402
from tcred.sampling.rollout import sample_and_score, sample_trees_and_score  # noqa: E402
from tcred.training.sft import base_policy  # noqa: E402

TARGET = 1.5
CONFIGS = (  # (label, TreeConfig) with 8 leaves per prompt, as the chains
    ("tree M=2 N=3 step (tree-grpo)", TreeConfig(enabled=True, trees=2, rounds=1, forks=3, fork_at="step")),
    ("tree M=2 N=3 entropy (treerl)", TreeConfig(enabled=True, trees=2, rounds=1, forks=3, fork_at="entropy")),
    ("tree M=2 N=3 neg-logp", TreeConfig(enabled=True, trees=2, rounds=1, forks=3, fork_at="neg-logp")),
    ("tree M=1 N=7 step", TreeConfig(enabled=True, trees=1, rounds=1, forks=7, fork_at="step")),
    ("tree M=2 L=3 N=1 step", TreeConfig(enabled=True, trees=2, rounds=3, forks=1, fork_at="step")),
)


class Result(NamedTuple):
  label: str
  tokens: float  # generated tokens per prompt
  distinct: float  # distinct leaf trajectories per prompt
  fed: int
  generated: int
  baseline_var: float  # variance of the group-mean reward over repeats, averaged over prompts
  seconds: float


def _measure(graphdef, params, task, problems, tree: TreeConfig | None, repeats: int) -> Result:
  tokens, distinct, fed, generated, means, seconds = [], [], 0, 0, [], 0.0
  for rep in range(repeats):
    key = jax.random.key(1000 + rep)
    t0 = time.perf_counter()
    if tree is None:
      groups = sample_and_score(graphdef, params, task, problems, key, group_size=8, temperature=1.0)
      fed_rep = int(np.asarray(groups.rollouts.mask).sum())  # one token fed per generated token
    else:
      groups = sample_trees_and_score(graphdef, params, task, problems, key, np.random.default_rng(rep),
                                      tree=tree, temperature=1.0)
      fed_rep = groups.trees.fed
    seconds += time.perf_counter() - t0 if rep else 0.0  # the first repeat compiles
    gen = groups.generated_tokens()
    fed += fed_rep
    generated += gen
    tokens.append(gen / len(problems))
    distinct.append(np.mean([len(set(texts)) for texts in groups.texts]))
    means.append(groups.rewards.mean(axis=1))  # [B]
  var = float(np.mean(np.var(np.stack(means), axis=0, ddof=1)))
  label = "chains G=8" if tree is None else ""
  return Result(label, float(np.mean(tokens)), float(np.mean(distinct)), fed, generated, var,
                seconds / max(repeats - 1, 1))


def run(quick: bool, tasks: tuple[str, ...] = ("countdown", "graph-path")) -> list[str]:
  tasks = ("countdown",) if quick else tasks
  prompts, repeats = (4, 2) if quick else (64, 8)
  lines = []
  for name in tasks:
    cfg = get_experiment(experiment_for(name, "grpo"))
    task = make_task_from_config(cfg.task, cfg.task_config)
    if quick:
      graphdef, params = nnx.split(Decoder(model_preset("tiny"), rngs=nnx.Rngs(0)))
      policy = "tiny random model"
    else:
      graphdef, params, _ = base_policy(cfg.model, task, cfg.task_config, cfg.sft,
                                        eval_prompts=cfg.rl.held_out_prompts)
      policy = f"SFT base policy of `{cfg.name}` ({cfg.model.hidden_size}-wide, {cfg.model.num_hidden_layers} layers)"
    problems = eval_problems(task, prompts)
    chains = _measure(graphdef, params, task, problems, None, repeats)
    rows = [chains]
    for label, tree in CONFIGS:
      rows.append(_measure(graphdef, params, task, problems, tree, repeats)._replace(label=label))
    lines += [f"### {name}", "", f"Policy: {policy}; {prompts} held-out prompts × {repeats} repeats, "
              f"T = {task.max_response_len}, temperature 1.0.", "",
              "| sampler | generated tokens / prompt | tokens vs chains | leaf trajectories per 1k tokens "
              "| vs chains | distinct leaf texts / prompt | distinct texts per 1k tokens | vs chains "
              "| tokens fed / generated | Var(group-mean reward) | Var × tokens | s / batch |",
              "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    leaf_rate = 8 / chains.tokens
    text_rate = chains.distinct / chains.tokens
    for r in rows:
      leaves, texts = 8 / r.tokens, r.distinct / r.tokens
      lines.append(
          f"| {r.label} | {r.tokens:.1f} | {r.tokens / chains.tokens:.2f} | {1000 * leaves:.1f} "
          f"| **{leaves / leaf_rate:.2f}×** | {r.distinct:.2f} | {1000 * texts:.1f} | {texts / text_rate:.2f}× "
          f"| {r.fed}/{r.generated} | {r.baseline_var:.4f} | {r.baseline_var * r.tokens:.2f} | {r.seconds:.3f} |")
      if r.fed != r.generated:
        raise AssertionError(f"{r.label}: fed {r.fed} tokens for {r.generated} generated (prefix recomputed)")
    lines.append("")
  return lines


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--quick", action="store_true", help="tiny random model, 4 prompts: a smoke test")
  parser.add_argument("--out", default=None, help="write the Markdown report here")
  parser.add_argument("--tasks", nargs="+", default=["countdown", "graph-path"],
                      help="tasks whose `<task>-grpo` base policy samples (default: countdown graph-path)")
  args = parser.parse_args(argv)
  t0 = time.time()
  body = run(args.quick, tuple(args.tasks))
  report = [*common.header("Trees versus chains", args.quick, argv if argv is not None else sys.argv[1:], __file__),
            f"- wall time: {time.time() - t0:.0f} s", common.load_line(),
            f"- target: ≥ {TARGET}× distinct leaf trajectories per generated token, zero prefix recomputation "
            "(tokens fed = tokens generated)", "", *body]
  print("\n".join(report))
  common.write(Path(args.out) if args.out else None, report)
  return 0


if __name__ == "__main__":
  common.run_main(main)

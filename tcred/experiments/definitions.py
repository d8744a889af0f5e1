"""Experiment definitions for the embedded task suite.

Each task has tuned defaults (`_TASK_DEFAULTS`); a method is a credit method
plus loss/loop changes, registered for every task as `<task>-<method>`.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

from tcred.credit import make_credit
from tcred.experiments.registry import register_experiment
from tcred.losses.pg import LossConfig
from tcred.models.config import model_preset
from tcred.tasks.registry import task_config_class
from tcred.training.config import ExperimentConfig, RLConfig, SFTConfig, TreeConfig

TASKS = ("countdown", "graph-path", "long-addition")

_TASK_DEFAULTS: dict[str, dict[str, Any]] = {
    # 3 numbers, 70% correct demonstrations: base pass@1 ≈ 0.22 after 1,500 SFT steps (pass@8 ≈ 0.71).
    "countdown": dict(task_config=dict(demo_correct_prob=0.7), sft=SFTConfig(steps=1500), rl=RLConfig()),
    # 6 nodes, 2–3 hops: base pass@1 ≈ 0.38 after 1,500 SFT steps (pass@8 ≈ 0.94).
    "graph-path": dict(task_config=dict(num_nodes=6, max_hops=3, extra_edges=1), sft=SFTConfig(steps=1500),
                       rl=RLConfig()),
    # 3–4 digit operands, 40% correct demonstrations: base pass@1 ≈ 0.38 after 1,000 SFT steps (greedy 0.96).
    "long-addition": dict(task_config=dict(min_digits=3, max_digits=4, demo_correct_prob=0.4),
                          sft=SFTConfig(steps=1000), rl=RLConfig()),
}


def base_config(task: str, *, name: str, description: str) -> ExperimentConfig:
  """The task's default GRPO experiment."""
  d = _TASK_DEFAULTS[task]
  return ExperimentConfig(
      name=name, description=description, task=task,
      task_config=task_config_class(task)(**d["task_config"]), model=model_preset("char-small"),
      sft=d["sft"], rl=d["rl"], credit=make_credit("outcome", mode="grpo"), loss=LossConfig())


_METHODS: list[tuple[str, str, Callable[[ExperimentConfig], ExperimentConfig]]] = []  # in registration order


def _method(suffix: str, description: str, edit: Callable[[ExperimentConfig], ExperimentConfig]):
  _METHODS.append((suffix, description, edit))
  for task in TASKS:
    cfg = base_config(task, name=f"{task}-{suffix}", description=f"{description} on {task}")
    register_experiment(edit(cfg))


_method("grpo", "GRPO: group-normalised outcome advantage, PPO-clip, token-mean", lambda c: c)
_method("dr-grpo", "Dr. GRPO: no std normalisation, divide by the fixed generation budget",
        lambda c: dataclasses.replace(c, credit=make_credit("outcome", mode="dr-grpo"),
                                      loss=LossConfig(aggregation="seq-mean-token-sum-norm")))
_method("dapo", "DAPO: clip-higher (0.2/0.28) and dynamic sampling of informative groups",
        lambda c: dataclasses.replace(c, loss=LossConfig(clip_low=0.2, clip_high=0.28),
                                      rl=dataclasses.replace(c.rl, dynamic_sampling=True)))

# Token signals (DESIGN §4.2–4.4). Each changes only the credit method of the task's GRPO
# experiment, so every row of the table differs from `<task>-grpo` in one thing.
_credit = lambda name, **kw: (lambda c: dataclasses.replace(c, credit=make_credit(name, **kw)))
_method("entropy-top20", "policy gradient on the top-20% entropy (forking) tokens", _credit("entropy-mask", rho=0.2))
_method("entropy-top10", "policy gradient on the top-10% entropy tokens", _credit("entropy-mask", rho=0.1))
_method("entropy-top50", "policy gradient on the top-50% entropy tokens", _credit("entropy-mask", rho=0.5))
_method("entropy-bottom80", "ablation: policy gradient on the bottom-80% entropy tokens",
        _credit("entropy-mask", rho=0.2, keep="bottom"))
_method("mi-peaks", "policy gradient on HSIC mutual-information peak tokens", _credit("mi-peaks"))
_method("mi-weight", "advantage scaled by normalised answer information gain", _credit("mi-weight"))
_method("dro-r3", "outcome + σ-weighted reference-answer likelihood (DRO R3)", _credit("dro-r3"))
_method("variance-filter", "DRO query filter: drop low-σ and all-equal prompts, refill",
        _credit("variance-filter"))

# Trees (DESIGN §4.5): 2 chains per prompt, one round of 3 forks per tree, 8 leaves per prompt
# like the chains of `<task>-grpo`. Shared prefixes are generated once, so a tree step generates
# fewer tokens; `prompts_per_step` is raised so that a step generates about as many tokens as
# GRPO's 16 × 8 chains, i.e. the comparison is at equal generated tokens: 16 / (tree tokens / chain
# tokens per prompt), the ratios measured on the SFT base policies by `python benchmarks/trees.py`
# (benchmarks/results/trees.md: countdown 0.60 step / 0.78 entropy, graph-path 0.65 / 0.70).
_TREE_PROMPTS = {("countdown", "step"): 27, ("countdown", "entropy"): 21,
                 ("graph-path", "step"): 25, ("graph-path", "entropy"): 23}


def _tree(credit: str, fork_at: str):
  def edit(c: ExperimentConfig) -> ExperimentConfig:
    return dataclasses.replace(
        c, credit=make_credit(credit), tree=TreeConfig(enabled=True, trees=2, rounds=1, forks=3, branch=1,
                                                       fork_at=fork_at),
        rl=dataclasses.replace(c.rl, prompts_per_step=_TREE_PROMPTS.get((c.task, fork_at), c.rl.prompts_per_step)))
  return edit


_method("tree-grpo", "Tree-GRPO: forks at step boundaries, intra + inter-tree leaf advantages",
        _tree("tree-grpo", "step"))
_method("treerl", "TreeRL / EPTree: forks at the highest-entropy tokens, segment advantages",
        _tree("treerl", "entropy"))


# ------------------------------------------------------------------------------------------------
# Real models (issue 15): every method above, none of which needs an exact oracle, on the tasks for
# Hugging Face checkpoints, as `<task>-<method>` (`reasoning-gym-grpo`, `jsonl-entropy-top20`, ...).
# The policy is the checkpoint's (`--set task_config.checkpoint=DIR`; `tcred.training.pretrained`
# replaces the placeholder model section by its config): no SFT stage. The dataset is
# `task_config.dataset` / `task_config.dataset_config` (reasoning-gym) or `task_config.path` (jsonl).
# RL defaults for a pretrained chat model: a small learning rate, 8 prompts x 8 samples a step, and
# smaller held-out evaluations (64 prompts x 4 samples at the end, 32 x 4 every 25 steps). Tree
# experiments keep 8 prompts a step (their equal-token budgets are measured for the embedded tasks only).
REAL_MODEL_TASKS = ("reasoning-gym", "jsonl")

_REAL_MODEL_RL = RLConfig(steps=200, prompts_per_step=8, group_size=8, lr=1e-6, warmup=0, eval_every=25,
                          eval_prompts=32, eval_samples=4, final_eval_prompts=64, final_eval_samples=4,
                          checkpoint_every=25)


def _real_model_base(task: str, *, name: str, description: str) -> ExperimentConfig:
  from tcred.training.pretrained import PLACEHOLDER  # the checkpoint's config replaces it at run time

  return ExperimentConfig(
      name=name, description=description, task=task, task_config=task_config_class(task)(), model=PLACEHOLDER,
      sft=SFTConfig(), rl=_REAL_MODEL_RL, credit=make_credit("outcome", mode="grpo"), loss=LossConfig())


for _suffix, _description, _edit in _METHODS:
  for _task in REAL_MODEL_TASKS:
    register_experiment(_edit(_real_model_base(
        _task, name=f"{_task}-{_suffix}", description=f"{_description} on {_task} (a Hugging Face checkpoint)")))

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
from tcred.training.config import ExperimentConfig, RLConfig, SFTConfig

TASKS = ("countdown", "graph-path")

_TASK_DEFAULTS: dict[str, dict[str, Any]] = {
    "countdown": dict(task_config={}, sft=SFTConfig(), rl=RLConfig()),
    "graph-path": dict(task_config={}, sft=SFTConfig(), rl=RLConfig()),
}


def base_config(task: str, *, name: str, description: str) -> ExperimentConfig:
  """The task's default GRPO experiment."""
  d = _TASK_DEFAULTS[task]
  return ExperimentConfig(
      name=name, description=description, task=task,
      task_config=task_config_class(task)(**d["task_config"]), model=model_preset("char-small"),
      sft=d["sft"], rl=d["rl"], credit=make_credit("outcome", mode="grpo"), loss=LossConfig())


def _method(suffix: str, description: str, edit: Callable[[ExperimentConfig], ExperimentConfig]):
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

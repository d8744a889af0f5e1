"""Zero held-out problem keys in any stream a default experiment draws (issue 23, held out by problem).

For each embedded task's default experiments: the held-out set (`check_run`'s plan) holds distinct problem keys;
the SFT demonstrations' problems, the RL prompts (through `_collect`, refill rounds included, with a stub in
place of the sampler), the trained judges' data prompts (`tcred.training.judges`, the `<task>-judge-prm` and
`-judge-gen` experiments) and the identify study's prompts hold none of its keys, though the same streams drawn
without the exclusion meet them. The default run draws the start of the SFT and RL streams (their first
`SFT_STEPS` and `RL_STEPS` steps; each step's draw is a pure function of the step, so these are the streams'
first batches); the slow test draws them whole.
"""

import dataclasses
import math
from typing import NamedTuple

import jax
import numpy as np
import pytest

import tcred.experiments  # noqa: F401  (registers the experiments)
from tcred.evaluation.identify.config import IdentifyConfig
from tcred.experiments.defaults import TASKS
from tcred.experiments.registry import get_experiment
from tcred.training import judges, rl
from tcred.sampling.rollout import Groups
from tcred.training.data import SFT_NAMESPACE, eval_problems, training_problems

SFT_STEPS = 20  # SFT batches drawn by the default run (of sft.steps)
RL_STEPS = 8  # RL steps drawn by the default run (of rl.steps)


class _Rollouts(NamedTuple):  # the stub sampler's rollouts: `_collect` only stacks their fields
  tokens: np.ndarray


def _sft_stream(task, cfg, steps, exclude_keys):
  return [p for step in range(steps)
          for p in training_problems(task, cfg.sft.batch_size, namespace=SFT_NAMESPACE, seed=cfg.sft.seed, step=step,
                                     exclude_keys=exclude_keys)]


def _rl_stream(task, cfg, plan, monkeypatch, steps):
  """The prompts `_collect` draws over the first `steps` RL steps of seed 0, each step's refill rounds included
  (every group all-equal with dynamic sampling on, so that every round runs)."""
  drawn = []

  def sample_chunk(graphdef, params, task_, problems, key, cfg_, base_params):
    drawn.extend(problems)
    b, g = len(problems), cfg_.rl.group_size
    groups = Groups(prompt=np.zeros((b, 1), np.int32), prompt_valid=np.ones((b, 1), bool),
                    rollouts=_Rollouts(np.zeros((b, g, 1), np.int32)), rewards=np.zeros((b, g), np.float32),
                    texts=[[""] * g for _ in range(b)])
    return rl.Chunk(groups, problems, {})

  monkeypatch.setattr(rl, "_sample_chunk", sample_chunk)
  cfg = dataclasses.replace(cfg, rl=dataclasses.replace(cfg.rl, dynamic_sampling=True))
  for step in range(steps):
    batch, valid, _ = rl._collect(None, None, task, cfg, seed=0, step=step, exclude_keys=plan.exclude_keys,
                                  key=jax.random.key(step))
    assert not valid.any() and len(batch.problems) == cfg.rl.prompts_per_step  # all-equal groups: fillers only
  assert len(drawn) == steps * cfg.rl.prompts_per_step * (1 + cfg.rl.max_refill_rounds)
  return drawn


def _judge_streams(task, name):
  """The judge-data prompts of the task's trained-judge experiments: enough batches for their labels even at one
  label per rollout (the data stops earlier)."""
  out, done = {}, {}
  for method in ("judge-prm", "judge-gen"):
    judge = get_experiment(f"{name}-{method}").credit.make_judge()
    settings = repr(judge.data_settings())
    if settings in done:  # the same data as an earlier judge's (shared by construction)
      out[method], out[method + " (unexcluded)"] = out[done[settings]], out[done[settings] + " (unexcluded)"]
      continue
    done[settings] = method
    batches = math.ceil(judge.labels / (judges.PROMPTS_PER_BATCH * judge.rollouts_per_prompt))
    exclude = judges._exclude(task, judge)
    out[method] = [p for step in range(batches) for p in judges._batch_problems(task, judge, step, exclude)]
    out[method + " (unexcluded)"] = [p for step in range(batches)
                                     for p in judges._batch_problems(task, judge, step, frozenset())]
  return out


def _check(task_name, tmp_path, monkeypatch, sft_steps, rl_steps):
  cfg = get_experiment(f"{task_name}-grpo")
  plan = rl.check_run(cfg, seed=0, out=tmp_path)
  task = plan.task
  held = [task.problem_key(p) for p in plan.held_out]
  assert len(held) == len(set(held)) == cfg.rl.held_out_prompts  # the held-out set: each key once
  held = set(held)
  assert plan.exclude_keys == held
  streams = {"sft": _sft_stream(task, cfg, sft_steps, plan.exclude_keys),
             "sft (unexcluded)": _sft_stream(task, cfg, sft_steps, frozenset()),
             "rl": _rl_stream(task, cfg, plan, monkeypatch, rl_steps),
             **_judge_streams(task, task_name)}
  identify = {task.problem_key(p) for p in eval_problems(task, IdentifyConfig().prompts)}
  assert identify <= held  # identify's prompts are held-out problems, so in no training stream
  met = {}
  for what, problems in streams.items():
    keys = {task.problem_key(p) for p in problems}
    met[what] = len(keys & held)
    if "unexcluded" not in what:
      assert not keys & held, f"{task_name}: {met[what]} held-out keys in the {what} stream"
      assert not keys & identify
  return met


@pytest.mark.parametrize("task_name", TASKS)
def test_no_stream_of_a_default_experiment_holds_a_held_out_key(task_name, tmp_path, monkeypatch):
  met = _check(task_name, tmp_path, monkeypatch, SFT_STEPS, RL_STEPS)
  if task_name == "countdown":  # the widest coverage: without the exclusion its streams meet held-out keys
    assert met["sft (unexcluded)"] + met["judge-prm (unexcluded)"] > 0


@pytest.mark.slow  # the whole SFT streams: 1,000-1,500 batches of 64 problems per task
@pytest.mark.parametrize("task_name", TASKS)
def test_whole_sft_streams_hold_no_held_out_key(task_name, tmp_path, monkeypatch):
  cfg = get_experiment(f"{task_name}-grpo")
  met = _check(task_name, tmp_path, monkeypatch, cfg.sft.steps, cfg.rl.steps)
  assert met["sft (unexcluded)"] > 0  # the whole stream meets held-out keys unless they are excluded

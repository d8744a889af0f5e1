"""`tcred judge train|eval`: train a step judge on its task's base policy and score it ProcessBench-style.

A judge is set up from its kind, the task and `--set` assignments: `judge.FIELD=V`
sets a judge setting, any other section (`task_config`, `model`, `sft`, `rl`)
edits the task's default experiment (`tcred.experiments.defaults.base_config`),
whose cached SFT base policy is the policy the judge's data comes from.

Evaluation (`evaluate_judge`) follows ProcessBench (arXiv 2412.06559): on R
rollouts of the first N held-out prompts (never a judge's training prompt:
trained judges exclude the first `exclude_prompts` of them), the ORACLE's first
error of a rollout is its first step after which the task's exact prefix value is
0 (`first_error` of s_k ≥ 0.5 over the oracle's scores), "no error" when it never
loses reachability. A judge's step is wrong where its score s_k < 0.5 (the same
rule for every judge: an `mc` score Q_k = 0 is wrong, the oracle's own 0 is
wrong), and its predicted first error is the first wrong step.

  acc_error   = fraction of erroneous rollouts whose first error the judge finds exactly
  acc_correct = fraction of error-free rollouts the judge calls error-free
  F1          = 2 · acc_error · acc_correct / (acc_error + acc_correct)

with 95% cluster-bootstrap intervals over prompts (`identify.bootstrap.metric_cis`).
"""

from __future__ import annotations

import dataclasses
import math
import pathlib
import time
from typing import Any, NamedTuple, Sequence

import jax
import numpy as np

from tcred.evaluation.identify.bootstrap import metric_cis
from tcred.experiments.defaults import TASKS, base_config
from tcred.judges.base import Judge, JudgeContext, JudgeScores, judge_class, judge_names, make_judge
from tcred.judges.labels import first_error
from tcred.judges.trained import TrainedJudge, rollout_ids
from tcred.sampling.rollout import sample_and_score
from tcred.tasks.base import Task
from tcred.tasks.registry import make_task_from_config
from tcred.training import judges as training_judges
from tcred.training.config import ExperimentConfig, _parse
from tcred.training.data import eval_problems
from tcred.training.sft import base_policy, cache_root
from tcred.training.tracking import json_ready  # noqa: F401  (the CLI prints its results through it)

EVAL_NAMESPACE = 0x1D9F  # seed namespace of the evaluation rollouts and the judges' own sampling
WRONG_BELOW = 0.5  # a step is wrong where its score is below this
METRICS = ("f1", "acc_error", "acc_correct")


class JudgeSetup(NamedTuple):
  """A judge and the experiment config whose base policy it is trained on and evaluated with."""

  judge: Judge
  cfg: ExperimentConfig
  task: Task


def setup(kind: str, task: str, sets: Sequence[str]) -> JudgeSetup:
  """Builds the judge and its policy's config; ValueError naming the bad kind, task or setting and what
  is allowed."""
  cls = judge_class(kind)  # "unknown judge 'x'; allowed: [...]"
  if task not in TASKS:
    raise ValueError(f"judges need an embedded task with an exact oracle; unknown task {task!r}; allowed: "
                     f"{list(TASKS)}")
  settings, overrides = {}, []
  fields = {f.name for f in dataclasses.fields(cls)}
  for item in sets:
    if "=" not in item:
      raise ValueError(f"--set expects key=value, got {item!r}")
    key, raw = item.split("=", 1)
    section, _, field = key.partition(".")
    if section != "judge":
      overrides.append(item)
      continue
    if field not in fields:
      raise ValueError(f"judge {kind!r} has no setting {field!r}; allowed: {sorted(fields)}")
    settings[field] = _parse(raw, cls, field, key)
  cfg = base_config(task, method=f"judge-{kind}", name=f"{task}-judge-{kind}",
                    description=f"the base policy of judge {kind} on {task}")
  try:
    cfg = cfg.with_overrides(overrides)
  except ValueError as e:
    message = str(e)
    if message.startswith("unknown --set key"):
      message += "; or judge.<setting> (`judge.FIELD=V`)"
    raise ValueError(message) from None
  return JudgeSetup(make_judge(kind, **settings), cfg, make_task_from_config(cfg.task, cfg.task_config))


def policy_context(cfg: ExperimentConfig, task: Task, *, seed: int = 0, progress: bool = False) -> JudgeContext:
  """The judge context of the task's cached SFT base policy (SFT runs first if it is not cached)."""
  graphdef, params, _ = base_policy(cfg.model, task, cfg.task_config, cfg.sft, eval_prompts=cfg.rl.held_out_prompts,
                                    progress=progress)
  return JudgeContext(graphdef=graphdef, params=params,
                      key=jax.random.fold_in(jax.random.key(seed), EVAL_NAMESPACE),
                      temperature=cfg.rl.temperature, top_p=cfg.rl.top_p, cache_dir=cache_root(),
                      task_config=cfg.task_config, model_config=cfg.model, progress=progress,
                      prepare_trained=training_judges.prepare_trained)


def require_trainable(kind: str) -> None:
  """ValueError unless `kind` is trained (names the trainable kinds)."""
  if kind not in training_judges.trainable_judges():
    raise ValueError(f"judge {kind!r} needs no training (it scores with the policy or the task alone); "
                     f"trainable judges: {training_judges.trainable_judges()}")


def train(s: JudgeSetup, *, resume: bool, log_root: pathlib.Path | None, progress: bool
          ) -> training_judges.TrainedInfo:
  """Trains (or reuses) the judge of `s` on its base policy's rollouts; logs under `log_root/<entry name>`."""
  require_trainable(s.judge.name)
  ctx = policy_context(s.cfg, s.task, progress=progress)
  return training_judges.train_judge(s.judge, s.task, ctx, resume=resume, log_root=log_root)


def first_wrong(scores: np.ndarray, valid: np.ndarray, *, below: float = WRONG_BELOW) -> np.ndarray:
  """[B, G] index of the first wrong step (s_k < `below`, k ≥ 1; index k − 1 as `first_error`), −1 when none.

  Args:
    scores, valid: [B, G, K + 1] judge scores s_0 … s_K (s_0 is not a step).
    below: the threshold (0.5; a tiny value such as 1e-9 reads "wrong where s_k = 0", the abs-q rule).
  """
  scores, valid = np.asarray(scores), np.asarray(valid, bool)
  out = np.full(scores.shape[:2], -1, np.int64)
  for i, j in np.ndindex(*scores.shape[:2]):
    steps = scores[i, j, 1:][valid[i, j, 1:]]
    out[i, j] = first_error(steps >= below)
  return out


def processbench(predicted: np.ndarray, truth: np.ndarray) -> dict[str, float]:
  """ProcessBench metrics of flat first-error indices (−1: no error); NaN for an empty class."""
  predicted, truth = np.asarray(predicted), np.asarray(truth)
  err, ok = truth >= 0, truth < 0
  acc_error = float(np.mean(predicted[err] == truth[err])) if err.any() else math.nan
  acc_correct = float(np.mean(predicted[ok] < 0)) if ok.any() else math.nan
  total = acc_error + acc_correct
  f1 = 2 * acc_error * acc_correct / total if total > 0 else (0.0 if total == 0 else math.nan)
  return {"f1": f1, "acc_error": acc_error, "acc_correct": acc_correct}


def format_metric(result: dict[str, Any], metric: str) -> str:
  """`"0.870 [0.802, 0.927]"` (value and 95% interval of `evaluate_judge`'s `metric`); "n/a" where it is undefined
  (NaN: F1 or an accuracy when a class of rollouts is empty)."""
  v = result[metric]
  lo, hi = result.get(f"{metric}_ci", (math.nan, math.nan))
  if v is None or not math.isfinite(v):
    return "n/a"
  return f"{v:.3f} [{lo:.3f}, {hi:.3f}]" if lo is not None and math.isfinite(lo) else f"{v:.3f}"


class EvalRollouts(NamedTuple):
  """Held-out rollouts and the oracle's first error of each."""

  problems: list
  texts: list[list[str]]
  ids: list[list[np.ndarray]]  # the sampler's ids (EOS included when a response ended)
  rewards: np.ndarray  # [B, G]
  truth: np.ndarray  # [B, G] oracle first error, −1 none
  tokens: int  # generated


def eval_rollouts(task: Task, ctx: JudgeContext, *, prompts: int, rollouts: int, seed: int) -> EvalRollouts:
  """R rollouts of each of the first `prompts` held-out prompts, sampled from the policy of `ctx`."""
  problems = eval_problems(task, prompts)
  key = jax.random.fold_in(jax.random.fold_in(jax.random.key(seed), EVAL_NAMESPACE), 1)
  groups = sample_and_score(ctx.graphdef, ctx.params, task, problems, key, group_size=rollouts,
                            temperature=ctx.temperature, top_p=ctx.top_p)
  oracle = make_judge("oracle").score_groups(task, problems, groups.texts, ctx)
  return EvalRollouts(problems, groups.texts, rollout_ids(groups.rollouts.tokens, groups.rollouts.mask),
                      groups.rewards, first_wrong(oracle.scores, oracle.valid), groups.generated_tokens())


def score(judge: Judge, task: Task, ctx: JudgeContext, data: EvalRollouts) -> JudgeScores:
  """A prepared judge's scores of the held-out rollouts (their rewards and ids in the context)."""
  return judge.score_groups(task, data.problems, data.texts, ctx._replace(rewards=data.rewards, response_ids=data.ids))


def evaluate_judge(judge: Judge, task: Task, ctx: JudgeContext, data: EvalRollouts, *, bootstrap: int = 1000,
                   seed: int = 0, wrong_below: float = WRONG_BELOW, scored: JudgeScores | None = None
                   ) -> dict[str, Any]:
  """ProcessBench F1 of a prepared judge on `data` (module docstring) with 95% intervals and its scoring cost.

  `wrong_below`: a step is wrong where its score is below it (0.5). `scored`: the judge's scores of `data`
  when already computed (the same scores read with another threshold).
  """
  if isinstance(judge, TrainedJudge):
    raise ValueError(f"judge {judge.name!r} is trained: evaluate what its prepare(task, ctx) returns")
  n = len(data.problems)
  if scored is None:
    scored = score(judge, task, ctx, data)
  predicted = first_wrong(scored.scores, scored.valid, below=wrong_below)
  truth = data.truth
  g = truth.shape[1]
  flat_p, flat_t = predicted.reshape(-1), truth.reshape(-1)
  point = processbench(flat_p, flat_t)
  clusters = [np.arange(i * g, (i + 1) * g) for i in range(n)]
  ci = metric_cis(lambda idx: processbench(flat_p[idx], flat_t[idx]), clusters, METRICS, reps=bootstrap,
                  rng=np.random.default_rng([EVAL_NAMESPACE, seed]))
  return {"judge": judge.name, "wrong_below": wrong_below, "rollouts": int(flat_t.size), "prompts": n,
          "erroneous": int((flat_t >= 0).sum()), "error_free": int((flat_t < 0).sum()),
          **point, **{f"{m}_ci": list(ci[m]) for m in METRICS},
          "score_tokens": int(scored.tokens), "score_seconds": float(scored.seconds)}


def evaluate(s: JudgeSetup, *, prompts: int, rollouts: int, seed: int, bootstrap: int, progress: bool
             ) -> dict[str, Any]:
  """`tcred judge eval`: prepares the judge (training a trained kind if it is not cached) and scores it."""
  if isinstance(s.judge, TrainedJudge) and prompts > s.judge.exclude_prompts:
    raise ValueError(f"--prompts {prompts} exceeds judge.exclude_prompts={s.judge.exclude_prompts}: the judge "
                     "may have trained on some of those prompts; use fewer prompts or a larger judge.exclude_prompts")
  ctx = policy_context(s.cfg, s.task, seed=seed, progress=progress)
  t0 = time.time()
  info = None
  if isinstance(s.judge, TrainedJudge):
    trained = training_judges.train_judge(s.judge, s.task, ctx, resume=True)
    ready, info = trained.judge, trained.info
  else:
    ready = s.judge.prepare(s.task, ctx)
  prepare_s = time.time() - t0
  data = eval_rollouts(s.task, ctx, prompts=prompts, rollouts=rollouts, seed=seed)
  result = evaluate_judge(ready, s.task, ctx, data, bootstrap=bootstrap, seed=seed)
  result.update(task=s.task.name, settings=dataclasses.asdict(s.judge), prepare_seconds=prepare_s)
  if info is not None:
    result["training"] = {k: info[k] for k in ("labels", "data_tokens", "data_seconds", "train_tokens",
                                               "train_seconds") if k in info}
  return result

"""Training of the step judges: labelled data, a cache keyed by config, resumable training (DESIGN §4.6).

`prepare_trained` is what a trained judge's `prepare` calls: every caller that
builds a `JudgeContext` for judges that may be trained passes it
(`JudgeContext(..., prepare_trained=prepare_trained)`: the RL loop, `tcred
identify`, `tcred judge`). `TRAINERS` names each trained kind's `train` and
`load` functions (`prm` below, `generative` in `tcred.training.generative_judge`);
a kind defined outside tcred adds its own with `register_judge_trainer`.

What `prepare_trained(judge, task, ctx)` does:

  1. The judge's data: `labelled_rollouts` samples `judge.rollouts_per_prompt`
     rollouts of training prompts (seed namespace `JUDGE_NAMESPACE`, never a
     problem whose key (`Task.problem_key`) is one of the first
     `judge.exclude_prompts` held-out problems) from the policy of
     `ctx` (the base policy), computes their Monte-Carlo step values
     (`tcred.judges.mc.step_values`, `judge.continuations` continuations) and
     labels (`mc_labels`, `judge.label_rule()`), until `judge.labels` step labels;
     cached under `ctx.cache_dir/"judge-data"/<task>-<hash>` by the data settings,
     the task config, the policy (a digest of its parameters) and its sampling rule.
  2. The weights: `ctx.cache_dir/"judges"/<kind>-<hash>` by every judge setting and
     the same task and policy keys. A finished entry holds `trained.json` and is
     loaded; otherwise the kind's `train` runs there (it checkpoints every
     `judge.checkpoint_every` steps under `<entry>/checkpoints`; a killed training
     resumes from them) and `trained.json` records its cost: labels, tokens and
     seconds of the data and of the training.
"""

from __future__ import annotations

import dataclasses
import fcntl
import hashlib
import json
import pathlib
import time
from typing import Any, NamedTuple

import jax
import numpy as np
from flax import nnx
from tqdm.auto import tqdm

from tcred.judges.base import Judge, JudgeContext
from tcred.judges.labels import mc_labels
from tcred.judges.mc import step_values
from tcred.judges.prm import (PRM, PRMInit, PRMJudge, ReadyPRM, StepExamples, encode_steps, prm_batch, prm_optimizer,
                              prm_train_step)
from tcred.judges.trained import JudgeTrainer, LabelledRollouts, TrainedJudge, TrainJob, rollout_ids
from tcred.sampling.rollout import sample_and_score
from tcred.tasks.base import Task
from tcred.training.checkpoint import Checkpointer, leaf_digest
from tcred.training.config import config_hash
from tcred.training.data import held_out_keys, training_problems
from tcred.training.tracking import RunError, Tracker, atomic_path, write_json
from tcred.training import generative_judge

JUDGE_NAMESPACE = 0x1D9E  # seed namespace of the judges' training prompts, rollouts and continuations
PROMPTS_PER_BATCH = 16  # training prompts sampled at once while building a judge's data
TRAINED_FILE = "trained.json"  # written last: a finished cache entry
CHECKPOINTS = "checkpoints"  # where a kind's `train` keeps its resumable checkpoints
EXCLUSION = "held-out by problem key"  # in the data and judge cache keys: entries built when only held-out prompt
# strings were excluded (before issue 23) are never reused


def policy_digest(params: Any) -> str:
  """A short hash of a policy's parameters (every leaf's dtype, shape and bytes)."""
  h = hashlib.sha256()
  for leaf in jax.tree.leaves(params):
    h.update(leaf_digest(leaf).encode())
  return h.hexdigest()[:16]


def _policy_key(task: Task, ctx: JudgeContext) -> dict[str, Any]:
  """What the data depends on besides the judge's data settings."""
  return {"task": task.name, "task_config": repr(ctx.task_config), "policy": policy_digest(ctx.params),
          "temperature": ctx.temperature, "top_p": ctx.top_p}


def data_dir(judge: TrainedJudge, task: Task, ctx: JudgeContext) -> pathlib.Path:
  key = config_hash(judge.data_settings(), _policy_key(task, ctx), EXCLUSION)
  return pathlib.Path(ctx.cache_dir) / "judge-data" / f"{task.name}-{key}"


def judge_dir(judge: TrainedJudge, task: Task, ctx: JudgeContext) -> pathlib.Path:
  """The cache entry of a trained judge: `ctx.cache_dir/"judges"/<kind>-<hash of config>`."""
  key = config_hash(judge.name, judge.settings(), _policy_key(task, ctx), repr(ctx.model_config), EXCLUSION)
  return pathlib.Path(ctx.cache_dir) / "judges" / f"{judge.name}-{key}"


def _exclude(task: Task, judge: TrainedJudge) -> frozenset[str]:
  """The problem keys of the first `judge.exclude_prompts` held-out problems."""
  return held_out_keys(task, judge.exclude_prompts) if judge.exclude_prompts else frozenset()


def _batch_problems(task: Task, judge: TrainedJudge, step: int, exclude_keys: frozenset[str]):
  return training_problems(task, PROMPTS_PER_BATCH, namespace=JUDGE_NAMESPACE, seed=judge.data_seed, step=step,
                           exclude_keys=exclude_keys)


def labelled_rollouts(judge: TrainedJudge, task: Task, ctx: JudgeContext, *, progress: bool = False
                      ) -> LabelledRollouts:
  """The judge's training data (module docstring, 1), built once and then read from the cache."""
  directory = data_dir(judge, task, ctx)
  directory.mkdir(parents=True, exist_ok=True)
  with open(directory / ".lock", "w") as lock:
    fcntl.flock(lock, fcntl.LOCK_EX)
    if (directory / "data.json").exists():
      return _read_data(directory, judge, task)
    data, batches = _build_data(judge, task, ctx, progress=progress)
    lengths = np.array([len(x) for x in data.response_ids])
    ids = np.zeros((len(lengths), max(lengths)), np.int32)
    for n, x in enumerate(data.response_ids):
      ids[n, :len(x)] = x
    with atomic_path(directory / "data.npz") as tmp:
      np.savez(tmp, q=data.q, labels=data.labels, label_valid=data.label_valid, ids=ids, lengths=lengths)
    write_json(directory / "data.json", {
        "batches": batches, "prompts": [p.prompt for p in data.problems], "responses": data.responses,
        "tokens": data.tokens, "seconds": data.seconds, "settings": judge.data_settings(),
        **_policy_key(task, ctx)})
    return data


def _read_data(directory: pathlib.Path, judge: TrainedJudge, task: Task) -> LabelledRollouts:
  meta = json.loads((directory / "data.json").read_text())
  arrays = np.load(directory / "data.npz")
  exclude = _exclude(task, judge)
  by_prompt = {p.prompt: p for step in range(meta["batches"]) for p in _batch_problems(task, judge, step, exclude)}
  problems = [by_prompt[prompt] for prompt in meta["prompts"]]  # the problems are regenerated, not stored
  ids = [row[:n] for row, n in zip(arrays["ids"], arrays["lengths"])]
  return LabelledRollouts(problems, meta["responses"], ids, arrays["q"], arrays["labels"], arrays["label_valid"],
                          int(meta["tokens"]), float(meta["seconds"]))


def _build_data(judge: TrainedJudge, task: Task, ctx: JudgeContext, *, progress: bool
                ) -> tuple[LabelledRollouts, int]:
  t0 = time.time()
  exclude = _exclude(task, judge)
  rule = judge.label_rule()
  root = jax.random.fold_in(jax.random.key(judge.data_seed), JUDGE_NAMESPACE)
  problems, responses, ids, qs, labels = [], [], [], [], []
  count, tokens, step = 0, 0, 0
  bar = tqdm(total=judge.labels, desc=f"{judge.name} labels", disable=not progress, leave=False)
  while count < judge.labels:
    batch = _batch_problems(task, judge, step, exclude)
    k_roll, k_mc = jax.random.split(jax.random.fold_in(root, step))
    groups = sample_and_score(ctx.graphdef, ctx.params, task, batch, k_roll, group_size=judge.rollouts_per_prompt,
                              temperature=ctx.temperature, top_p=ctx.top_p)
    batch_ids = rollout_ids(groups.rollouts.tokens, groups.rollouts.mask)
    values = step_values(ctx.graphdef, ctx.params, task, batch, groups.texts, continuations=judge.continuations,
                         key=k_mc, temperature=ctx.temperature, top_p=ctx.top_p, rewards=groups.rewards,
                         response_ids=batch_ids)
    tokens += groups.generated_tokens() + int(values.tokens)
    for i, problem in enumerate(batch):
      for j, text in enumerate(groups.texts[i]):
        q = values.q[i, j][values.valid[i, j]]  # [K + 1]
        if len(q) < 2 or count >= judge.labels:
          continue  # a rollout without steps has no label
        y = mc_labels(q, rule)
        problems.append(problem)
        responses.append(text)
        ids.append(batch_ids[i][j])
        qs.append(q)
        labels.append(y)
        bar.update(min(len(y), judge.labels - count))
        count += len(y)
    step += 1
  bar.close()
  s = max(len(y) for y in labels)
  q_arr = np.full((len(qs), s + 1), np.nan)
  y_arr = np.zeros((len(qs), s), bool)
  keep = np.zeros((len(qs), s), bool)
  left = judge.labels
  for n, (q, y) in enumerate(zip(qs, labels)):
    q_arr[n, :len(q)] = q
    y_arr[n, :len(y)] = y
    keep[n, :min(len(y), left)] = True  # the last rollout keeps only the steps still needed
    left -= min(len(y), left)
  return LabelledRollouts(problems, responses, ids, q_arr, y_arr, keep, tokens, time.time() - t0), step


def checkpoint_steps(directory: pathlib.Path) -> list[int]:
  """Steps of the checkpoints a kind's `train` left under `directory/"checkpoints"`."""
  ckpt = directory / CHECKPOINTS
  return sorted(int(p.name) for p in ckpt.iterdir() if p.name.isdigit()) if ckpt.is_dir() else []


class TrainedInfo(NamedTuple):
  """A trained judge with its cache entry and what training it cost (`trained.json`)."""

  judge: Judge
  directory: pathlib.Path
  info: dict[str, Any]
  reused: bool


def train_judge(judge: TrainedJudge, task: Task, ctx: JudgeContext, *, resume: bool = True,
                log_root: pathlib.Path | None = None) -> TrainedInfo:
  """Loads the trained judge from its cache entry, or trains it there first (module docstring, 2).

  Args:
    resume: continue a training that was interrupted (its checkpoints are in the entry); False
      refuses with RunError when there is one (the CLI without --resume).
    log_root: metrics.jsonl and the TensorBoard scalars go to `log_root/<entry name>` (default:
      `<entry>/logs`).

  Raises:
    ValueError: no trainer is registered for the judge's kind (the message lists the trainable ones).
    RunError: an interrupted training and `resume=False`.
  """
  trainer = judge_trainer(judge.name)
  judge.check_task(task)
  directory = judge_dir(judge, task, ctx)
  directory.mkdir(parents=True, exist_ok=True)
  with open(directory / ".lock", "w") as lock:
    fcntl.flock(lock, fcntl.LOCK_EX)
    if (directory / TRAINED_FILE).exists():
      info = json.loads((directory / TRAINED_FILE).read_text())
      return TrainedInfo(trainer.load(judge, task, directory, ctx), directory, info, True)
    done = checkpoint_steps(directory)
    if done and not resume:
      raise RunError(f"{directory} holds an interrupted training of judge {judge.name!r} (checkpoint at step "
                     f"{done[-1]}); pass --resume to continue it")
    data = labelled_rollouts(judge, task, ctx, progress=ctx.progress)
    log_dir = pathlib.Path(log_root) / directory.name if log_root is not None else directory / "logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    tracker = Tracker(log_dir, resume_step=done[-1] if done else None)
    t0 = time.time()
    try:
      cost = trainer.train(TrainJob(judge, task, ctx, data, directory, tracker.log, ctx.progress))
    finally:
      tracker.close()
    info = {"kind": judge.name, "task": task.name, "settings": judge.settings(), **_policy_key(task, ctx),
            "labels": int(data.label_valid.sum()), "label_rollouts": len(data.responses),
            "good_fraction": float(data.labels[data.label_valid].mean()),
            "data_tokens": data.tokens, "data_seconds": data.seconds,
            "train_seconds": time.time() - t0, "resumed_from": done[-1] if done else 0,
            **{f"train_{k}" if k == "tokens" else k: v for k, v in cost.items()}}
    write_json(directory / TRAINED_FILE, info)
    return TrainedInfo(trainer.load(judge, task, directory, ctx), directory, info, False)


def prepare_trained(judge: TrainedJudge, task: Task, ctx: JudgeContext) -> Judge:
  """`TrainedJudge.prepare` (as `JudgeContext.prepare_trained`): `train_judge` resuming any interrupted
  training."""
  return train_judge(judge, task, ctx, resume=True).judge


# ---- the prm kind -------------------------------------------------------------------------------------------

def _prm_examples(data: LabelledRollouts, task: Task) -> StepExamples:
  tokens, valid, step_pos, step_valid = encode_steps(task, data.problems, data.responses, data.response_ids,
                                                     width=data.labels.shape[1])
  if not np.array_equal(step_valid, ~np.isnan(data.q[:, 1:])):
    raise ValueError("the PRM's step positions disagree with the labelled steps (task.step_ends changed?)")
  return StepExamples(tokens, valid, step_pos, data.labels, data.label_valid)


def _new_prm(judge: PRMJudge, ctx: JudgeContext) -> PRM:
  return PRM(judge.model_config(ctx.model_config), rngs=nnx.Rngs(judge.seed))


def _start_from_policy(model: PRM, params) -> None:
  """Copies the policy's decoder weights into the PRM's trunk (every leaf they share: all but the LM head)."""
  policy = dict(nnx.to_flat_state(params))
  trunk = nnx.to_flat_state(nnx.state(model.trunk))
  nnx.update(model.trunk, nnx.from_flat_state([(path, policy.get(path, var)) for path, var in trunk]))


def _prm_state(model: PRM, optimizer) -> dict[str, Any]:
  return {"model": nnx.state(model), "optimizer": nnx.state(optimizer)}


def _set_prm_state(model: PRM, optimizer, state: dict[str, Any]) -> None:
  nnx.update(model, state["model"])
  nnx.update(optimizer, state["optimizer"])


def _train_prm(job: TrainJob) -> dict[str, float]:
  """The prm kind's `train`: `prm_train_step` on `prm_batch` batches, checkpointed and resumable."""
  judge, config = job.judge, job.judge.train_config()
  examples = _prm_examples(job.data, job.task)
  model = _new_prm(judge, job.ctx)
  if PRMInit.parse(judge.init, field="judge.init") is PRMInit.POLICY:
    _start_from_policy(model, job.ctx.params)
  optimizer = prm_optimizer(model, config)
  ckpt = Checkpointer(job.directory / CHECKPOINTS, max_to_keep=2)
  try:
    start = 0
    if ckpt.steps():
      start, state, _ = ckpt.restore_latest(_prm_state(model, optimizer), quarantine=True)
      _set_prm_state(model, optimizer, state)
    width = examples.tokens.shape[1]
    bar = tqdm(range(start, config.steps), initial=start, total=config.steps, desc=f"judge {judge.name}",
               disable=not job.progress, leave=False)
    for step in bar:
      loss, accuracy = prm_train_step(model, optimizer, prm_batch(examples, config, seed=judge.seed, step=step),
                                      config.balance)
      done = step + 1
      job.log(done, {"judge/loss": float(loss), "judge/accuracy": float(accuracy)})
      bar.set_postfix(loss=f"{float(loss):.3f}")
      if done % judge.checkpoint_every == 0 or done == config.steps:
        ckpt.save(done, _prm_state(model, optimizer), {"step": done})
  finally:
    ckpt.close()
  return {"tokens": config.steps * min(config.batch_size, len(examples.tokens)) * width,
          "prior": float(job.data.labels[job.data.label_valid].mean())}


def _load_prm(judge: PRMJudge, task: Task, directory: pathlib.Path, ctx: JudgeContext) -> ReadyPRM:
  del task
  info = json.loads((directory / TRAINED_FILE).read_text())
  model = _new_prm(judge, ctx)
  optimizer = prm_optimizer(model, judge.train_config())
  ckpt = Checkpointer(directory / CHECKPOINTS, max_to_keep=2)
  try:
    state, _ = ckpt.restore(judge.steps, _prm_state(model, optimizer))
  finally:
    ckpt.close()
  _set_prm_state(model, optimizer, state)
  return ReadyPRM(settings=judge, model=model, prior_score=float(info["prior"]))



# ---- the trained kinds ----------------------------------------------------------------------------------------

TRAINERS: dict[str, JudgeTrainer] = {
    "prm": JudgeTrainer(train=_train_prm, load=_load_prm),
    "generative": JudgeTrainer(train=generative_judge.train, load=generative_judge.load),
}
"""Each trained judge kind's training and loading functions (`JudgeTrainer`), by judge name."""


def register_judge_trainer(name: str, trainer: JudgeTrainer) -> JudgeTrainer:
  """Adds the training and loading functions of a trained judge kind defined outside tcred to `TRAINERS`."""
  if name in TRAINERS:
    raise ValueError(f"judge {name!r} already has a trainer")
  if not isinstance(trainer, JudgeTrainer):
    raise TypeError(f"register_judge_trainer({name!r}, ...) needs a JudgeTrainer, got {type(trainer).__name__}")
  TRAINERS[name] = trainer
  return trainer


def trainable_judges() -> list[str]:
  """The judge kinds with a trainer."""
  return sorted(TRAINERS)


def judge_trainer(name: str) -> JudgeTrainer:
  if name not in TRAINERS:
    raise ValueError(f"judge {name!r} is not trained (no trainer); trainable judges: {trainable_judges()}")
  return TRAINERS[name]

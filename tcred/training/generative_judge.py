"""Training of the generative step judge by tcred's own SFT and GRPO pipeline (DESIGN §4.6).

The judge's data (`LabelledRollouts`, Monte-Carlo labelled steps of a policy's
rollouts, built by the trained-judge orchestrator) becomes the derived
step-judge task (`tcred.tasks.step_judge.StepJudge`): a problem per labelled
step, the teacher's analysis followed by the label's verdict as its
demonstration, reward 1 when the verdict matches the label, classes balanced
by sampling. Training is then the base-policy recipe of the policies:

  1. SFT (`sft_train_step` on `encode_demonstrations` batches of the task),
     `judge.sft_steps` steps: the judge learns to write the analysis and verdict;
  2. GRPO (`sample_and_score` groups of `judge.grpo_group` analyses per judged
     step, `rl_train_step` with the `outcome` credit in GRPO mode and the default
     PPO-clip loss), `judge.grpo_steps` steps: the verdict-correctness reward
     (StepWiser, arXiv 2508.19229).

Why not a registered task and `tcred run`: the examples come from a policy's
rollouts and their labels (not from a task config), and `run_experiment`'s
held-out pass@k evaluations, base-policy cache and run layout are a policy's;
the judge reuses the pipeline's steps and keeps its own cache entry.

Files under the cache entry (`job.directory`): `checkpoints/<step>` (the
resumable train state every `judge.checkpoint_every` steps; steps
1..sft_steps are SFT, later ones GRPO), `weights-sft/` (the judge after SFT,
where GRPO starts with a fresh optimizer), `weights/` (the final judge) and
`judge.json` (its model config, response budget, prior and training record). `train` and `load` are the
`generative` entry of `tcred.training.judges.TRAINERS`.

Shapes: B judged steps per GRPO step, G analyses each, L SFT sequence length.
"""

from __future__ import annotations

import dataclasses
import json
import pathlib
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from tqdm.auto import tqdm

from tcred.credit import make_credit
from tcred.judges.generative import GenerativeJudge, LoadedGenerativeJudge, examples_from_rollouts, first_step_prior
from tcred.judges.trained import TrainJob
from tcred.losses.pg import LossConfig
from tcred.models.config import ModelConfig
from tcred.models.decoder import Decoder
from tcred.sampling.rollout import sample_and_score
from tcred.tasks.base import Task
from tcred.tasks.step_judge import StepJudge, parse_verdict
from tcred.training.checkpoint import Checkpointer
from tcred.training.data import RL_NAMESPACE, SFT_NAMESPACE, encode_demonstrations, training_problems
from tcred.training.optim import adamw
from tcred.training.restore import new_train_state
from tcred.training.step import Batch, TrainState, rl_train_step, sft_train_step
from tcred.training.tracking import write_json

INFO_FILE = "judge.json"
CHECKPOINTS = "checkpoints"  # resumable train states (the name `tcred.training.judges` looks for)
_GRPO = make_credit("outcome", mode="grpo")
_LOSS = LossConfig()


def judge_task(judge: GenerativeJudge, task: Task, data) -> StepJudge:
  """The derived step-judge task of `data`'s labelled steps."""
  return StepJudge(examples_from_rollouts(task, data), verdicts=judge.verdicts)


def _optimizers(judge: GenerativeJudge):
  sft = adamw(judge.sft_lr, warmup=min(20, judge.sft_steps), weight_decay=0.0, max_grad_norm=1.0)
  rl = adamw(judge.grpo_lr, warmup=0, weight_decay=0.0, max_grad_norm=1.0)
  return sft, rl


def _has_weights(directory: pathlib.Path) -> bool:
  return (directory / "0").is_dir()


def _restore(directory: pathlib.Path, template) -> tuple[Any, dict[str, Any]]:
  ckpt = Checkpointer(directory, max_to_keep=1)
  try:
    return ckpt.restore(0, template)
  finally:
    ckpt.close()


def _save_weights(directory: pathlib.Path, params, meta: dict[str, Any]) -> None:
  ckpt = Checkpointer(directory, max_to_keep=1)
  try:
    if ckpt.steps():  # written by an earlier (interrupted or repeated) call from the same checkpoint
      return
    if not ckpt.save(0, params, meta):
      raise RuntimeError(f"the generative judge's weights are not finite; nothing was written to {directory}")
  finally:
    ckpt.close()


def train(job: TrainJob) -> dict[str, float]:
  """SFT then GRPO of the judge of `job` (module docstring); resumes from its checkpoints, or from the SFT
  weights when SFT ended after the last checkpoint, and returns at once when the final weights exist."""
  judge: GenerativeJudge = job.judge
  judge.check_task(job.task)
  jtask = judge_task(judge, job.task, job.data)
  width = jtask.prompt_width + jtask.max_response_len
  config = judge.model_config(getattr(job.ctx, "model_config", None), width)
  graphdef, params = nnx.split(Decoder(config, rngs=nnx.Rngs(judge.seed)))
  tx_sft, tx_rl = _optimizers(judge)
  total = judge.sft_steps + judge.grpo_steps
  info_path = job.directory / INFO_FILE
  if info_path.exists() and _has_weights(job.directory / "weights"):  # trained before
    return {"tokens": json.loads(info_path.read_text())["tokens"]}
  ckpt = Checkpointer(job.directory / CHECKPOINTS, max_to_keep=1)
  state, done, tokens = new_train_state(params, tx_sft), 0, 0
  if ckpt.steps():
    done = ckpt.steps()[-1]
    template = new_train_state(params, tx_sft if done <= judge.sft_steps else tx_rl)
    state, counters = ckpt.restore(done, template)
    tokens = int(counters.get("tokens", 0))
  if done < judge.sft_steps and _has_weights(job.directory / "weights-sft"):  # SFT ended after the checkpoint
    restored, meta = _restore(job.directory / "weights-sft", params)
    state, done, tokens = new_train_state(restored, tx_rl), judge.sft_steps, int(meta["tokens"])
  good, bad = jtask.class_counts
  bar = tqdm(range(done, total), initial=done, total=total, desc=f"judge generative {job.task.name}",
             disable=not job.progress, leave=False)
  try:
    for step in bar:
      if step < judge.sft_steps:
        # Nothing to exclude here: every judged step comes from the judge's data, whose problems already
        # leave out the base task's held-out keys (`tcred.training.judges`).
        problems = training_problems(jtask, judge.sft_batch_size, namespace=SFT_NAMESPACE, seed=judge.seed,
                                     step=step, exclude_keys=frozenset())
        seq, valid, loss_mask = encode_demonstrations(jtask, problems, [p.solution for p in problems])
        state, m = sft_train_step(state, seq, valid, loss_mask, graphdef=graphdef, tx=tx_sft)
        tokens += int(valid.sum())
        row = {"judge/sft_loss": float(m["sft/loss"])}
      else:
        if step == judge.sft_steps:  # GRPO starts from the SFT judge with a fresh optimizer
          state = new_train_state(state.params, tx_rl)
        state, row, used = _grpo_step(judge, jtask, graphdef, state, step)
        tokens += used
      done = step + 1
      job.log(done, {**row, "judge/tokens": tokens})
      bar.set_postfix({k.split("/")[-1]: f"{v:.3f}" for k, v in row.items()})
      if done == judge.sft_steps:
        _save_weights(job.directory / "weights-sft", state.params, {"step": done, "tokens": tokens})
      elif done % judge.checkpoint_every == 0 and done < total:
        ckpt.save(done, state, {"tokens": tokens})
  finally:
    bar.close()
    ckpt.close()
  _save_weights(job.directory / "weights", state.params, {"step": total})
  info = {"model": dataclasses.asdict(config), "max_new_tokens": jtask.max_response_len,
          "prior": first_step_prior(job.data), "examples": len(jtask.examples), "good": good, "bad": bad,
          "sft_steps": judge.sft_steps, "grpo_steps": judge.grpo_steps, "tokens": tokens}
  write_json(info_path, info)
  return {"tokens": tokens}


def _grpo_step(judge: GenerativeJudge, jtask: StepJudge, graphdef, state: TrainState, step: int):
  """One GRPO step: G analyses of each of B judged steps, reward = the verdict is the label."""
  problems = training_problems(jtask, judge.grpo_prompts, namespace=RL_NAMESPACE, seed=judge.seed, step=step,
                               exclude_keys=frozenset())  # judged steps of the judge's data (see `train`)
  key = jax.random.fold_in(jax.random.key(judge.seed), step)
  groups = sample_and_score(graphdef, state.params, jtask, problems, key, group_size=judge.grpo_group,
                            temperature=1.0)
  r = groups.rollouts
  batch = Batch(prompt=jnp.asarray(groups.prompt), prompt_valid=jnp.asarray(groups.prompt_valid),
                response=jnp.asarray(r.tokens), mask=jnp.asarray(r.mask), old_logp=jnp.asarray(r.logp),
                rewards=jnp.asarray(groups.rewards), group_valid=jnp.ones(len(problems), bool), extras={})
  _, tx_rl = _optimizers(judge)
  state, m = rl_train_step(state, batch, None, graphdef=graphdef, tx=tx_rl, credit=_GRPO, loss_config=_LOSS,
                           temperature=1.0)
  given = np.mean([parse_verdict(t) is not None for row in groups.texts for t in row])
  row = {"judge/grpo_reward": float(groups.rewards.mean()), "judge/grpo_verdict_given": float(given),
         "judge/grpo_loss": float(m["loss/total"])}
  used = groups.generated_tokens() + int(groups.prompt_valid.sum()) * judge.grpo_group
  return state, row, used


def load_weights(directory: pathlib.Path, *, which: str = "weights") -> tuple[nnx.GraphDef, Any, dict[str, Any]]:
  """`(graphdef, params, info)` of a trained judge under `directory` (`which`: "weights" or "weights-sft")."""
  info = json.loads((directory / INFO_FILE).read_text())
  graphdef, template = nnx.split(Decoder(ModelConfig(**info["model"]), rngs=nnx.Rngs(0)))
  params, _ = _restore(directory / which, template)
  return graphdef, params, info


def load(judge: GenerativeJudge, task: Task, directory: pathlib.Path, ctx=None, *,
         which: str = "weights") -> LoadedGenerativeJudge:
  """The trained judge under `directory`, ready to score `task`."""
  del ctx
  judge.check_task(task)
  graphdef, params, info = load_weights(pathlib.Path(directory), which=which)
  return LoadedGenerativeJudge(settings=judge, graphdef=graphdef, params=params,
                               max_new_tokens=int(info["max_new_tokens"]), prior_score=float(info["prior"]))

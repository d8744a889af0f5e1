"""The base policy of a task: SFT on noisy demonstrations, cached by config hash."""

from __future__ import annotations

import fcntl
import json
import os
import pathlib
import time

import jax.numpy as jnp
import numpy as np
from flax import nnx
from tqdm.auto import tqdm

from tcred.models.config import ModelConfig
from tcred.models.decoder import Decoder
from tcred.tasks.base import Task
from tcred.training.checkpoint import Checkpointer
from tcred.training.config import SFTConfig, config_hash
from tcred.training.optim import adamw
from tcred.training.data import SFT_NAMESPACE, encode_demonstrations, eval_problems, training_problems
from tcred.training.step import TrainState, sft_train_step


def cache_root() -> pathlib.Path:
  """`$TCRED_CACHE`, else `~/.cache/tcred`."""
  return pathlib.Path(os.environ.get("TCRED_CACHE", pathlib.Path.home() / ".cache" / "tcred"))


def base_policy_dir(model_config: ModelConfig, task_name: str, task_config, sft: SFTConfig) -> pathlib.Path:
  """Cache directory of a base policy: `$TCRED_CACHE/base/<task>-<hash of model, task, sft configs>`."""
  return cache_root() / "base" / f"{task_name}-{config_hash(model_config, task_name, task_config, sft)}"


def base_policy(model_config: ModelConfig, task: Task, task_config, sft: SFTConfig, *,
                eval_prompts: int, progress: bool = True) -> tuple[nnx.GraphDef, nnx.State, pathlib.Path]:
  """Returns the SFT base policy `(graphdef, params, cache_dir)`, training it if not cached."""
  directory = base_policy_dir(model_config, task.name, task_config, sft)
  directory.mkdir(parents=True, exist_ok=True)
  model = Decoder(model_config, rngs=nnx.Rngs(sft.seed))
  graphdef, params = nnx.split(model)
  # One process builds a base policy; others wait for it and then load it.
  with open(directory / ".lock", "w") as lock:
    fcntl.flock(lock, fcntl.LOCK_EX)
    return graphdef, _load_or_train(graphdef, params, directory, task, task_config, sft, eval_prompts=eval_prompts,
                                    progress=progress), directory


def _load_or_train(graphdef, params, directory: pathlib.Path, task: Task, task_config, sft: SFTConfig, *,
                   eval_prompts: int, progress: bool) -> nnx.State:
  ckpt = Checkpointer(directory / "params", max_to_keep=1)
  try:
    if ckpt.steps():
      _, params, _ = ckpt.restore_latest(params)
      return params
    exclude = frozenset(p.prompt for p in eval_problems(task, eval_prompts))
    tx = adamw(sft.lr, warmup=sft.warmup, weight_decay=sft.weight_decay, max_grad_norm=1.0)
    state = TrainState(params, tx.init(params), jnp.int32(0))
    t0 = time.time()
    losses = []
    bar = tqdm(range(sft.steps), desc=f"sft {task.name}", disable=not progress, leave=False)
    for step in bar:
      problems = training_problems(task, sft.batch_size, namespace=SFT_NAMESPACE, seed=sft.seed, step=step,
                                   exclude=exclude)
      rng = np.random.default_rng([SFT_NAMESPACE, sft.seed, step, 1])
      demos = [task.demonstration(p, rng) for p in problems]
      tokens, valid, loss_mask = encode_demonstrations(task, problems, demos)
      state, metrics = sft_train_step(state, tokens, valid, loss_mask, graphdef=graphdef, tx=tx)
      if step % 50 == 0 or step == sft.steps - 1:
        losses.append((step, float(metrics["sft/loss"])))
        bar.set_postfix(loss=f"{losses[-1][1]:.3f}")
    ckpt.save(sft.steps, state.params, {"sft_losses": losses, "wall_s": time.time() - t0})
    (directory / "info.json").write_text(json.dumps({
        "task": task.name, "task_config": repr(task_config), "sft_wall_s": time.time() - t0,
        "sft_losses": losses}, indent=1))
    return state.params
  finally:
    ckpt.close()

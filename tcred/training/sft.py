"""The base policy of a task: SFT on noisy demonstrations, cached by config hash.

A base policy never saw a held-out problem of the run that uses it, in any form: SFT leaves out every
problem whose key (`Task.problem_key`) is one of the first `held_out` problems of `eval_problems` (a
prefix of the same sequence for every count), and the cache key holds that count, so a run evaluating
on more prompts gets its own base policy. The excluded keys' hash is recorded beside the weights and
checked on every reuse.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import pathlib
import sys
import time

import jax.numpy as jnp
import numpy as np
from flax import nnx
from tqdm.auto import tqdm

from tcred.models.config import ModelConfig
from tcred.parallel.distributed import barrier, is_primary
from tcred.models.decoder import Decoder
from tcred.tasks.base import Task
from tcred.training.checkpoint import Checkpointer
from tcred.training.config import SFTConfig, config_hash
from tcred.training.optim import adamw
from tcred.training.data import SFT_NAMESPACE, encode_demonstrations, eval_problems, training_problems
from tcred.training.step import TrainState, sft_train_step
from tcred.training.tracking import write_json

HELD_OUT_FILE = "held_out.json"  # written before SFT starts: which problem keys it excluded


class BasePolicyError(RuntimeError):
  """A base policy cannot be built or reused (non-finite SFT result, cache built for other prompts)."""


def _say(message: str) -> None:
  print(message, file=sys.stderr, flush=True)


def cache_root() -> pathlib.Path:
  """`$TCRED_CACHE`, else `~/.cache/tcred`."""
  return pathlib.Path(os.environ.get("TCRED_CACHE", pathlib.Path.home() / ".cache" / "tcred"))


def base_policy_dir(model_config: ModelConfig, task_name: str, task_config, sft: SFTConfig, *,
                    held_out: int) -> pathlib.Path:
  """Cache directory of a base policy: `$TCRED_CACHE/base/<task>-<hash of model, task, sft configs>-heldout<N>-bykey`,
  N the number of held-out problems SFT excluded (`RLConfig.held_out_prompts` of the run), by problem key
  (`-bykey`: base policies that excluded held-out prompt strings only live under the old names, never reused)."""
  key = config_hash(model_config, task_name, task_config, sft)
  return cache_root() / "base" / f"{task_name}-{key}-heldout{held_out}-bykey"


def held_out_record(keys: list[str]) -> dict:
  """What a base policy records about the held-out problems SFT excluded: their count, their problem keys
  (`Task.problem_key`, in `eval_problems` order) and a hash of them."""
  return {"held_out_prompts": len(keys),
          "held_out_keys_sha256": hashlib.sha256(json.dumps(keys).encode()).hexdigest(), "held_out_keys": list(keys)}


def require_vocab(model_config: ModelConfig, task: Task) -> None:
  """Raises ValueError unless the model's vocabulary holds every token id of the task's tokenizer
  (smaller, the embedding lookup of a task character reads past the table: non-finite states)."""
  need = task.tokenizer.vocab_size
  if model_config.vocab_size < need:
    kind = "character tokenizer" if task.tokenizer.name == "char" else f"tokenizer ({task.tokenizer.name})"
    raise ValueError(f"model.vocab_size={model_config.vocab_size} is smaller than task {task.name}'s need: its "
                     f"{kind} uses token ids 0..{need - 1}; set model.vocab_size >= {need}")


def base_policy(model_config: ModelConfig, task: Task, task_config, sft: SFTConfig, *,
                eval_prompts: int, progress: bool = True, log_lines: bool = False
                ) -> tuple[nnx.GraphDef, nnx.State, pathlib.Path]:
  """Returns the SFT base policy `(graphdef, params, cache_dir)`, training it if not cached.

  `eval_prompts`: the held-out prompts of the run (SFT never sees them). `progress`: a progress bar
  (for a terminal); `log_lines`: a line on stderr when SFT starts and every ~5% of its steps instead
  (for logs: SFT of a full base policy takes minutes to tens of minutes on a CPU).

  Raises:
    ValueError: the model's vocabulary is too small for the task.
    BasePolicyError: SFT produced non-finite parameters (nothing is cached), or the cached policy's
      record of excluded held-out problem keys differs from this run's.
  """
  require_vocab(model_config, task)
  directory = base_policy_dir(model_config, task.name, task_config, sft, held_out=eval_prompts)
  directory.mkdir(parents=True, exist_ok=True)
  model = Decoder(model_config, rngs=nnx.Rngs(sft.seed))
  graphdef, params = nnx.split(model)
  # One process builds a base policy; others wait for it and then load it. The processes of one run across
  # hosts (tcred.parallel.distributed): process 0 builds it, the others load it after a barrier.
  primary, meeting = is_primary(), f"tcred base policy {directory.name}"
  if not primary:
    barrier(meeting)
  with open(directory / ".lock", "w") as lock:
    fcntl.flock(lock, fcntl.LOCK_EX)
    params = _load_or_train(graphdef, params, directory, task, task_config, sft, eval_prompts=eval_prompts,
                            progress=progress, train=primary, log_lines=log_lines)
  if primary:
    barrier(meeting)
  return graphdef, params, directory


def _load_or_train(graphdef, params, directory: pathlib.Path, task: Task, task_config, sft: SFTConfig, *,
                   eval_prompts: int, progress: bool, train: bool = True, log_lines: bool = False) -> nnx.State:
  held_out = [task.problem_key(p) for p in eval_problems(task, eval_prompts)]
  record = held_out_record(held_out)
  record_path = directory / HELD_OUT_FILE
  ckpt = Checkpointer(directory / "params", max_to_keep=1, local=True)  # each process loads (or trains) it
  try:
    if ckpt.steps():
      found = json.loads(record_path.read_text()) if record_path.exists() else None
      if found != record:
        brief = lambda r: {k: v for k, v in r.items() if k != "held_out_keys"} if isinstance(r, dict) else r
        raise BasePolicyError(f"the cached base policy {directory} does not record the held-out problem keys this "
                              f"run excludes ({record_path}: {brief(found)}, wanted {brief(record)}); remove the "
                              "directory to rebuild it")
      _, params, _ = ckpt.restore_latest(params)
      return params
    if not train:
      raise BasePolicyError(f"process 0 of this run built no base policy in {directory} that this process can "
                            "see: TCRED_CACHE must be on a file system every process of the run sees")
    write_json(record_path, record)
    exclude_keys = frozenset(held_out)
    tx = adamw(sft.lr, warmup=sft.warmup, weight_decay=sft.weight_decay, max_grad_norm=1.0)
    state = TrainState(params, tx.init(params), jnp.int32(0))
    t0 = time.time()
    losses = []
    bar = tqdm(range(sft.steps), desc=f"sft {task.name}", disable=not progress, leave=False)
    every = max(1, sft.steps // 20)  # ~5% of the steps, as the RL loop's lines
    if log_lines:
      _say(f"tcred: training the {task.name} base policy: {sft.steps} SFT steps (cached in {directory})")
    for step in bar:
      problems = training_problems(task, sft.batch_size, namespace=SFT_NAMESPACE, seed=sft.seed, step=step,
                                   exclude_keys=exclude_keys)
      rng = np.random.default_rng([SFT_NAMESPACE, sft.seed, step, 1])
      demos = [task.demonstration(p, rng) for p in problems]
      tokens, valid, loss_mask = encode_demonstrations(task, problems, demos)
      state, metrics = sft_train_step(state, tokens, valid, loss_mask, graphdef=graphdef, tx=tx)
      if step % 50 == 0 or step == sft.steps - 1:
        losses.append((step, float(metrics["sft/loss"])))
        bar.set_postfix(loss=f"{losses[-1][1]:.3f}")
      if log_lines and ((step + 1) % every == 0 or step == sft.steps - 1):
        _say(f"tcred: sft {task.name}: step {step + 1}/{sft.steps}, loss {float(metrics['sft/loss']):.3f}, "
             f"{time.time() - t0:.0f} s")
    if not ckpt.save(sft.steps, state.params, {"sft_losses": losses, "wall_s": time.time() - t0}):
      raise BasePolicyError(f"SFT of the {task.name} base policy ended with non-finite parameters (last losses "
                            f"{losses[-3:]}); nothing was cached and RL does not start; try a smaller sft.lr")
    write_json(directory / "info.json", {
        "task": task.name, "task_config": repr(task_config), **record, "sft_wall_s": time.time() - t0,
        "sft_losses": losses})
    return state.params
  finally:
    ckpt.close()

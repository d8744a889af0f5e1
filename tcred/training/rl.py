"""The RL loop: sample groups, score them, one jitted train step per batch.

`run_experiment(cfg, seed=..., out=..., resume=...)` writes the DESIGN §2 layout:
`out/NAME/seed-S/{config.json, metrics.jsonl, summary.json, events..., checkpoints/}`, plus the
`started` marker once a step is done (until then a rerun reuses the directory without --resume).
Every random draw is a pure function of (seed, step), so a resumed run repeats
the uninterrupted run's metrics exactly (timings aside).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import pathlib
import sys
import time
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from tqdm.auto import tqdm

from tcred.credit.extras import compute_extras, extras_plan, extras_token_count, validate_extras
from tcred.training import record as explore_record
from tcred.judges.base import JudgeContext
from tcred.parallel.distributed import barrier, is_primary, to_host
from tcred.parallel.mesh import check_batch, layout_for
from tcred.runtime import StopRequest, Stopped, stop_signals
from tcred.sampling.passk import evaluate
from tcred.sampling.rollout import (Groups, encode_answers, encode_solutions, sample_and_score,
                                    sample_trees_and_score)
from tcred.models.config import ModelConfig
from tcred.tasks.base import Problem, Task
from tcred.tasks.registry import make_task_from_config
from tcred.training.checkpoint import CheckpointError, Checkpointer, disk_full
from tcred.training.config import ExperimentConfig, config_diff, config_hash, normalised_config, run_config_hash
from tcred.training.data import HOST_NAMESPACE, RL_NAMESPACE, SFT_NAMESPACE, eval_problems, training_problems
from tcred.training.judges import prepare_trained
from tcred.training.packing import pack_trees
from tcred.training.pretrained import PLACEHOLDER, CheckpointInputError, pretrained_policy, resolve_model
from tcred.training.restore import new_train_state, restore_train_state, rl_optimizer
from tcred.training.sft import base_policy, cache_root, require_vocab
from tcred.training.step import Batch, rl_train_step
from tcred.training.tracking import NoTracker, RunError, RunLock, Tracker, check_writable_dir, write_json
from tcred.validation import require_seed

log = logging.getLogger(__name__)


class NonFiniteError(RuntimeError):
  """Too many non-finite updates in a row."""


def run_dir_of(out: str | pathlib.Path, name: str, seed: int) -> pathlib.Path:
  return pathlib.Path(out) / name / f"seed-{seed}"


@contextlib.contextmanager
def _announced(on: bool, what: str, rl):
  """A line on stderr before and after a final evaluation (they take minutes on a CPU)."""
  t0 = time.time()
  if on:
    _say(f"tcred: evaluating the {what} on {rl.final_eval_prompts} held-out prompts x {rl.final_eval_samples} "
         "samples (+ greedy)")
  yield
  if on:
    _say(f"tcred: evaluated the {what} in {time.time() - t0:.0f} s")


def _base_eval(graphdef, params, task: Task, problems: list[Problem], cfg: ExperimentConfig,
               cache_dir: pathlib.Path, *, announce: bool = False) -> dict[str, float]:
  """Held-out evaluation of the base policy, cached beside it (same for every seed)."""
  rl = cfg.rl
  path = cache_dir / f"eval-{config_hash(len(problems), rl.final_eval_samples, rl.temperature)}.json"
  if path.exists():
    return json.loads(path.read_text())
  with _announced(announce, "base policy", rl):
    result = evaluate(graphdef, params, task, problems, jax.random.key(0xE7A1), samples=rl.final_eval_samples,
                      temperature=rl.temperature)
  write_json(path, result)  # processes sharing the cache: whole files
  return result


class Chunk(NamedTuple):
  """One sampled batch of prompts with its rewards and extra signals (host arrays)."""

  groups: Groups
  problems: list[Problem]
  extras: dict[str, np.ndarray]
  extras_s: float = 0.0  # wall seconds of `compute_extras` for this chunk (0 without extras)
  extras_tokens: int = 0  # token positions it ran through the model (`extras_token_count`)
  host_s: float = 0.0  # wall seconds of the credit method's `host_extras` (e.g. a step judge)
  host_tokens: int = 0  # token positions it processed or generated


def _sample_chunk(graphdef, params, task: Task, problems: list[Problem], key: jax.Array,
                  cfg: ExperimentConfig, base_params=None) -> Chunk:
  rl = cfg.rl
  if cfg.tree.enabled:
    host_rng = np.random.default_rng(np.asarray(jax.random.key_data(key)))  # fork choices: f(seed, step)
    groups = sample_trees_and_score(graphdef, params, task, problems, key, host_rng, tree=cfg.tree,
                                    temperature=rl.temperature, top_p=rl.top_p)
  else:
    groups = sample_and_score(graphdef, params, task, problems, key, group_size=rl.group_size,
                              temperature=rl.temperature, top_p=rl.top_p, layout=layout_for(cfg.mesh))
  names = validate_extras(cfg.credit.needs_extras)
  if names and extras_plan(names).answer_scoring and "info_gain" not in names:
    # The scoring pass DRO's ref_logp / ref_std run gives the answer information gain for a sum (no model
    # tokens more): kept for the credit explorer's σ lane (`tcred.training.record.method_signals`).
    names = validate_extras((*names, "info_gain"))
  extras, extras_s, extras_tokens = {}, 0.0, 0
  if names:
    answer, answer_valid = encode_answers(task, problems)
    solution, solution_valid = encode_solutions(task, problems)
    r = groups.rollouts
    t0 = time.time()
    extras = to_host(compute_extras(
        graphdef, params, groups.prompt, groups.prompt_valid, r.tokens, r.mask, answer, answer_valid,
        solution, solution_valid, names=names, temperature=rl.temperature,
        cue_id=task.tokenizer.cue_id(task.answer_cue), mi=cfg.credit.mi_inputs(),
        ref_params=base_params if extras_plan(names).reference_forward else None))  # Δlog p: the run's base
    extras_s = time.time() - t0
    extras_tokens = extras_token_count(names, batch=r.tokens.shape[0], group=r.tokens.shape[1],
                                       prompt_len=groups.prompt.shape[1], response_len=r.tokens.shape[2],
                                       answer_len=answer.shape[1], solution_len=solution.shape[1],
                                       mi=cfg.credit.mi_inputs())
  ctx = JudgeContext(graphdef, params, jax.random.fold_in(key, HOST_NAMESPACE), rl.temperature, rl.top_p,
                     cache_dir=cache_root(), task_config=cfg.task_config, model_config=cfg.model,
                     base_params=base_params, prepare_trained=prepare_trained)
  host = cfg.credit.host_extras(task, problems, groups, ctx)
  extras = {**extras, **host.arrays}
  return Chunk(groups, list(problems), extras, extras_s, extras_tokens, host.seconds, host.tokens)


def _collect(graphdef, params, task: Task, cfg: ExperimentConfig, *, seed: int, step: int,
             exclude_keys: frozenset[str], key: jax.Array, base_params=None) -> tuple[Chunk, np.ndarray, list[Chunk]]:
  """Samples one batch of B groups.

  With a group filter (DAPO dynamic sampling: drop all-equal groups; or the credit
  method's own, e.g. DRO's σ filter), dropped groups are refilled from new prompts
  for up to `rl.max_refill_rounds` extra rounds; if still short, dropped groups fill
  the batch with `group_valid = False` (weight 0).

  Returns (batch chunk, group_valid [B], every chunk generated, refills included).
  """
  rl = cfg.rl
  b = rl.prompts_per_step

  def keep_of(chunk: Chunk) -> np.ndarray | None:
    keep = cfg.credit.group_filter(chunk.groups.rewards, chunk.extras)
    if rl.dynamic_sampling:
      r = chunk.groups.rewards
      informative = r.max(axis=1) > r.min(axis=1)
      keep = informative if keep is None else keep & informative
    return keep

  problems = training_problems(task, b, namespace=RL_NAMESPACE, seed=seed, step=step, exclude_keys=exclude_keys)
  first = _sample_chunk(graphdef, params, task, problems, key, cfg, base_params)
  keep = keep_of(first)
  if keep is None:
    return first, np.ones(b, bool), [first]
  pool = [(first, keep)]
  for round_ in range(1, rl.max_refill_rounds + 1):
    if sum(int(k.sum()) for _, k in pool) >= b:
      break
    more = training_problems(task, b, namespace=RL_NAMESPACE, seed=seed, step=step, exclude_keys=exclude_keys,
                             offset=round_)
    chunk = _sample_chunk(graphdef, params, task, more, jax.random.fold_in(key, round_), cfg, base_params)
    pool.append((chunk, keep_of(chunk)))
  # Kept groups first, in sampling order; then fillers from the first chunk (trained with weight 0).
  picks = [(ci, i) for ci, (_, k) in enumerate(pool) for i in np.flatnonzero(k)][:b]
  fillers = [(0, i) for i in range(b) if (0, i) not in picks][:b - len(picks)]
  chosen = picks + fillers
  chunks = [c for c, _ in pool]
  rows = lambda get: np.stack([get(chunks[ci])[i] for ci, i in chosen])
  r0 = first.groups.rollouts
  rollouts = type(r0)(*[rows(lambda c, n=name: getattr(c.groups.rollouts, n)) for name in r0._fields])
  groups = Groups(prompt=rows(lambda c: c.groups.prompt), prompt_valid=rows(lambda c: c.groups.prompt_valid),
                  rollouts=rollouts, rewards=rows(lambda c: c.groups.rewards),
                  texts=[chunks[ci].groups.texts[i] for ci, i in chosen])
  extras = {}
  for name in first.extras:
    width = max(c.extras[name].shape[-1] for c in chunks)  # J buckets may differ between chunks
    pad = lambda x: np.pad(x, [(0, 0)] * (x.ndim - 1) + [(0, width - x.shape[-1])])
    extras[name] = np.stack([pad(chunks[ci].extras[name])[i] for ci, i in chosen])
  batch = Chunk(groups, [chunks[ci].problems[i] for ci, i in chosen], extras)
  valid = np.array([True] * len(picks) + [False] * len(fillers))
  return batch, valid, chunks


class RunPlan(NamedTuple):
  """What `check_run` established before a run writes anything."""

  task: Task
  held_out: list[Problem]  # [rl.held_out_prompts] held-out problems, never in SFT or RL
  exclude_keys: frozenset[str]  # their problem keys (`Task.problem_key`), which SFT and RL streams refuse


def check_run(cfg: ExperimentConfig, *, seed: int, out: str | pathlib.Path) -> RunPlan:
  """Everything about a run that can be checked before it writes anything.

  Raises:
    RunError: a negative seed, an unusable `--out`, a model vocabulary too small for the task, more
      held-out prompts than the task can produce, or no training prompts outside them (each message
      names the flag or field to change).
  """
  try:
    require_seed(seed, "--seed")
  except ValueError as e:
    raise RunError(str(e)) from None
  check_writable_dir(out, "--out")
  rl = cfg.rl
  try:
    task = make_task_from_config(cfg.task, cfg.task_config)
    task.tokenizer  # a bad tokenizer directory is the first problem to name (loaded lazily)
    if task.checkpoint is None and cfg.model == PLACEHOLDER:  # a real-model experiment given no checkpoint
      raise ValueError(f"experiment {cfg.name} starts its policy from a Hugging Face checkpoint: set "
                       "task_config.checkpoint=DIR (a directory holding config.json, the *.safetensors weights and "
                       "the tokenizer files)")
    require_vocab(cfg.model, task)
    require_positions(cfg.model, task)
  except ValueError as e:  # the task's data, tokenizer or checkpoint (e.g. an unknown dataset, no EOS token)
    raise RunError(str(e)) from None
  try:
    held_out = eval_problems(task, rl.held_out_prompts)
  except ValueError as e:
    raise RunError(f"rl.final_eval_prompts={rl.final_eval_prompts} and rl.eval_prompts={rl.eval_prompts} ask for "
                   f"{rl.held_out_prompts} held-out prompts: {e}") from None
  exclude_keys = frozenset(task.problem_key(p) for p in held_out)
  try:
    check_batch(layout_for(cfg.mesh), rl.prompts_per_step)
  except ValueError as e:
    raise RunError(str(e)) from None
  for what, namespace, n, s in (("rl.prompts_per_step", RL_NAMESPACE, rl.prompts_per_step, seed),
                                ("sft.batch_size", SFT_NAMESPACE, cfg.sft.batch_size, cfg.sft.seed)):
    try:
      training_problems(task, n, namespace=namespace, seed=s, step=0, exclude_keys=exclude_keys)
    except ValueError as e:
      raise RunError(f"{e} ({rl.held_out_prompts} held-out prompts from rl.final_eval_prompts / rl.eval_prompts, "
                     f"{what}={n}); use fewer held-out prompts") from None
  return RunPlan(task, held_out, exclude_keys)


def require_positions(model: ModelConfig, task: Task) -> None:
  """Raises ValueError unless the longest prompt plus the longest response fits the model's positions.

  A sequence is the left-padded prompt (`task.prompt_width` = P tokens) followed by up to
  `task.max_response_len` = T generated tokens, so its last position is P + T - 1 (a tree rollout's
  leaves are no longer than T)."""
  need = task.prompt_width + task.max_response_len
  if need > model.max_position_embeddings:
    raise ValueError(f"model.max_position_embeddings={model.max_position_embeddings} is too small for task "
                     f"{task.name}: its prompts take up to {task.prompt_width} tokens and its responses up to "
                     f"{task.max_response_len}, {need} positions; set model.max_position_embeddings >= {need} "
                     "(a checkpoint's is its own: choose a task config with shorter prompts or responses)")


def checkpoint_steps(ckpt_dir: pathlib.Path) -> list[int]:
  """The steps of the checkpoints under `ckpt_dir` (the numeric directory names), without opening them."""
  if not ckpt_dir.is_dir():
    return []
  return sorted(int(p.name) for p in ckpt_dir.iterdir() if p.name.isdigit() and p.is_dir())


STARTED = "started"
"""The marker file of a run directory whose run has finished a step (`run_started`)."""


def run_started(run_dir: pathlib.Path) -> bool:
  """Whether `run_dir` holds a run to continue: one that finished at least one step.

  Evidence of a step: the `STARTED` marker (written atomically once the first step's metrics row is
  logged), a checkpoint, summary.json, or a metrics.jsonl row (run directories written before the
  marker existed). config.json alone does not count: it is written before the base policy is loaded,
  so a run that failed there (a bad checkpoint, a full disk, a bad setting only the loop finds) or was
  stopped before its first step leaves a directory that `tcred run` starts afresh, without --resume.
  """
  if (run_dir / STARTED).exists() or checkpoint_steps(run_dir / "checkpoints") or (run_dir / "summary.json").exists():
    return True
  metrics = run_dir / "metrics.jsonl"
  try:
    return any(_metrics_row(line) for line in metrics.read_text().splitlines()) if metrics.exists() else False
  except (OSError, UnicodeDecodeError):
    return False


def _metrics_row(line: str) -> bool:
  try:
    return isinstance(row := json.loads(line), dict) and "step" in row
  except ValueError:
    return False


def _mark_started(run_dir: pathlib.Path) -> None:
  """Writes the `STARTED` marker atomically (a temporary file renamed over it)."""
  tmp = run_dir / f".{STARTED}.tmp"
  tmp.write_text(json.dumps({"time": time.time()}) + "\n")
  os.replace(tmp, run_dir / STARTED)


def _clear_unstarted(run_dir: pathlib.Path) -> None:
  """Removes the logs a run that never finished a step left (`run_started` is false): its TensorBoard
  event files and metrics.jsonl, so that the new run's are the only ones."""
  for f in [*run_dir.glob("events.out.tfevents.*"), run_dir / "metrics.jsonl", run_dir / STARTED]:
    f.unlink(missing_ok=True)


def run_experiment(cfg: ExperimentConfig, *, seed: int, out: str | pathlib.Path = "runs", resume: bool = False,
                   progress: bool = True, log_every: int = 0) -> dict[str, Any]:
  """Runs one experiment and returns its summary (also written to summary.json).

  `progress`: a progress bar (for a terminal); `log_every` > 0: a line on stderr every that many
  steps and around each final evaluation instead (for logs). Raises RunError, before anything is
  written, for what `check_run` refuses and for a run directory that `--resume` cannot continue,
  and (after config.json, which a rerun then replaces: `run_started`) for a checkpoint whose weights
  cannot be loaded.

  SIGTERM or SIGHUP stops it after the current RL step, with a checkpoint of that
  step, by raising `tcred.runtime.Stopped` (a KeyboardInterrupt); the lock is
  released and `--resume` continues. A full disk raises RunError saying so.
  """
  try:
    cfg = resolve_model(cfg)  # a real-model task: the checkpoint's architecture
  except CheckpointInputError as e:
    raise RunError(str(e)) from None
  plan = check_run(cfg, seed=seed, out=out)
  run_dir = run_dir_of(out, cfg.name, seed)
  # Several processes (tcred.parallel.distributed): all compute, process 0 writes the run directory.
  with RunLock(run_dir) if is_primary() else contextlib.nullcontext(), stop_signals() as stop:
    try:
      return _run_locked(cfg, plan, seed=seed, run_dir=run_dir, resume=resume, progress=progress,
                         log_every=log_every, stop=stop)
    except CheckpointInputError as e:  # weights unreadable or changed since `resolve_model` checked them
      raise RunError(str(e)) from None
    except Exception as e:
      if disk_full(e):
        raise RunError(f"no space left on the device while writing {run_dir}; free some space and rerun "
                       "with --resume to continue from its last checkpoint") from e
      raise


def _read_run_config(config_path: pathlib.Path, ckpt_dir: pathlib.Path) -> dict[str, Any] | None:
  """The config.json of a run directory, or None when there is none to continue.

  config.json is written atomically (whole or absent); one that is empty or cut short (written by a
  tcred before issue 22, on a full disk) belongs to a run that never reached a checkpoint when there is
  none: it is treated as absent, so a rerun (with or without --resume) starts the run and writes it
  again. With checkpoints, RunError names the file (never a JSON traceback).
  """
  if not config_path.exists():
    return None
  try:
    found = json.loads(config_path.read_text())
    if not isinstance(found, dict):
      raise ValueError(f"a JSON {type(found).__name__}, not an object")
  except (OSError, ValueError) as e:
    if not checkpoint_steps(ckpt_dir) and not (config_path.parent / "summary.json").exists():
      log.warning("%s is unreadable (%s) and the run has no checkpoint: starting it over", config_path, e)
      return None
    raise RunError(f"{config_path} is unreadable ({type(e).__name__}: {e}) though the run has checkpoints; "
                   "move the run directory away or choose another --out") from None
  return found


def _say(message: str) -> None:
  print(message, file=sys.stderr, flush=True)


def _run_locked(cfg: ExperimentConfig, plan: RunPlan, *, seed: int, run_dir: pathlib.Path, resume: bool,
                progress: bool, log_every: int, stop: StopRequest) -> dict[str, Any]:
  rl = cfg.rl
  t_start = time.time()
  config_path = run_dir / "config.json"
  resolved = {**cfg.to_dict(), "seed": seed}
  ckpt_dir = run_dir / "checkpoints"
  started = run_started(run_dir)
  found = _read_run_config(config_path, ckpt_dir) if started else None
  if found is None:  # nothing to continue: no step finished, or an unreadable config.json and no checkpoint
    started = False
    if is_primary():
      _clear_unstarted(run_dir)  # its logs go (the STARTED marker too); config.json is replaced below
  else:
    if not resume:
      raise RunError(f"{run_dir} already holds a run; pass --resume to continue it or choose another --out")
    # A config written before a field existed (e.g. model.qk_norm) holds that field at its default.
    differ = config_diff(normalised_config(found), resolved, ignore=("rl.steps",))
    if differ:
      raise RunError(f"--resume: the config differs from the one in {config_path} (only rl.steps / --steps may "
                     f"change): {'; '.join(differ)}")
    done = max([*checkpoint_steps(ckpt_dir), 0])
    summary_path = run_dir / "summary.json"
    if summary_path.exists():
      done = max(done, int(json.loads(summary_path.read_text()).get("steps", 0)))
    if done > rl.steps:
      raise RunError(f"--resume --steps {rl.steps}: {run_dir} has already trained {done} steps; a run is never "
                     f"cut back (its summary would mislabel the policy): pass --steps >= {done}, or start a new "
                     f"run with another --out")
  barrier("tcred run: run directory checked")  # before process 0 writes to it
  primary = is_primary()
  if primary:
    write_json(config_path, resolved)  # whole or absent, even on a full disk

  task, held_out, exclude_keys = plan
  n_eval = rl.held_out_prompts
  if task.checkpoint is not None:  # a pretrained policy: no SFT stage
    graphdef, base_params, base_dir = pretrained_policy(cfg.model, task, cfg.task_config, cache_root())
  else:
    graphdef, base_params, base_dir = base_policy(cfg.model, task, cfg.task_config, cfg.sft,
                                                  eval_prompts=n_eval, progress=progress, log_lines=log_every > 0)
  announce = progress or log_every > 0
  base = _base_eval(graphdef, base_params, task, held_out[:rl.final_eval_prompts], cfg, base_dir, announce=announce)

  tx = rl_optimizer(rl)
  params = jax.tree.map(jnp.copy, base_params)  # the step donates its state; keep the base intact
  state = new_train_state(params, tx)
  ref_params = base_params if cfg.loss.kl_coef > 0 else None
  layout = layout_for(cfg.mesh)  # None on one device: nothing is placed
  if layout is not None:
    state, ref_params = layout.place_state(state), layout.place_state(ref_params)
  counters = {"samples": 0, "tokens_generated": 0, "wall_s": 0.0, "nonfinite_in_row": 0}
  start = 0
  ckpt = Checkpointer(ckpt_dir, max_to_keep=2, keep_every=rl.keep_every)  # keep_every: for identify --steps
  if resume and ckpt.steps():
    try:
      start, state, counters = restore_train_state(ckpt, state, quarantine=True)
    except CheckpointError as e:
      raise CheckpointError(f"{e}; --resume again starts this run over from step 0") from None
    counters = dict(counters)
    _say(f"tcred: resuming {run_dir} from its checkpoint at step {start} (of {rl.steps})")
  elif resume:
    _say(f"tcred: {run_dir} has no checkpoint yet; starting from step 0")
  tracker = Tracker(run_dir, resume_step=start if (resume and start) else None) if primary else NoTracker()
  if start == 0:
    tracker.text("config", "```\n" + json.dumps(resolved, indent=1) + "\n```", 0)
  run_key = jax.random.fold_in(jax.random.key(seed), RL_NAMESPACE)
  eval_key = jax.random.key(0xE7A1)
  t_last = time.time()
  bar = tqdm(range(start, rl.steps), initial=start, total=rl.steps, desc=cfg.name, disable=not progress)
  stop.defer()  # SIGTERM / SIGHUP in the loop: finish the step, checkpoint it, then stop
  try:
    for step in bar:
      t0 = time.time()
      params = state.params
      batch_chunk, group_valid, generated = _collect(
          graphdef, params, task, cfg, seed=seed, step=step, exclude_keys=exclude_keys,
          key=jax.random.fold_in(run_key, step), base_params=base_params)
      groups, problems = batch_chunk.groups, batch_chunk.problems
      t_sample = time.time() - t0
      r = groups.rollouts
      batch = Batch(prompt=jnp.asarray(groups.prompt), prompt_valid=jnp.asarray(groups.prompt_valid),
                    response=jnp.asarray(r.tokens), mask=jnp.asarray(r.mask), old_logp=jnp.asarray(r.logp),
                    rewards=jnp.asarray(groups.rewards), group_valid=jnp.asarray(group_valid),
                    extras={k: jnp.asarray(v) for k, v in batch_chunk.extras.items()},
                    packed=None if groups.trees is None else jax.tree.map(jnp.asarray, pack_trees(
                        groups.prompt, groups.prompt_valid, r.tokens, groups.trees.arrays)))
      if layout is not None:
        batch = layout.place_batch(batch)
      record_s = None
      if explore_record.record_due(rl.record_every, rl.eval_every, rl.steps, step + 1) and jax.process_count() == 1:
        t_record = time.time()
        _record_step(run_dir, step + 1, cfg, seed, task, batch_chunk, group_valid, graphdef, params, batch, tracker)
        record_s = time.time() - t_record
        t_last += record_s  # recording observes the run: not part of its wall time (tables compare wall_s)
      state, m = rl_train_step(state, batch, ref_params, graphdef=graphdef, tx=tx, credit=cfg.credit,
                               loss_config=cfg.loss, temperature=rl.temperature, chunk_size=rl.chunk_size,
                               layout=layout, hold_on_zero_grad=rl.hold_on_zero_grad)
      m = jax.device_get(m)
      counters["samples"] += sum(c.groups.rewards.size for c in generated)
      counters["tokens_generated"] += sum(c.groups.generated_tokens() for c in generated)
      extras_s, extras_tokens = sum(c.extras_s for c in generated), sum(c.extras_tokens for c in generated)
      counters["extras_wall_s"] = counters.get("extras_wall_s", 0.0) + extras_s
      counters["extras_tokens"] = counters.get("extras_tokens", 0) + extras_tokens
      cost = cfg.credit.host_cost  # e.g. "judge": the step judge's tokens and seconds beside the policy's
      host_s, host_tokens = sum(c.host_s for c in generated), sum(c.host_tokens for c in generated)
      if cost is not None:
        counters[f"{cost}_wall_s"] = counters.get(f"{cost}_wall_s", 0.0) + host_s
        counters[f"{cost}_tokens"] = counters.get(f"{cost}_tokens", 0) + host_tokens
      now = time.time()
      counters["wall_s"] += now - t_last
      t_last = now
      counters["nonfinite_in_row"] = counters["nonfinite_in_row"] + 1 if m["optim/skipped"] else 0
      rewards = groups.rewards
      row = {**m,
             "train/reward": float(rewards.mean()),
             "train/informative_groups": float(np.mean(rewards.max(1) > rewards.min(1))),
             "train/response_len": float(r.mask.sum(-1).mean()),
             "train/finished": float(r.finished.mean()),
             "counts/samples": counters["samples"], "counts/tokens_generated": counters["tokens_generated"],
             "time/sample_s": t_sample, "time/step_s": time.time() - t0, "wall_s": counters["wall_s"],
             "time/extras_s": extras_s, "counts/extras_tokens": extras_tokens}  # extras: part of sample_s
      if record_s is not None:  # the credit explorer's record (`time/step_s` includes it, `wall_s` does not)
        row["time/record_s"] = record_s
      if cost is not None:  # host extras: part of sample_s too
        row.update({f"time/{cost}_s": host_s, f"counts/{cost}_tokens": host_tokens})
      done = step + 1
      if done % rl.eval_every == 0 or done == rl.steps:
        ev = evaluate(graphdef, state.params, task, held_out[:rl.eval_prompts], jax.random.fold_in(eval_key, done),
                      samples=rl.eval_samples, temperature=rl.temperature, greedy=False, layout=layout)
        row["eval/pass1"] = ev["pass1"]
        tracker.text("rollouts", _rollout_text(problems, groups), done)
      tracker.log(done, row)
      if not started and primary:
        _mark_started(run_dir)
        started = True
      bar.set_postfix(reward=f"{row['train/reward']:.2f}")
      if log_every and (done % log_every == 0 or done == rl.steps):
        ev = f", eval pass@1 {row['eval/pass1']:.3f}" if "eval/pass1" in row else ""
        _say(f"{cfg.name} seed {seed}: step {done}/{rl.steps}, reward {row['train/reward']:.3f}{ev}, "
             f"{counters['wall_s']:.0f} s")
      if counters["nonfinite_in_row"] >= rl.max_nonfinite:
        saved = checkpoint_steps(ckpt_dir)
        kept = (f"the last checkpoint (finite, as every checkpoint) is step {saved[-1]} in {ckpt_dir}" if saved
                else "no checkpoint had been written yet")
        raise NonFiniteError(f"{counters['nonfinite_in_row']} non-finite updates in a row at step {done} "
                             f"(rl.max_nonfinite={rl.max_nonfinite}); aborting: {kept}")
      keep = rl.keep_every is not None and done % rl.keep_every == 0
      if done % rl.checkpoint_every == 0 or keep or done == rl.steps or stop.signum is not None:
        ckpt.save(done, state, counters)
      if stop.signum is not None:
        raise Stopped(stop.signum)
  finally:
    stop.undefer()
    bar.close()
    tracker.close()
    ckpt.close()

  with _announced(announce, "final policy", rl):
    final = evaluate(graphdef, state.params, task, held_out[:rl.final_eval_prompts], eval_key,
                     samples=rl.final_eval_samples, temperature=rl.temperature, layout=layout)
  k = rl.final_eval_samples
  summary = {
      "name": cfg.name, "seed": seed, "task": cfg.task, "credit": cfg.credit.name,
      "base_pass1": base["pass1"], "final_pass1": final["pass1"],
      "base_pass1_greedy": base["pass1_greedy"], "final_pass1_greedy": final["pass1_greedy"],
      f"base_pass{k}": base[f"pass{k}"], f"final_pass{k}": final[f"pass{k}"],
      "eval_samples": final["samples"], "steps": rl.steps, "config_hash": run_config_hash(resolved),
      "samples": counters["samples"],
      "tokens_generated": counters["tokens_generated"], "wall_s": counters["wall_s"],
      "extras_wall_s": counters.get("extras_wall_s", 0.0), "extras_tokens": counters.get("extras_tokens", 0),
      **({} if cfg.credit.host_cost is None else {
          f"{cfg.credit.host_cost}_wall_s": counters.get(f"{cfg.credit.host_cost}_wall_s", 0.0),
          f"{cfg.credit.host_cost}_tokens": counters.get(f"{cfg.credit.host_cost}_tokens", 0)}),
      # This invocation end to end: base policy (SFT unless cached), RL, evaluations.
      "invocation_wall_s": time.time() - t_start,
  }
  if primary:
    write_json(run_dir / "summary.json", summary)
  tracker.hparams(resolved, summary, step=rl.steps)  # TensorBoard HParams: config + final metrics
  return summary


def _record_step(run_dir, done, cfg, seed, task, chunk, group_valid, graphdef, params, batch, tracker) -> None:
  """Writes the credit explorer's record of step `done` (`tcred.training.record`), before the update
  (the train step donates `params`), and links it from TensorBoard's text tab. The decisive flags
  (`rl.record_decisive_prompts`) draw their continuations from their own key (seed, `DECISIVE_NAMESPACE`,
  step): the run's own random stream is untouched."""
  rl = cfg.rl
  captured = explore_record.capture(graphdef, params, batch, credit=cfg.credit, temperature=rl.temperature,
                                    chunk_size=rl.chunk_size)
  groups = chunk.groups
  decisive = explore_record.decisive_labels(
      graphdef, params, task, chunk.problems, groups.rollouts.tokens, groups.rollouts.mask, groups.rewards, group_valid,
      prompts=rl.record_decisive_prompts, continuations=rl.record_decisive_continuations,
      delta=rl.record_decisive_delta, temperature=rl.temperature, top_p=rl.top_p,
      key=jax.random.fold_in(jax.random.fold_in(jax.random.key(seed), explore_record.DECISIVE_NAMESPACE), done))
  rec = explore_record.make_record(step=done, name=cfg.name, seed=seed, task=task, problems=chunk.problems,
                                   groups=groups, group_valid=group_valid, captured=captured,
                                   credit_method=cfg.credit.name, decisive=decisive)
  path = explore_record.save_record(run_dir, rec)
  tracker.text("explore", f"step {done} recorded in `{path}`: `tcred explore {run_dir} --step {done}`", done)


def _rollout_text(problems: list[Problem], groups: Groups, n: int = 2) -> str:
  lines = []
  for i in range(min(n, len(problems))):
    lines.append(f"**prompt** `{problems[i].prompt.strip()}`")
    for text, reward in zip(groups.texts[i][:4], groups.rewards[i][:4]):
      lines.append(f"- r={reward:.0f} `{text}`")
  return "\n".join(lines)

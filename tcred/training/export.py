"""A run's policy as a Hugging Face directory (`tcred export RUN_DIR --out DIR [--step N]`).

The run directory holds the resolved experiment config (`config.json`) and Orbax
checkpoints of the RL train state (`checkpoints/<step>/`); the policy's
parameters are restored from the chosen step and written by
`tcred.models.hf.save_pretrained` with the run's tokenizer, so that
`transformers.AutoModelForCausalLM` and `AutoTokenizer` load the directory.

A run of a Hugging Face checkpoint exports the checkpoint's tokenizer files
unchanged (byte for byte) and every field of its `generation_config.json`
(temperature, top_p, ...) except the token ids, which name every EOS id the run
stopped at. Its tokenizer is loaded (and refused if unusable) before anything is written.
"""

from __future__ import annotations

import json
import pathlib
from flax import nnx

from tcred.models.decoder import Decoder
from tcred.models.hf import save_pretrained
from tcred.tasks.registry import make_task_from_config
from tcred.tasks.text import TaskTokenizer
from tcred.training.checkpoint import Checkpointer, CheckpointError, disk_full
from tcred.training.config import ExperimentConfig, config_from_dict
from tcred.training.restore import new_train_state, restore_train_state, rl_optimizer
from tcred.training.tracking import RunError, check_writable_dir, write_directory_atomic


class ExportError(ValueError):
  """A bad `tcred export` input (the message names the problem and what is allowed)."""


def run_config(run_dir: pathlib.Path) -> ExperimentConfig:
  """The experiment config of a run directory; ExportError for a missing directory or one that is not a run."""
  if not run_dir.is_dir():
    raise ExportError(f"run directory {str(run_dir)!r} does not exist")
  config_path = run_dir / "config.json"
  if not config_path.is_file():
    raise ExportError(f"{str(run_dir)!r} is not a run directory: no config.json (a run directory is "
                      "OUT/NAME/seed-S as written by `tcred run`, e.g. runs/countdown-grpo/seed-0)")
  try:
    return config_from_dict(json.loads(config_path.read_text()))
  except (ValueError, KeyError, TypeError) as e:
    raise ExportError(f"{str(config_path)!r} is not the config of a tcred run: {type(e).__name__}: {e}") from e


def run_policy(run_dir: str | pathlib.Path, *, step: int | None = None
               ) -> tuple[ExperimentConfig, nnx.GraphDef, nnx.State, int]:
  """The policy of a run directory at checkpoint `step` (default: the last usable one).

  Returns `(config, graphdef, params, step)`. Raises `ExportError` for a missing
  directory, one that is not a run (no `config.json` of a tcred experiment), a
  run without checkpoints, or a `step` that has no checkpoint (listing the steps that do).
  """
  run_dir = pathlib.Path(run_dir)
  cfg = run_config(run_dir)
  ckpt_dir = run_dir / "checkpoints"
  if not ckpt_dir.is_dir():
    raise ExportError(f"{str(run_dir)!r} has no checkpoints/ directory: the run has not saved a checkpoint yet")
  ckpt = Checkpointer(ckpt_dir, max_to_keep=2)
  try:
    steps = ckpt.steps()
    if not steps:
      raise ExportError(f"{str(run_dir)!r} has no checkpoint yet (checkpoints/ is empty)")
    if step is not None and step not in steps:
      raise ExportError(f"--step {step}: no checkpoint of that step in {str(run_dir)!r}; available steps: "
                        f"{', '.join(map(str, steps))}")
    # The RL train state of `tcred.training.rl` (parameters, AdamW state, step) as the restore template.
    graphdef, params = nnx.split(Decoder(cfg.model, rngs=nnx.Rngs(cfg.sft.seed)))
    step, state, _ = restore_train_state(ckpt, new_train_state(params, rl_optimizer(cfg.rl)), step=step)
  except CheckpointError as e:
    raise ExportError(str(e)) from e
  finally:
    ckpt.close()
  return cfg, graphdef, state.params, step


def run_tokenizer(cfg: ExperimentConfig) -> TaskTokenizer:
  """The tokenizer of a run's task (`Task.tokenizer`: the character tokenizer of the embedded tasks, the
  checkpoint's of the real-model tasks); ExportError if it cannot be loaded."""
  try:
    return make_task_from_config(cfg.task, cfg.task_config).tokenizer
  except ValueError as e:  # the task's checkpoint or tokenizer directory (moved, emptied, unusable)
    raise ExportError(f"the run's tokenizer: {e}") from None


def export_run(run_dir: str | pathlib.Path, out: str | pathlib.Path, *, step: int | None = None
               ) -> tuple[pathlib.Path, int]:
  """Writes the policy of `run_dir` at `step` (default: last) as a Hugging Face directory `out`.

  `out` must not exist or be empty. Everything is written into a temporary directory beside `out`,
  renamed to `out` once complete (`tcred.training.tracking.write_directory_atomic`): a full disk or
  a kill leaves no part of an export. Returns `(out, step exported)`. Raises `ExportError` (a bad
  `out`, run or step; an OS error while writing, named in one line, with nothing left behind).
  """
  out = pathlib.Path(out)
  if out.exists() and (not out.is_dir() or any(out.iterdir())):
    raise ExportError(f"--out {str(out)!r} exists and is not an empty directory; choose a new one")
  try:
    check_writable_dir(out, "--out")  # under a file, /proc, a read-only file system
  except RunError as e:
    raise ExportError(str(e)) from None
  tokenizer = run_tokenizer(run_config(pathlib.Path(run_dir)))  # refused before the slower restore
  cfg, _, params, step = run_policy(run_dir, step=step)

  def write(directory: pathlib.Path) -> None:
    save_pretrained(directory, params, cfg.model, tokenizer=tokenizer.hf(), tokenizer_files=tokenizer.source_files,
                    eos_ids=tokenizer.eos_ids, generation=tokenizer.generation_config)

  try:
    write_directory_atomic(out, write)
  except Exception as e:  # noqa: BLE001 - an OS error in any writer (safetensors, transformers) is reported
    if disk_full(e):
      reason = "no space left on the device"
    elif isinstance(e, OSError):
      reason = f"{e.strerror or type(e).__name__}" + (f": {e.filename}" if e.filename else "")
    else:
      raise
    raise ExportError(f"could not write --out {str(out)!r}: {reason}; nothing was written there") from None
  return out, step

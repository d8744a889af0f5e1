"""Policies that start from a Hugging Face checkpoint instead of an SFT base policy (issue 15).

A task with a checkpoint (`Task.checkpoint`: the real-model tasks `jsonl` and
`reasoning-gym` with ``task_config.checkpoint=DIR``) names the directory whose
tokenizer it uses; its experiments' policy is that checkpoint's model:

  * `resolve_model(cfg)` replaces the experiment's `model` section by the
    checkpoint's config (`tcred.models.hf`), before the run writes config.json, so
    the run directory records the real architecture and `tcred export` rebuilds it.
    The registered real-model experiments carry `PLACEHOLDER` there; a `model.*`
    override that disagrees with the checkpoint is refused.
  * `check_checkpoint(directory)` (called by `resolve_model`, so `tcred run` and
    `tcred show` refuse before anything is written) reads the config, loads the
    tokenizer (`tcred.tasks.text.HFTokenizer`: a vocabulary, an EOS) and the
    weight files' headers (every shard of an index, readable, floating dtypes,
    the config's names and shapes); every problem is one `CheckpointInputError`
    naming the directory or file.
  * `pretrained_policy` loads the weights (float32) as the base policy: no SFT stage.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import pathlib

from flax import nnx

from tcred.models.config import ModelConfig
from tcred.models.decoder import Decoder
from tcred.models.hf import UnsupportedCheckpoint, check_weight_files, config_from_hf, load_pretrained
from tcred.tasks.base import Task
from tcred.tasks.text import TokenizerError, hf_tokenizer
from tcred.training.config import ExperimentConfig, config_hash

PLACEHOLDER = ModelConfig(vocab_size=1, hidden_size=2, intermediate_size=1, num_hidden_layers=1,
                          num_attention_heads=1, num_key_value_heads=1)
"""The `model` section of a registered real-model experiment: the checkpoint's config replaces it."""


class CheckpointInputError(ValueError):
  """A checkpoint directory tcred cannot start a policy from (the message names it and the problem)."""


def checkpoint_of(cfg: ExperimentConfig) -> str | None:
  """The checkpoint directory an experiment's policy starts from, or None (SFT base policy)."""
  return getattr(cfg.task_config, "checkpoint", None)


def checkpoint_model_config(directory: str) -> ModelConfig:
  """The `ModelConfig` of a Hugging Face checkpoint directory.

  Raises:
    CheckpointInputError: a missing directory or config.json, or a model the decoder cannot represent
      (the message lists what is supported).
  """
  path = pathlib.Path(directory)
  if not path.is_dir():
    raise CheckpointInputError(f"checkpoint directory {directory!r} does not exist")
  config_path = path / "config.json"
  if not config_path.is_file():
    found = ", ".join(sorted(p.name for p in path.iterdir())) or "nothing"
    raise CheckpointInputError(f"{directory!r} is not a Hugging Face checkpoint directory: no config.json (found "
                               f"{found}; needed: config.json, *.safetensors and the tokenizer files)")
  try:
    return config_from_hf(json.loads(config_path.read_text()))
  except UnsupportedCheckpoint as e:
    raise CheckpointInputError(f"checkpoint {directory!r}: {e}") from None
  except (OSError, ValueError, TypeError, AttributeError) as e:  # JSONDecodeError is a ValueError
    raise CheckpointInputError(f"checkpoint {directory!r}: unreadable config.json: {type(e).__name__}: {e}") from None


def check_checkpoint(directory: str) -> ModelConfig:
  """The checkpoint's `ModelConfig`, once its tokenizer and weight files are known usable (module docstring).

  Raises:
    CheckpointInputError: see `checkpoint_model_config`; a tokenizer tcred cannot use (no tokenizer
      files, an empty vocabulary, no EOS: the message lists the files found and needed); weight files
      that are missing, truncated, corrupt, or do not fit the config (the message names the file).
  """
  model = checkpoint_model_config(directory)
  try:
    hf_tokenizer(directory)
  except TokenizerError as e:
    raise CheckpointInputError(f"checkpoint {directory!r}: {e}") from None
  try:
    check_weight_files(directory, model)
  except (OSError, ValueError) as e:
    raise CheckpointInputError(f"checkpoint {directory!r}: {e}") from None
  return model


def resolve_model(cfg: ExperimentConfig) -> ExperimentConfig:
  """`cfg` with the checkpoint's model config (unchanged without a checkpoint; see the module docstring).

  Raises:
    CheckpointInputError: see `check_checkpoint`, or `model.*` settings that differ from the checkpoint's.
  """
  directory = checkpoint_of(cfg)
  if directory is None:
    return cfg
  model = check_checkpoint(directory)
  if cfg.model not in (PLACEHOLDER, model):
    wanted = dataclasses.asdict(model)
    differ = [f"model.{k}={v!r} (checkpoint: {wanted[k]!r})" for k, v in dataclasses.asdict(cfg.model).items()
              if v != wanted[k] and getattr(PLACEHOLDER, k) != v]
    raise CheckpointInputError(f"the model comes from the checkpoint {directory!r}; do not set model.* "
                               f"({'; '.join(differ) or 'they differ'})")
  return dataclasses.replace(cfg, model=model)


def checkpoint_digest(directory: str) -> str:
  """A short hash of a checkpoint directory's config and weight files (names, sizes, modification times)."""
  path = pathlib.Path(directory)
  files = sorted(p for p in path.iterdir() if p.suffix in (".json", ".safetensors"))
  stamp = [(p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in files]
  return hashlib.sha256(json.dumps([str(path.resolve()), stamp]).encode()).hexdigest()[:16]


def pretrained_dir(model_config: ModelConfig, task: Task, task_config, cache_root: pathlib.Path) -> pathlib.Path:
  """Where the base evaluation of a checkpoint policy is cached: `<cache>/pretrained/<task>-<hash>`."""
  key = config_hash(model_config, task.name, task_config, checkpoint_digest(task.checkpoint))
  return cache_root / "pretrained" / f"{task.name}-{key}"


def pretrained_policy(model_config: ModelConfig, task: Task, task_config, cache_root: pathlib.Path
                      ) -> tuple[nnx.GraphDef, nnx.State, pathlib.Path]:
  """`(graphdef, params, cache_dir)` of the task's checkpoint in float32, like `sft.base_policy`."""
  try:
    config, params = load_pretrained(task.checkpoint)
  except (OSError, ValueError) as e:  # a file gone, truncated, corrupt or changed since `check_checkpoint`
    raise CheckpointInputError(f"checkpoint {task.checkpoint!r}: {e}") from None
  if config != model_config:
    raise CheckpointInputError(f"checkpoint {task.checkpoint!r} changed since the run was configured")
  graphdef, _ = nnx.split(nnx.eval_shape(lambda: Decoder(model_config, rngs=nnx.Rngs(0))))
  directory = pretrained_dir(model_config, task, task_config, cache_root)
  directory.mkdir(parents=True, exist_ok=True)
  return graphdef, params, directory


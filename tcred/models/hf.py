"""Hugging Face Llama / Qwen2 / Qwen3 checkpoints in and out: configs, safetensors, tokenizer files.

Our NNX `Decoder` names its modules like HF's, so a parameter's HF name is its
NNX path with a `model.` prefix (the head is `lm_head` at the top level):

| NNX path (`nnx.to_flat_state`)                   | HF name                                   | layout              |
|---|---|---|
| `embed_tokens.embedding`  `[V, D]`               | `model.embed_tokens.weight` `[V, D]`      | as is               |
| `layers.i.self_attn.{q,k,v,o}_proj.kernel` `[in, out]` | `model.layers.i.self_attn.{q,k,v,o}_proj.weight` `[out, in]` | transposed |
| `layers.i.self_attn.{q,k,v}_proj.bias` `[out]` (Qwen2) | `model.layers.i.self_attn.{q,k,v}_proj.bias` | as is        |
| `layers.i.self_attn.{q,k}_norm.weight` `[E]` (Qwen3) | `model.layers.i.self_attn.{q,k}_norm.weight` | as is          |
| `layers.i.mlp.{gate,up,down}_proj.kernel`        | `model.layers.i.mlp.{gate,up,down}_proj.weight` | transposed    |
| `layers.i.{input,post_attention}_layernorm.weight`, `norm.weight` | `model.…layernorm.weight`, `model.norm.weight` | as is |
| `lm_head.kernel` `[D, V]` (untied only)          | `lm_head.weight` `[V, D]`                 | transposed          |

RoPE: both use the "rotate half" convention on HF's (already permuted) q/k
weights, so no permutation is needed (checked by `tests/models/test_hf_parity.py`).
Tied heads: `lm_head.weight` is not written; on import a tied checkpoint's
`lm_head.weight` (some files carry it) must equal the embedding.

The three families differ only in the attention (`MODEL_TYPES`): Llama has no
biases, Qwen2 always has q/k/v biases (never on o_proj), Qwen3 has a per-head q/k
RMSNorm before RoPE and no biases. The model type of an export is therefore
implied by the config (`hf_model_type`). What the decoder cannot represent is
refused by name (`UnsupportedCheckpoint`): other model types, RoPE types other
than default/linear/llama3, partial rotary embeddings, sliding-window layers,
`attention_bias=True` of Llama/Qwen3 (an o_proj bias too), MLP biases, other
activations, attention dropout.

Configs are read through `transformers.AutoConfig`, so class defaults of the
family apply to fields a `config.json` leaves out (Qwen3's `head_dim` is 128,
not hidden/heads). RoPE settings are read from wherever the writing transformers
version put them: `rope_parameters` (version 5) or `rope_theta` + `rope_scaling`
(version 4).
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from tcred.models.config import ROPE_TYPES, ModelConfig
from tcred.models.decoder import Decoder

MODEL_TYPES = ("llama", "qwen2", "qwen3")
_ARCHITECTURES = {"llama": "LlamaForCausalLM", "qwen2": "Qwen2ForCausalLM", "qwen3": "Qwen3ForCausalLM"}
# HF config fields copied to ModelConfig as they are.
_PLAIN_FIELDS = ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
                 "rms_norm_eps", "tie_word_embeddings", "max_position_embeddings", "initializer_range")
# RoPE parameter keys each rope_type reads (besides rope_type/type and rope_theta), with the ModelConfig field.
_ROPE_KEYS = {
    "default": {},
    "linear": {"factor": "rope_factor"},
    "llama3": {"factor": "rope_factor", "low_freq_factor": "rope_low_freq_factor",
               "high_freq_factor": "rope_high_freq_factor",
               "original_max_position_embeddings": "rope_original_max_position_embeddings"},
}
assert tuple(_ROPE_KEYS) == ROPE_TYPES
# Every field of the three HF config classes, and every config attribute their modeling code reads, is
# either read (copied, or checked and refused when it asks for what the decoder lacks) ...
READ_FIELDS = _PLAIN_FIELDS + (
    "model_type", "num_key_value_heads", "head_dim", "hidden_act", "mlp_bias", "attention_bias", "attention_dropout",
    "rope_parameters", "rope_theta", "rope_scaling", "layer_types", "use_sliding_window", "sliding_window",
    "max_window_layers")
# ... or leaves the logits unchanged (`tests/models/test_hf.py` checks this split against the installed
# transformers). `pad_token_id` is HF's embedding `padding_idx`: it zero-initialises that row and freezes
# its gradient in HF training, the forward pass is the same; `pretraining_tp` (transformers 4) slices the
# same matmuls; `chunk_size_feed_forward` is not used by these families.
NON_COMPUTATION_FIELDS = (
    "_name_or_path", "architectures", "bos_token_id", "eos_token_id", "pad_token_id", "dtype", "torch_dtype",
    "use_cache", "output_attentions", "output_hidden_states", "return_dict", "id2label", "label2id",
    "problem_type", "is_encoder_decoder", "transformers_version", "chunk_size_feed_forward", "pretraining_tp")
SUPPORTED = (f"supported: model_type {', '.join(MODEL_TYPES)}; rope_type {', '.join(ROPE_TYPES)}; hidden_act silu; "
             "full attention (no sliding window); q/k/v biases as in Qwen2 only; no MLP or o_proj biases")


class UnsupportedCheckpoint(ValueError):
  """A Hugging Face config or checkpoint the decoder cannot represent (the message says what and what is allowed)."""


# ----------------------------------------------------------------------------- configs


def config_from_hf(hf: Mapping[str, Any] | Any) -> ModelConfig:
  """A `ModelConfig` from an HF config: a `PretrainedConfig`, or a `config.json` dict (read through
  `transformers.AutoConfig.for_model`, so the family's class defaults fill missing fields).

  Raises `UnsupportedCheckpoint` (a `ValueError`) naming every feature the decoder lacks.
  """
  if isinstance(hf, Mapping):
    d = dict(hf)
    model_type = d.pop("model_type", None)
    _check_model_type(model_type)
    import transformers

    hf = transformers.AutoConfig.for_model(model_type, **d)
  return config_from_hf_dict(hf.to_dict())


def _check_model_type(model_type: Any) -> None:
  if model_type not in MODEL_TYPES:
    raise UnsupportedCheckpoint(f"model_type {model_type!r} is not supported; supported model types: "
                                f"{', '.join(MODEL_TYPES)}")


def config_from_hf_dict(d: Mapping[str, Any]) -> ModelConfig:
  """A `ModelConfig` from `PretrainedConfig.to_dict()` as written by transformers 4 or 5.

  Every field that changes the computation is either copied or refused; the
  family's defaults must already be filled in (use `config_from_hf` for a raw
  `config.json`).
  """
  model_type = d.get("model_type")
  _check_model_type(model_type)
  problems = []
  if d.get("hidden_act", "silu") != "silu":
    problems.append(f"hidden_act={d['hidden_act']!r} (only 'silu')")
  if d.get("mlp_bias"):
    problems.append("mlp_bias=True")
  if model_type != "qwen2" and d.get("attention_bias"):
    problems.append(f"attention_bias=True ({model_type} puts biases on q/k/v and o_proj; the decoder has q/k/v "
                    "biases only, as in Qwen2)")
  if d.get("attention_dropout"):
    problems.append(f"attention_dropout={d['attention_dropout']!r} (the decoder has no dropout; only 0)")
  problems += _sliding_window_problems(d)
  rope = _rope_fields(d, problems)
  if problems:
    raise UnsupportedCheckpoint(f"{model_type} config not supported: {'; '.join(problems)}. {SUPPORTED}")
  kwargs = {k: d[k] for k in _PLAIN_FIELDS if d.get(k) is not None}
  kwargs["num_key_value_heads"] = d.get("num_key_value_heads") or d["num_attention_heads"]
  kwargs["head_dim"] = d.get("head_dim") or None  # None: hidden_size // num_attention_heads, as HF
  return ModelConfig(**kwargs, **rope, attention_bias=model_type == "qwen2", qk_norm=model_type == "qwen3")


def _sliding_window_problems(d: Mapping[str, Any]) -> list[str]:
  """Layers that attend through a sliding window (HF: Qwen2/Qwen3 `layer_types`, or v4's
  `use_sliding_window` from layer `max_window_layers` on) or with another attention kind."""
  layer_types = d.get("layer_types")
  if layer_types is None:  # transformers 4
    if d.get("use_sliding_window") and d.get("sliding_window") is not None:
      start = d.get("max_window_layers", 0) or 0
      layer_types = ["sliding_attention" if i >= start else "full_attention" for i in range(d["num_hidden_layers"])]
    else:
      layer_types = []
  other = sorted({t for t in layer_types if t not in ("full_attention", "sliding_attention")})
  sliding = [i for i, t in enumerate(layer_types) if t == "sliding_attention"]
  problems = [f"layer_types {other} (only 'full_attention')"] if other else []
  if sliding and d.get("sliding_window") is not None:
    problems.append(f"sliding-window attention (window {d['sliding_window']}) in layers {sliding}")
  return problems


def _rope_fields(d: Mapping[str, Any], problems: list[str]) -> dict[str, Any]:
  """ModelConfig RoPE fields from `rope_parameters` (transformers 5) or `rope_theta` + `rope_scaling` (4)."""
  params = d.get("rope_parameters")
  if params is None:
    params = dict(d.get("rope_scaling") or {})
    if d.get("rope_theta") is not None:
      params["rope_theta"] = d["rope_theta"]
  if not isinstance(params, Mapping) or any(isinstance(v, Mapping) for v in params.values()):
    problems.append(f"per-layer rope_parameters {params!r}")
    return {}
  rope_type = params.get("rope_type", params.get("type", "default"))
  if rope_type not in ROPE_TYPES:
    problems.append(f"rope_type {rope_type!r} (supported: {', '.join(ROPE_TYPES)})")
    return {}
  out: dict[str, Any] = {"rope_type": rope_type}
  if params.get("rope_theta") is not None:
    out["rope_theta"] = float(params["rope_theta"])
  if params.get("partial_rotary_factor", 1.0) != 1.0:
    problems.append(f"partial_rotary_factor={params['partial_rotary_factor']!r} (only 1.0)")
  keys = _ROPE_KEYS[rope_type]
  unknown = sorted(set(params) - set(keys) - {"rope_type", "type", "rope_theta", "partial_rotary_factor"})
  if unknown:
    problems.append(f"rope parameters {unknown} of rope_type {rope_type!r} (it reads {sorted(keys) or 'none'})")
  for key, field in keys.items():
    if params.get(key) is None:
      problems.append(f"rope_type {rope_type!r} without {key!r}")
    else:
      out[field] = type(ModelConfig.__dataclass_fields__[field].default)(params[key])
  return out


def hf_model_type(config: ModelConfig) -> str:
  """The HF family that computes what `config` does: qwen3 (q/k norms), qwen2 (q/k/v biases) or llama."""
  if config.qk_norm and config.attention_bias:
    raise UnsupportedCheckpoint("qk_norm=True with attention_bias=True has no HF family (Qwen3 has no q/k/v-only "
                                "biases); " + SUPPORTED)
  return "qwen3" if config.qk_norm else "qwen2" if config.attention_bias else "llama"


def hf_config(config: ModelConfig, **extra: Any) -> Any:
  """The `transformers` config (a `PretrainedConfig` of `hf_model_type(config)`) computing what `config` does.

  RoPE settings are passed as `rope_theta` / `rope_scaling`, which transformers 4
  stores as they are and 5 converts to `rope_parameters`. `extra` adds fields
  that do not change the computation (token ids, `dtype`).
  """
  import transformers

  model_type = hf_model_type(config)
  kwargs = {k: getattr(config, k) for k in _PLAIN_FIELDS}
  kwargs.update(num_key_value_heads=config.num_key_value_heads, head_dim=config.dim_per_head,
                rope_theta=config.rope_theta, hidden_act="silu", attention_dropout=0.0,
                architectures=[_ARCHITECTURES[model_type]])
  if config.rope_type != "default":
    kwargs["rope_scaling"] = {"rope_type": config.rope_type, **{
        key: getattr(config, field) for key, field in _ROPE_KEYS[config.rope_type].items()}}
  if model_type == "llama":
    kwargs.update(attention_bias=False, mlp_bias=False)
  else:
    kwargs.update(use_sliding_window=False)
    if model_type == "qwen3":
      kwargs.update(attention_bias=False)
  return transformers.AutoConfig.for_model(model_type, **kwargs, **extra)


# ----------------------------------------------------------------------------- state dicts


def _hf_name(path: tuple) -> tuple[str, bool]:
  """NNX flat-state path -> (HF tensor name, whether the array is transposed)."""
  *mods, leaf = (str(p) for p in path)
  prefix = "" if mods[0] == "lm_head" else "model."
  if leaf == "kernel":
    return prefix + ".".join(mods) + ".weight", True
  if leaf == "embedding":
    return prefix + ".".join(mods) + ".weight", False
  return prefix + ".".join(mods) + "." + leaf, False


def _abstract_params(config: ModelConfig) -> nnx.State:
  return nnx.split(nnx.eval_shape(lambda: Decoder(config, rngs=nnx.Rngs(0))))[1]


def to_hf_state_dict(params: nnx.State) -> dict[str, np.ndarray]:
  """Our decoder's parameters (`nnx.split(model)[1]`) -> HF name -> NumPy array (HF layout, same dtype)."""
  out = {}
  for path, var in nnx.to_flat_state(params):
    name, transpose = _hf_name(path)
    x = np.array(jax.device_get(var[...]))  # a writable copy (torch.from_numpy warns on read-only)
    out[name] = np.ascontiguousarray(x.T) if transpose else x
  return out


def from_hf_state_dict(tensors: Mapping[str, Any], config: ModelConfig, *, dtype=jnp.float32) -> nnx.State:
  """HF name -> array (NumPy, torch-converted, safetensors) -> our decoder's parameters in `dtype`.

  Merge with the graphdef of `Decoder(config)`: `nnx.merge(nnx.split(Decoder(config, ...))[0], params)`,
  or use `decoder_from_hf`. Raises `ValueError` on missing, unexpected or misshaped tensors.
  """
  template = nnx.to_flat_state(_abstract_params(config))
  remaining = dict(tensors)
  if config.tie_word_embeddings and "lm_head.weight" in remaining:
    head = np.asarray(remaining.pop("lm_head.weight"))
    if not np.array_equal(head, np.asarray(tensors["model.embed_tokens.weight"])):
      raise ValueError("tie_word_embeddings=True but lm_head.weight differs from model.embed_tokens.weight")
  for k in [k for k in remaining if k.endswith("rotary_emb.inv_freq")]:  # a buffer in old checkpoints
    del remaining[k]
  leaves, missing = [], []
  for path, var in template:
    name, transpose = _hf_name(path)
    if name not in remaining:
      missing.append(name)
      continue
    x = jnp.asarray(remaining.pop(name), dtype)
    x = x.T if transpose else x
    if x.shape != var.shape:
      raise ValueError(f"{name}: expected shape {var.shape[::-1] if transpose else var.shape} (HF layout), "
                       f"got {x.shape[::-1] if transpose else x.shape}")
    leaves.append((path, var.replace(x)))
  if missing or remaining:
    raise ValueError(f"state dict does not match the config: missing {sorted(missing)}, "
                     f"unexpected {sorted(remaining)}")
  return nnx.from_flat_state(leaves)


def decoder_from_hf(tensors: Mapping[str, Any], config: ModelConfig, *, dtype=jnp.float32) -> Decoder:
  """A `Decoder` holding the HF weights."""
  graphdef, _ = nnx.split(nnx.eval_shape(lambda: Decoder(config, rngs=nnx.Rngs(0))))
  return nnx.merge(graphdef, from_hf_state_dict(tensors, config, dtype=dtype))


# ----------------------------------------------------------------------------- files


def _params_dtype(params: nnx.State) -> str:
  dtypes = {jnp.dtype(x.dtype).name for x in jax.tree.leaves(params)}
  if len(dtypes) != 1:
    raise ValueError(f"parameters of mixed dtypes {sorted(dtypes)}; cast them to one before exporting")
  return dtypes.pop()


def save_pretrained(directory: str | Path, params: nnx.State, config: ModelConfig, *, tokenizer: Any = None,
                    tokenizer_files: Sequence[str | Path] | None = None, eos_ids: Sequence[int] | None = None,
                    generation: Mapping[str, Any] | None = None) -> Path:
  """Writes a directory that `transformers.AutoModelForCausalLM.from_pretrained` loads.

  `config.json` (the family of `hf_model_type(config)`, `dtype` of the parameters),
  `generation_config.json`, `model.safetensors` (HF layout, the parameters' dtype)
  and, given a `transformers` tokenizer, its files (and chat template, if it has
  one) with its BOS/EOS/PAD ids in both configs, so that `generate` stops at its EOS.

  Args:
    tokenizer: a `transformers` tokenizer (its token ids; its files unless `tokenizer_files`).
    tokenizer_files: the tokenizer files of the source checkpoint, copied byte for byte instead of
      `tokenizer.save_pretrained` (which adds fields, e.g. transformers 5's `is_local`).
    eos_ids: every EOS id (`generation_config.json`'s `eos_token_id`; default: the tokenizer's EOS).
    generation: the source checkpoint's `generation_config.json` as a dict: every field is kept as it is
      (sampling settings, ...) except the BOS/EOS/PAD ids, which are the tokenizer's and `eos_ids`.
  """
  import transformers
  from safetensors.numpy import save_file

  directory = Path(directory)
  directory.mkdir(parents=True, exist_ok=True)
  extra: dict[str, Any] = {"dtype": _params_dtype(params)}
  if tokenizer is not None:
    extra.update(bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                 pad_token_id=tokenizer.pad_token_id)
    if tokenizer_files is None:
      tokenizer.save_pretrained(directory)
  for f in tokenizer_files or ():
    shutil.copyfile(f, directory / Path(f).name)
  hf = hf_config(config, **extra)
  hf.save_pretrained(directory)
  ours = transformers.GenerationConfig.from_model_config(hf)
  if eos_ids is not None and len(eos_ids) > 1:  # `generate` stops where tcred's sampler does: at every EOS id
    ours.eos_token_id = [int(i) for i in eos_ids]
  if generation is None:
    ours.save_pretrained(directory)
  else:  # the source's fields as they are (a GenerationConfig would validate and reorder them), our token ids
    ids = ("bos_token_id", "eos_token_id", "pad_token_id")
    kept = {k: v for k, v in generation.items() if k not in ids}
    kept.update({k: getattr(ours, k) for k in ids if getattr(ours, k, None) is not None})
    (directory / "generation_config.json").write_text(json.dumps(kept, indent=2, sort_keys=True) + "\n")
  save_file(to_hf_state_dict(params), str(directory / "model.safetensors"), metadata={"format": "pt"})
  return directory


class CheckpointFileError(ValueError):
  """A weight file of a checkpoint that cannot be read or does not fit its config (the message names the file)."""


_FLOAT_DTYPES = ("F16", "BF16", "F32", "F64")


def weight_files(directory: str | Path) -> list[Path]:
  """The safetensors files of a checkpoint: the shards its `model.safetensors.index.json` names, else every
  `*.safetensors` in it.

  Raises:
    FileNotFoundError: no weight file, or shards the index names that are missing (all of them listed).
    CheckpointFileError: an index that is not readable JSON with a `weight_map`.
  """
  directory = Path(directory)
  index = directory / "model.safetensors.index.json"
  if index.is_file():
    try:
      weight_map = json.loads(index.read_text())["weight_map"]
      shards = sorted(set(weight_map.values()))
      assert shards and all(isinstance(f, str) for f in shards)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError, AttributeError,
            AssertionError) as e:
      raise CheckpointFileError(f"{index} is not a safetensors index (JSON with a non-empty \"weight_map\" "
                                f"of tensor name -> shard file): {type(e).__name__}: {e}") from None
    missing = [f for f in shards if not (directory / f).is_file()]
    if missing:
      raise FileNotFoundError(f"{index} names {len(shards)} shard files, of which {len(missing)} are missing: "
                              f"{', '.join(missing)}")
    return [directory / f for f in shards]
  files = sorted(directory.glob("*.safetensors"))
  if not files:
    raise FileNotFoundError(f"no *.safetensors file in {directory} (PyTorch .bin checkpoints are not read)")
  return files


def check_weight_files(directory: str | Path, config: ModelConfig) -> list[Path]:
  """Reads the headers of a checkpoint's weight files (no tensor data) and checks them against `config`.

  Returns `weight_files(directory)`. Raises `FileNotFoundError` (see `weight_files`) or
  `CheckpointFileError` naming the file: a truncated or corrupt file, a tensor stored twice, a
  non-floating dtype, a shape other than `config`'s, or tensors missing or unexpected.
  """
  from safetensors import SafetensorError, safe_open

  directory = Path(directory)
  files = weight_files(directory)
  where: dict[str, Path] = {}
  shapes: dict[str, tuple[int, ...]] = {}
  for f in files:
    try:
      with safe_open(str(f), framework="numpy") as h:
        for name in h.keys():
          part = h.get_slice(name)
          dtype, shape = part.get_dtype(), tuple(part.get_shape())
          if name in where:
            raise CheckpointFileError(f"{f}: tensor {name} is also in {where[name]}")
          if dtype not in _FLOAT_DTYPES:
            raise CheckpointFileError(f"{f}: tensor {name} has dtype {dtype}; weights must be one of "
                                      f"{', '.join(_FLOAT_DTYPES)}")
          where[name], shapes[name] = f, shape
    except SafetensorError as e:
      raise CheckpointFileError(f"{f} is not a readable safetensors file (truncated or corrupt?): {e}") from None
    except OSError as e:
      raise CheckpointFileError(f"{f} cannot be read: {e.strerror or e}") from None
  expected = {}
  for path, var in nnx.to_flat_state(_abstract_params(config)):
    name, transpose = _hf_name(path)
    expected[name] = tuple(var.shape[::-1] if transpose else var.shape)
  for name, shape in shapes.items():
    if name in expected and shape != expected[name]:
      raise CheckpointFileError(f"{where[name]}: tensor {name} has shape {list(shape)}, but "
                                f"{directory / 'config.json'} asks for {list(expected[name])}")
  ignored = {k for k in shapes if k.endswith("rotary_emb.inv_freq")}
  if config.tie_word_embeddings:
    ignored.add("lm_head.weight")
  missing = sorted(set(expected) - set(shapes))
  unexpected = sorted(set(shapes) - set(expected) - ignored)
  if missing or unexpected:
    read = ", ".join(str(f) for f in files)
    raise CheckpointFileError(f"the weights in {read} do not match {directory / 'config.json'}: missing "
                              f"{missing[:8]}{' ...' if len(missing) > 8 else ''}, unexpected "
                              f"{unexpected[:8]}{' ...' if len(unexpected) > 8 else ''}")
  return files


def load_pretrained(directory: str | Path, *, dtype=jnp.float32) -> tuple[ModelConfig, nnx.State]:
  """Reads an HF Llama/Qwen2/Qwen3 directory (`config.json` and one or more `*.safetensors`) in `dtype`.

  Raises `FileNotFoundError` for a missing directory or file, `UnsupportedCheckpoint`
  (a `ValueError`) for a model the decoder cannot represent, and `CheckpointFileError`
  (a `ValueError`) naming a weight file that is unreadable, does not fit the config or
  holds non-finite values (`check_weight_files`).
  """
  import transformers
  from safetensors import SafetensorError
  from safetensors.flax import load_file  # bfloat16 without ml_dtypes support in NumPy

  directory = Path(directory)
  config_path = directory / "config.json"
  if not config_path.is_file():
    raise FileNotFoundError(f"{directory} is not a Hugging Face checkpoint directory: no config.json")
  _check_model_type(json.loads(config_path.read_text()).get("model_type"))
  config = config_from_hf(transformers.AutoConfig.from_pretrained(directory, local_files_only=True))
  tensors: dict[str, Any] = {}
  for f in check_weight_files(directory, config):
    try:
      part = load_file(str(f))
    except (SafetensorError, OSError) as e:
      raise CheckpointFileError(f"{f} is not a readable safetensors file (truncated or corrupt?): {e}") from None
    bad = [k for k, v in part.items() if not bool(jnp.isfinite(v).all())]
    if bad:
      raise CheckpointFileError(f"{f}: tensors {sorted(bad)[:8]} hold NaN or infinite values")
    tensors.update(part)
  return config, from_hf_state_dict(tensors, config, dtype=dtype)

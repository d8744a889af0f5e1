"""Hugging Face Llama / Qwen2 import and export: configs and safetensors-style state dicts.

Our NNX `Decoder` names its modules like HF's, so a parameter's HF name is its
NNX path with a `model.` prefix (the head is `lm_head` at the top level):

| NNX path (`nnx.to_flat_state`)                   | HF name                                   | layout              |
|---|---|---|
| `embed_tokens.embedding`  `[V, D]`               | `model.embed_tokens.weight` `[V, D]`      | as is               |
| `layers.i.self_attn.{q,k,v,o}_proj.kernel` `[in, out]` | `model.layers.i.self_attn.{q,k,v,o}_proj.weight` `[out, in]` | transposed |
| `layers.i.self_attn.{q,k,v}_proj.bias` `[out]` (Qwen2) | `model.layers.i.self_attn.{q,k,v}_proj.bias` | as is        |
| `layers.i.mlp.{gate,up,down}_proj.kernel`        | `model.layers.i.mlp.{gate,up,down}_proj.weight` | transposed    |
| `layers.i.{input,post_attention}_layernorm.weight`, `norm.weight` | `model.…layernorm.weight`, `model.norm.weight` | as is |
| `lm_head.kernel` `[D, V]` (untied only)          | `lm_head.weight` `[V, D]`                 | transposed          |

RoPE: both use the "rotate half" convention on HF's (already permuted) q/k
weights, so no permutation is needed (checked by `tests/models/test_hf_parity.py`).
Tied heads: `lm_head.weight` is not written; on import a tied checkpoint's
`lm_head.weight` (some files carry it) must equal the embedding.
Qwen2's q/k/v biases are our `attention_bias=True`; HF Llama's `attention_bias`
also puts a bias on `o_proj`, which our decoder lacks, so it is refused.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Mapping

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from tcred.models.config import ModelConfig
from tcred.models.decoder import Decoder

MODEL_TYPES = ("llama", "qwen2")
_CONFIG_FIELDS = ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
                  "num_key_value_heads", "head_dim", "rope_theta", "rms_norm_eps", "tie_word_embeddings",
                  "max_position_embeddings", "initializer_range")


# ----------------------------------------------------------------------------- configs


def config_from_hf(hf: Mapping[str, Any] | Any) -> ModelConfig:
  """A `ModelConfig` from an HF Llama/Qwen2 config (a `PretrainedConfig` or its `to_dict()`).

  Raises `ValueError` for features our decoder does not implement (RoPE scaling,
  MLP biases, Llama's o_proj bias, sliding-window attention, activations other than SiLU).
  """
  d = dict(hf.to_dict() if hasattr(hf, "to_dict") else hf)
  model_type = d.get("model_type", "llama")
  if model_type not in MODEL_TYPES:
    raise ValueError(f"model_type must be one of {MODEL_TYPES}, got {model_type!r}")
  if d.get("hidden_act", "silu") != "silu":
    raise ValueError(f"hidden_act must be 'silu', got {d['hidden_act']!r}")
  rope_scaling = d.get("rope_scaling")
  if rope_scaling and rope_scaling.get("rope_type", rope_scaling.get("type", "default")) != "default":
    raise ValueError(f"rope_scaling is not supported, got {rope_scaling!r}")
  if d.get("mlp_bias"):
    raise ValueError("mlp_bias=True is not supported")
  if model_type == "llama" and d.get("attention_bias"):
    raise ValueError("Llama attention_bias=True (bias on o_proj too) is not supported; Qwen2-style "
                     "q/k/v biases are (model_type='qwen2')")
  if model_type == "qwen2" and d.get("use_sliding_window"):
    raise ValueError("use_sliding_window=True is not supported")
  kwargs = {k: d[k] for k in _CONFIG_FIELDS if d.get(k) is not None}
  rope_theta = d.get("rope_theta") or (rope_scaling or {}).get("rope_theta")
  if rope_theta is not None:
    kwargs["rope_theta"] = float(rope_theta)
  if kwargs.get("num_key_value_heads") is None:
    kwargs["num_key_value_heads"] = d["num_attention_heads"]
  return ModelConfig(**kwargs, attention_bias=model_type == "qwen2")


def hf_config_dict(config: ModelConfig, *, model_type: str = "llama") -> dict[str, Any]:
  """The HF config (as a dict for `LlamaConfig(**d)` / `Qwen2Config(**d)` or `config.json`)."""
  if model_type not in MODEL_TYPES:
    raise ValueError(f"model_type must be one of {MODEL_TYPES}, got {model_type!r}")
  if config.attention_bias and model_type != "qwen2":
    raise ValueError("attention_bias=True (q/k/v biases) exports as model_type='qwen2' only")
  if model_type == "qwen2" and not config.attention_bias:
    raise ValueError("Qwen2 always has q/k/v biases: export attention_bias=False as model_type='llama'")
  d = {k: getattr(config, k) for k in _CONFIG_FIELDS}
  d["head_dim"] = config.dim_per_head
  d.update(model_type=model_type, hidden_act="silu",
           architectures=["LlamaForCausalLM" if model_type == "llama" else "Qwen2ForCausalLM"])
  if model_type == "llama":
    d.update(attention_bias=False, mlp_bias=False)
  else:
    d.update(use_sliding_window=False)
  return d


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
  """Our decoder's parameters (`nnx.split(model)[1]`) -> HF name -> NumPy array (HF layout)."""
  out = {}
  for path, var in nnx.to_flat_state(params):
    name, transpose = _hf_name(path)
    x = np.array(jax.device_get(var[...]))  # a writable copy (torch.from_numpy warns on read-only)
    out[name] = np.ascontiguousarray(x.T) if transpose else x
  return out


def from_hf_state_dict(tensors: Mapping[str, Any], config: ModelConfig, *, dtype=jnp.float32) -> nnx.State:
  """HF name -> array (NumPy, torch-converted, safetensors) -> our decoder's parameters.

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
    x = np.asarray(remaining.pop(name))
    x = x.T if transpose else x
    if x.shape != var.shape:
      raise ValueError(f"{name}: expected shape {var.shape[::-1] if transpose else var.shape} (HF layout), "
                       f"got {x.shape[::-1] if transpose else x.shape}")
    leaves.append((path, var.replace(jnp.asarray(x, dtype))))
  if missing or remaining:
    raise ValueError(f"state dict does not match the config: missing {sorted(missing)}, "
                     f"unexpected {sorted(remaining)}")
  return nnx.from_flat_state(leaves)


def decoder_from_hf(tensors: Mapping[str, Any], config: ModelConfig, *, dtype=jnp.float32) -> Decoder:
  """A `Decoder` holding the HF weights."""
  graphdef, _ = nnx.split(nnx.eval_shape(lambda: Decoder(config, rngs=nnx.Rngs(0))))
  return nnx.merge(graphdef, from_hf_state_dict(tensors, config, dtype=dtype))


# ----------------------------------------------------------------------------- files


def save_pretrained(directory: str | Path, params: nnx.State, config: ModelConfig, *,
                    model_type: str = "llama") -> Path:
  """Writes `config.json` and `model.safetensors` (HF layout) into `directory`."""
  from safetensors.numpy import save_file
  directory = Path(directory)
  directory.mkdir(parents=True, exist_ok=True)
  (directory / "config.json").write_text(json.dumps(hf_config_dict(config, model_type=model_type), indent=2))
  save_file(to_hf_state_dict(params), str(directory / "model.safetensors"), metadata={"format": "pt"})
  return directory


def load_pretrained(directory: str | Path, *, dtype=jnp.float32) -> tuple[ModelConfig, nnx.State]:
  """Reads an HF Llama/Qwen2 directory (`config.json` and one or more `*.safetensors`)."""
  from safetensors.numpy import load_file
  directory = Path(directory)
  config = config_from_hf(json.loads((directory / "config.json").read_text()))
  files = sorted(directory.glob("*.safetensors"))
  if not files:
    raise ValueError(f"no *.safetensors file in {directory}")
  tensors: dict[str, np.ndarray] = {}
  for f in files:
    tensors.update(load_file(str(f)))
  return config, from_hf_state_dict(tensors, config, dtype=dtype)

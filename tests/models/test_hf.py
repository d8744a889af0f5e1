"""HF import/export without torch: name mapping, round trips, every config field read or refused."""

import dataclasses
import json
import pathlib
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import transformers
from flax import nnx

from tcred.models.config import ModelConfig, model_preset
from tcred.models.decoder import Decoder
from tcred.models.hf import (NON_COMPUTATION_FIELDS, READ_FIELDS, UnsupportedCheckpoint, config_from_hf,
                             config_from_hf_dict, from_hf_state_dict, hf_config, hf_model_type, load_pretrained,
                             save_pretrained, to_hf_state_dict)
from tcred.tasks import tokenizer as char_tok

FAMILIES = {"llama": transformers.LlamaConfig, "qwen2": transformers.Qwen2Config, "qwen3": transformers.Qwen3Config}


def _params(**overrides):
  return nnx.split(Decoder(model_preset("tiny", **overrides), rngs=nnx.Rngs(0)))[1]


def test_names_and_layouts_follow_hf():
  config = model_preset("tiny", qk_norm=True)
  sd = to_hf_state_dict(_params(qk_norm=True))
  d, v, f = config.hidden_size, config.vocab_size, config.intermediate_size
  kv = config.num_key_value_heads * config.dim_per_head
  assert sd["model.embed_tokens.weight"].shape == (v, d)
  assert sd["lm_head.weight"].shape == (v, d)
  assert sd["model.layers.1.self_attn.k_proj.weight"].shape == (kv, d)  # HF Linear: [out, in]
  assert sd["model.layers.0.mlp.down_proj.weight"].shape == (d, f)
  assert sd["model.norm.weight"].shape == (d,)
  assert sd["model.layers.1.self_attn.q_norm.weight"].shape == (config.dim_per_head,)  # per head, Qwen3
  assert len(sd) == 2 + 11 * config.num_hidden_layers + 1
  assert config.num_params() == sum(x.size for x in sd.values())


@pytest.mark.parametrize("overrides", [{}, {"tie_word_embeddings": True}, {"attention_bias": True},
                                       {"qk_norm": True}])
def test_state_dict_round_trip_is_exact(overrides):
  params = _params(**overrides)
  config = model_preset("tiny", **overrides)
  sd = to_hf_state_dict(params)
  assert ("lm_head.weight" in sd) == (not config.tie_word_embeddings)
  assert any(k.endswith("q_proj.bias") for k in sd) == config.attention_bias
  assert any(k.endswith("k_norm.weight") for k in sd) == config.qk_norm
  back = from_hf_state_dict(sd, config)
  for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(back)):
    np.testing.assert_array_equal(a, b)


# Every ModelConfig field away from its default (and from the family defaults of HF).
AWAY = dict(vocab_size=50, hidden_size=48, intermediate_size=40, num_hidden_layers=3, num_attention_heads=6,
            num_key_value_heads=2, head_dim=10, rope_theta=777.0, rms_norm_eps=3e-5, tie_word_embeddings=True,
            max_position_embeddings=300, initializer_range=0.05)
LLAMA3 = {"rope_type": "llama3", "factor": 3.0, "low_freq_factor": 1.5, "high_freq_factor": 5.0,
          "original_max_position_embeddings": 100}
LLAMA3_FIELDS = dict(rope_type="llama3", rope_factor=3.0, rope_low_freq_factor=1.5, rope_high_freq_factor=5.0,
                     rope_original_max_position_embeddings=100)


@pytest.mark.parametrize("family", list(FAMILIES))
@pytest.mark.parametrize("rope", ["llama3", "linear"])
def test_every_computation_changing_field_is_read(family, rope):
  # HF config objects (transformers 5: RoPE in rope_parameters) with every field off its default.
  scaling = LLAMA3 if rope == "llama3" else {"rope_type": "linear", "factor": 2.5}
  away = {k: v for k, v in AWAY.items() if k != "rope_theta"}
  hf = FAMILIES[family](**away, rope_parameters={"rope_theta": AWAY["rope_theta"], **scaling})
  got = config_from_hf(hf)
  rope_fields = LLAMA3_FIELDS if rope == "llama3" else dict(rope_type="linear", rope_factor=2.5)
  want = ModelConfig(**AWAY, **rope_fields, attention_bias=family == "qwen2", qk_norm=family == "qwen3")
  assert got == want
  # The test is meaningful: every field but those the family fixes (and llama3's own, for linear) is off default.
  at_default = {f.name for f in dataclasses.fields(ModelConfig) if getattr(want, f.name) == f.default}
  family_fixed = {"attention_bias", "qk_norm"}
  assert at_default <= family_fixed | (set() if rope == "llama3" else set(LLAMA3_FIELDS) - {"rope_type", "rope_factor"})
  # Written out and read back (through config.json, AutoConfig) it is the same model.
  assert config_from_hf(json.loads(hf_config(got).to_json_string())) == got
  assert hf_model_type(got) == family


def test_transformers4_layout_is_read():
  # A config.json written by transformers 4: rope_theta and rope_scaling (with the old "type" key) at the top level.
  v4 = dict(model_type="llama", **AWAY, rope_scaling={"type": "llama3", **{k: v for k, v in LLAMA3.items()
                                                                           if k != "rope_type"}})
  want = ModelConfig(**AWAY, **LLAMA3_FIELDS)
  assert config_from_hf_dict(v4) == want  # the dict as it is
  assert config_from_hf(v4) == want  # through AutoConfig (5 converts it to rope_parameters)
  # transformers 4's Qwen2 sliding window: layers from max_window_layers on, when use_sliding_window.
  q2 = dict(model_type="qwen2", **AWAY, use_sliding_window=True, sliding_window=64, max_window_layers=1)
  with pytest.raises(UnsupportedCheckpoint, match=r"sliding-window attention \(window 64\) in layers \[1, 2\]"):
    config_from_hf_dict(q2)
  assert config_from_hf_dict({**q2, "max_window_layers": 3}).attention_bias  # no layer slides: accepted


def test_family_defaults_fill_a_sparse_config_json():
  # Qwen3's head_dim defaults to 128, not hidden_size / num_attention_heads = 16.
  sparse = dict(model_type="qwen3", vocab_size=50, hidden_size=64, intermediate_size=40, num_hidden_layers=1,
                num_attention_heads=4, num_key_value_heads=2)
  assert config_from_hf(sparse).dim_per_head == 128
  assert config_from_hf({**sparse, "model_type": "llama"}).dim_per_head == 16


def _read_in_modeling(family: str) -> set[str]:
  """Config attributes the installed transformers' modeling code of a family reads."""
  source = pathlib.Path(transformers.__file__).parent / "models" / family / f"modeling_{family}.py"
  text = source.read_text()
  return set(re.findall(r"config\.([a-z][a-z0-9_]*)", text)) | set(re.findall(r'getattr\(config, "(\w+)"', text))


@pytest.mark.parametrize("family", list(FAMILIES))
def test_every_field_of_the_installed_transformers_is_classified(family):
  # A field transformers adds in a later version must be read or declared harmless by hand, never defaulted.
  fields = set(FAMILIES[family]().to_dict()) | _read_in_modeling(family)
  unclassified = fields - set(READ_FIELDS) - set(NON_COMPUTATION_FIELDS)
  assert not unclassified, f"classify in tcred/models/hf.py: {sorted(unclassified)}"


@pytest.mark.parametrize("family,bad,match", [
    ("gpt2", {}, r"model_type 'gpt2' is not supported; supported model types: llama, qwen2, qwen3"),
    ("llama", {"hidden_act": "gelu"}, "hidden_act='gelu'"),
    ("llama", {"mlp_bias": True}, "mlp_bias=True"),
    ("llama", {"attention_bias": True}, "o_proj"),
    ("qwen3", {"attention_bias": True}, "o_proj"),
    ("llama", {"attention_dropout": 0.1}, "attention_dropout=0.1"),
    ("llama", {"rope_scaling": {"rope_type": "yarn", "factor": 2.0}}, "rope_type 'yarn'.*default, linear, llama3"),
    ("llama", {"rope_scaling": {"rope_type": "dynamic", "factor": 2.0}}, "rope_type 'dynamic'"),
    ("llama", {"rope_scaling": {"rope_type": "linear", "factor": 2.0, "mrope_section": [2]}}, "mrope_section"),
    ("llama", {"rope_parameters": {"rope_type": "default", "rope_theta": 1e4, "partial_rotary_factor": 0.5}},
     "partial_rotary_factor=0.5"),
    ("qwen2", {"use_sliding_window": True, "sliding_window": 16, "max_window_layers": 0}, "sliding-window"),
    ("qwen3", {"layer_types": ["sliding_attention", "full_attention"], "use_sliding_window": True,
               "sliding_window": 16}, r"in layers \[0\]"),
])
def test_unsupported_configs_are_refused_by_name(family, bad, match):
  base = dict(model_type=family, vocab_size=50, hidden_size=32, intermediate_size=40, num_hidden_layers=2,
              num_attention_heads=4)
  with pytest.raises(UnsupportedCheckpoint, match=match) as info:
    config_from_hf(base | bad) if family == "gpt2" else config_from_hf(FAMILIES[family](**base | bad))
  if family != "gpt2":
    assert "supported: model_type llama, qwen2, qwen3" in str(info.value)
  assert isinstance(info.value, ValueError)


def test_all_problems_are_named_at_once():
  with pytest.raises(UnsupportedCheckpoint, match=r"hidden_act='relu' \(only 'silu'\); mlp_bias=True\. supported"):
    config_from_hf_dict(dict(model_type="llama", hidden_act="relu", mlp_bias=True, vocab_size=8, hidden_size=8,
                             intermediate_size=8, num_hidden_layers=1, num_attention_heads=2))


def test_export_model_type_follows_the_attention():
  assert [hf_model_type(model_preset("tiny", **o)) for o in ({}, {"attention_bias": True}, {"qk_norm": True})] \
      == ["llama", "qwen2", "qwen3"]
  with pytest.raises(UnsupportedCheckpoint, match="qk_norm=True with attention_bias=True"):
    hf_model_type(model_preset("tiny", qk_norm=True, attention_bias=True))


def test_mismatched_state_dict_is_refused():
  config = model_preset("tiny")
  sd = to_hf_state_dict(_params())
  with pytest.raises(ValueError, match="missing.*lm_head"):
    from_hf_state_dict({k: v for k, v in sd.items() if k != "lm_head.weight"}, config)
  with pytest.raises(ValueError, match="shape"):
    from_hf_state_dict({**sd, "model.norm.weight": np.ones(3, np.float32)}, config)
  with pytest.raises(ValueError, match="unexpected.*q_norm"):
    from_hf_state_dict(to_hf_state_dict(_params(qk_norm=True)), config)
  tied = model_preset("tiny", tie_word_embeddings=True)
  with pytest.raises(ValueError, match="lm_head.weight differs"):
    from_hf_state_dict(to_hf_state_dict(_params(tie_word_embeddings=True)) | {"lm_head.weight": sd["lm_head.weight"]},
                       tied)


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
def test_safetensors_directory_round_trip(tmp_path, dtype):
  config = model_preset("tiny", qk_norm=True, rope_type="linear", rope_factor=2.0)
  params = jax.tree.map(lambda x: x.astype(dtype), _params(qk_norm=True))
  save_pretrained(tmp_path, params, config, tokenizer=char_tok.build_tokenizer())
  written = json.loads((tmp_path / "config.json").read_text())
  assert written["model_type"] == "qwen3" and written["dtype"] == jnp.dtype(dtype).name
  assert (written["bos_token_id"], written["eos_token_id"], written["pad_token_id"]) == (1, 2, 0)
  assert json.loads((tmp_path / "generation_config.json").read_text())["eos_token_id"] == 2
  assert transformers.AutoTokenizer.from_pretrained(tmp_path)("3 5>8:")["input_ids"] == \
      [char_tok.BOS_ID, *char_tok.encode("3 5>8:").tolist()]
  back_config, back = load_pretrained(tmp_path, dtype=dtype)
  assert back_config == config.replace(head_dim=8)
  for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(back)):
    assert b.dtype == dtype
    np.testing.assert_array_equal(np.asarray(a, np.float32), np.asarray(b, np.float32))


def test_load_pretrained_refuses_what_it_cannot_read(tmp_path):
  with pytest.raises(FileNotFoundError, match="no config.json"):
    load_pretrained(tmp_path / "missing")
  (tmp_path / "config.json").write_text(json.dumps({"model_type": "mistral"}))
  with pytest.raises(UnsupportedCheckpoint, match="'mistral' is not supported"):
    load_pretrained(tmp_path)
  hf_config(model_preset("tiny")).save_pretrained(tmp_path)
  with pytest.raises(FileNotFoundError, match="no \\*.safetensors"):
    load_pretrained(tmp_path)


def test_model_config_refuses_bad_rope_settings():
  with pytest.raises(ValueError, match=r"rope_type must be one of \('default', 'linear', 'llama3'\), got 'yarn'"):
    model_preset("tiny", rope_type="yarn")
  with pytest.raises(ValueError, match="0 < low < high"):
    model_preset("tiny", rope_type="llama3", rope_low_freq_factor=4.0, rope_high_freq_factor=4.0)
  with pytest.raises(ValueError, match="rope_factor"):
    model_preset("tiny", rope_factor=0.0)


def test_weight_file_problems_name_the_file(tmp_path):
  """Truncated, corrupt, non-float, misshaped and missing weight files (and missing shards of an index) are
  refused by `load_pretrained` with the file named, never a raw SafetensorError."""
  from safetensors.numpy import save_file

  from tcred.models.hf import CheckpointFileError, check_weight_files

  config = model_preset("tiny")
  good = tmp_path / "good"
  save_pretrained(good, _params(), config)
  weights = (good / "model.safetensors").read_bytes()
  sd = to_hf_state_dict(_params())

  def broken(name, write):
    directory = tmp_path / name
    directory.mkdir()
    for f in ("config.json", "generation_config.json"):
      (directory / f).write_bytes((good / f).read_bytes())
    write(directory)
    return directory

  cases = {
      "truncated": (lambda d: (d / "model.safetensors").write_bytes(weights[:len(weights) // 2]),
                    CheckpointFileError, "model.safetensors is not a readable safetensors file"),
      "corrupt": (lambda d: (d / "model.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json}"),
                  CheckpointFileError, "model.safetensors is not a readable safetensors file"),
      "integer": (lambda d: save_file({**sd, "model.norm.weight": np.ones(sd["model.norm.weight"].shape, np.int32)},
                                      str(d / "model.safetensors")),
                  CheckpointFileError, "model.safetensors: tensor model.norm.weight has dtype I32"),
      "misshaped": (lambda d: save_file({**sd, "model.norm.weight": np.ones(3, np.float32)},
                                        str(d / "model.safetensors")),
                    CheckpointFileError, r"model.safetensors: tensor model.norm.weight has shape \[3\]"),
      "incomplete": (lambda d: save_file({k: v for k, v in sd.items() if k != "lm_head.weight"},
                                         str(d / "model.safetensors")),
                     CheckpointFileError, r"do not match .*config.json: missing \['lm_head.weight'\]"),
      "non-finite": (lambda d: save_file({**sd, "model.norm.weight": np.full_like(sd["model.norm.weight"], np.nan)},
                                         str(d / "model.safetensors")),
                     CheckpointFileError, r"tensors \['model.norm.weight'\] hold NaN"),
      "missing-shard": (lambda d: (save_file(sd, str(d / "model-00001-of-00002.safetensors")),
                                   (d / "model.safetensors.index.json").write_text(json.dumps({"weight_map": {
                                       **{k: "model-00001-of-00002.safetensors" for k in sd},
                                       "lm_head.weight": "model-00002-of-00002.safetensors"}}))),
                        FileNotFoundError, "1 are missing: model-00002-of-00002.safetensors"),
      "bad-index": (lambda d: (save_file(sd, str(d / "model.safetensors")),
                               (d / "model.safetensors.index.json").write_text("{}")),
                    CheckpointFileError, "model.safetensors.index.json is not a safetensors index"),
  }
  for name, (write, error, match) in cases.items():
    directory = broken(name, write)
    with pytest.raises(error, match=match) as info:
      load_pretrained(directory)
    assert str(directory) in str(info.value), name
    if name != "non-finite":  # the headers tell every other problem, without reading the tensors
      with pytest.raises(error, match=match):
        check_weight_files(directory, config)
  assert check_weight_files(good, config) == [good / "model.safetensors"]

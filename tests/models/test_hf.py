"""HF import/export without torch: name mapping, round trips, refusals."""

import jax
import numpy as np
import pytest
from flax import nnx

from tcred.models.config import model_preset
from tcred.models.decoder import Decoder
from tcred.models.hf import (config_from_hf, from_hf_state_dict, hf_config_dict, load_pretrained, save_pretrained,
                             to_hf_state_dict)


def _params(**overrides):
  return nnx.split(Decoder(model_preset("tiny", **overrides), rngs=nnx.Rngs(0)))[1]


def test_names_and_layouts_follow_hf():
  config = model_preset("tiny")
  sd = to_hf_state_dict(_params())
  d, v, f = config.hidden_size, config.vocab_size, config.intermediate_size
  kv = config.num_key_value_heads * config.dim_per_head
  assert sd["model.embed_tokens.weight"].shape == (v, d)
  assert sd["lm_head.weight"].shape == (v, d)
  assert sd["model.layers.1.self_attn.k_proj.weight"].shape == (kv, d)  # HF Linear: [out, in]
  assert sd["model.layers.0.mlp.down_proj.weight"].shape == (d, f)
  assert sd["model.norm.weight"].shape == (d,)
  assert len(sd) == 2 + 9 * config.num_hidden_layers + 1


@pytest.mark.parametrize("overrides", [{}, {"tie_word_embeddings": True}, {"attention_bias": True}])
def test_state_dict_round_trip_is_exact(overrides):
  params = _params(**overrides)
  config = model_preset("tiny", **overrides)
  sd = to_hf_state_dict(params)
  assert ("lm_head.weight" in sd) == (not config.tie_word_embeddings)
  assert any(k.endswith("q_proj.bias") for k in sd) == config.attention_bias
  back = from_hf_state_dict(sd, config)
  for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(back)):
    np.testing.assert_array_equal(a, b)


def test_config_round_trip_and_refusals():
  for model_type, overrides in (("llama", {}), ("qwen2", {"attention_bias": True, "tie_word_embeddings": True})):
    config = model_preset("bench-27m", **overrides)
    assert config_from_hf(hf_config_dict(config, model_type=model_type)) == config.replace(head_dim=64)
  with pytest.raises(ValueError, match="qwen2"):
    hf_config_dict(model_preset("tiny", attention_bias=True), model_type="llama")
  base = hf_config_dict(model_preset("tiny"))
  for bad, match in (({"hidden_act": "gelu"}, "hidden_act"), ({"rope_scaling": {"rope_type": "yarn"}}, "rope"),
                     ({"attention_bias": True}, "o_proj"), ({"model_type": "gpt2"}, "model_type")):
    with pytest.raises(ValueError, match=match):
      config_from_hf({**base, **bad})


def test_mismatched_state_dict_is_refused():
  config = model_preset("tiny")
  sd = to_hf_state_dict(_params())
  with pytest.raises(ValueError, match="missing.*lm_head"):
    from_hf_state_dict({k: v for k, v in sd.items() if k != "lm_head.weight"}, config)
  with pytest.raises(ValueError, match="shape"):
    from_hf_state_dict({**sd, "model.norm.weight": np.ones(3, np.float32)}, config)
  tied = model_preset("tiny", tie_word_embeddings=True)
  with pytest.raises(ValueError, match="lm_head.weight differs"):
    from_hf_state_dict(to_hf_state_dict(_params(tie_word_embeddings=True)) | {"lm_head.weight": sd["lm_head.weight"]},
                       tied)


def test_safetensors_directory_round_trip(tmp_path):
  params = _params()
  save_pretrained(tmp_path, params, model_preset("tiny"))
  config, back = load_pretrained(tmp_path)
  assert config == model_preset("tiny").replace(head_dim=8)
  for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(back)):
    np.testing.assert_array_equal(a, b)

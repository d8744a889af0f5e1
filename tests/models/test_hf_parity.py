"""Our NNX decoder equals Hugging Face's PyTorch Llama / Qwen2 on the same weights.

Needs torch (`pip install -e '.[parity]'`); skipped without it. The round trips that
need no torch live in `tests/models/test_hf.py`.
"""

import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from tcred.models.config import ModelConfig  # noqa: E402
from tcred.models.decoder import Decoder, positions_from_mask  # noqa: E402
from tcred.models.hf import config_from_hf, decoder_from_hf, hf_config_dict, to_hf_state_dict  # noqa: E402

TINY = dict(vocab_size=96, hidden_size=64, intermediate_size=112, num_hidden_layers=2, num_attention_heads=4,
            num_key_value_heads=2, max_position_embeddings=128, rms_norm_eps=1e-6, rope_theta=10000.0)


def _hf_model(model_type, tie, seed=0):
  torch.manual_seed(seed)
  if model_type == "llama":
    cfg = transformers.LlamaConfig(**TINY, tie_word_embeddings=tie, attn_implementation="eager")
    model = transformers.LlamaForCausalLM(cfg)
  else:
    cfg = transformers.Qwen2Config(**TINY, tie_word_embeddings=tie, attn_implementation="eager")
    model = transformers.Qwen2ForCausalLM(cfg)
  with torch.no_grad():  # HF zero-initialises biases and ones-initialises norms: randomise everything
    for p in model.parameters():
      p.normal_(0.0, 0.5 if p.ndim == 1 else 0.1)
  return model.eval()


def _tokens(b=2, t=11, v=96, seed=1):
  return np.random.default_rng(seed).integers(0, v, size=(b, t)).astype(np.int64)


def _our_logits(model: Decoder, tokens, valid=None):
  valid = np.ones(tokens.shape, bool) if valid is None else valid
  hidden, _ = model(jnp.asarray(tokens, jnp.int32), positions_from_mask(jnp.asarray(valid)), jnp.asarray(valid))
  return np.asarray(jnp.einsum("BTD,DV->BTV", hidden, model.unembedding()))


def _hf_logits(model, tokens, valid=None):
  kwargs = {}
  if valid is not None:
    kwargs = dict(attention_mask=torch.from_numpy(valid.astype(np.int64)),
                  position_ids=torch.from_numpy(np.asarray(positions_from_mask(jnp.asarray(valid))).astype(np.int64)))
  with torch.no_grad():
    return model(torch.from_numpy(tokens), **kwargs).logits.numpy()


@pytest.mark.parametrize("model_type,tie", [("llama", False), ("llama", True), ("qwen2", False), ("qwen2", True)])
def test_hf_checkpoint_imports_with_equal_logits(model_type, tie):
  hf = _hf_model(model_type, tie)
  config = config_from_hf(hf.config)
  assert config.tie_word_embeddings == tie and config.attention_bias == (model_type == "qwen2")
  tensors = {k: v.detach().numpy() for k, v in hf.state_dict().items()}
  ours = decoder_from_hf(tensors, config)
  tokens = _tokens()
  np.testing.assert_allclose(_our_logits(ours, tokens), _hf_logits(hf, tokens), atol=1e-4, rtol=1e-4)


def test_left_padded_rows_match_hf_with_position_ids():
  hf = _hf_model("llama", False)
  ours = decoder_from_hf({k: v.detach().numpy() for k, v in hf.state_dict().items()}, config_from_hf(hf.config))
  tokens = _tokens()
  valid = np.ones(tokens.shape, bool)
  valid[0, :4] = False  # left padding
  got, want = _our_logits(ours, tokens, valid), _hf_logits(hf, tokens, valid)
  np.testing.assert_allclose(got[valid], want[valid], atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("model_type,bias", [("llama", False), ("qwen2", True)])
def test_our_decoder_exports_to_hf_with_equal_logits(model_type, bias):
  config = ModelConfig(**TINY, attention_bias=bias, initializer_range=0.1)
  model = Decoder(config, rngs=nnx.Rngs(3))
  _, params = nnx.split(model)
  cfg_dict = hf_config_dict(config, model_type=model_type)
  cls = transformers.LlamaForCausalLM if model_type == "llama" else transformers.Qwen2ForCausalLM
  cfg_cls = transformers.LlamaConfig if model_type == "llama" else transformers.Qwen2Config
  hf = cls(cfg_cls(**cfg_dict, attn_implementation="eager")).eval()
  missing, unexpected = hf.load_state_dict({k: torch.from_numpy(v) for k, v in to_hf_state_dict(params).items()},
                                           strict=False)
  assert not unexpected and not [k for k in missing if "rotary" not in k]
  tokens = _tokens(seed=5)
  np.testing.assert_allclose(_our_logits(model, tokens), _hf_logits(hf, tokens), atol=1e-4, rtol=1e-4)

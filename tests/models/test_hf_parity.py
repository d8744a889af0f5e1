"""Our NNX decoder equals Hugging Face's PyTorch Llama / Qwen2 / Qwen3 on the same weights.

Tiny random checkpoints made by `transformers` and written by its `save_pretrained`:
every parameter randomised (norms and biases too) and every setting that changes the
computation off its default (RoPE base and scaling, norm epsilon, head_dim ≠
hidden/heads, grouped KV heads, tied and untied heads). torch is a test dependency
(the `test` extra); the round trips that need no torch live in `tests/models/test_hf.py`.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from tcred.models.config import ModelConfig  # noqa: E402
from tcred.models.decoder import Decoder, positions_from_mask  # noqa: E402
from tcred.models.hf import from_hf_state_dict, load_pretrained, save_pretrained, to_hf_state_dict  # noqa: E402
from tcred.sampling.sampler import sample_groups  # noqa: E402

V = 96
# head_dim 24 ≠ 64 / 4; 2 KV heads for 4 query heads; RoPE base, epsilon off the defaults (10000, 1e-6).
TINY = dict(vocab_size=V, hidden_size=64, intermediate_size=112, num_hidden_layers=2, num_attention_heads=4,
            num_key_value_heads=2, head_dim=24, max_position_embeddings=128, rms_norm_eps=0.03)
THETA = 1234.5
# With E = 24 and θ = 1234.5 the wavelengths 2π/f = 2π θ^(2i/E) run from 6.3 (i = 0) and 11.4 (i = 1) to ≈ 4100
# tokens: with an original context of 64, high_freq_factor 5 and low_freq_factor 1.5 all three llama3 bands
# (kept below 64/5 = 12.8, ramp, divided by the factor above 64/1.5 = 42.7) are used.
LLAMA3 = {"rope_type": "llama3", "factor": 4.0, "low_freq_factor": 1.5, "high_freq_factor": 5.0,
          "original_max_position_embeddings": 64}
CASES = {  # name: (family, tie_word_embeddings, RoPE scaling)
    "llama": ("llama", False, {}), "llama-tied-llama3": ("llama", True, LLAMA3),
    "llama-linear": ("llama", False, {"rope_type": "linear", "factor": 3.0}),
    "qwen2": ("qwen2", False, {}), "qwen2-tied": ("qwen2", True, {}),
    "qwen3": ("qwen3", False, {}), "qwen3-tied-llama3": ("qwen3", True, LLAMA3)}


def _hf_model(family, tie, scaling, seed=0, **overrides):
  torch.manual_seed(seed)
  rope = {"rope_type": "default", "rope_theta": THETA, **scaling}
  config = transformers.AutoConfig.for_model(family, **(TINY | overrides), tie_word_embeddings=tie,
                                             rope_parameters=rope)
  model = transformers.AutoModelForCausalLM.from_config(config, attn_implementation="eager")
  with torch.no_grad():  # HF zero-initialises biases and ones-initialises norms: randomise everything
    for p in model.parameters():
      p.normal_(0.0, 0.5 if p.ndim == 1 else 0.1)
  return model.eval()


def _saved(tmp_path, name, **overrides):
  """(HF model, our config, our decoder) of case `name`, through HF's save_pretrained and our load_pretrained."""
  hf = _hf_model(*CASES[name], **overrides)
  hf.save_pretrained(tmp_path / name)
  config, params = load_pretrained(tmp_path / name)
  return hf, config, _decoder(config, params)


def _decoder(config, params):
  graphdef, _ = nnx.split(nnx.eval_shape(lambda: Decoder(config, rngs=nnx.Rngs(0))))
  return nnx.merge(graphdef, params)


def _tokens(b=2, t=24, seed=1):
  return np.random.default_rng(seed).integers(0, V, size=(b, t)).astype(np.int64)


def _our_logits(model: Decoder, tokens, valid=None):
  valid = np.ones(tokens.shape, bool) if valid is None else valid
  hidden, _ = model(jnp.asarray(tokens, jnp.int32), positions_from_mask(jnp.asarray(valid)), jnp.asarray(valid))
  return np.asarray(jnp.einsum("BTD,DV->BTV", hidden.astype(jnp.float32), model.unembedding().astype(jnp.float32)))


def _hf_logits(model, tokens, valid=None):
  kwargs = {}
  if valid is not None:
    kwargs = dict(attention_mask=torch.from_numpy(valid.astype(np.int64)),
                  position_ids=torch.from_numpy(np.asarray(positions_from_mask(jnp.asarray(valid))).astype(np.int64)))
  with torch.no_grad():
    return model(torch.from_numpy(tokens), **kwargs).logits.float().numpy()


@pytest.mark.parametrize("name", list(CASES))
def test_hf_checkpoint_loads_with_equal_logits(tmp_path, name):
  family, tie, scaling = CASES[name]
  hf, config, ours = _saved(tmp_path, name)
  assert (config.tie_word_embeddings, config.attention_bias, config.qk_norm) == (tie, family == "qwen2",
                                                                                family == "qwen3")
  assert (config.rope_theta, config.rope_type, config.dim_per_head) == (THETA, scaling.get("rope_type", "default"), 24)
  tokens = _tokens()
  want = _hf_logits(hf, tokens)
  np.testing.assert_allclose(_our_logits(ours, tokens), want, atol=1e-4, rtol=1e-4)
  valid = np.ones(tokens.shape, bool)
  valid[0, :7] = False  # left padding: HF given the same position ids
  np.testing.assert_allclose(_our_logits(ours, tokens, valid)[valid], _hf_logits(hf, tokens, valid)[valid],
                             atol=1e-4, rtol=1e-4)


def test_the_tolerance_notices_every_setting(tmp_path):
  # Each setting, put back to its default, moves the logits far beyond the 1e-4 of the parity tests:
  # a field read as its default could not pass them.
  hf, config, ours = _saved(tmp_path, "qwen3-tied-llama3")
  tokens = _tokens()
  want = _hf_logits(hf, tokens)
  graphdef, params = nnx.split(ours)
  for field in ("rope_theta", "rms_norm_eps", "rope_type", "rope_factor", "rope_low_freq_factor",
                "rope_high_freq_factor", "rope_original_max_position_embeddings"):
    wrong = config.replace(**{field: ModelConfig.__dataclass_fields__[field].default})
    assert np.abs(_our_logits(_decoder(wrong, params), tokens) - want).max() > 1e-3, field
  # The tied head and the q/k norms, read as their defaults, would not even match the checkpoint's tensors.
  sd = to_hf_state_dict(params)
  with pytest.raises(ValueError, match="missing.*lm_head"):
    from_hf_state_dict(sd, config.replace(tie_word_embeddings=False))
  with pytest.raises(ValueError, match="unexpected.*q_norm"):
    from_hf_state_dict(sd, config.replace(qk_norm=False))


@pytest.mark.parametrize("name", ["llama", "qwen2-tied", "qwen3-tied-llama3"])
def test_greedy_decode_equals_generate(tmp_path, name):
  hf, config, ours = _saved(tmp_path, name)
  pad, new = 0, 16
  prompts = [_tokens(1, 9, seed=2)[0] % (V - 1) + 1, _tokens(1, 5, seed=3)[0] % (V - 1) + 1]  # no pad id inside
  p = max(map(len, prompts))
  ids = np.full((2, p), pad, np.int64)
  valid = np.zeros((2, p), bool)
  for i, row in enumerate(prompts):
    ids[i, p - len(row):], valid[i, p - len(row):] = row, True

  def generate(eos):
    out = hf.generate(torch.from_numpy(ids), attention_mask=torch.from_numpy(valid.astype(np.int64)),
                      do_sample=False, max_new_tokens=new, eos_token_id=eos, pad_token_id=pad)
    return out[:, p:].numpy()

  # EOS = the 4th greedy token of row 0, so that row 0 stops early and row 1 (most likely) runs on.
  eos = int(generate(None)[0, 3])
  want = generate(eos)
  graphdef, params = nnx.split(ours)
  got = sample_groups(graphdef, params, jnp.asarray(ids, jnp.int32), jnp.asarray(valid), jax.random.key(0),
                      group_size=1, max_new_tokens=new, temperature=1.0, greedy=True, eos_id=eos, pad_id=pad)
  tokens = np.asarray(got.tokens[:, 0])
  np.testing.assert_array_equal(tokens[:, :want.shape[1]], want)
  assert np.all(tokens[:, want.shape[1]:] == pad)
  assert np.asarray(got.finished[:, 0])[0] and np.asarray(got.mask[0, 0]).sum() <= 4


@pytest.mark.parametrize("family,overrides", [("llama", {}), ("qwen2", {"attention_bias": True, "tie_word_embeddings": True}),
                                              ("qwen3", {"qk_norm": True, "rope_type": "linear", "rope_factor": 2.0})])
def test_our_export_loads_into_transformers_with_equal_logits(tmp_path, family, overrides):
  config = ModelConfig(**TINY, rope_theta=THETA, **overrides)
  graphdef, params = nnx.split(Decoder(config, rngs=nnx.Rngs(3)))
  keys = iter(jax.random.split(jax.random.key(4), len(jax.tree.leaves(params))))
  params = jax.tree.map(lambda x: (0.5 if x.ndim == 1 else 0.1) * jax.random.normal(next(keys), x.shape), params)
  save_pretrained(tmp_path, params, config)
  hf = transformers.AutoModelForCausalLM.from_pretrained(tmp_path, attn_implementation="eager").eval()
  assert type(hf).__name__ == {"llama": "LlamaForCausalLM", "qwen2": "Qwen2ForCausalLM",
                               "qwen3": "Qwen3ForCausalLM"}[family]
  assert hf.dtype == torch.float32
  tokens = _tokens(seed=5)
  np.testing.assert_allclose(_our_logits(nnx.merge(graphdef, params), tokens), _hf_logits(hf, tokens),
                             atol=1e-4, rtol=1e-4)


def test_bfloat16_checkpoints_load_and_export(tmp_path):
  hf = _hf_model(*CASES["qwen3"]).to(torch.bfloat16)
  hf.save_pretrained(tmp_path / "in")
  tokens = _tokens()
  # The bf16 weights computed in float32 (a fresh load: `.float()` would keep HF's RoPE buffer rounded to bf16).
  want = _hf_logits(transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "in", dtype=torch.float32,
                                                                      attn_implementation="eager"), tokens)
  config, p32 = load_pretrained(tmp_path / "in")  # float32 by default: exact copies of the bf16 weights
  np.testing.assert_allclose(_our_logits(_decoder(config, p32), tokens), want, atol=1e-4, rtol=1e-4)
  config, p16 = load_pretrained(tmp_path / "in", dtype=jnp.bfloat16)
  assert {x.dtype for x in jax.tree.leaves(p16)} == {jnp.dtype(jnp.bfloat16)}
  for a, b in zip(jax.tree.leaves(p32), jax.tree.leaves(p16)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b, np.float32))
  # bf16 weights, float32 activations (the embedding lookup gives float32; products promote): the same logits.
  hidden, _ = _decoder(config, p16)(jnp.asarray(tokens, jnp.int32), jnp.broadcast_to(jnp.arange(24), (2, 24)),
                                    jnp.ones((2, 24), bool))
  assert hidden.dtype == jnp.float32
  np.testing.assert_allclose(_our_logits(_decoder(config, p16), tokens), want, atol=1e-4, rtol=1e-4)
  # Exported in bfloat16, transformers loads bfloat16 weights equal bit for bit.
  save_pretrained(tmp_path / "out", p16, config)
  back = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "out")
  assert back.dtype == torch.bfloat16
  for k, v in hf.state_dict().items():
    assert torch.equal(back.state_dict()[k], v), k


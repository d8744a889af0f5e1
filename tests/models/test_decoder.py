import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from tcred.models import decoder as decoder_module
from tcred.models.config import ModelConfig, model_preset
from tcred.models.decoder import Decoder, KVCache, positions_from_mask


def _tokens(b, t, seed=0):
  return jax.random.randint(jax.random.key(seed), (b, t), 3, 99)


def test_incremental_decode_with_cache_equals_full_forward(tiny_model):
  b, t, split = 2, 9, 4
  tokens = _tokens(b, t)
  valid = jnp.ones((b, t), bool)
  pos = positions_from_mask(valid)
  full, _ = tiny_model(tokens, pos, valid)
  graphdef, params = nnx.split(tiny_model)
  run = jax.jit(lambda p, *a: nnx.merge(graphdef, p)(*a))  # one compile per token count
  cache = KVCache.empty(tiny_model.config, b, t)
  h0, cache = run(params, tokens[:, :split], pos[:, :split], valid[:, :split], cache, 0)
  steps = [h0]
  for i in range(split, t):
    h, cache = run(params, tokens[:, i:i + 1], pos[:, i:i + 1], valid[:, i:i + 1], cache, jnp.int32(i))
    steps.append(h)
  np.testing.assert_allclose(jnp.concatenate(steps, axis=1), full, atol=1e-5)


def test_left_padding_does_not_change_real_tokens(tiny_model):
  tokens = _tokens(1, 6)
  valid = jnp.ones((1, 6), bool)
  ref, _ = tiny_model(tokens, positions_from_mask(valid), valid)
  padded = jnp.concatenate([jnp.zeros((1, 3), jnp.int32), tokens], axis=1)
  pvalid = padded != 0
  out, _ = tiny_model(padded, positions_from_mask(pvalid), pvalid)
  np.testing.assert_allclose(out[:, 3:], ref, atol=1e-5)
  assert np.all(np.isfinite(out))  # pad queries see no key: still finite


def test_query_block_count_caps_blocks_then_rows():
  # At most 4 blocks of about 96 queries, unless a block would then hold more than 256 queries.
  counts = {t: decoder_module.query_block_count(t) for t in (1, 96, 97, 384, 1024, 1025, 2080, 4128)}
  assert counts == {1: 1, 96: 1, 97: 2, 384: 4, 1024: 4, 1025: 5, 2080: 9, 4128: 17}


# 2, 3, 4 (the most of about 8 tokens) and 7 (blocks of at most 8) query blocks
@pytest.mark.parametrize("t", [13, pytest.param(22, marks=pytest.mark.slow), 40, 56])
def test_causal_query_blocks_equal_one_block(tiny_model, monkeypatch, t):
  # Long sequences attend in query blocks that skip keys after each block and recompute their
  # scores in the backward: same hidden states, gradients included, with left padding. Blocks of
  # 8 tokens keep the test small.
  monkeypatch.setattr(decoder_module, "_QUERY_BLOCK", 8)
  monkeypatch.setattr(decoder_module, "_MAX_BLOCK_ROWS", 8)
  assert decoder_module.query_block_count(t) == {13: 2, 22: 3, 40: 5, 56: 7}[t]
  tokens = _tokens(3, t)
  valid = jnp.arange(t)[None, :] >= jnp.array([0, 3, t // 2])[:, None]
  pos = positions_from_mask(valid)
  graphdef, params = nnx.split(tiny_model)

  def loss(p):
    hidden, _ = nnx.merge(graphdef, p)(tokens, pos, valid)
    return jnp.sum(jnp.where(valid[..., None], jnp.sin(hidden), 0.0))

  blocked = jax.jit(jax.value_and_grad(loss))(params)  # module constants are read while tracing
  monkeypatch.setattr(decoder_module, "_MAX_QUERY_BLOCKS", 1)
  monkeypatch.setattr(decoder_module, "_MAX_BLOCK_ROWS", t)
  whole = jax.jit(jax.value_and_grad(loss))(params)
  np.testing.assert_allclose(blocked[0], whole[0], rtol=1e-5)
  for a, b in zip(jax.tree.leaves(blocked[1]), jax.tree.leaves(whole[1])):
    np.testing.assert_allclose(a, b, rtol=1e-3, atol=2e-4)


def test_backward_keeps_no_attention_scores_per_layer():
  # Each further layer adds about its activations to the gradient's temporaries, not its [T, T]
  # float32 scores: the backward recomputes them block by block (issue 27; before, each layer added
  # about 1.6x its full score matrix at this size).
  t, b = 512, 2
  tokens, valid = _tokens(b, t), jnp.ones((b, t), bool)

  def temp_bytes(layers):
    cfg = model_preset("tiny", num_hidden_layers=layers, max_position_embeddings=t)
    graphdef, params = nnx.split(Decoder(cfg, rngs=nnx.Rngs(0)))

    def loss(p):
      return jnp.sum(jnp.sin(nnx.merge(graphdef, p)(tokens, positions_from_mask(valid), valid)[0]))

    return jax.jit(jax.grad(loss)).lower(params).compile().memory_analysis().temp_size_in_bytes, cfg

  (two, cfg), (four, _) = temp_bytes(2), temp_bytes(4)
  scores = b * cfg.num_attention_heads * t * t * 4  # one layer's float32 scores, causal blocks or not
  assert (four - two) / 2 < 0.5 * scores


def test_tied_head_uses_embedding():
  cfg = model_preset("tiny", tie_word_embeddings=True)
  m = Decoder(cfg, rngs=nnx.Rngs(1))
  np.testing.assert_array_equal(m.unembedding(), m.embed_tokens.embedding[...].T)
  assert not hasattr(m, "lm_head")


def test_backward_memory_grows_linearly_with_length():
  # Doubling T at least doubles the query blocks; their backward passes run one after another, so the
  # gradient's temporaries about double (issue 27). Before, XLA ran the blocks' backward passes side by side
  # and kept constant broadcasts of each block's [rows, keys] shape live: x3.5 from T = 1,024 to 2,048 here.
  cfg = ModelConfig(vocab_size=64, hidden_size=64, intermediate_size=128, num_hidden_layers=1,
                    num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=2048)
  graphdef, params = nnx.split(Decoder(cfg, rngs=nnx.Rngs(0)))

  def temp_bytes(t):
    tokens, valid = jnp.zeros((2, t), jnp.int32), jnp.ones((2, t), bool)
    hidden = lambda p: nnx.merge(graphdef, p)(tokens, positions_from_mask(valid), valid)[0]
    grad = jax.jit(jax.grad(lambda p: jnp.sum(hidden(p))))
    return grad.lower(params).compile().memory_analysis().temp_size_in_bytes

  assert decoder_module.query_block_count(2048) == 2 * decoder_module.query_block_count(1024) == 8
  assert temp_bytes(2048) / temp_bytes(1024) < 2.4


def test_param_count_matches_config():
  for name in ("tiny", "char-small"):
    cfg = model_preset(name)
    _, state = nnx.split(Decoder(cfg, rngs=nnx.Rngs(0)))
    assert sum(x.size for x in jax.tree.leaves(state)) == cfg.num_params()


def test_bench_27m_is_about_27m_params():
  assert 26e6 < model_preset("bench-27m").num_params() < 28e6


@pytest.mark.parametrize("field,value", [("hidden_size", 0), ("num_key_value_heads", 3),
                                         ("rms_norm_eps", -1.0)])
def test_bad_config_values_raise(field, value):
  with pytest.raises(ValueError, match=field.split("_")[0]):
    model_preset("tiny", **{field: value})


def test_unknown_preset_lists_allowed():
  with pytest.raises(ValueError, match="allowed"):
    from tcred.models.config import model_preset as mp
    mp("nope")

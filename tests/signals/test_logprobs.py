import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tcred.signals.entropy import token_logprobs_and_entropy


def _plain(hidden, unembed, targets, temperature):
  logits = jnp.einsum("...d,dv->...v", hidden, unembed) / temperature
  logp_all = jax.nn.log_softmax(logits, axis=-1)
  logp = jnp.take_along_axis(logp_all, targets[..., None], axis=-1)[..., 0]
  ent = -jnp.sum(jnp.exp(logp_all) * logp_all, axis=-1)
  return logp, ent


def _inputs(shape=(2, 3, 7), d=16, v=50, seed=0):
  k1, k2, k3 = jax.random.split(jax.random.key(seed), 3)
  hidden = jax.random.normal(k1, (*shape, d))
  unembed = jax.random.normal(k2, (d, v)) * 0.5
  targets = jax.random.randint(k3, shape, 0, v)
  return hidden, unembed, targets


@pytest.mark.parametrize("chunk_size,vocab_chunk_size", [(1, 4096), (5, 7), (8, 16), (1024, 50), (1024, 4096)])
@pytest.mark.parametrize("temperature", [1.0, 0.7])
@pytest.mark.parametrize("saved_logits_bytes", [0, 2 ** 30], ids=["streamed", "saved"])
def test_fused_equals_log_softmax_values(chunk_size, vocab_chunk_size, temperature, saved_logits_bytes):
  hidden, unembed, targets = _inputs()
  logp, ent = token_logprobs_and_entropy(hidden, unembed, targets, temperature=temperature,
                                         chunk_size=chunk_size, vocab_chunk_size=vocab_chunk_size,
                                         saved_logits_bytes=saved_logits_bytes)
  ref_logp, ref_ent = _plain(hidden, unembed, targets, temperature)
  assert logp.shape == targets.shape and logp.dtype == jnp.float32
  np.testing.assert_allclose(logp, ref_logp, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(ent, ref_ent, rtol=1e-5, atol=1e-5)


# V = 50: vocab blocks of 16 overlap in the last block (34..49), blocks of 7 leave 1 column.
@pytest.mark.parametrize("chunk_size,vocab_chunk_size", [(4, 16), (4, 7), (1024, 4096), (5, 50)])
@pytest.mark.parametrize("saved_logits_bytes", [0, 2 ** 30], ids=["streamed", "saved"])
def test_fused_equals_log_softmax_gradients(chunk_size, vocab_chunk_size, saved_logits_bytes):
  hidden, unembed, targets = _inputs()
  w = jax.random.normal(jax.random.key(9), targets.shape)

  def loss(fn):
    def f(h, u):
      logp, ent = fn(h, u)
      return jnp.sum(w * logp) + 0.3 * jnp.sum(ent)
    return jax.grad(f, argnums=(0, 1))(hidden, unembed)

  fused = loss(lambda h, u: token_logprobs_and_entropy(h, u, targets, temperature=0.9, chunk_size=chunk_size,
                                                            vocab_chunk_size=vocab_chunk_size,
                                                            saved_logits_bytes=saved_logits_bytes))
  plain = loss(lambda h, u: _plain(h, u, targets, 0.9))
  for a, b in zip(fused, plain):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


def test_targets_in_every_vocab_block_including_the_shifted_last_one():
  hidden, unembed, _ = _inputs(shape=(50,), v=50)
  targets = jnp.arange(50)  # every column is some token's target
  logp, ent = token_logprobs_and_entropy(hidden, unembed, targets, temperature=1.0, chunk_size=8,
                                         vocab_chunk_size=16, saved_logits_bytes=0)
  ref_logp, ref_ent = _plain(hidden, unembed, targets, 1.0)
  np.testing.assert_allclose(logp, ref_logp, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(ent, ref_ent, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("saved_logits_bytes", [0, 2 ** 30], ids=["streamed", "saved"])
def test_bfloat16_inputs_give_float32_outputs_and_input_dtype_gradients(saved_logits_bytes):
  hidden, unembed, targets = _inputs()
  h16, u16 = hidden.astype(jnp.bfloat16), unembed.astype(jnp.bfloat16)
  f = lambda h, u: token_logprobs_and_entropy(h, u, targets, temperature=1.0, chunk_size=4,
                                              vocab_chunk_size=16, saved_logits_bytes=saved_logits_bytes)
  logp, ent = f(h16, u16)
  assert logp.dtype == ent.dtype == jnp.float32
  ref_logp, ref_ent = _plain(h16.astype(jnp.float32), u16.astype(jnp.float32), targets, 1.0)
  np.testing.assert_allclose(logp, ref_logp, rtol=1e-4, atol=1e-4)
  np.testing.assert_allclose(ent, ref_ent, rtol=1e-4, atol=1e-4)
  dh, du = jax.grad(lambda h, u: jnp.sum(f(h, u)[0]), argnums=(0, 1))(h16, u16)
  assert dh.dtype == du.dtype == jnp.bfloat16


@pytest.mark.parametrize("saved_logits_bytes", [0, 2 ** 30], ids=["streamed", "saved"])
def test_fused_under_jit_and_vmap(saved_logits_bytes):
  hidden, unembed, targets = _inputs(shape=(3, 7))
  f = lambda h, t: token_logprobs_and_entropy(h, unembed, t, temperature=1.0, chunk_size=3,
                                              saved_logits_bytes=saved_logits_bytes)
  direct = f(hidden, targets)
  for out in (jax.jit(f)(hidden, targets), jax.vmap(f)(hidden, targets)):
    np.testing.assert_allclose(out[0], direct[0], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(out[1], direct[1], rtol=1e-5, atol=1e-6)


def test_bad_shapes_raise():
  hidden, unembed, targets = _inputs()
  with pytest.raises(ValueError, match="targets"):
    token_logprobs_and_entropy(hidden, unembed, targets[..., :-1], temperature=1.0)
  with pytest.raises(ValueError, match="unembed"):
    token_logprobs_and_entropy(hidden, unembed.T, targets, temperature=1.0)
  with pytest.raises(ValueError, match="temperature"):
    token_logprobs_and_entropy(hidden, unembed, targets, temperature=0.0)


def test_saves_the_logits_only_within_the_budget():
  hidden, unembed, targets = _inputs()  # N = 42 tokens, V = 50: 8,400 bytes of float32 logits
  n_dots = lambda budget: str(jax.make_jaxpr(jax.grad(
      lambda h: jnp.sum(token_logprobs_and_entropy(h, unembed, targets, temperature=1.0,
                                                   saved_logits_bytes=budget)[0])))(hidden)).count("dot_general")
  assert n_dots(8_400) == 3  # one forward matmul, two gradient matmuls
  assert n_dots(8_399) == 4  # streamed: the backward pass recomputes the logits

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from tcred.models import decoder as decoder_module
from tcred.models.config import model_preset
from tcred.models.decoder import Decoder
from tcred.models import forward as forward_module
from tcred.models.forward import prompt_shared, response_logprobs


def _groups(b=2, g=2, p=6, t=5, vocab=128, seed=0):
  """Left-padded prompts of different lengths (one with no padding) and responses of which one ends early."""
  rng = np.random.default_rng(seed)
  lens = np.array([4, p] + [3] * (b - 2))[:b]
  prompt_valid = np.arange(p)[None] >= (p - lens)[:, None]
  prompt = np.where(prompt_valid, rng.integers(3, vocab, (b, p)), 0)
  mask = np.ones((b, g, t), bool)
  mask[0, 1, 2:] = False
  response = np.where(mask, rng.integers(3, vocab, (b, g, t)), 0)
  return tuple(jnp.asarray(x) for x in (prompt, prompt_valid, response, mask))


def test_the_prompt_is_shared_when_it_saves_enough_work():
  config = model_preset("bench-27m")
  assert prompt_shared(config, 1, 16, 32) and not prompt_shared(config, 4, 1, 72)  # G = 1: nothing to share
  assert not prompt_shared(model_preset("tiny"), 8, 4, 6)  # compile time would outweigh it


def _shared_and_alone(monkeypatch):
  """The log-probs and entropies of a group, as one call (G > 1: each prompt runs once and its KV cache is
  repeated, `shared_prompt_states`) and rollout by rollout (G = 1: the packed prompt + response row)."""
  monkeypatch.setattr(forward_module, "SHARED_PROMPT_MIN_FLOP", 0)  # the tiny policy shares its prompts too
  graphdef, params = nnx.split(Decoder(model_preset("tiny", qk_norm=True), rngs=nnx.Rngs(0)))
  prompt, prompt_valid, response, mask = _groups()
  g = response.shape[1]
  weights = jnp.asarray(np.random.default_rng(1).normal(size=response.shape), jnp.float32)

  def shared(params):
    return response_logprobs(graphdef, params, prompt, prompt_valid, response, mask, temperature=0.7, chunk_size=8)

  def alone(params):
    outs = [response_logprobs(graphdef, params, prompt, prompt_valid, response[:, j:j + 1], mask[:, j:j + 1],
                              temperature=0.7, chunk_size=8) for j in range(g)]
    return tuple(jnp.concatenate(x, axis=1) for x in zip(*outs))

  return params, shared, alone, mask, weights


@pytest.mark.parametrize("query_block", [None, 2])
def test_prompt_once_per_group_equals_one_row_per_rollout(monkeypatch, query_block):
  if query_block:  # causal query blocks of 2 tokens: the responses after the cache run in 2 blocks
    monkeypatch.setattr(decoder_module, "_QUERY_BLOCK", query_block)
  params, shared, alone, mask, _ = _shared_and_alone(monkeypatch)
  for got, want in zip(jax.jit(shared)(params), jax.jit(alone)(params)):
    assert got.shape == mask.shape
    np.testing.assert_allclose(np.where(mask, got, 0), np.where(mask, want, 0), rtol=1e-5, atol=1e-5)


@pytest.mark.slow
def test_prompt_once_per_group_has_the_gradients_of_one_row_per_rollout(monkeypatch):
  params, shared, alone, mask, weights = _shared_and_alone(monkeypatch)

  def loss(f):
    return lambda params: jnp.sum(jnp.where(mask, weights * (f(params)[0] + 0.3 * f(params)[1]), 0.0))

  g_shared, g_alone = jax.jit(jax.grad(loss(shared)))(params), jax.jit(jax.grad(loss(alone)))(params)
  for a, b in zip(jax.tree.leaves(g_shared), jax.tree.leaves(g_alone)):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)
  assert max(float(jnp.abs(x).max()) for x in jax.tree.leaves(g_shared)) > 0

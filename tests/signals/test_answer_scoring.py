"""Packed answer scoring equals scoring every prefix separately; information gain by hand."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from tcred.models.decoder import positions_from_mask
from tcred.signals.information import answer_information_gain, answer_logprobs_after_prefixes


def _direct(model, prompt, pvalid, response, answer, cases):
  """log p(y* | x, o^g_<k) for every (g, k) in `cases`, by plain forwards of [prompt, o_<k, y*]
  (left-padded to one length, one batched forward)."""
  seqs = [np.concatenate([np.asarray(prompt)[np.asarray(pvalid)], np.asarray(response[g, :k]), np.asarray(answer)])
          for g, k in cases]
  width = max(len(x) for x in seqs)
  tokens = np.zeros((len(seqs), width), np.int32)
  for i, x in enumerate(seqs):
    tokens[i, width - len(x):] = x
  valid = jnp.asarray(tokens != 0)
  h, _ = model(jnp.asarray(tokens[:, :-1]), positions_from_mask(valid[:, :-1]), valid[:, :-1])
  lp = jax.nn.log_softmax(h @ model.unembedding(), axis=-1)  # [N, W-1, V]
  n = len(answer)
  pos = width - 1 - n + np.arange(n)
  return np.asarray(lp[:, pos, np.asarray(answer)])  # [N, n]


@pytest.mark.slow  # ~45 s (CI time); test_extras covers packed vs plain forwards for MI
def test_packed_scoring_equals_separate_forwards(tiny_model):
  graphdef, params = nnx.split(tiny_model)
  prompt = jnp.array([0, 0, 1, 10, 11, 12], jnp.int32)
  pvalid = prompt != 0
  response = jnp.array([[20, 21, 22, 2, 0], [23, 24, 25, 26, 27]], jnp.int32)
  mask = jnp.array([[1, 1, 1, 1, 0], [1, 1, 1, 1, 1]], bool)
  answer = jnp.array([5, 30, 2, 0], jnp.int32)
  avalid = jnp.array([1, 1, 1, 0], bool)
  logp, hidden = answer_logprobs_after_prefixes(graphdef, params, prompt, pvalid, response, mask, answer,
                                                avalid, temperature=1.0)
  assert logp.shape == (2, 5, 4) and hidden.shape == (2, 5, tiny_model.config.hidden_size)
  lengths = [4, 5]
  cases = [(g, k) for g in range(2) for k in range(lengths[g])]
  ref = _direct(tiny_model, prompt, pvalid, response, answer[:3], cases)
  for (g, k), row in zip(cases, ref):
    np.testing.assert_allclose(logp[g, k, :3], row, atol=2e-5)
  assert np.all(logp[0, 4] == 0)  # k beyond the response length
  assert np.all(logp[:, :, 3] == 0)  # answer padding
  # Under vmap over prompts the result is the same.
  batched = jax.vmap(lambda pr, pv: answer_logprobs_after_prefixes(
      graphdef, params, pr, pv, response, mask, answer, avalid, temperature=1.0)[0])(
          jnp.stack([prompt, prompt]), jnp.stack([pvalid, pvalid]))
  np.testing.assert_allclose(batched[1], logp, atol=1e-5)


def test_information_gain_by_hand():
  # s[k] = sum_j L[k, j]: s = [-3, -1, -2, -0.5]; length 4 -> IG defined for t < 3.
  lp = jnp.array([[[-1.0, -2.0], [-0.5, -0.5], [-1.0, -1.0], [-0.25, -0.25]]])
  mask = jnp.ones((1, 4), bool)
  np.testing.assert_allclose(answer_information_gain(lp, mask), [[2.0, -1.0, 1.5, 0.0]])
  short = jnp.array([[True, True, False, False]])
  np.testing.assert_allclose(answer_information_gain(lp, short), [[2.0, 0.0, 0.0, 0.0]])

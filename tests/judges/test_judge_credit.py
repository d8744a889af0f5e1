import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tcred.judges.credit import judge_token_advantages, process_advantages, token_steps
from tcred.testing.numpy_refs import process_advantages as process_ref


def test_token_steps_cut_a_response_at_its_step_ends():
  # "2+3=5,5*5=25#25" + EOS: ends [5, 12, 15] (separator_step_ends), 16 real tokens, width 18.
  np.testing.assert_array_equal(token_steps([5, 12, 15], 16, 18),
                                [1] * 5 + [2] * 7 + [3] * 3 + [3] + [0, 0])
  np.testing.assert_array_equal(token_steps([], 3, 4), [0, 0, 0, 0])
  with pytest.raises(ValueError, match="exceeds the width"):
    token_steps([2], 5, 4)


def _group():
  # Two rollouts: the first keeps the target reachable then loses it at the answer, the second loses it at step 1.
  scores = np.array([[1, 1, 1, 0], [1, 0, 0, 0]], np.float32)  # s_0 … s_3
  valid = np.ones((2, 4), bool)
  steps = np.stack([token_steps([2, 4, 6], 7, 8), token_steps([2, 4, 5], 6, 8)])
  mask = steps > 0
  return scores, valid, steps, mask


def test_process_advantages_credit_the_step_that_changed_the_score():
  scores, valid, steps, mask = _group()
  out = np.asarray(process_advantages(scores, valid, steps, mask))
  # Deltas: rollout 0: [0, 0, −1]; rollout 1: [−1, 0, 0]; mean −1/3, std sqrt(2/9) = 0.4714:
  # a loss step gets (−1 + 1/3) / 0.4714 = −1.4142, the others (1/3) / 0.4714 = 0.7071.
  np.testing.assert_allclose(out[0, :7], [0.7071] * 4 + [-1.4142] * 3, atol=1e-4)
  np.testing.assert_allclose(out[1, :6], [-1.4142] * 2 + [0.7071] * 4, atol=1e-4)
  assert np.all(out[~mask] == 0)
  np.testing.assert_allclose(out, process_ref(scores, valid, steps, mask), atol=1e-5)


class TestVariants(chex.TestCase):

  @chex.variants(with_jit=True, without_jit=True)
  def test_matches_the_numpy_reference_with_padding(self):
    scores, valid, steps, mask = _group()
    valid[1, 3] = False  # rollout 1 has only two steps: its step-3 tokens become no-step padding
    steps[1][steps[1] == 3] = 0
    mask = steps > 0
    fn = self.variant(process_advantages)
    np.testing.assert_allclose(fn(scores, valid, steps, mask), process_ref(scores, valid, steps, mask), atol=1e-5)

  @chex.variants(with_jit=True, without_jit=True)
  def test_all_equal_scores_and_a_group_of_one_give_zero_not_nan(self):
    fn = self.variant(process_advantages)
    scores, valid, steps, mask = _group()
    flat = fn(np.ones_like(scores), valid, steps, mask)
    assert np.all(np.asarray(flat) == 0)
    lone = fn(scores[:1, :2], valid[:1, :2], np.minimum(steps[:1], 1), mask[:1])
    assert np.all(np.isfinite(lone)) and np.all(np.asarray(lone) == 0)


def test_vmapped_over_prompts_equals_one_call_per_prompt():
  scores, valid, steps, mask = _group()
  batch = [np.stack([x, x[::-1]]) for x in (scores, valid, steps, mask)]
  out = jax.vmap(process_advantages)(*batch)
  for b in range(2):
    np.testing.assert_array_equal(out[b], process_advantages(*(x[b] for x in batch)))


def test_lambda_zero_is_the_outcome_advantage_exactly():
  scores, valid, steps, mask = _group()
  outcome = jnp.array([0.9, -0.9])
  process = process_advantages(scores, valid, steps, mask)
  np.testing.assert_array_equal(judge_token_advantages(outcome, process, lam=0.0),
                                jnp.broadcast_to(outcome[:, None], mask.shape))
  mixed = judge_token_advantages(outcome, process, lam=0.5)
  np.testing.assert_allclose(mixed[0, 5], 0.9 + 0.5 * -1.4142, atol=1e-4)

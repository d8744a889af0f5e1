"""Property tests (DESIGN §8) of every registered credit method, on random groups.

For each method of `credit_names()` and random rewards, response lengths (masks),
filler groups, signals and tree forests:
- advantages, weights and metrics are finite;
- zero credit on padding: weight 0 and advantage·weight 0 on every padded token;
- equivariance under permuting the group: permuting the G rollouts of every prompt
  (rewards, masks, signals, and the leaf rows of the forest) permutes the outputs;
- group size 1: finite, and no advantage (a lone rollout has nothing to be compared with).

Extras are synthetic, with the shapes the rollout stage gives them: `mi`, `info_gain`
`[B, G, T]`, `ref_logp` `[B, G, J]`, `ref_std`, `answer_valid` `[B, J]`, and the tree
arrays of a random forest (`tree_extras` of `tree_arrays`, M chains and forks of
earlier rows), and a step judge's scores `[B, G, T + 1]` of random steps (`token_steps`), and the
random methods' per-prompt key data "credit_key" `[B, 2]`. Signal values come from a drawn NumPy seed, so they
have no ties and the entropy mask's top-ρ set is unique. Each method runs jitted (one compilation per
group size and tree count).

A random method (`stochastic`: `random-mask`, `shuffled`) draws per prompt from its key, so permuting the
group permutes its credit only in distribution: for it, each rollout's multisets of loss weights and of
weighted advantages are what must follow the permutation.
"""

import hypothesis
import hypothesis.strategies as st
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tcred.credit import credit_names, make_credit
from tcred.credit.base import CreditInputs
from tcred.credit.controls import CREDIT_KEY, credit_key_data
from tcred.credit.tree import tree_extras
from tcred.judges.credit import token_steps
from tcred.sampling.tree import tree_arrays
from tcred.sampling.rollout import Trees

B, T, J, MAX_G = 2, 6, 4, 4
PROPERTY = hypothesis.settings(max_examples=12, deadline=None, derandomize=True,
                               suppress_health_check=[hypothesis.HealthCheck.too_slow])
# The generic signal methods at their default settings are entropy-mask, mi-peaks and mi-weight exactly
# (tests/credit/test_signal_methods.py checks it), so they are not drawn again here.
_NAMES = [n for n in credit_names() if n not in ("signal-mask", "signal-peaks", "signal-weight")]
_CALLS = {name: jax.jit(lambda inputs, m=make_credit(name): m(inputs)) for name in _NAMES}


class Case:
  """One random batch: CreditInputs plus the permutation `perm` `[B, G]` of each prompt's group."""

  def __init__(self, inputs: CreditInputs, perm: np.ndarray):
    self.inputs, self.perm = inputs, perm


def _forest(draw, g: int, trees: int):
  """Random forest rows of one prompt: (source, fork_pos, length, tree_id), sources first."""
  source, fork_pos = np.full(g, -1, np.int32), np.zeros(g, np.int32)
  length, tree_id = np.zeros(g, np.int32), np.zeros(g, np.int32)
  for i in range(g):
    if i < trees:  # the M chains
      tree_id[i] = i
      length[i] = draw(st.integers(1, T))
    else:  # a fork of an earlier row s at a position inside s's own tokens
      s = draw(st.integers(0, i - 1))
      source[i], tree_id[i] = s, tree_id[s]
      fork_pos[i] = draw(st.integers(int(fork_pos[s]), int(length[s]) - 1))
      length[i] = draw(st.integers(int(fork_pos[i]) + 1, T))
  return source, fork_pos, length, tree_id


def _judge_extras(rng, lengths):
  """Judge scores of random steps: K ≤ 3 sorted step ends inside each response, scores s_0..s_K in [0, 1]."""
  b, g = lengths.shape
  scores, valid = np.zeros((b, g, T + 1), np.float32), np.zeros((b, g, T + 1), bool)
  steps = np.zeros((b, g, T), np.int32)
  for i in range(b):
    for j in range(g):
      n = int(lengths[i, j])
      ends = sorted(rng.choice(np.arange(1, n + 1), size=min(n, int(rng.integers(0, 4))), replace=False).tolist())
      steps[i, j] = token_steps(ends, n, T)
      scores[i, j, :len(ends) + 1] = rng.uniform(size=len(ends) + 1)
      valid[i, j, :len(ends) + 1] = True
  return {"judge_scores": scores, "judge_valid": valid, "judge_steps": steps}


@st.composite
def cases(draw, *, tree: bool, g: int | None = None):
  g = draw(st.integers(1, MAX_G)) if g is None else g
  trees = draw(st.integers(1, g)) if tree else g
  rows = [_forest(draw, g, trees) for _ in range(B)]
  lengths = np.stack([r[2] for r in rows])  # [B, G]
  if not tree:  # chains may also be empty (a response of 0 tokens)
    lengths = np.array(draw(st.lists(st.integers(0, T), min_size=B * g, max_size=B * g))).reshape(B, g)
  mask = np.arange(T)[None, None, :] < lengths[..., None]  # [B, G, T]
  rewards = np.array(draw(st.lists(st.sampled_from([0.0, 1.0]) | st.floats(-5, 5, width=32),
                                   min_size=B * g, max_size=B * g)), np.float32).reshape(B, g)
  if draw(st.booleans()):
    rewards[0] = rewards[0, 0]  # an all-equal group
  group_valid = np.array(draw(st.lists(st.booleans(), min_size=B, max_size=B)))
  rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
  extras = {"mi": rng.uniform(size=(B, g, T)), "info_gain": rng.normal(size=(B, g, T)),
            "ref_logp": -3 * rng.uniform(size=(B, g, J)), "ref_std": rng.uniform(size=(B, J)),
            "answer_valid": np.arange(J)[None, :] < rng.integers(1, J + 1, size=(B, 1))}
  if draw(st.booleans()):
    extras["info_gain"][0] = 0.0  # no information anywhere in a prompt: plain GRPO weights
  extras.update(_judge_extras(rng, lengths))
  extras[CREDIT_KEY] = credit_key_data(jax.random.key(int(rng.integers(2**31))), B)
  if tree:
    arrays = [tree_arrays(*r, trees=trees, max_new_tokens=T) for r in rows]
    source, fork_pos, _, tree_id = (np.stack([r[k] for r in rows]) for k in range(4))
    extras.update(tree_extras(Trees(source, fork_pos, tree_id, arrays, 0)))
  inputs = CreditInputs(rewards=rewards, mask=mask, group_valid=group_valid,
                        entropy=rng.uniform(0, 3, size=(B, g, T)).astype(np.float32),
                        logp=-rng.uniform(0, 5, size=(B, g, T)).astype(np.float32),
                        old_logp=-rng.uniform(0, 5, size=(B, g, T)).astype(np.float32),
                        extras={k: np.asarray(v, np.float32) if np.asarray(v).dtype == np.float64 else v
                                for k, v in extras.items()})
  perm = np.stack([np.array(draw(st.permutations(range(g)))) for _ in range(B)])
  return Case(inputs, perm)


def _permuted(inputs: CreditInputs, perm: np.ndarray) -> CreditInputs:
  """The same batch with each prompt's rollouts reordered: new row i is old row perm[b, i]."""
  rows = lambda x: np.stack([np.asarray(x)[b][perm[b]] for b in range(B)])  # [B, G, ...] along G
  extras = dict(inputs.extras)
  for name in ("mi", "info_gain", "ref_logp", "tree_id", "token_node", "judge_scores", "judge_valid", "judge_steps"):
    if name in extras:
      extras[name] = rows(extras[name])
  if "tree_leaf_row" in extras:  # node -> leaf row: old row r is now row inverse[r]
    inverse = np.argsort(perm, axis=1)
    leaf_row = np.asarray(extras["tree_leaf_row"])
    extras["tree_leaf_row"] = np.stack([np.where(leaf_row[b] >= 0, inverse[b][np.clip(leaf_row[b], 0, None)], -1)
                                        for b in range(B)]).astype(leaf_row.dtype)
  return inputs._replace(rewards=rows(inputs.rewards), mask=rows(inputs.mask), entropy=rows(inputs.entropy),
                         logp=rows(inputs.logp), old_logp=rows(inputs.old_logp), extras=extras)


def _credit(name: str, inputs: CreditInputs):
  out = _CALLS[name](jax.tree.map(jnp.asarray, inputs))
  return np.asarray(out.advantages), np.asarray(out.weights), {k: np.asarray(v) for k, v in out.metrics.items()}


def _check_finite_and_padding(name, inputs):
  adv, w, metrics = _credit(name, inputs)
  assert adv.shape == w.shape == inputs.mask.shape
  assert np.all(np.isfinite(adv)) and np.all(np.isfinite(w)) and np.all(w >= 0)
  assert all(np.all(np.isfinite(v)) for v in metrics.values()), metrics
  pad = ~inputs.mask
  assert np.all(w[pad] == 0.0) and np.all((adv * w)[pad] == 0.0)  # zero credit on padding
  return adv, w


def _is_tree(name):
  return make_credit(name).needs_tree


@pytest.mark.parametrize("name", _NAMES)
def test_credit_is_finite_zero_on_padding_and_equivariant(name):
  @PROPERTY
  @hypothesis.given(cases(tree=_is_tree(name)))
  def check(case):
    adv, w = _check_finite_and_padding(name, case.inputs)
    adv_p, w_p = _check_finite_and_padding(name, _permuted(case.inputs, case.perm))
    rows = lambda x: np.stack([x[b][case.perm[b]] for b in range(B)])
    if make_credit(name).stochastic:  # equivariant in distribution: compare each rollout's multisets
      adv, adv_p, w, w_p = np.sort(adv * w, -1), np.sort(adv_p * w_p, -1), np.sort(w, -1), np.sort(w_p, -1)
    np.testing.assert_allclose(adv_p, rows(adv), rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(w_p > 0, rows(w) > 0)
    np.testing.assert_allclose(w_p, rows(w), rtol=1e-5, atol=1e-6)

  check()


@pytest.mark.parametrize("name", _NAMES)
def test_group_of_one_gets_finite_zero_credit(name):
  @hypothesis.settings(PROPERTY, max_examples=4)
  @hypothesis.given(cases(tree=_is_tree(name), g=1))
  def check(case):
    adv, w = _check_finite_and_padding(name, case.inputs)
    np.testing.assert_array_equal(adv * w, 0.0)

  check()

"""The reference implementations' conventions as named options (issue 13), each on a hand-computed case.

benchmarks/results/conformance.md lists which paper's code uses which value. Defaults are tcred's
behaviour before the options existed; the other value is checked against arithmetic done by hand.
"""

import math

import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from tcred.credit import make_credit
from tcred.credit.advantages import group_advantages
from tcred.credit.base import CreditInputs
from tcred.credit.extras import compute_extras
from tcred.evaluation.identify import IdentifyConfig
from tcred.evaluation.tables import conventions_of
from tcred.losses.pg import LossConfig, aggregate, ppo_clip_surrogate
from tcred.models.decoder import positions_from_mask
from tcred.signals.entropy import forking_mask, pooled_forking_mask
from tcred.signals.information import MIInputs, hsic_mi, mi_peaks
from tcred.signals.tree import tree_grpo_leaf_advantages


def test_group_std_ddof_and_eps():
  # R = [1, 0, 0, 0]: mean ¼, centred [¾, −¼, −¼, −¼], Σc² = 9/16 + 3/16 = ¾.
  # ddof 0: std = sqrt(¾ / 4) = 0.4330127; ddof 1: std = sqrt(¾ / 3) = ½.
  r = jnp.array([1.0, 0.0, 0.0, 0.0])
  c = np.array([0.75, -0.25, -0.25, -0.25])
  np.testing.assert_allclose(group_advantages(r), c / (math.sqrt(0.1875) + 1e-6), rtol=1e-6)
  np.testing.assert_allclose(group_advantages(r, ddof=1), c / (0.5 + 1e-6), rtol=1e-6)
  # TRL's eps 1e-4 with Bessel: ¾ / (½ + 1e-4) = 1.4997000...
  np.testing.assert_allclose(group_advantages(r, ddof=1, eps=1e-4)[0], 0.75 / 0.5001, rtol=1e-6)
  # The default is the old code path exactly.
  np.testing.assert_array_equal(group_advantages(r), group_advantages(r, ddof=0, eps=1e-6, lone="zero"))
  with pytest.raises(ValueError, match=r"std_ddof must be one of \[0, 1\]"):
    make_credit("outcome", std_ddof=2)
  with pytest.raises(ValueError, match=r"credit.lone must be one of \['zero', 'reward'\]"):
    make_credit("entropy-mask", lone="mean")
  with pytest.raises(ValueError, match="credit.eps must be >= 0"):
    make_credit("tree-grpo", eps=-1.0)


def test_group_of_one():
  # One valid rollout, reward 0.7: R − mean = 0 (default) or its raw reward (Tree-GRPO's code), either mode.
  r = jnp.array([0.7, 0.2, 0.9])
  one = jnp.array([True, False, False])
  np.testing.assert_array_equal(group_advantages(r, mask=one), [0.0, 0.0, 0.0])
  for mode in ("grpo", "dr-grpo"):
    np.testing.assert_allclose(group_advantages(r, mask=one, mode=mode, lone="reward"), [0.7, 0.0, 0.0])
  # Two valid rollouts are not a lone group: unchanged by `lone`.
  two = jnp.array([True, True, False])
  np.testing.assert_array_equal(group_advantages(r, mask=two, lone="reward"), group_advantages(r, mask=two))


def test_tree_grpo_lone_leaf():
  # Leaves 0, 1 in tree 0 (rewards 1, 0), leaf 2 alone in tree 1 (reward 1).
  # Intra: tree 0 mean ½, std ½ -> ±½/(½ + 1e-6); tree 1 alone -> 0, or its reward 1 with lone="reward".
  # Inter: mean ⅔, centred [⅓, −⅔, ⅓], std = sqrt((1/9 + 4/9 + 1/9)/3) = sqrt(2)/3 = 0.4714045.
  tid, r, v = jnp.array([0, 0, 1]), jnp.array([1.0, 0.0, 1.0]), jnp.ones(3, bool)
  inter = np.array([1, -2, 1]) / 3 / (math.sqrt(2) / 3 + 1e-6)
  intra = np.array([0.5, -0.5, 0.0]) / np.array([0.5 + 1e-6, 0.5 + 1e-6, 1.0])
  np.testing.assert_allclose(tree_grpo_leaf_advantages(tid, r, v, num_trees=2), intra + inter, rtol=1e-6)
  np.testing.assert_allclose(tree_grpo_leaf_advantages(tid, r, v, num_trees=2, lone="reward"),
                             intra + inter + np.array([0.0, 0.0, 1.0]), rtol=1e-6)


def test_forking_mask_ties():
  # n = 5, ρ = 0.4 -> k = ceil(2) = 2; the 2nd largest entropy is 2, held by three tokens.
  h = jnp.array([[3.0, 2.0, 2.0, 2.0, 1.0]])
  m = jnp.ones_like(h, bool)
  np.testing.assert_array_equal(forking_mask(h, m, rho=0.4), [[1, 1, 1, 1, 0]])  # all ties kept: 4 tokens
  np.testing.assert_array_equal(forking_mask(h, m, rho=0.4, ties="exact"), [[1, 1, 0, 0, 0]])  # exactly 2
  np.testing.assert_array_equal(forking_mask(h, m, rho=0.4, keep="bottom", ties="exact"), [[0, 0, 1, 1, 1]])
  with pytest.raises(ValueError, match=r"credit.ties='some' is not one of \['all', 'exact'\]"):
    make_credit("entropy-mask", ties="some")


def test_forking_mask_pool():
  # ρ = ¼. Batch: n = 12, k = 3, 3rd largest = 1 (three ties in row 1, all kept) -> 5, 4, 1, 1, 1.
  # Micro-batches of 2 sequences: {rows 0, 1}: k = 2 -> 5, 4; {row 2}: k = 1 -> 0.2.
  # Sequences: row 0 k = 1 -> 5; row 1 -> its three 1s (ties); row 2 -> 0.2.
  h = jnp.array([[5.0, 4.0, 0.0, 0.0], [1.0, 1.0, 1.0, 0.5], [0.2, 0.1, 0.0, 0.0]])
  m = jnp.ones_like(h, bool)
  pool = lambda p: np.asarray(pooled_forking_mask(h, m, rho=0.25, pool=p, micro_batch=2)).astype(int)
  np.testing.assert_array_equal(pool("batch"), [[1, 1, 0, 0], [1, 1, 1, 0], [0, 0, 0, 0]])
  np.testing.assert_array_equal(pool("micro-batch"), [[1, 1, 0, 0], [0, 0, 0, 0], [1, 0, 0, 0]])
  np.testing.assert_array_equal(pool("sequence"), [[1, 0, 0, 0], [1, 1, 1, 0], [1, 0, 0, 0]])
  # [B, G, T] = [3, 1, 4] pools the same way (sequences in row-major order).
  np.testing.assert_array_equal(pooled_forking_mask(h[:, None], m[:, None], rho=0.25, pool="micro-batch",
                                                    micro_batch=2)[:, 0], pool("micro-batch"))
  with pytest.raises(ValueError, match=r"credit.pool='prompt' is not one of \['batch', 'micro-batch', 'sequence'\]"):
    make_credit("entropy-mask", pool="prompt")


def _inputs(entropy, rewards):
  b, g, t = entropy.shape
  zeros = jnp.zeros((b, g, t))
  return CreditInputs(rewards=jnp.asarray(rewards, jnp.float32), mask=jnp.ones((b, g, t), bool),
                      group_valid=jnp.ones(b, bool), entropy=jnp.asarray(entropy, jnp.float32), logp=zeros,
                      old_logp=zeros, extras={})


def test_mask_normaliser():
  # One group of 2 rollouts × 4 tokens, ρ = 0.25: k = 2 kept tokens (entropy 9 and 8) of 8 valid.
  ent = np.array([[[9.0, 0, 0, 0], [8.0, 0, 0, 0]]])
  inputs = _inputs(ent, [[1.0, 0.0]])
  kept = make_credit("entropy-mask", rho=0.25)(inputs)
  valid = make_credit("entropy-mask", rho=0.25, normaliser="valid")(inputs)
  assert kept.normaliser is None
  per_token = jnp.arange(8.0).reshape(1, 2, 4) + 1  # kept tokens carry 1 and 5
  # token-mean: kept -> (1 + 5)/2 = 3; valid -> (1 + 5)/8 = 0.75 (ρ = ¼ times smaller).
  assert aggregate(per_token, kept.weights, mode="token-mean") == pytest.approx(3.0)
  assert aggregate(per_token, valid.weights, mode="token-mean", normaliser=valid.normaliser) == pytest.approx(0.75)
  # seq-mean-token-mean: per sequence 1/4 and 5/4, mean 0.75 (kept: 1/1 and 5/1, mean 3).
  assert aggregate(per_token, valid.weights, mode="seq-mean-token-mean",
                   normaliser=valid.normaliser) == pytest.approx(0.75)
  with pytest.raises(ValueError, match=r"credit.normaliser='all' is not one of \['kept', 'valid'\]"):
    make_credit("entropy-mask", normaliser="all")


def test_dual_clip():
  # ε = 0.2. A = −1 at ratio 5: min(−5, −1.2) = −5; dual clip c = 3 caps it at c·A = −3.
  # A = −1 at ratio ½: min(−0.5, −0.8) = −0.8 > −3, unchanged.
  # A = +1 at ratio 5: min(5, 1.2) = 1.2, unchanged.
  logp = jnp.log(jnp.array([5.0, 0.5, 5.0]))
  adv = jnp.array([-1.0, -1.0, 1.0])
  off, _ = ppo_clip_surrogate(logp, jnp.zeros(3), adv, clip_low=0.2, clip_high=0.2)
  on, _ = ppo_clip_surrogate(logp, jnp.zeros(3), adv, clip_low=0.2, clip_high=0.2, dual_clip=3.0)
  np.testing.assert_allclose(off, [-5.0, -0.8, 1.2], rtol=1e-6)
  np.testing.assert_allclose(on, [-3.0, -0.8, 1.2], rtol=1e-6)
  with pytest.raises(ValueError, match=r"loss.dual_clip must be 0 \(off\) or > 1"):
    LossConfig(dual_clip=0.5)


def test_sum_norm_divisor():
  # 2 sequences × T = 3, every token 1: Σ = 6; sequences × T -> 6/6 = 1; verl's T -> 6/3 = 2.
  ones = jnp.ones((2, 3))
  assert aggregate(ones, ones, mode="seq-mean-token-sum-norm") == pytest.approx(1.0)
  assert aggregate(ones, ones, mode="seq-mean-token-sum-norm", sum_norm_divisor="T") == pytest.approx(2.0)
  with pytest.raises(ValueError, match="unknown loss.sum_norm_divisor 'B'; allowed: sequences-x-T, T$"):
    LossConfig(sum_norm_divisor="B")


def test_mi_peak_rules():
  # MI = 0, 1, ..., 9: Q1 = 2.25, Q3 = 6.75, fence 6.75 + 1.5·4.5 = 13.5 -> no outlier peak; top-20 -> all 10.
  mi = jnp.arange(10.0)
  m = jnp.ones(10, bool)
  assert int(mi_peaks(mi, m).sum()) == 0
  assert int(mi_peaks(mi, m, rule="top-k", k=20).sum()) == 10
  # top-3 with the last two tokens padding: the three highest valid MI are tokens 5, 6, 7.
  m8 = jnp.arange(10) < 8
  np.testing.assert_array_equal(np.flatnonzero(mi_peaks(mi, m8, rule="top-k", k=3)), [5, 6, 7])
  # Through the credit method: weights are the peaks.
  inputs = _inputs(np.zeros((1, 2, 10)), [[1.0, 0.0]])._replace(
      extras={"mi": jnp.broadcast_to(mi, (1, 2, 10))})
  w = make_credit("mi-peaks", peak_rule="top-k", peak_k=3)(inputs).weights
  np.testing.assert_array_equal(np.flatnonzero(w[0, 0]), [7, 8, 9])
  with pytest.raises(ValueError, match=r"credit.peak_rule='top' is not one of \['outlier', 'top-k'\]"):
    make_credit("mi-peaks", peak_rule="top")
  with pytest.raises(ValueError, match="mi_peak_rule 'x': allowed values are outlier, top-k"):
    IdentifyConfig(mi_peak_rule="x")


def test_mi_inputs(tiny_model):
  # σ rules: width -> 50·sqrt(32/4096) = 4.419417; fixed -> 50 at any width.
  assert MIInputs().bandwidth(32) == pytest.approx(50 * math.sqrt(32 / 4096))
  assert MIInputs(sigma="fixed").bandwidth(32) == 50.0
  with pytest.raises(ValueError, match=r"mi_norm / mi_sigma: mi norm must be one of \['post', 'pre'\]"):
    make_credit("mi-peaks", mi_norm="mid")
  # The decoder's pre-norm output of the last layer, normed, is the default hidden state; layer 0 differs.
  tokens = jnp.array([[3, 4, 5, 6]])
  valid = jnp.ones_like(tokens, bool)
  pos = positions_from_mask(valid)
  post, _ = tiny_model(tokens, pos, valid)
  pre, _ = tiny_model(tokens, pos, valid, final_norm=False)
  np.testing.assert_allclose(tiny_model.norm(pre), post, rtol=1e-6)
  first, _ = tiny_model(tokens, pos, valid, hidden_layer=0, final_norm=False)
  assert not np.allclose(first, pre)


@pytest.mark.slow  # ~30 s: compiles compute_extras
def test_mi_inputs_in_compute_extras(tiny_model):
  # compute_extras with the MI-Peaks convention (pre-norm, σ = 50) is hsic_mi on those states.
  graphdef, params = nnx.split(tiny_model)
  prompt = jnp.array([[0, 1, 10, 11]], jnp.int32)
  response = jnp.array([[[20, 21, 5, 30, 2]]], jnp.int32)
  mask = jnp.ones_like(response, bool)
  solution = jnp.array([[1, 40, 41, 42]], jnp.int32)
  answer = jnp.array([[5, 30, 2]], jnp.int32)
  paper = MIInputs(norm="pre", sigma="fixed")
  out = compute_extras(graphdef, params, prompt, prompt != 0, response, mask, answer, answer != 0, solution,
                       solution != 0, names=("mi",), temperature=1.0, cue_id=5, mi=paper)
  seq = jnp.concatenate([prompt, response[0]], axis=-1)
  h, _ = tiny_model(seq, positions_from_mask(seq != 0), seq != 0, final_norm=False)
  h_sol, _ = tiny_model(solution, positions_from_mask(solution != 0), solution != 0, final_norm=False)
  want = hsic_mi(h[0, 4:], h_sol[0, -1], sigma=50.0)
  np.testing.assert_allclose(out["mi"][0, 0], want, rtol=5e-3, atol=1e-6)
  # ... and not the default inputs' MI (post-norm states, σ = 4.42).
  post_mi = hsic_mi(tiny_model.norm(h)[0, 4:], tiny_model.norm(h_sol)[0, -1], sigma=MIInputs().bandwidth(32))
  assert not np.allclose(post_mi, want, rtol=5e-3)


def test_tables_name_the_conventions():
  # A TreeRL run config from before session 5 has no tree.root: it used per-chain roots.
  old = {"credit": {"name": "treerl"}, "tree": {"enabled": True}, "loss": {"aggregation": "token-mean"}}
  assert "tree.root=chain" in conventions_of(old)
  new = {"credit": {"name": "mi-peaks", "peak_rule": "top-k", "peak_k": 20}, "tree": {"enabled": False},
         "loss": {"aggregation": "seq-mean-token-sum-norm", "sum_norm_divisor": "T"}}
  got = conventions_of(new)
  assert {"credit.peak_rule=top-k", "credit.peak_k=20", "credit.std_ddof=0", "loss.sum_norm_divisor=T"} <= set(got)
  assert not any(c.startswith("tree.") for c in got)

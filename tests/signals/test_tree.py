"""Tests of tcred.signals.tree (Tree-GRPO 2509.21240, TreeRL 2506.11902)."""

import jax

jax.config.update("jax_enable_x64", False)

import functools
import math

import hypothesis
import hypothesis.strategies as st
import jax.numpy as jnp
import numpy as np
import pytest

from tcred.signals.tree import (ancestor_matrix, node_values, node_weight_from_leaves,
                                subtree_leaf_stats, tree_grpo_leaf_advantages,
                                treerl_segment_advantages, validate_tree)
from tcred.testing.numpy_refs import _group_norm as ref_group_norm
from tcred.testing.numpy_refs import _leaves_under as ref_leaves_under
from tcred.testing.numpy_refs import _root as ref_root
from tcred.testing.numpy_refs import tree_grpo_leaf_advantages as ref_tree_grpo
from tcred.testing.numpy_refs import treerl_segment_advantages as ref_treerl

RTOL, ATOL = 1e-5, 1e-6
PROPERTY = hypothesis.settings(max_examples=25, deadline=None)
_N = 12  # padded number of nodes: one compilation per function

_NODE_FNS = {
    "stats": subtree_leaf_stats,
    "values": node_values,
    "treerl": treerl_segment_advantages,
    "weights": node_weight_from_leaves,
}
_FNS = {("nojit", k): f for k, f in _NODE_FNS.items()}
_FNS.update({("jit", k): jax.jit(f) for k, f in _NODE_FNS.items()})


_L, _TREES = 8, 3  # padded leaves and trees of the Tree-GRPO tests
_TREE_GRPO = {"nojit": functools.partial(tree_grpo_leaf_advantages, num_trees=_TREES)}
_TREE_GRPO["jit"] = jax.jit(_TREE_GRPO["nojit"])


@pytest.fixture(params=["nojit", "jit"])
def variant(request):
  return request.param


def _pad_leaves(tree_id, r, valid):
  pad = _L - len(tree_id)
  return (np.concatenate([tree_id, np.zeros(pad, int)]),
          np.concatenate([r, np.full(pad, np.nan)]).astype(np.float32),
          np.concatenate([valid, np.zeros(pad, bool)]))


# ------------------------------------------------------------ NumPy references


def ref_node_stats(parent, is_leaf, leaf_reward, valid):
  leaves = ref_leaves_under(parent, is_leaf, valid)
  count = np.array([len(ls) if valid[s] else 0 for s, ls in enumerate(leaves)])
  total = np.array([sum(float(leaf_reward[l]) for l in ls) if valid[s] else 0.0
                    for s, ls in enumerate(leaves)])
  values = np.array([t / c if c else 0.0 for t, c in zip(total, count)])
  return count, total, values


# --------------------------------------------------------------- random trees


def random_tree(seed, n_pad=_N, forest=False):
  """A random valid tree (or forest) padded to n_pad nodes, padding interleaved."""
  rng = np.random.default_rng(seed)
  n = int(rng.integers(1, n_pad + 1))
  par = np.full(n, -1)
  for i in range(1, n):
    par[i] = -1 if (forest and rng.random() < 0.2) else rng.integers(0, i)
  leaf = np.ones(n, bool)
  leaf[par[par >= 0]] = False
  pos = np.sort(rng.choice(n_pad, size=n, replace=False))  # where valid nodes live
  parent = rng.integers(-1, n_pad, size=n_pad).astype(np.int32)  # garbage padding
  is_leaf = rng.random(n_pad) < 0.5
  reward = np.full(n_pad, np.nan, np.float32)
  valid = np.zeros(n_pad, bool)
  parent[pos] = np.where(par >= 0, pos[np.maximum(par, 0)], -1)
  is_leaf[pos] = leaf
  reward[pos] = np.where(leaf, rng.integers(0, 2, size=n), np.nan)
  valid[pos] = True
  return parent, is_leaf, reward, valid


def topological_relabel(parent, valid, seed):
  """A random node permutation that keeps parents before children."""
  rng = np.random.default_rng(seed)
  n = len(parent)
  order, placed = [], set()
  remaining = list(range(n))
  while remaining:
    ready = [i for i in remaining
             if not valid[i] or parent[i] == -1 or int(parent[i]) in placed]
    i = ready[rng.integers(len(ready))]
    order.append(i)
    placed.add(i)
    remaining.remove(i)
  order = np.array(order)  # new index k holds old node order[k]
  new_of_old = np.empty(n, np.int64)
  new_of_old[order] = np.arange(n)
  new_parent = np.where(valid[order] & (parent[order] >= 0),
                        new_of_old[np.clip(parent[order], 0, n - 1)], -1)
  return order, new_parent.astype(np.int32)


# ----------------------------------------------------------- hand-computed tree

#         0 (root)
#        / \
#       1   2  leaf, r = 1
#      / \
#     3   4    leaves, r = 0 and r = 1
#
# leaves(s): 0 -> {2, 3, 4}, 1 -> {3, 4}, 2, 3, 4 -> themselves.
# V = [2/3, 1/2, 1, 0, 1].
# TreeRL A(s) = [(V(s) − V(0)) + (V(s) − V(parent))] / sqrt(|leaves(s)|):
#   A(1) = [(1/2 − 2/3) + (1/2 − 2/3)] / √2 = −(1/3)/√2
#   A(2) = [(1 − 2/3) + (1 − 2/3)] / 1     = 2/3
#   A(3) = [(0 − 2/3) + (0 − 1/2)]         = −7/6
#   A(4) = [(1 − 2/3) + (1 − 1/2)]         = 5/6
# Leaf weights w = (w2, w3, w4) = (0.5, −2, 3): W = [1.5, 1, 0.5, −2, 3].
HAND = dict(
    parent=np.array([-1, 0, 0, 1, 1], np.int32),
    is_leaf=np.array([False, False, True, True, True]),
    leaf_reward=np.array([0.0, 0.0, 1.0, 0.0, 1.0], np.float32),
    valid=np.ones(5, bool),
)


def test_hand_computed_tree(variant):
  count, total = _FNS[variant, "stats"](**HAND)
  np.testing.assert_array_equal(count, [3, 2, 1, 1, 1])
  np.testing.assert_allclose(total, [2.0, 1.0, 1.0, 0.0, 1.0], rtol=RTOL)
  np.testing.assert_allclose(_FNS[variant, "values"](**HAND), [2 / 3, 1 / 2, 1, 0, 1],
                             rtol=RTOL)
  np.testing.assert_allclose(_FNS[variant, "treerl"](**HAND),
                             [0.0, -(1 / 3) / math.sqrt(2), 2 / 3, -7 / 6, 5 / 6],
                             rtol=RTOL, atol=ATOL)
  w = np.array([9.0, 9.0, 0.5, -2.0, 3.0], np.float32)  # read at leaves only
  got = _FNS[variant, "weights"](HAND["parent"], HAND["is_leaf"], w, HAND["valid"])
  np.testing.assert_allclose(got, [1.5, 1.0, 0.5, -2.0, 3.0], rtol=RTOL)


def test_hand_computed_tree_grpo(variant):
  # Tree 0 leaves r = 1, 0, 0 (mean 1/3, std √2/3); tree 1 leaves r = 1, 1 (all
  # equal: intra 0); prompt r = 1, 0, 0, 1, 1 (mean 0.6, std √0.24). Tree 2 is
  # empty and three padding leaves follow.
  tree_id, r, valid = _pad_leaves(np.array([0, 0, 0, 1, 1]),
                                  np.array([1.0, 0.0, 0.0, 1.0, 1.0]), np.ones(5, bool))
  s = math.sqrt(0.24)
  want = [math.sqrt(2) + 0.4 / s, -1 / math.sqrt(2) - 0.6 / s, -1 / math.sqrt(2) - 0.6 / s,
          0.4 / s, 0.4 / s, 0.0, 0.0, 0.0]
  np.testing.assert_allclose(_TREE_GRPO[variant](tree_id, r, valid, eps=0.0), want,
                             rtol=RTOL)


# --------------------------------------------------------- against references


def test_node_functions_match_reference(variant):
  for seed in range(6):
    parent, is_leaf, reward, valid = random_tree(seed, forest=seed % 2 == 1)
    count, total = _FNS[variant, "stats"](parent, is_leaf, reward, valid)
    want_count, want_total, want_v = ref_node_stats(parent, is_leaf, reward, valid)
    np.testing.assert_array_equal(count, want_count)
    np.testing.assert_allclose(total, want_total, rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(_FNS[variant, "values"](parent, is_leaf, reward, valid),
                               want_v, rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(_FNS[variant, "treerl"](parent, is_leaf, reward, valid),
                               ref_treerl(parent, is_leaf, reward, valid), rtol=RTOL,
                               atol=ATOL)
    w = np.random.default_rng(seed).normal(size=_N).astype(np.float32)
    _, want_w, _ = ref_node_stats(parent, is_leaf, w, valid)
    np.testing.assert_allclose(_FNS[variant, "weights"](parent, is_leaf, w, valid), want_w,
                               rtol=RTOL, atol=1e-5)


def test_vmap_over_trees():
  trees = [random_tree(seed) for seed in (10, 11, 12)]
  parent, is_leaf, reward, valid = (np.stack(x) for x in zip(*trees))
  got = jax.jit(jax.vmap(treerl_segment_advantages))(parent, is_leaf, reward, valid)
  for b in range(3):
    np.testing.assert_allclose(got[b], ref_treerl(*trees[b]), rtol=RTOL, atol=ATOL)


def test_tree_grpo_matches_reference(variant):
  rng = np.random.default_rng(0)
  tree_id = rng.integers(0, _TREES, size=(4, _L))
  r = rng.integers(0, 2, size=(4, _L)).astype(np.float32)
  valid = rng.random((4, _L)) < 0.8
  r[~valid] = np.nan
  for b in range(4):
    np.testing.assert_allclose(_TREE_GRPO[variant](tree_id[b], r[b], valid[b]),
                               ref_tree_grpo(tree_id[b], r[b], valid[b], _TREES, 1e-6),
                               rtol=RTOL, atol=ATOL)
  got = jax.jit(jax.vmap(_TREE_GRPO["nojit"]))(tree_id, r, valid)
  for b in range(4):
    np.testing.assert_allclose(got[b], ref_tree_grpo(tree_id[b], r[b], valid[b], _TREES,
                                                     1e-6), rtol=RTOL, atol=ATOL)


def test_tree_grpo_degenerate_groups(variant):
  fn = _TREE_GRPO[variant]
  # All rewards equal: exactly zero.
  out = np.asarray(fn(*_pad_leaves(np.array([0, 0, 1, 1]), np.full(4, 0.3), np.ones(4, bool))))
  assert np.all(out == 0.0)
  # One leaf per tree: intra 0, inter only.
  out = np.asarray(fn(*_pad_leaves(np.array([0, 1, 0, 0]), np.array([1.0, 0.0, 5.0, 5.0]),
                                   np.array([True, True, False, False]))))
  np.testing.assert_allclose(out, [1.0, -1.0] + [0.0] * 6, rtol=1e-5)
  # No valid leaf.
  out = np.asarray(fn(*_pad_leaves(np.array([0, 1]), np.array([1.0, 0.0]), np.zeros(2, bool))))
  assert np.all(out == 0.0)
  with pytest.raises(ValueError, match="num_trees"):
    tree_grpo_leaf_advantages(jnp.zeros(2, int), jnp.zeros(2), jnp.ones(2, bool),
                              num_trees=0)


def test_summed_leaf_weight_equals_per_leaf_training():
  # Σ_leaves w_l Σ_{s on path(l)} g_s == Σ_s W(s) g_s for any per-segment g.
  for seed in range(3):
    parent, is_leaf, _, valid = random_tree(seed + 20)
    rng = np.random.default_rng(seed)
    w = rng.normal(size=_N).astype(np.float32)
    g = rng.normal(size=_N)
    big_w = np.asarray(node_weight_from_leaves(parent, is_leaf, w, valid))
    per_leaf = sum(w[l] * sum(g[s] for s in _path(parent, l))
                   for l in range(_N) if valid[l] and is_leaf[l])
    np.testing.assert_allclose(np.sum(big_w * g * valid), per_leaf, rtol=1e-4, atol=1e-5)


def _path(parent, l):
  s = l
  while s != -1:
    yield s
    s = int(parent[s])


def test_ancestor_matrix_and_forest():
  # Forest: two roots 0 and 3; 1, 2 under 0; 4 under 3; node 5 is padding.
  parent = np.array([-1, 0, 1, -1, 3, 0], np.int32)
  valid = np.array([True, True, True, True, True, False])
  anc = np.asarray(ancestor_matrix(parent, valid))
  want = np.zeros((6, 6), bool)
  for i, ancestors in {0: [0], 1: [0, 1], 2: [0, 1, 2], 3: [3], 4: [3, 4]}.items():
    want[i, ancestors] = True
  np.testing.assert_array_equal(anc, want)
  is_leaf = np.array([False, False, True, False, True, True])
  reward = np.array([0, 0, 1.0, 0, 0.0, 7.0], np.float32)
  # Each node is compared with its own root: tree {0,1,2} has V = 1 everywhere,
  # tree {3,4} has V = 0 everywhere, so every advantage is 0.
  np.testing.assert_array_equal(treerl_segment_advantages(parent, is_leaf, reward, valid),
                                np.zeros(6))


def test_validate_tree_rejects_malformed_trees():
  ok = dict(is_leaf=np.array([False, True, True]), valid=np.ones(3, bool))
  validate_tree(np.array([-1, 0, 0]), **ok)
  with pytest.raises(ValueError, match="topological"):
    validate_tree(np.array([-1, 2, 0]), **ok)
  with pytest.raises(ValueError, match="padding"):
    validate_tree(np.array([-1, 0, 0]), ok["is_leaf"], np.array([False, True, True]))
  with pytest.raises(ValueError, match="leaf"):
    validate_tree(np.array([-1, 0, 1]), **ok)
  # Padding may hold anything.
  validate_tree(np.array([7, -1, 1]), np.array([True, False, True]),
                np.array([False, True, True]))
  # Concrete (un-jitted) calls validate; shapes are always checked.
  with pytest.raises(ValueError, match="topological"):
    node_values(np.array([-1, 2, 0]), ok["is_leaf"], np.zeros(3), ok["valid"])
  with pytest.raises(ValueError):
    node_values(np.array([-1, 0, 0]), ok["is_leaf"], np.zeros(4), ok["valid"])


# ---------------------------------------------------------------- properties


@PROPERTY
@hypothesis.given(st.integers(0, 2**31 - 1), st.booleans())
def test_node_properties(seed, forest):
  parent, is_leaf, reward, valid = random_tree(seed, forest=forest)
  fns = {k: _FNS["jit", k] for k in _NODE_FNS}
  count, total = fns["stats"](parent, is_leaf, reward, valid)
  values = np.asarray(fns["values"](parent, is_leaf, reward, valid))
  adv = np.asarray(fns["treerl"](parent, is_leaf, reward, valid))
  for x in (total, values, adv):
    assert np.all(np.isfinite(np.asarray(x)))
  assert np.all(np.asarray(count)[~valid] == 0)
  assert np.all(values[~valid] == 0.0) and np.all(adv[~valid] == 0.0)  # padding
  assert np.all(adv[valid & (parent == -1)] == 0.0)  # roots
  np.testing.assert_allclose(adv, ref_treerl(parent, is_leaf, reward, valid), rtol=RTOL,
                             atol=ATOL)
  # Equivariance under relabelling nodes in another topological order.
  order, new_parent = topological_relabel(parent, valid, seed)
  adv_p = np.asarray(fns["treerl"](new_parent, is_leaf[order], reward[order], valid[order]))
  np.testing.assert_allclose(adv_p, adv[order], rtol=RTOL, atol=ATOL)
  # A single-leaf tree has no signal: V is the same at every node.
  if valid.sum() == 1:
    assert np.all(adv == 0.0)


@PROPERTY
@hypothesis.given(
    st.lists(st.tuples(st.integers(0, _TREES - 1),
                       st.sampled_from([0.0, 1.0]) | st.floats(-5, 5), st.booleans()),
             min_size=_L, max_size=_L),
    st.permutations(range(_L)), st.permutations(range(_TREES)))
def test_tree_grpo_properties(leaves, perm, tree_perm):
  tree_id = np.array([l[0] for l in leaves])
  r = np.array([l[1] for l in leaves], np.float32)
  valid = np.array([l[2] for l in leaves])
  fn = _TREE_GRPO["jit"]
  out = np.asarray(fn(tree_id, r, valid))
  assert np.all(np.isfinite(out)) and np.all(out[~valid] == 0.0)
  np.testing.assert_allclose(out, ref_tree_grpo(tree_id, r, valid, _TREES, 1e-6), rtol=1e-4,
                             atol=1e-4)
  perm = np.array(perm)
  np.testing.assert_allclose(np.asarray(fn(tree_id[perm], r[perm], valid[perm])),
                             out[perm], rtol=1e-5, atol=1e-5)
  relabelled = np.array(tree_perm)[tree_id]  # renaming the trees changes nothing
  np.testing.assert_allclose(np.asarray(fn(relabelled, r, valid)), out,
                             rtol=1e-5, atol=1e-5)
  if valid.sum() == 1:
    assert np.all(out == 0.0)

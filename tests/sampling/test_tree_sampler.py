"""Tree sampler: forks from cached prefixes, fork choice, segment arrays, packed rows."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from tcred.sampling.tree import choose_forks, fork_round, start_trees, tree_arrays
from tcred.signals.tree import validate_tree
from tcred.tasks.registry import make_task
from tcred.training.config import TreeConfig
from tcred.training.packing import pack_trees
from tcred.sampling.rollout import sample_trees_and_score
from tcred.models.forward import response_logprobs
from tcred.training.step import packed_logprobs

EOS, PAD = 2, 0


def _pool(model, *, trees=2, group=6, t_max=12):
  graphdef, params = nnx.split(model)
  prompt = jnp.array([[0, 0, 1, 5, 6], [1, 7, 8, 9, 10]], jnp.int32)
  valid = prompt != PAD
  common = dict(temperature=0.9, top_p=1.0, eos_id=EOS, pad_id=PAD)
  pool = start_trees(graphdef, params, prompt, valid, jax.random.key(0), group_size=group, trees=trees, rounds=2,
                     max_new_tokens=t_max, **common)
  return graphdef, params, prompt, valid, pool, common


def _rows(pool, b, g, t):
  rows = jax.device_get(pool.rows)
  return (rows.tokens.reshape(b, g, t), rows.logp.reshape(b, g, t), rows.length.reshape(b, g),
          np.asarray(pool.fork_pos).reshape(b, g))


def test_forks_continue_cached_prefixes_with_full_forward_logprobs(tiny_model):
  b, g, t = 2, 6, 12
  graphdef, params, prompt, valid, pool, common = _pool(tiny_model, group=g, t_max=t)
  _, _, length, _ = _rows(pool, b, g, t)
  # Round 1: rows 2, 3 fork chain 0 at 3 and chain 1 at 1; round 2: rows 4, 5 fork row 2 at 5 and chain 1 at 0.
  at1 = np.minimum([3, 1], length[:, :2].min(0) - 1)
  src1 = np.array([[0, 1]] * b)
  dest1 = np.array([[2, 3]] * b)
  off = np.arange(b)[:, None] * g
  pool = fork_round(graphdef, params, pool, jnp.asarray((off + dest1).ravel()), jnp.asarray((off + src1).ravel()),
                    jnp.asarray(np.tile(at1, b)), jax.random.key(1), round_index=1, prompt_slots=5, **common)
  _, _, length, _ = _rows(pool, b, g, t)
  at2 = np.stack([np.minimum(5, length[:, 2] - 1), np.zeros(b, int)], axis=1)
  at2 = np.maximum(at2, np.stack([at1[0] * np.ones(b, int), np.zeros(b, int)], axis=1))
  pool = fork_round(graphdef, params, pool, jnp.asarray((off + [[4, 5]]).ravel()),
                    jnp.asarray((off + [[2, 1]]).ravel()), jnp.asarray(at2.ravel()), jax.random.key(2),
                    round_index=2, prompt_slots=5, **common)
  tokens, logp, length, fork_pos = _rows(pool, b, g, t)
  mask = np.arange(t)[None, None, :] < length[..., None]
  # Every row's log-probs (copied prefix and own tokens) equal a full forward of prompt + row.
  full, _ = response_logprobs(graphdef, params, prompt, valid, jnp.asarray(tokens), jnp.asarray(mask),
                              temperature=0.9, chunk_size=8)
  np.testing.assert_allclose(np.where(mask, full, 0), logp, atol=2e-5)
  # Forks copy exactly the source prefix, then generate at least the re-sampled fork token.
  for i in range(b):
    for row, src in [(2, 0), (3, 1), (4, 2), (5, 1)]:
      p = fork_pos[i, row]
      np.testing.assert_array_equal(tokens[i, row, :p], tokens[i, src, :p])
      assert length[i, row] > p
  # No prefix recomputation: the decode loops fed exactly the generated tokens.
  generated = length[:, :2].sum() + (length[:, 2:] - fork_pos[:, 2:]).sum()
  assert int(pool.fed) == generated


def test_choose_forks_rules():
  length, fork_pos = np.array([6, 4, 0]), np.array([0, 0, 0])
  tree_id, filled = np.array([0, 1, 0]), np.array([True, True, False])
  eligible = np.zeros((3, 8), bool)
  eligible[0, [2, 4]] = True
  eligible[1, 3] = True
  plan = choose_forks(length, fork_pos, tree_id, filled, forks=2, branch=2, trees=2,
                      rng=np.random.default_rng(0), eligible=eligible)
  assert len(plan.src) == 2 * 2 * 2
  assert sorted(zip(plan.src[:4:2], plan.at[:4:2])) == [(0, 2), (0, 4)]  # tree 0: both boundaries
  assert (plan.src[::2][:2] == plan.src[1::2][:2]).all()  # branch copies adjacent
  assert (1, 3) in set(zip(plan.src[4:], plan.at[4:]))  # tree 1: its one boundary plus a random token
  assert all(1 <= a < length[s] for s, a in zip(plan.src, plan.at))
  scores = np.zeros((3, 8))
  scores[0, 5], scores[0, 1], scores[1, 2] = 3.0, 2.0, 1.0
  plan = choose_forks(length, fork_pos, tree_id, filled, forks=2, branch=1, trees=2,
                      rng=np.random.default_rng(0), scores=scores)
  assert list(zip(plan.src[:2], plan.at[:2])) == [(0, 5), (0, 1)]  # top-2 of tree 0
  assert list(zip(plan.src[2:], plan.at[2:]))[0] == (1, 2)
  # A tree whose rows have no token to fork at (length 1) restarts from the prompt.
  plan = choose_forks(np.array([1]), np.array([0]), np.array([0]), np.array([True]), forks=1, branch=1, trees=1,
                      rng=np.random.default_rng(0))
  assert (plan.src[0], plan.at[0]) == (0, 0)


def test_tree_arrays_by_hand():
  # Row 0 (chain, 6 tokens) is forked at 3 by row 2 and row 3; row 2 (length 5) at 4 by row 4.
  # Row 1 is the second tree's chain (4 tokens); row 5 restarts tree 1 from the prompt.
  source = np.array([-1, -1, 0, 0, 2, 1])
  fork_pos = np.array([0, 0, 3, 3, 4, 0])
  length = np.array([6, 4, 5, 6, 7, 2])
  tree_id = np.array([0, 1, 0, 0, 0, 1])
  a = tree_arrays(source, fork_pos, length, tree_id, trees=2, max_new_tokens=8, root="chain")
  validate_tree(a.parent, a.is_leaf, a.valid)
  # Nodes: 0, 1 roots; 2 = row0[0:3], 3 = row0[3:6], 4 = row1[0:4], 5 = row2[3:4], 6 = row2[4:5],
  # 7 = row3[3:6], 8 = row4[4:7], 9 = row5[0:2].
  n = 10
  np.testing.assert_array_equal(a.parent[:n], [-1, -1, 0, 2, 1, 2, 5, 2, 5, 1])
  np.testing.assert_array_equal(np.flatnonzero(a.is_leaf), [3, 4, 6, 7, 8, 9])
  np.testing.assert_array_equal(a.leaf_row[[3, 4, 6, 7, 8, 9]], [0, 1, 2, 3, 4, 5])
  assert a.valid.sum() == n
  np.testing.assert_array_equal(a.token_node[4, :7], [2, 2, 2, 5, 8, 8, 8])
  np.testing.assert_array_equal(a.token_node[2, :6], [2, 2, 2, 5, 6, -1])
  assert a.num_packed == 6 + 4 + 2 + 3 + 3 + 2
  # Each distinct token has one packed slot; a fork's prefix points at its source's slots.
  np.testing.assert_array_equal(a.packed_index[3, :3], a.packed_index[0, :3])
  assert len(set(a.packed_index[a.packed_index >= 0].tolist())) == a.num_packed
  # One root per prompt (the default): node 0 is the prompt, the segments follow in the same order one
  # index lower: 1 = row0[0:3], 2 = row0[3:6], 3 = row1[0:4], 4 = row2[3:4], 5 = row2[4:5], 6 = row3[3:6],
  # 7 = row4[4:7], 8 = row5[0:2]; both chains and row 5's restart hang from node 0.
  p = tree_arrays(source, fork_pos, length, tree_id, trees=2, max_new_tokens=8)
  validate_tree(p.parent, p.is_leaf, p.valid)
  np.testing.assert_array_equal(p.parent[:9], [-1, 0, 1, 0, 1, 4, 1, 4, 0])
  assert p.valid.sum() == 9 and len(p.parent) == 2 * 6 + 2
  np.testing.assert_array_equal(p.token_node, np.where(a.token_node >= 0, a.token_node - 1, -1))
  np.testing.assert_array_equal(p.packed_index, a.packed_index)
  with pytest.raises(ValueError, match="outside its own tokens"):
    tree_arrays(np.array([-1, 0]), np.array([0, 5]), np.array([4, 6]), np.array([0, 0]), trees=1,
                max_new_tokens=8)
  with pytest.raises(ValueError, match=r"unknown tree root 'tree'; allowed: prompt, chain"):
    tree_arrays(source, fork_pos, length, tree_id, trees=2, max_new_tokens=8, root="tree")


@pytest.mark.parametrize("fork_at", [pytest.param("step", marks=pytest.mark.slow), "entropy", "neg-logp"])
def test_sampled_trees_pack_to_the_leaf_view(tiny_model, fork_at):
  graphdef, params = nnx.split(tiny_model)
  task = make_task("countdown")
  problems = [task.sample(np.random.default_rng(i)) for i in range(3)]
  tree = TreeConfig(enabled=True, trees=2, rounds=2, forks=2, branch=1, fork_at=fork_at)
  groups = sample_trees_and_score(graphdef, params, task, problems, jax.random.key(0), np.random.default_rng(0),
                                  tree=tree, temperature=1.0)
  r, trees = groups.rollouts, groups.trees
  assert r.tokens.shape[:2] == (3, tree.leaves)
  for a in trees.arrays:
    validate_tree(a.parent, a.is_leaf, a.valid)
    assert a.is_leaf.sum() == tree.leaves
  assert trees.fed == groups.generated_tokens() < int(r.mask.sum())
  prompt, valid = jnp.asarray(groups.prompt), jnp.asarray(groups.prompt_valid)
  packed = jax.tree.map(jnp.asarray, pack_trees(groups.prompt, groups.prompt_valid, r.tokens, trees.arrays))
  assert packed.pred.shape[1] % 64 == 0 and packed.pred.shape[1] >= trees.arrays[0].num_packed
  full, full_ent = response_logprobs(graphdef, params, prompt, valid, jnp.asarray(r.tokens), jnp.asarray(r.mask),
                                     temperature=1.0, chunk_size=16)
  lp, ent = packed_logprobs(graphdef, params, packed, temperature=1.0, chunk_size=16)
  np.testing.assert_allclose(np.where(r.mask, lp, 0), np.where(r.mask, full, 0), atol=2e-5)
  np.testing.assert_allclose(np.where(r.mask, ent, 0), np.where(r.mask, full_ent, 0), atol=2e-5)
  np.testing.assert_allclose(np.where(r.mask, lp, 0), r.logp, atol=2e-5)

"""Tree credit methods against the NumPy references, on hand-built forests."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tcred.credit import make_credit
from tcred.credit.base import CreditInputs
from tcred.credit.tree import tree_extras
from tcred.experiments import get_experiment
from tcred.sampling.tree import tree_arrays
from tcred.testing import numpy_refs as ref
from tcred.sampling.rollout import Trees

T = 8
# Prompt 0: two trees, forks inside both (see tests/sampling/test_tree.py for the node layout).
SOURCES = [
    dict(source=[-1, -1, 0, 0, 2, 1], fork_pos=[0, 0, 3, 3, 4, 0], length=[6, 4, 5, 6, 7, 2],
         tree_id=[0, 1, 0, 0, 0, 1]),
    # Prompt 1: one chain forked five times at the same token (a star), tree 1 a single chain.
    dict(source=[-1, -1, 0, 0, 0, 0], fork_pos=[0, 0, 2, 2, 2, 2], length=[5, 3, 4, 6, 3, 8],
         tree_id=[0, 1, 0, 0, 0, 0]),
]


def _inputs(rewards, group_valid=(True, True)):
  arrays = [tree_arrays(*(np.array(s[k]) for k in ("source", "fork_pos", "length", "tree_id")), trees=2,
                        max_new_tokens=T) for s in SOURCES]
  trees = Trees(source=np.array([s["source"] for s in SOURCES]), fork_pos=np.array([s["fork_pos"] for s in SOURCES]),
                tree_id=np.array([s["tree_id"] for s in SOURCES]), arrays=arrays, fed=0)
  length = np.array([s["length"] for s in SOURCES])
  mask = np.arange(T)[None, None, :] < length[..., None]
  zeros = jnp.zeros(mask.shape)
  inputs = CreditInputs(rewards=jnp.asarray(rewards, jnp.float32), mask=jnp.asarray(mask),
                        group_valid=jnp.asarray(group_valid), entropy=zeros, logp=zeros, old_logp=zeros,
                        extras={k: jnp.asarray(v) for k, v in tree_extras(trees).items()})
  return inputs, arrays, mask


REWARDS = [np.array([[1, 0, 0, 1, 1, 0], [0, 1, 1, 1, 0, 1]], np.float32),
           np.ones((2, 6), np.float32),  # all-equal rewards: zero credit, never NaN
           np.array([[0, 0, 0, 0, 0, 1], [1, 0, 0, 0, 0, 0]], np.float32)]


@pytest.mark.parametrize("rewards", REWARDS)
@pytest.mark.parametrize("jit", [False, True])
def test_tree_grpo_equals_reference(rewards, jit):
  inputs, _, mask = _inputs(rewards)
  method = make_credit("tree-grpo")
  out = (jax.jit(method) if jit else method)(inputs)
  for b, s in enumerate(SOURCES):
    want = ref.tree_grpo_leaf_advantages(s["tree_id"], rewards[b], [True] * 6, num_trees=6)
    np.testing.assert_allclose(np.asarray(out.advantages)[b], np.where(mask[b], want[:, None], 0.0), atol=1e-5)
  assert np.all(np.isfinite(out.advantages))
  np.testing.assert_array_equal(out.weights, mask.astype(np.float32))


@pytest.mark.parametrize("rewards", REWARDS)
@pytest.mark.parametrize("jit", [False, True])
def test_treerl_equals_reference(rewards, jit):
  inputs, arrays, mask = _inputs(rewards)
  out = (jax.jit(make_credit("treerl")) if jit else make_credit("treerl"))(inputs)
  for b, a in enumerate(arrays):
    leaf_reward = np.where(a.is_leaf, rewards[b][np.clip(a.leaf_row, 0, None)], 0.0)
    node_adv = ref.treerl_segment_advantages(a.parent, a.is_leaf, leaf_reward, a.valid)
    want = np.where(a.token_node >= 0, node_adv[np.clip(a.token_node, 0, None)], 0.0)
    np.testing.assert_allclose(np.asarray(out.advantages)[b], want, atol=1e-5)
  if np.all(rewards == rewards.flat[0]):
    assert np.all(np.asarray(out.advantages) == 0)


def test_treerl_compares_the_chains_of_a_prompt():
  # Issue 13's minimal case: two chains (rows 0, 1), each forked once at position 2 (rows 2, 3), all of
  # length 4; chain 0's leaves are right (rows 0, 2), chain 1's wrong (rows 1, 3).
  # One root per prompt: node 0 = prompt, V(0) = (1 + 0 + 1 + 0)/4 = ½. Node 1 = row0[0:2] (leaves 0, 2),
  # V = 1, A = [(1 − ½) + (1 − ½)]/sqrt(2) = 1/sqrt(2); node 2 = row0[2:4] (leaf 0), V = 1,
  # A = [(1 − ½) + (1 − 1)]/1 = ½; row 2's own tokens likewise ½. Chain 1 mirrors it: −1/sqrt(2), −½.
  # Per-chain roots: V(root) = V(trunk) = the chain's mean, every term is 0.
  g, t = 4, 4
  source, fork_pos = np.array([-1, -1, 0, 1]), np.array([0, 0, 2, 2])
  length, tree_id = np.full(g, t), np.array([0, 1, 0, 1])
  rewards = np.array([[1.0, 0.0, 1.0, 0.0]], np.float32)
  r = 1 / np.sqrt(2)
  want = {"prompt": np.array([[r, r, .5, .5], [-r, -r, -.5, -.5], [r, r, .5, .5], [-r, -r, -.5, -.5]]),
          "chain": np.zeros((g, t))}
  for root, expected in want.items():
    arrays = [tree_arrays(source, fork_pos, length, tree_id, trees=2, max_new_tokens=t, root=root)]
    trees = Trees(source=source[None], fork_pos=fork_pos[None], tree_id=tree_id[None], arrays=arrays, fed=0)
    zeros = jnp.zeros((1, g, t))
    inputs = CreditInputs(rewards=jnp.asarray(rewards), mask=jnp.ones((1, g, t), bool), group_valid=jnp.ones(1, bool),
                          entropy=zeros, logp=zeros, old_logp=zeros,
                          extras={k: jnp.asarray(v) for k, v in tree_extras(trees).items()})
    out = make_credit("treerl")(inputs)
    np.testing.assert_allclose(np.asarray(out.advantages)[0], expected, atol=1e-6)
    # Tree-GRPO's groups are the tree ids, whatever the root layout: intra-tree 0 (each tree all-equal),
    # inter-tree (r − ½)/(std ½ + 1e-6) = ±0.5/0.500001.
    np.testing.assert_allclose(make_credit("tree-grpo")(inputs).advantages[0],
                               np.array([1.0, -1.0, 1.0, -1.0])[:, None] * np.ones((g, t)) * 0.5 / (0.5 + 1e-6),
                               rtol=1e-6)


def test_filler_groups_get_no_credit():
  inputs, _, _ = _inputs(REWARDS[0], group_valid=(True, False))
  for name in ("tree-grpo", "treerl"):
    out = make_credit(name)(inputs)
    assert np.all(np.asarray(out.weights)[1] == 0) and np.all(np.asarray(out.advantages)[1] == 0)


def test_tree_methods_need_tree_rollouts():
  cfg = get_experiment("countdown-tree-grpo")
  assert cfg.tree.enabled and cfg.tree.leaves == cfg.rl.group_size
  with pytest.raises(ValueError, match="needs tree rollouts"):
    cfg.with_overrides(["tree.enabled=false"])
  with pytest.raises(ValueError, match="must equal the leaves per prompt"):
    cfg.with_overrides(["tree.forks=2"])
  assert cfg.with_overrides(["tree.forks=1", "tree.branch=3"]).tree.leaves == 8
  with pytest.raises(ValueError, match="unknown tree.fork_at '.*'; allowed: step, entropy, neg-logp"):
    cfg.with_overrides(["tree.fork_at=middle"])

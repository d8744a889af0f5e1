"""Advantages on rollout trees given as arrays (DESIGN §4.5).

A tree is rooted at the prompt; each node is a token segment between fork
points; a leaf ends a complete rollout. One tree (or a forest of trees of one
prompt) is described by node arrays, padded to a static N:

  parent     [N] int32  parent index, −1 for a root
  is_leaf    [N] bool   True for leaves (complete rollouts)
  leaf_reward[N] float  outcome reward, read only at valid leaves
  valid      [N] bool   False for padding nodes (ignored everywhere)

Order: nodes are in topological order, parent[i] < i for every valid non-root
node (a sampler that appends children after their parent produces this).
`validate_tree` checks it on the host; the functions below also call it
whenever their inputs are concrete (un-jitted calls), and under jit they assume
it. A forest (several roots) is allowed: each node is compared with its own
root.

Per-node values map to tokens by a gather with the caller's token→node index,
`adv_tokens = node_adv[token_node]`; each shared-prefix token then carries one
value and is trained once.

Papers: Tree-GRPO (arXiv 2509.21240), TreeRL / EPTree (arXiv 2506.11902).
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from tcred.credit.advantages import group_advantages


def validate_tree(parent, is_leaf, valid) -> None:
  """Host-side check of the tree arrays; raises ValueError when malformed.

  Checks (on valid nodes): parent[i] == −1 or 0 <= parent[i] < i, the parent
  is a valid node, and it is not a leaf (leaves have no children). Together
  these imply that every valid node reaches a root.
  """
  parent = np.asarray(parent)
  is_leaf = np.asarray(is_leaf, bool)
  valid = np.asarray(valid, bool)
  if parent.ndim != 1 or is_leaf.shape != parent.shape or valid.shape != parent.shape:
    raise ValueError(
        f"parent, is_leaf and valid must all be [N], got {parent.shape}, "
        f"{is_leaf.shape}, {valid.shape}")
  for i in np.flatnonzero(valid):
    p = int(parent[i])
    if p == -1:
      continue
    if not 0 <= p < i:
      raise ValueError(
          f"node {i}: parent {p} breaks the topological order (need -1 or "
          f"0 <= parent < {i})")
    if not valid[p]:
      raise ValueError(f"node {i}: parent {p} is a padding node")
    if is_leaf[p]:
      raise ValueError(f"node {i}: parent {p} is a leaf")


def _is_concrete(*xs) -> bool:
  return not any(isinstance(x, jax.core.Tracer) for x in xs)


def _check_nodes(parent, is_leaf, valid, **per_node):
  """Validates shapes (always) and the tree (when concrete); returns jnp arrays."""
  if _is_concrete(parent, is_leaf, valid):
    validate_tree(parent, is_leaf, valid)
  parent = jnp.asarray(parent, jnp.int32)
  is_leaf = jnp.asarray(is_leaf, bool)
  valid = jnp.asarray(valid, bool)
  if parent.ndim != 1 or is_leaf.shape != parent.shape or valid.shape != parent.shape:
    raise ValueError(
        f"parent, is_leaf and valid must all be [N], got {parent.shape}, "
        f"{is_leaf.shape}, {valid.shape}")
  out = []
  for name, x in per_node.items():
    x = jnp.asarray(x, jnp.float32)
    if x.shape != parent.shape:
      raise ValueError(f"{name} must be [N] = {parent.shape}, got {x.shape}")
    out.append(x)
  return parent, is_leaf, valid, out


class _AncestorWalk(NamedTuple):
  step: jax.Array  # [] int32 levels walked so far
  cur: jax.Array  # [N] int32 current ancestor of each node, −1 once past its root
  anc: jax.Array  # [N, N] bool ancestors found so far
  parent: jax.Array  # [N] int32


# Module-level loop functions (not closures) so that eager calls reuse the
# traced loop.
def _walk_cond(state):
  return (state.step < state.parent.shape[0]) & jnp.any(state.cur >= 0)


def _walk_body(state):
  n = state.parent.shape[0]
  nodes = jnp.arange(n, dtype=jnp.int32)
  hit = (state.cur[:, None] == nodes[None, :]) & (state.cur[:, None] >= 0)  # [N, N]
  nxt = state.parent[jnp.clip(state.cur, 0, n - 1)]
  return state._replace(step=state.step + 1, cur=jnp.where(state.cur >= 0, nxt, -1),
                        anc=state.anc | hit)


def ancestor_matrix(parent, valid):
  """anc [N, N] bool: anc[i, j] is True iff valid node j is node i or an ancestor.

  Built by walking every node up to its root in parallel (one step per level,
  at most N steps); padding rows and columns are False. Does not rely on the
  topological order.

  Args:
    parent: [N] int parent indices, −1 for roots.
    valid: [N] bool.

  Returns:
    [N, N] bool.
  """
  parent = jnp.asarray(parent, jnp.int32)
  valid = jnp.asarray(valid, bool)
  if parent.ndim != 1 or valid.shape != parent.shape:
    raise ValueError(f"need parent [N] and valid [N], got {parent.shape}, {valid.shape}")
  n = parent.shape[0]
  start = jnp.where(valid, jnp.arange(n, dtype=jnp.int32), -1)
  state = _AncestorWalk(jnp.int32(0), start, jnp.zeros((n, n), bool), parent)
  anc = jax.lax.while_loop(_walk_cond, _walk_body, state).anc
  return anc & valid[:, None] & valid[None, :]


def _subtree_leaf_sum(anc, leaf, x):
  """Σ_{leaves l under s} x_l for every node s -> [N] (exact, no matmul)."""
  return jnp.sum(jnp.where(anc & leaf[:, None], x[:, None], 0.0), axis=0)


def _leaf_stats(anc, is_leaf, leaf_reward, valid):
  """(leaf_count [N] int32, reward_sum [N] float32) from the ancestor matrix."""
  leaf = is_leaf & valid  # [N]
  count = jnp.sum(anc & leaf[:, None], axis=0, dtype=jnp.int32)  # [N]
  return count, _subtree_leaf_sum(anc, leaf, jnp.where(leaf, leaf_reward, 0.0))


def _values(count, reward_sum):
  """V = reward_sum / count, 0 where a node has no leaf below it."""
  return jnp.where(count > 0, reward_sum / jnp.maximum(count, 1), 0.0)


def subtree_leaf_stats(parent, is_leaf, leaf_reward, valid):
  """Number of leaves and sum of their rewards in the subtree of every node.

  Args:
    parent: [N] int parent indices (−1 for roots), topological order.
    is_leaf: [N] bool.
    leaf_reward: [N] float, read at valid leaves only.
    valid: [N] bool, False for padding.

  Returns:
    (leaf_count [N] int32, reward_sum [N] float32), zero on padding.
  """
  parent, is_leaf, valid, (leaf_reward,) = _check_nodes(
      parent, is_leaf, valid, leaf_reward=leaf_reward)
  anc = ancestor_matrix(parent, valid)  # [N, N]
  return _leaf_stats(anc, is_leaf, leaf_reward, valid)


def node_values(parent, is_leaf, leaf_reward, valid):
  """V(s) = mean reward of the leaves in the subtree of s (TreeRL, 2506.11902).

  Args:
    parent, is_leaf, leaf_reward, valid: [N] tree arrays (module docstring).

  Returns:
    [N] float32; a leaf's value is its reward; 0 on padding and on nodes with
    no leaf below them.
  """
  count, reward_sum = subtree_leaf_stats(parent, is_leaf, leaf_reward, valid)
  return _values(count, reward_sum)


def treerl_segment_advantages(parent, is_leaf, leaf_reward, valid):
  """TreeRL / EPTree segment advantages (arXiv 2506.11902).

    A(s) = [(V(s) − V(root(s))) + (V(s) − V(parent(s)))] / sqrt(|L(s)|)

  with V the subtree mean leaf reward (`node_values`), L(s) the leaves under
  s, and root(s) the root of s's tree. A(s) applies to every token of
  segment s.

  Args:
    parent, is_leaf, leaf_reward, valid: [N] tree arrays (module docstring).

  Returns:
    [N] float32; 0 at roots, on padding and on nodes with no leaf below them.
  """
  parent, is_leaf, valid, (leaf_reward,) = _check_nodes(
      parent, is_leaf, valid, leaf_reward=leaf_reward)
  n = parent.shape[0]
  anc = ancestor_matrix(parent, valid)  # [N, N]
  count, reward_sum = _leaf_stats(anc, is_leaf, leaf_reward, valid)  # [N], [N]
  value = _values(count, reward_sum)  # [N] V(s)
  is_root = valid & (parent < 0)  # [N]
  root_of = jnp.argmax(anc & is_root[None, :], axis=1)  # [N] root of each node
  v_root = value[root_of]
  v_parent = value[jnp.clip(parent, 0, n - 1)]
  adv = ((value - v_root) + (value - v_parent)) / jnp.sqrt(
      jnp.maximum(count, 1).astype(jnp.float32))
  return jnp.where(valid & ~is_root & (count > 0), adv, 0.0)


def tree_grpo_leaf_advantages(tree_id, leaf_reward, leaf_valid, *, num_trees: int,
                              eps: float = 1e-6):
  """Tree-GRPO leaf advantages A_i = A_intra,i + A_inter,i (arXiv 2509.21240).

    A_intra,i = (r_i − mean_{tree(i)} r) / (std_{tree(i)} r + eps)
    A_inter,i = (r_i − mean_prompt r)    / (std_prompt r + eps)

  over the valid leaves of i's tree and over all valid leaves of the prompt,
  both by `tcred.credit.advantages.group_advantages(mode="grpo")`: groups of
  size 1 or with all-equal rewards contribute 0, never NaN.

  Args:
    tree_id: [L] int tree of each leaf, in [0, num_trees); a valid leaf with an
      id outside that range gets no intra-tree term.
    leaf_reward: [L] float leaf rewards.
    leaf_valid: [L] bool, False for padding leaves.
    num_trees: static number of trees of the prompt.
    eps: added to the std.

  Returns:
    [L] float32, 0 on padding.
  """
  if not isinstance(num_trees, int) or num_trees < 1:
    raise ValueError(f"num_trees must be a positive int, got {num_trees!r}")
  tree_id = jnp.asarray(tree_id, jnp.int32)
  leaf_reward = jnp.asarray(leaf_reward, jnp.float32)
  leaf_valid = jnp.asarray(leaf_valid, bool)
  if (tree_id.ndim != 1 or leaf_reward.shape != tree_id.shape
      or leaf_valid.shape != tree_id.shape):
    raise ValueError(
        f"tree_id, leaf_reward and leaf_valid must all be [L], got {tree_id.shape}, "
        f"{leaf_reward.shape}, {leaf_valid.shape}")
  in_tree = leaf_valid[None, :] & (
      tree_id[None, :] == jnp.arange(num_trees, dtype=jnp.int32)[:, None])  # [M, L]
  intra = jax.vmap(
      lambda m: group_advantages(leaf_reward, mode="grpo", mask=m, eps=eps))(in_tree)
  intra = jnp.sum(intra, axis=0)  # [L]; each leaf is in at most one tree
  inter = group_advantages(leaf_reward, mode="grpo", mask=leaf_valid, eps=eps)
  return jnp.where(leaf_valid, intra + inter, 0.0)


def node_weight_from_leaves(parent, is_leaf, leaf_weight, valid):
  """Summed weight of the leaves passing through each node.

    W(s) = Σ_{leaves l under s} w_l

  Training each shared-prefix token once with W(s) of its segment gives the
  same gradient as training every root-to-leaf sequence separately with its
  own weight w_l whenever the loss is a token sum linear in the weights (the
  plain policy-gradient term). With PPO clipping it is an approximation: the
  clip of a summed advantage differs from the sum of per-leaf clips once the
  leaves' advantages differ in sign and the ratio leaves the trust region.

  Args:
    parent, is_leaf, valid: [N] tree arrays (module docstring).
    leaf_weight: [N] float, read at valid leaves only (e.g. leaf advantages).

  Returns:
    [N] float32, 0 on padding.
  """
  parent, is_leaf, valid, (leaf_weight,) = _check_nodes(
      parent, is_leaf, valid, leaf_weight=leaf_weight)
  anc = ancestor_matrix(parent, valid)  # [N, N]
  return _leaf_stats(anc, is_leaf, leaf_weight, valid)[1]

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

import math

import jax
import jax.numpy as jnp
import numpy as np

from tcred.signals.group import group_advantages
from tcred.signals.registry import TokenSignal, register_signal


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


def ancestor_matrix(parent, valid):
  """anc [N, N] bool: anc[i, j] is True iff valid node j is node i or an ancestor.

  Built by pointer jumping (repeated squaring of the parent relation): with
  `anc_k[i]` the ancestors of i at distance < 2^k (itself included) and
  `jump_k[i]` its ancestor at distance exactly 2^k (−1 past its root),

    anc_{k+1}[i]  = anc_k[i] ∪ anc_k[jump_k[i]]
    jump_{k+1}[i] = jump_k[jump_k[i]]

  so ceil(log2 N) row gathers of [N, N] cover every depth (< N). Padding rows
  and columns are False. Does not rely on the topological order. (The
  advantage functions below never form this matrix: they use
  `_descendant_sums`, the same pointer jumping on [N] vectors.)

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
  jump = jnp.where((parent >= 0) & (parent < n), parent, -1)  # [N] ancestor at distance 1
  anc = jnp.eye(n, dtype=bool)  # [N, N] ancestors at distance < 1: the node itself
  for _ in range(_rounds(n)):  # static: 2^k >= N covers depth N − 1
    has = jump >= 0  # [N]
    safe = jnp.clip(jump, 0, n - 1)
    anc = anc | (has[:, None] & anc[safe])  # [N, N]
    jump = jnp.where(has, jump[safe], -1)
  return anc & valid[:, None] & valid[None, :]


def _rounds(n: int) -> int:
  """Pointer-jumping rounds for N nodes: 2^rounds >= N covers every depth (< N)."""
  return max(0, math.ceil(math.log2(max(n, 1))))


def _descendant_sums(parent, valid, x):
  """S[s] = Σ_{valid i in the subtree of s (s itself included)} x[i] -> [N, C].

  Pointer jumping: with `P_k[s]` the sum over the descendants of s at
  distance < 2^k and `jump_k[j]` the ancestor of j at distance 2^k,

    P_{k+1}[s] = P_k[s] + Σ_{j: jump_k[j] = s} P_k[j]

  (the descendants at distance d in [2^k, 2^(k+1)) are split by their
  ancestor at distance 2^k below s), one scatter-add of [N] per round,
  ceil(log2 N) rounds. No [N, N] array is formed. Padding nodes neither
  receive nor pass on anything. Does not rely on the topological order.
  Float sums are in a different order than a leaf-by-leaf loop (exact for
  counts; on GPU the scatter order may vary between runs).

  Args:
    parent: [N] int32; valid: [N] bool; x: [N, C] float32 (zero where not wanted).
  """
  n = parent.shape[0]
  jump = jnp.where(valid & (parent >= 0) & (parent < n), parent, -1)  # [N] ancestor at distance 1
  total = jnp.where(valid[:, None], x, 0.0)  # [N, C] distance < 1: the node itself
  for _ in range(_rounds(n)):
    has = jump >= 0
    total = total.at[jnp.where(has, jump, n)].add(total, mode="drop")  # index n: dropped
    jump = jnp.where(has, jump[jnp.clip(jump, 0, n - 1)], -1)
  return total


def _roots(parent, valid):
  """root [N] int32: the root of every valid node (itself for roots), by pointer jumping."""
  n = parent.shape[0]
  nodes = jnp.arange(n, dtype=jnp.int32)
  root = jnp.where(valid & (parent >= 0) & (parent < n), parent, nodes)  # [N]
  for _ in range(_rounds(n)):
    root = root[root]
  return root


def _leaf_stats(parent, is_leaf, leaf_reward, valid):
  """(leaf_count [N] int32, reward_sum [N] float32) of every node's subtree, 0 on padding."""
  leaf = is_leaf & valid  # [N]
  x = jnp.stack([leaf.astype(jnp.float32), jnp.where(leaf, leaf_reward, 0.0)], axis=-1)  # [N, 2]
  sums = _descendant_sums(parent, valid, x)  # [N, 2]
  return jnp.rint(sums[:, 0]).astype(jnp.int32), sums[:, 1]  # counts are exact (N < 2^24)


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
  return _leaf_stats(parent, is_leaf, leaf_reward, valid)


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
  count, reward_sum = _leaf_stats(parent, is_leaf, leaf_reward, valid)  # [N], [N]
  value = _values(count, reward_sum)  # [N] V(s)
  is_root = valid & (parent < 0)  # [N]
  v_root = value[_roots(parent, valid)]  # [N] V(root(s))
  v_parent = value[jnp.clip(parent, 0, n - 1)]
  adv = ((value - v_root) + (value - v_parent)) / jnp.sqrt(
      jnp.maximum(count, 1).astype(jnp.float32))
  return jnp.where(valid & ~is_root & (count > 0), adv, 0.0)


def tree_grpo_leaf_advantages(tree_id, leaf_reward, leaf_valid, *, num_trees: int,
                              eps: float = 1e-6, ddof: int = 0, lone: str = "zero"):
  """Tree-GRPO leaf advantages A_i = A_intra,i + A_inter,i (arXiv 2509.21240).

    A_intra,i = (r_i − mean_{tree(i)} r) / (std_{tree(i)} r + eps)
    A_inter,i = (r_i − mean_prompt r)    / (std_prompt r + eps)

  over the valid leaves of i's tree and over all valid leaves of the prompt,
  both by `tcred.signals.group.group_advantages(mode="grpo")`: groups of
  size 1 or with all-equal rewards contribute 0, never NaN (with
  `lone="reward"` a tree with one leaf gives it its raw reward, as the
  released Tree-GRPO code does).

  Args:
    tree_id: [L] int tree of each leaf, in [0, num_trees); a valid leaf with an
      id outside that range gets no intra-tree term.
    leaf_reward: [L] float leaf rewards.
    leaf_valid: [L] bool, False for padding leaves.
    num_trees: static number of trees of the prompt.
    eps: added to the std; ddof: 0 (population std) or 1 (Bessel, Tree-GRPO's
      code); lone: "zero" or "reward" (`group_advantages`).

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
      lambda m: group_advantages(leaf_reward, mode="grpo", mask=m, eps=eps, ddof=ddof, lone=lone))(in_tree)
  intra = jnp.sum(intra, axis=0)  # [L]; each leaf is in at most one tree
  inter = group_advantages(leaf_reward, mode="grpo", mask=leaf_valid, eps=eps, ddof=ddof, lone=lone)
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
  return _leaf_stats(parent, is_leaf, leaf_weight, valid)[1]


def node_leaf_rewards(is_leaf, leaf_row, rewards):
  """`[N]` reward of each leaf node, read from its row's reward `rewards` `[G]`; 0 on inner nodes."""
  rewards = jnp.asarray(rewards, jnp.float32)
  return jnp.where(jnp.asarray(is_leaf, bool), rewards[jnp.clip(jnp.asarray(leaf_row, jnp.int32), 0)], 0.0)


def segment_token_advantages(parent, is_leaf, valid, leaf_row, rewards, token_node):
  """TreeRL segment advantages of one prompt's forest, on the row tokens: `[G, T]`.

  Leaf rewards (row order) -> `treerl_segment_advantages` per node -> gathered onto each row token by
  `token_node` (a copied prefix token carries the advantage of the segment that generated it). The one
  gather that TreeRL training (`tcred.credit.tree.TreeRL`) and the `tree-sibling-gap` signal share.

  Args:
    parent, is_leaf, valid, leaf_row: `[N]` node arrays (`TreeArrays`); rewards: `[G]` leaf rewards
      (row order); token_node: `[G, T]` node of each row token, −1 on padding.

  Returns:
    `[G, T]` float32 A(s) of each token's segment, 0 on padding.
  """
  token_node = jnp.asarray(token_node, jnp.int32)
  node_adv = treerl_segment_advantages(parent, is_leaf, node_leaf_rewards(is_leaf, leaf_row, rewards), valid)  # [N]
  return jnp.where(token_node >= 0, node_adv[jnp.clip(token_node, 0)], 0.0)


def tree_sibling_gap(parent, is_leaf, valid, leaf_row, rewards, token_node):
  """`|A(s)|` of each token's segment s, A the TreeRL segment advantage (arXiv 2506.11902), one forest: `[G, T]`.

    A(s) = [(V(s) − V(root)) + (V(s) − V(parent s))] / sqrt(|leaves(s)|),  V = mean leaf reward below

  The comparison a tree gives for free (DESIGN §5's "tree sibling gap"). A segment with the value of
  its parent and of its root (a trunk before its first fork, or a fork whose sibling subtrees score
  alike) scores 0. Same arguments as `segment_token_advantages`; `[G, T]` float32, 0 on padding.
  """
  return jnp.abs(segment_token_advantages(parent, is_leaf, valid, leaf_row, rewards, token_node))


def tree_fork_gap(parent, is_leaf, valid, leaf_row, rewards, token_node):
  """`|V(s) − V(parent s)|` on the first token of each segment s, 0 elsewhere: `[G, T]` (one forest).

  The token at which a segment and its siblings diverge (the fork re-samples it), scored by how much
  the mean leaf reward V (arXiv 2506.11902) changes there; exactly 0 where the value equals the
  parent's. A root's children compare with the root (the prompt). Same arguments as
  `segment_token_advantages`.
  """
  parent = jnp.asarray(parent, jnp.int32)
  token_node = jnp.asarray(token_node, jnp.int32)
  value = node_values(parent, is_leaf, node_leaf_rewards(is_leaf, leaf_row, rewards), valid)  # [N]
  gap = jnp.where(jnp.asarray(valid, bool) & (parent >= 0), jnp.abs(value - value[jnp.clip(parent, 0)]), 0.0)
  prev = jnp.concatenate([jnp.full_like(token_node[:, :1], -1), token_node[:, :-1]], axis=1)  # [G, T]
  first = (token_node >= 0) & (token_node != prev)
  return jnp.where(first, gap[jnp.clip(token_node, 0)], 0.0)


# ------------------------------------------------------------------ registered token signals

_FOREST = ("tree_parent", "tree_is_leaf", "tree_valid", "tree_leaf_row", "rewards", "token_node")
register_signal(TokenSignal(
    name="tree-sibling-gap", description="tree rollouts: |A(s)| of the token's segment s, A(s) = [(V(s) − V(root)) + "
    "(V(s) − V(parent))]/sqrt(|leaves(s)|) (TreeRL), V = mean leaf reward below",
    fn=tree_sibling_gap, inputs=_FOREST))
register_signal(TokenSignal(
    name="tree-fork-gap", description="tree rollouts: |V(s) − V(parent s)| on the first token of each segment s "
    "(where siblings diverge), 0 elsewhere", fn=tree_fork_gap, inputs=_FOREST))

"""Credit on tree rollouts (DESIGN §4.5): Tree-GRPO and TreeRL / EPTree.

Both read the forest of each prompt from `CreditInputs.extras` (built on the
host by `tree_extras` through `CreditMethod.host_extras`) and return leaf-view `[B, G, T]` advantages. The train
step gathers the leaf view from packed rows, so a token shared by k leaves
receives the sum of their k per-token gradients: exactly the update of
training every leaf sequence separately, with each token through the model once.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from tcred.credit.advantages import GroupNorm
from tcred.credit.base import Credit, CreditInputs, CreditMethod, register_credit
from tcred.credit.extras import tree_extras  # noqa: F401  (re-exported: the tree methods' host arrays)
from tcred.credit.outcome import per_token, valid_tokens
from tcred.signals.registry import TREE_INPUTS
from tcred.signals.tree import segment_token_advantages, tree_grpo_leaf_advantages

# Names of the tree arrays in `CreditInputs.extras` (shapes: B prompts, G leaves, N = 2G + M nodes);
# the token signals read them under the same names.
TREE_EXTRAS = TREE_INPUTS


@register_credit
@dataclasses.dataclass(frozen=True, kw_only=True)
class TreeGRPO(GroupNorm, CreditMethod):
  """Tree-GRPO (arXiv 2509.21240): leaf advantage `A_intra + A_inter` on every token of the leaf.

  `A_intra` normalises each leaf's reward within its tree, `A_inter` within all
  leaves of the prompt (`tcred.signals.tree.tree_grpo_leaf_advantages`).
  """

  name = "tree-grpo"
  description = "tree rollouts; intra-tree + inter-tree group-normalised leaf advantages (Tree-GRPO)"
  needs_tree = True

  def __post_init__(self):
    super().__post_init__()  # GroupNorm's checks
    if not self.eps > 0:
      raise ValueError(f"credit.eps must be > 0, got {self.eps!r}")

  def __call__(self, inputs: CreditInputs) -> Credit:
    g = inputs.rewards.shape[1]
    leaf_valid = jnp.broadcast_to(inputs.group_valid[:, None], inputs.rewards.shape)
    adv = jax.vmap(lambda tid, r, v: tree_grpo_leaf_advantages(tid, r, v, num_trees=g, **self.group_norm()))(
        inputs.extras["tree_id"], inputs.rewards, leaf_valid)  # [B, G]
    weights = valid_tokens(inputs)
    return Credit(advantages=jnp.where(weights, per_token(adv, inputs.mask), 0.0),
                  weights=weights.astype(jnp.float32), metrics={})


@register_credit
@dataclasses.dataclass(frozen=True, kw_only=True)
class TreeRL(CreditMethod):
  """TreeRL / EPTree (arXiv 2506.11902): each token gets its segment's advantage

    A(s) = [(V(s) − V(root)) + (V(s) − V(parent s))] / sqrt(|L(s)|)

  with V the mean leaf reward under a node (`segment_token_advantages`, which the study's
  `tree-sibling-gap` signal shares).
  The root is the prompt (`TreeConfig.root="prompt"`, the default): the M
  chains hang under it, so V(root) is the mean over all the prompt's leaves
  and chains are compared with each other, as in TreeRL's released code.
  With `root="chain"` each chain is its own root and a chain never forked
  gets 0 on every token.
  """

  name = "treerl"
  description = "tree rollouts; segment advantage from subtree values (TreeRL / EPTree)"
  needs_tree = True

  def __call__(self, inputs: CreditInputs) -> Credit:
    ex = inputs.extras
    adv = jax.vmap(segment_token_advantages)(ex["tree_parent"], ex["tree_is_leaf"], ex["tree_valid"],
                                             ex["tree_leaf_row"], inputs.rewards, ex["token_node"])  # [B, G, T]
    weights = valid_tokens(inputs)
    return Credit(advantages=jnp.where(weights, adv, 0.0), weights=weights.astype(jnp.float32), metrics={})

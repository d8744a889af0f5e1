"""Group-relative outcome advantages (DESIGN §4.1).

The one normaliser of rewards within a group. Every other module that needs a
group-normalised quantity (Tree-GRPO leaf advantages, DRO rewards, judge
process advantages) calls `group_advantages` rather than re-implementing it.

Shapes: G rollouts of one prompt. The function works on one group; callers
vmap it over prompts.
"""

from __future__ import annotations

import jax.numpy as jnp

ADVANTAGE_MODES = ("grpo", "dr-grpo")


def group_advantages(rewards, *, mode: str = "grpo", mask=None, eps: float = 1e-6):
  """Group-relative advantages of one group of rollouts.

  GRPO (arXiv 2402.03300):     A_i = (R_i − mean_G R) / (std_G R + eps)
  Dr. GRPO (arXiv 2503.20783): A_i =  R_i − mean_G R

  Mean and std are taken over the valid entries only; std is the population
  std (ddof = 0). Invalid entries get advantage 0.

  The mean is computed relative to the first valid reward, so a group whose
  valid rewards are all equal (including a group of size 1) gives exactly 0,
  never NaN and never a rounding residue; if the std is 0 the GRPO result is
  0. A group with no valid entry gives all zeros.

  Args:
    rewards: [G] float rewards of the group.
    mode: one of `ADVANTAGE_MODES` (static).
    mask: [G] bool, True for valid rollouts; None means all valid.
    eps: added to the std in the GRPO denominator.

  Returns:
    [G] float32 advantages.
  """
  if mode not in ADVANTAGE_MODES:
    raise ValueError(f"mode={mode!r} is not one of {ADVANTAGE_MODES}")
  rewards = jnp.asarray(rewards, jnp.float32)
  if rewards.ndim != 1:
    raise ValueError(f"rewards must be [G], got shape {rewards.shape}")
  if mask is None:
    mask = jnp.ones(rewards.shape, bool)
  else:
    mask = jnp.asarray(mask, bool)
    if mask.shape != rewards.shape:
      raise ValueError(f"mask shape {mask.shape} != rewards shape {rewards.shape}")

  n = jnp.sum(mask)
  n_f = jnp.maximum(n, 1).astype(jnp.float32)
  ref = rewards[jnp.argmax(mask)]  # first valid reward (any entry if none valid)
  d = jnp.where(mask, rewards - ref, 0.0)  # [G]
  centred = jnp.where(mask, d - jnp.sum(d) / n_f, 0.0)  # [G] = R_i − mean_G R
  if mode == "dr-grpo":
    return centred
  std = jnp.sqrt(jnp.sum(centred * centred) / n_f)
  return jnp.where(std > 0, centred / (std + eps), 0.0)

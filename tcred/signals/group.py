"""The group normaliser of rewards (DESIGN §4.1): the one place a group's rewards become advantages.

Every module that needs a group-normalised quantity (outcome advantages, Tree-GRPO leaf advantages,
DRO rewards, judge process advantages) calls `group_advantages` rather than re-implementing it. It
lives in `signals/` (below `credit/`) because signals such as the Tree-GRPO leaf advantages use it.

Shapes: G rollouts of one prompt. The function works on one group; callers vmap it over prompts.
"""

from __future__ import annotations

import jax.numpy as jnp

from tcred.validation import Choice


class AdvantageMode(Choice):
  """The group normaliser's advantage: "grpo" `(R − mean) / (std + eps)` or "dr-grpo" `R − mean`
  (Dr. GRPO, arXiv 2503.20783: no std division)."""

  GRPO = "grpo"
  DR_GRPO = "dr-grpo"


ADVANTAGE_MODES = AdvantageMode.values()
# Conventions of the group normaliser (benchmarks/results/conformance.md):
# std_ddof: 0 = population std (tcred's default); 1 = Bessel's correction (Tree-GRPO's, the 80/20 code's
#   and TRL's torch.std). eps: 1e-6 (tcred, Tree-GRPO, the 80/20 code / verl), 1e-4 (TRL's GRPOTrainer).
# lone: what the single valid rollout of a group of one gets: "zero" (tcred's default: R − mean = 0) or
#   "reward" (its raw reward, as the released Tree-GRPO code gives a lone leaf).
STD_DDOF = (0, 1)
LONE_RULES = ("zero", "reward")


def check_group_norm(*, std_ddof: int, eps: float, lone: str, prefix: str = "credit.") -> None:
  """Validates the group-normaliser conventions; the errors name the field and the allowed values."""
  if isinstance(std_ddof, bool) or std_ddof not in STD_DDOF:
    raise ValueError(f"{prefix}std_ddof must be one of {list(STD_DDOF)} (1: Bessel's correction), got {std_ddof!r}")
  if isinstance(eps, (int, float)) and not eps >= 0:  # a traced eps (under jit) is checked by its config
    raise ValueError(f"{prefix}eps must be >= 0 (1e-6 tcred/Tree-GRPO/verl, 1e-4 TRL), got {eps!r}")
  if lone not in LONE_RULES:
    raise ValueError(f"{prefix}lone must be one of {list(LONE_RULES)}, got {lone!r}")


def group_advantages(rewards, *, mode: str = "grpo", mask=None, eps: float = 1e-6, ddof: int = 0,
                     lone: str = "zero"):
  """Group-relative advantages of one group of rollouts.

  GRPO (arXiv 2402.03300):     A_i = (R_i − mean_G R) / (std_G R + eps)
  Dr. GRPO (arXiv 2503.20783): A_i =  R_i − mean_G R

  Mean and std are taken over the valid entries only; std is
  sqrt(Σ (R_i − mean)² / (n − ddof)), the population std with ddof = 0 (the
  default) and Bessel's correction with ddof = 1 (Tree-GRPO, the 80/20 code
  and TRL use torch.std, ddof = 1). Invalid entries get advantage 0.

  The mean is computed relative to the first valid reward, so a group whose
  valid rewards are all equal (including a group of size 1) gives exactly 0,
  never NaN and never a rounding residue; if the std is 0 the GRPO result is
  0. A group with no valid entry gives all zeros. With `lone="reward"` a group
  with exactly one valid entry gives that entry its raw reward instead (the
  released Tree-GRPO code's convention for a lone leaf), in both modes.

  Args:
    rewards: [G] float rewards of the group.
    mode: one of `ADVANTAGE_MODES` (static).
    mask: [G] bool, True for valid rollouts; None means all valid.
    eps: added to the std in the GRPO denominator.
    ddof: one of `STD_DDOF` (static).
    lone: one of `LONE_RULES` (static).

  Returns:
    [G] float32 advantages.
  """
  mode = AdvantageMode.parse(mode, field="mode")
  check_group_norm(std_ddof=ddof, eps=eps, lone=lone, prefix="")
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
  if mode is AdvantageMode.DR_GRPO:
    adv = centred
  else:
    dof = n_f if ddof == 0 else jnp.maximum(n_f - ddof, 1.0)  # static branch: the default is unchanged
    std = jnp.sqrt(jnp.sum(centred * centred) / dof)
    adv = jnp.where(std > 0, centred / (std + eps), 0.0)
  if lone == "reward":
    adv = jnp.where(mask & (n == 1), rewards, adv)
  return adv

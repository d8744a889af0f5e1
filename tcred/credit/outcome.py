"""Outcome credit: the group advantage of each rollout on every one of its tokens."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from tcred.credit.advantages import AdvantageMode, GroupNorm, group_advantages
from tcred.credit.base import Credit, CreditInputs, CreditMethod, register_credit


def outcome_advantages(rewards: jax.Array, group_valid: jax.Array, *, mode: str, **norm) -> jax.Array:
  """`[B, G]` group advantages (`group_advantages` vmapped over prompts), 0 on filler groups.

  `norm`: the normaliser's conventions (`GroupNorm.group_norm()`: eps, ddof, lone)."""
  adv = jax.vmap(lambda r: group_advantages(r, mode=mode, **norm))(rewards)
  return jnp.where(group_valid[:, None], adv, 0.0)


def valid_tokens(inputs: CreditInputs) -> jax.Array:
  """`[B, G, T]` bool: response tokens of real (non-filler) groups."""
  return inputs.mask & inputs.group_valid[:, None, None]


def per_token(adv: jax.Array, mask: jax.Array) -> jax.Array:
  """Broadcasts rollout advantages `[B, G]` to their tokens `[B, G, T]`."""
  return jnp.broadcast_to(adv[..., None], mask.shape)


@register_credit
@dataclasses.dataclass(frozen=True, kw_only=True)
class Outcome(GroupNorm, CreditMethod):
  """GRPO / Dr. GRPO: `A_{i,t} = A_i` on every response token (DESIGN §4.1)."""

  name = "outcome"
  description = "group-normalised outcome advantage on every token (GRPO, Dr.GRPO)"
  mode: str = "grpo"

  def __post_init__(self):
    super().__post_init__()
    AdvantageMode.parse(self.mode, field="credit.mode")

  def __call__(self, inputs: CreditInputs) -> Credit:
    adv = outcome_advantages(inputs.rewards, inputs.group_valid, mode=self.mode, **self.group_norm())
    return Credit(advantages=per_token(adv, inputs.mask), weights=valid_tokens(inputs).astype(jnp.float32),
                  metrics={})

"""The optimizer of SFT and RL."""

from __future__ import annotations

import functools

import optax


@functools.lru_cache(maxsize=64)
def adamw(lr: float, *, warmup: int, weight_decay: float, max_grad_norm: float = 0.0
          ) -> optax.GradientTransformation:
  """AdamW (β = 0.9, 0.99) with linear warmup to a constant `lr`; global-norm clipping if
  `max_grad_norm > 0`.

  Cached: equal settings return the same transform object, so jitted steps that take it as a
  static argument hit their compilation cache across runs in one process.
  """
  schedule = optax.join_schedules(
      [optax.linear_schedule(0.0, lr, max(warmup, 1)), optax.constant_schedule(lr)], [max(warmup, 1)])
  parts = [optax.clip_by_global_norm(max_grad_norm)] if max_grad_norm > 0 else []
  return optax.chain(*parts, optax.adamw(schedule, b1=0.9, b2=0.99, weight_decay=weight_decay))

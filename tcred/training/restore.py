"""The one loader of a run's RL train state, shared by `tcred run --resume` (`tcred.training.rl`)
and `tcred export` / `tcred identify --policy RUN_DIR` (`tcred.training.export.run_policy`).

The state a run checkpoints is `TrainState(params, AdamW state, step)` with the optimizer of its
`RLConfig`; both readers build the restore template with `rl_optimizer` and `new_train_state` and
restore it with `restore_train_state`, so a change to what a checkpoint holds is made once.
"""

from __future__ import annotations

from typing import Any

import jax.numpy as jnp
import optax

from tcred.training.checkpoint import Checkpointer
from tcred.training.config import RLConfig
from tcred.training.optim import adamw
from tcred.training.step import TrainState


def rl_optimizer(rl: RLConfig) -> optax.GradientTransformation:
  """The RL optimizer of a run (AdamW of `rl`'s settings; cached, so equal settings give one object)."""
  return adamw(rl.lr, warmup=rl.warmup, weight_decay=rl.weight_decay, max_grad_norm=rl.max_grad_norm)


def new_train_state(params: Any, tx: optax.GradientTransformation) -> TrainState:
  """The train state at step 0: `params`, a fresh optimizer state, step 0 (also the restore template)."""
  return TrainState(params, tx.init(params), jnp.int32(0))


def restore_train_state(ckpt: Checkpointer, template: TrainState, *, step: int | None = None,
                        quarantine: bool = False) -> tuple[int, TrainState, dict[str, Any]]:
  """Restores `(step, state, counters)` into the structure of `template`.

  `step=None`: the newest usable checkpoint (`Checkpointer.restore_latest`; `quarantine` moves unusable
  ones aside, for a writer that resumes); else exactly that step. Raises `CheckpointError` saying why.
  """
  if step is None:
    return ckpt.restore_latest(template, quarantine=quarantine)
  state, counters = ckpt.restore(step, template)
  return step, state, counters

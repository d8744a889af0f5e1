"""Checkpointer: the last usable checkpoint, or one chosen step."""

import shutil

import jax.numpy as jnp
import numpy as np
import pytest

from tcred.training.checkpoint import Checkpointer, CheckpointError


def test_restore_latest_falls_back_and_restore_takes_one_step(tmp_path):
  template = {"w": jnp.zeros((2, 3)), "n": jnp.int32(0)}
  ckpt = Checkpointer(tmp_path / "ckpt", max_to_keep=3)
  for step in (1, 2, 3):
    assert ckpt.save(step, {"w": jnp.full((2, 3), float(step)), "n": jnp.int32(step)}, {"step": step})
  state, meta = ckpt.restore(2, template)
  assert meta == {"step": 2} and int(state["n"]) == 2 and np.all(np.asarray(state["w"]) == 2.0)
  with pytest.raises(CheckpointError, match=r"no checkpoint of step 7 .*available steps: \[1, 2, 3\]"):
    ckpt.restore(7, template)
  shutil.rmtree(tmp_path / "ckpt" / "3" / "state")  # a partial checkpoint
  step, state, _ = ckpt.restore_latest(template)
  assert step == 2 and int(state["n"]) == 2  # the previous one
  with pytest.raises(CheckpointError, match="checkpoint .*/3 is unusable"):
    ckpt.restore(3, template)  # a chosen step does not fall back
  ckpt.close()

"""Checkpoints: the last usable one or one chosen step; resuming a run whose config predates new fields."""

import json
import shutil

import jax.numpy as jnp
import numpy as np
import pytest

from tcred import experiments
from tcred.training import rl
from tcred.training.checkpoint import Checkpointer, CheckpointError
from tcred.training.tracking import RunError


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


def test_resume_accepts_a_run_config_written_before_new_model_fields(tmp_path, monkeypatch):
  cfg = experiments.get_experiment("countdown-grpo")
  run_dir = rl.run_dir_of(tmp_path, cfg.name, 0)
  run_dir.mkdir(parents=True)
  old = {**cfg.to_dict(), "seed": 0}
  for field in ("qk_norm", "rope_type", "rope_factor", "rope_low_freq_factor", "rope_high_freq_factor",
                "rope_original_max_position_embeddings"):  # fields added by issue 15
    del old["model"][field]

  class Reached(Exception):
    pass

  def reached(*args):
    raise Reached  # the config check passed: stop before any work

  monkeypatch.setattr(rl, "make_task_from_config", reached)
  (run_dir / "config.json").write_text(json.dumps(old))
  with pytest.raises(Reached):
    rl.run_experiment(cfg, seed=0, out=tmp_path, resume=True, progress=False)
  (run_dir / "config.json").write_text(json.dumps({**old, "model": {**old["model"], "hidden_size": 7}}))
  with pytest.raises(RunError, match="config differs"):
    rl.run_experiment(cfg, seed=0, out=tmp_path, resume=True, progress=False)

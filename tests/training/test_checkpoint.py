"""Checkpointer details the fault-injection runs do not reach: old checkpoints, read-only restores,
a metrics line cut short by a kill, one chosen step, a run config that predates new fields."""

import json
import shutil

import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
import pytest

from tcred import experiments
from tcred.training import rl
from tcred.training.checkpoint import DIGESTS_KEY, Checkpointer, CheckpointError
from tcred.training.tracking import RunError, Tracker

STATE = {"w": np.arange(6, dtype=np.float32).reshape(2, 3), "n": np.int32(3)}


def test_checkpoint_without_digests_still_restores(tmp_path):
  # Written as before digests existed: leaves "00000", ... and the counters as metadata.
  manager = ocp.CheckpointManager(tmp_path)
  leaves = {"00000": np.int32(3), "00001": STATE["w"]}  # jax.tree.leaves order: "n", "w"
  manager.save(2, args=ocp.args.Composite(state=ocp.args.StandardSave(leaves),
                                          meta=ocp.args.JsonSave({"samples": 5})))
  manager.wait_until_finished()
  manager.close()
  ckpt = Checkpointer(tmp_path)
  step, state, meta = ckpt.restore_latest({"w": np.zeros((2, 3), np.float32), "n": np.int32(0)})
  ckpt.close()
  assert step == 2 and meta == {"samples": 5}
  np.testing.assert_array_equal(state["w"], STATE["w"])


def test_digests_are_stored_and_not_returned(tmp_path):
  ckpt = Checkpointer(tmp_path)
  ckpt.save(1, STATE, {"samples": 1})
  _, _, meta = ckpt.restore_latest(STATE)
  ckpt.close()
  assert meta == {"samples": 1}
  stored = json.loads((tmp_path / "1" / "meta" / "metadata").read_text())
  assert len(stored[DIGESTS_KEY]) == 2


def test_restore_without_quarantine_leaves_the_directory_alone(tmp_path, caplog):
  ckpt = Checkpointer(tmp_path, max_to_keep=3)
  ckpt.save(1, STATE, {})
  ckpt.save(2, {**STATE, "w": STATE["w"] + 1}, {})
  for p in (tmp_path / "2" / "state").rglob("*"):
    if p.is_file() and p.parent.name == "d":
      p.write_bytes(p.read_bytes()[:3])
  step, state, _ = ckpt.restore_latest(STATE)  # e.g. `tcred identify` reading another process's run
  ckpt.close()
  assert step == 1 and np.array_equal(state["w"], STATE["w"])
  assert (tmp_path / "2").is_dir() and not (tmp_path / "quarantine").exists()
  assert any("2 is unusable (truncated" in r.getMessage() for r in caplog.records)


def test_resume_drops_a_metrics_line_cut_short_by_a_kill(tmp_path):
  rows = [json.dumps({"step": s, "x": s}) for s in (1, 2, 3)]
  (tmp_path / "metrics.jsonl").write_text("\n".join(rows) + '\n{"step": 4, "x"')  # killed mid-write
  tracker = Tracker(tmp_path, resume_step=3)
  tracker.close()
  assert (tmp_path / "metrics.jsonl").read_text().splitlines() == rows


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
  (run_dir / rl.STARTED).write_text("{}")  # a run that finished a step (config.json alone is no run, issue 22)
  old = {**cfg.to_dict(), "seed": 0}
  for field in ("qk_norm", "rope_type", "rope_factor", "rope_low_freq_factor", "rope_high_freq_factor",
                "rope_original_max_position_embeddings"):  # fields added by issue 15
    del old["model"][field]

  class Reached(Exception):
    pass

  def reached(*args, **kwargs):
    raise Reached  # the config check passed: stop before any model work

  monkeypatch.setattr(rl, "base_policy", reached)
  (run_dir / "config.json").write_text(json.dumps(old))
  with pytest.raises(Reached):
    rl.run_experiment(cfg, seed=0, out=tmp_path, resume=True, progress=False)
  (run_dir / "config.json").write_text(json.dumps({**old, "model": {**old["model"], "hidden_size": 7}}))
  with pytest.raises(RunError, match="config differs"):
    rl.run_experiment(cfg, seed=0, out=tmp_path, resume=True, progress=False)

"""Checkpointer details the fault-injection runs do not reach: old checkpoints, read-only restores,
a metrics line cut short by a kill."""

import json

import numpy as np
import orbax.checkpoint as ocp

from tcred.training.checkpoint import DIGESTS_KEY, Checkpointer
from tcred.training.tracking import Tracker

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

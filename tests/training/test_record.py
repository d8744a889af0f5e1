"""The credit explorer's record files: round trip, due steps, and clear errors on bad files."""

import dataclasses
import zipfile

import numpy as np
import pytest

from tcred.training.record import (RECORD_VERSION, RecordError, load_record, record_due, record_path,
                                  recorded_steps, save_record, token_pieces)
from tcred.tasks.registry import make_task
from tcred.testing.explore import synthetic_record


def _same(a, b):
  for f in dataclasses.fields(a):
    x, y = getattr(a, f.name), getattr(b, f.name)
    if isinstance(x, np.ndarray):
      np.testing.assert_array_equal(x, y)
      assert x.dtype == y.dtype, f.name
    elif isinstance(x, dict):
      assert x.keys() == y.keys()
      for k in x:
        np.testing.assert_array_equal(x[k], y[k])
    else:
      assert x == y, f.name


def test_round_trip(tmp_path):
  rec = synthetic_record(b=3, g=4, t=9, step=40, signals=("entropy", "surprisal", "ig"))
  path = save_record(tmp_path, rec)
  assert path == record_path(tmp_path, 40) == tmp_path / "explore" / "step-000040.npz"
  assert recorded_steps(tmp_path) == [40]
  _same(rec, load_record(path))
  save_record(tmp_path, dataclasses.replace(rec, step=7))
  assert recorded_steps(tmp_path) == [7, 40]
  assert not [p for p in (tmp_path / "explore").iterdir() if p.name.startswith(".")]  # no temporary left


def test_shapes_are_checked():
  rec = synthetic_record(b=2, g=3, t=5)
  with pytest.raises(RecordError, match=r"credit must have shape \(2, 3, 5\)"):
    dataclasses.replace(rec, credit=rec.credit[:, :2])
  with pytest.raises(RecordError, match="signal/entropy"):
    dataclasses.replace(rec, signals={"entropy": rec.credit[0]})
  with pytest.raises(RecordError, match="token pieces"):
    dataclasses.replace(rec, pieces=[[p[:-1] if p else ["x"] for p in row] for row in rec.pieces])


@pytest.mark.parametrize("damage", ["truncate", "garbage", "empty", "missing-array", "version"])
def test_bad_files_raise_a_clear_error(tmp_path, damage):
  path = save_record(tmp_path, synthetic_record())
  data = path.read_bytes()
  if damage == "truncate":
    path.write_bytes(data[:len(data) // 2])
  elif damage == "garbage":
    path.write_bytes(b"not a record at all" * 10)
  elif damage == "empty":
    path.write_bytes(b"")
  else:
    with np.load(path) as z:
      arrays = {k: z[k] for k in z.files}
    if damage == "missing-array":
      del arrays["credit"]
    else:
      arrays["version"] = np.int32(RECORD_VERSION + 1)
    np.savez_compressed(path, **arrays)
  want = {"missing-array": r"lacks the arrays \['credit'\]", "version": "record version 2"}.get(damage, "corrupt or truncated")
  with pytest.raises(RecordError, match=want) as e:
    load_record(path)
  assert str(path) in str(e.value)
  with pytest.raises(RecordError, match="does not exist"):
    load_record(tmp_path / "nope.npz")


def test_record_due():
  due = lambda every, steps=40: [d for d in range(1, steps + 1) if record_due(every, 10, steps, d)]
  assert due(None) == [10, 20, 30, 40]  # the evaluation steps
  assert due(15) == [15, 30, 40]  # and the last step
  assert due(0) == []
  assert due(None, steps=7) == [7]


def test_token_pieces_join_to_the_text():
  task = make_task("countdown")
  tok = task.tokenizer
  ids = tok.encode("3+4=7")
  tokens = np.zeros((1, 2, 8), np.int32)
  tokens[0, 0, :len(ids)] = ids
  tokens[0, 0, len(ids)] = tok.eos_id
  mask = np.zeros((1, 2, 8), bool)
  mask[0, 0, :len(ids) + 1] = True
  pieces = token_pieces(tok, tokens, mask)
  assert pieces[0][1] == [] and len(pieces[0][0]) == len(ids) + 1
  assert "".join(pieces[0][0]) == "3+4=7" and pieces[0][0][-1] == ""


def test_record_every_is_not_a_setting_of_the_results():
  """Recording more or less changes neither the config hash (`tcred table`) nor what `--resume` accepts."""
  from tcred import experiments
  from tcred.training.config import config_diff, run_config_hash

  experiments.load()
  cfg = experiments.get_experiment("countdown-grpo")
  a = {**cfg.to_dict(), "seed": 0}
  b = {**cfg.with_overrides(["rl.record_every=3"]).to_dict(), "seed": 0}
  assert a["rl"]["record_every"] is None and b["rl"]["record_every"] == 3
  assert run_config_hash(a) == run_config_hash(b) and config_diff(a, b) == []
  assert config_diff(a, {**cfg.with_overrides(["rl.lr=0.5"]).to_dict(), "seed": 0})  # a real setting differs
  for bad in ("-1", "abc"):
    with pytest.raises(ValueError, match="rl.record_every"):
      cfg.with_overrides([f"rl.record_every={bad}"])

"""benchmarks/credit_placement.py on hand-made records whose placement is known."""

import importlib.util
import pathlib

import numpy as np

_SPEC = importlib.util.spec_from_file_location(
    "credit_placement", pathlib.Path(__file__).parents[2] / "benchmarks" / "credit_placement.py")
credit_placement = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(credit_placement)


def _record(run, step, weight, credit, adv, fatal, alive, mask):
  (run / "explore").mkdir(parents=True, exist_ok=True)
  np.savez_compressed(run / "explore" / f"step-{step:06d}.npz", mask=mask, weight=weight, credit=credit,
                      outcome_advantage=adv, group_valid=np.ones(mask.shape[0], bool),
                      **{"signal/fatal": fatal, "signal/oracle_value": alive})


def test_a_mask_on_the_last_tokens_misses_the_fatal_token(tmp_path):
  """One group of two 6-token rollouts (the second padded to 5): the failing one turns fatal at token 1.
  The mask keeps tokens 4-5 of the first and 3-4 of the second."""
  mask = np.array([[[1, 1, 1, 1, 1, 1], [1, 1, 1, 1, 1, 0]]], bool)
  weight = np.array([[[0, 0, 0, 0, 1, 1], [0, 0, 0, 1, 1, 0]]], np.float32)
  credit = np.array([[[1.0] * 6, [-1.0] * 6]], np.float32)
  adv = np.array([[1.0, -1.0]], np.float32)
  fatal = np.zeros((1, 2, 6), np.float32)
  fatal[0, 1, 1] = 1
  alive = np.ones((1, 2, 6), np.float32)
  alive[0, 1, 1:] = 0
  _record(tmp_path, 20, weight, credit, adv, fatal, alive, mask)
  s = credit_placement.run_stats(tmp_path)
  assert s["kept"] == 4 / 11 and s["kept_fatal"] == 0.0 and s["enrichment"] == 0.0
  assert s["kept_alive"] == 0.0 and s["kept_dead"] == 2 / 4  # failing rollout: token 0 alive; 1-4 dead, 2 kept
  assert s["credit_fatal"] == 0.0 and s["uniform_fatal"] == 1 / 5
  assert np.isclose(s["relpos"], np.mean([4 / 5, 1.0, 3 / 4, 1.0]))
  assert s["kept_last3"] == 4 / 6
  assert credit_placement.run_stats(tmp_path / "none") is None

"""`tcred explore`: the page holds every lane and nothing external; a real run records and renders; bad
input exits 2 before anything is written."""

import json
import re

import numpy as np
import pytest

from tcred import cli
from tcred.evaluation.explore import page_html, step_data
from tcred.training.record import load_record, record_path, recorded_steps, save_record
from tcred.testing.explore import synthetic_record

# tests/training/test_cli.py's tiny run, recording every step.
TINY = ["--set", "model.hidden_size=32", "--set", "model.intermediate_size=64", "--set", "model.num_hidden_layers=1",
        "--set", "sft.steps=5", "--set", "sft.batch_size=8", "--set", "rl.prompts_per_step=4",
        "--set", "rl.group_size=2", "--set", "rl.final_eval_prompts=8", "--set", "rl.final_eval_samples=2",
        "--set", "rl.eval_prompts=4", "--set", "rl.eval_samples=2", "--set", "rl.eval_every=2",
        "--set", "rl.checkpoint_every=2"]


def _data(page: str) -> dict:
  m = re.search(r'<script type="application/json" id="data">(.*?)</script>', page, re.S)
  return json.loads(m.group(1).replace("<\\/", "</"))


def test_page_holds_every_lane_and_nothing_external():
  recs = [synthetic_record(step=s, seed=s, signals=("entropy", "surprisal", "ig")) for s in (10, 20)]
  recs[0].prompts[0] = "</script><b>x</b>"  # data cannot close the script element
  page = page_html(recs, initial_step=20)
  assert not re.search(r"(?:src|href)\s*=\s*['\"]?(?:https?:)?//", page) and "http://" not in page \
      and "https://" not in page and "@import" not in page
  data = _data(page)
  assert data["initial"] == 1 and [s["step"] for s in data["steps"]] == [10, 20]
  lanes = data["steps"][0]["lanes"]
  assert [l["name"] for l in lanes] == ["credit", "entropy", "surprisal", "ig", "weight"]
  assert lanes[0]["kind"] == "diverging" and lanes[0]["lo"] == -lanes[0]["hi"] and lanes[0]["top"] is None
  rec = recs[0]
  ent = rec.signals["entropy"][rec.mask]
  assert lanes[1]["kind"] == "sequential" and lanes[1]["lo"] == pytest.approx(ent.min(), rel=1e-6)
  assert np.mean(ent >= lanes[1]["top"]) == pytest.approx(0.2, abs=0.05)  # the outlined top 20%
  assert data["steps"][0]["prompts"][0]["prompt"] == "</script><b>x</b>"
  r = data["steps"][0]["prompts"][1]["rollouts"][2]
  n = int(rec.mask[1, 2].sum())
  assert r["p"] == rec.pieces[1][2] and r["id"] == rec.tokens[1, 2, :n].tolist() and r["r"] == rec.rewards[1, 2]
  np.testing.assert_allclose(r["v"][3], rec.signals["ig"][1, 2, :n], rtol=1e-3)
  np.testing.assert_allclose(r["v"][0], rec.credit[1, 2, :n], rtol=1e-3, atol=1e-3 * lanes[0]["hi"])


@pytest.mark.slow  # (~15 s; tests/training/test_cli.py's first test checks the records and the page in the default run)
def test_a_real_two_step_run_records_and_renders(tmp_path, capsys):
  args = ["--out", str(tmp_path), "--no-progress", *TINY]
  assert cli.main(["run", "countdown-grpo", "--steps", "2", "--set", "rl.record_every=1", *args]) == 0
  run = tmp_path / "countdown-grpo" / "seed-0"
  assert recorded_steps(run) == [1, 2]
  rec = load_record(record_path(run, 2))
  assert rec.tokens.shape[:2] == (4, 2) and rec.name == "countdown-grpo" and rec.credit_method == "outcome"
  assert set(rec.signals) == {"entropy", "surprisal", "oracle_value", "fatal"}  # countdown has an oracle
  m = rec.mask
  last = m.sum(-1) - 1
  np.testing.assert_array_equal(np.take_along_axis(rec.signals["oracle_value"], last[..., None], -1)[..., 0],
                                rec.rewards)  # the value of the whole response is its reward
  assert rec.signals["fatal"].sum(-1).max() <= 1 and not rec.signals["fatal"][~m].any()
  assert np.all(rec.signals["entropy"][m] >= 0) and np.all(rec.signals["surprisal"][m] >= 0)
  # GRPO's credit is the outcome advantage on every token of a trained group.
  np.testing.assert_allclose(rec.credit, np.where(m, rec.outcome_advantage[..., None], 0), atol=1e-5)
  assert ["".join(p) for p in rec.pieces[0]] == rec.texts[0]
  config = json.loads((run / "config.json").read_text())
  assert config["rl"]["record_every"] == 1
  capsys.readouterr()
  assert cli.main(["explore", str(run)]) == 0
  page = (run / "explore" / "explore.html").read_text()
  assert [s["step"] for s in _data(page)["steps"]] == [1, 2]
  assert cli.main(["explore", str(run), "--step", "2", "--out", str(tmp_path / "two.html")]) == 0
  assert [s["step"] for s in _data((tmp_path / "two.html").read_text())["steps"]] == [2]
  # The index of a folder of runs links the run's page with its method, seed and final pass@1.
  assert cli.main(["explore", str(tmp_path)]) == 0
  index = (tmp_path / "explore.html").read_text()
  final = json.loads((run / "summary.json").read_text())["final_pass1"]
  assert 'href="countdown-grpo/seed-0/explore/explore.html"' in index and "outcome" in index \
      and f"{final:.3f}" in index


def _refused(argv, needle, capsys, *, unwritten=()):
  assert cli.main(argv) == 2, argv
  err = capsys.readouterr().err
  assert err.startswith("tcred: error:") and needle in err, err
  assert "Traceback" not in err
  for p in unwritten:
    assert not p.exists(), p


def test_bad_input_exits_2_naming_the_problem(tmp_path, capsys):
  run = tmp_path / "runs" / "x" / "seed-0"
  run.mkdir(parents=True)
  (run / "config.json").write_text("{}")
  page = run / "explore" / "explore.html"
  _refused(["explore", str(run)], "has no recorded step", capsys)
  _refused(["explore", str(tmp_path / "missing")], "is not a directory", capsys)
  save_record(run, synthetic_record(step=10))
  save_record(run, synthetic_record(step=20))
  _refused(["explore", str(run), "--step", "15"], "--step 15 was not recorded", capsys, unwritten=[page])
  _refused(["explore", str(run), "--step", "-1"], "--step must be", capsys, unwritten=[page])
  _refused(["explore", str(run), "--out", str(tmp_path / "nodir" / "p.html")], "does not exist", capsys,
           unwritten=[page])
  _refused(["explore", str(run), "--out", str(tmp_path)], "is a directory", capsys, unwritten=[page])
  bad = record_path(run, 20)
  bad.write_bytes(bad.read_bytes()[:100])  # truncated
  _refused(["explore", str(run)], "recorded steps: [10, 20]", capsys, unwritten=[page])
  _refused(["explore", str(tmp_path / "runs")], "corrupt or truncated", capsys,
           unwritten=[page, tmp_path / "runs" / "explore.html"])
  assert cli.main(["explore", str(run), "--step", "10"]) == 0  # the intact step still renders
  assert page.exists()

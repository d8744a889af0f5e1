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


def test_page_marks_the_decisive_tokens():
  """The decisive flags: their positions per labelled rollout, the Monte-Carlo advantage lane (diverging), the
  legend's K, δ, counts and label noise (the share of flags on tokens with p > 1 − δ), none on other prompts."""
  rec = synthetic_record(b=4, g=3, t=10, signals=("entropy", "surprisal"), decisive_prompts=2)
  d = rec.decisive
  step = _data(page_html([rec]))["steps"][0]
  lanes = [l["name"] for l in step["lanes"]]
  assert lanes[-1] == "mc_advantage" and step["lanes"][-1]["kind"] == "diverging"
  for i, p in enumerate(step["prompts"]):
    assert p["labelled"] == bool(d.labelled[i])
    for j, r in enumerate(p["rollouts"]):
      n = int(rec.mask[i, j].sum())
      if d.labelled[i]:
        assert r["d"] == np.flatnonzero(d.decisive[i, j, :n]).tolist()
        np.testing.assert_allclose(r["v"][-1], d.advantage[i, j, :n], atol=1e-3)
      else:
        assert "d" not in r
  on = rec.mask & d.labelled[:, None, None]
  p_token = np.exp(-rec.signals["surprisal"])
  flags = d.decisive[on]
  summary = step["decisive"]
  assert summary["continuations"] == 8 and summary["delta"] == 0.25 and summary["labelled"] == 2
  assert summary["prompts"] == 4 and summary["flags"] == flags.sum() > 0 and summary["tokens"] == on.sum()
  assert summary["violating"] == pytest.approx(np.mean(p_token[on][flags] > 0.75), abs=1e-4)
  assert _data(page_html([synthetic_record()]))["steps"][0]["decisive"] is None  # no flags recorded


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


@pytest.mark.slow  # two tiny runs (~40-90 s on a loaded 2-core machine)
def test_decisive_flags_of_a_real_run_leave_its_results_unchanged(tmp_path, capsys):
  """A run with decisive flags trains exactly as one without (their continuations draw from their own key;
  wall_s leaves the recording out); the flags obey the oracle: after a fatal error every prefix is lost, so
  A_t = 0 there, and A_t ≤ 0 at the fatal token itself."""
  runs = {}
  for flags in (0, 2):
    out = tmp_path / f"flags-{flags}"
    assert cli.main(["run", "countdown-grpo", "--steps", "2", "--out", str(out), "--no-progress", *TINY,
                     "--set", f"rl.record_decisive_prompts={flags}", "--set", "rl.record_decisive_continuations=4"]) == 0
    runs[flags] = out / "countdown-grpo" / "seed-0"
  rows = {k: [{m: v for m, v in json.loads(line).items() if not m.startswith("time/") and "wall" not in m}
              for line in (run / "metrics.jsonl").read_text().splitlines()] for k, run in runs.items()}
  assert rows[0] == rows[2]
  summaries = [json.loads((run / "summary.json").read_text()) for run in runs.values()]
  assert summaries[0]["final_pass1"] == summaries[1]["final_pass1"]
  assert load_record(record_path(runs[0], 2)).decisive is None
  rec = load_record(record_path(runs[2], 2))
  d = rec.decisive
  assert d.labelled.sum() == 2 and d.labelled[:2].all() and d.continuations == 4 and d.delta == 0.25
  assert d.tokens > 0 and d.seconds > 0
  on = rec.mask & d.labelled[:, None, None]
  np.testing.assert_array_equal(d.decisive, on & (np.abs(d.advantage) >= 0.25))
  fatal = rec.signals["fatal"] > 0
  after = (np.cumsum(fatal, -1) - fatal) > 0  # tokens after the fatal error
  assert not d.advantage[after & on].any() and np.all(d.advantage[fatal & on] <= 0)
  assert np.all(np.abs(d.advantage[on]) <= 1)
  assert cli.main(["explore", str(runs[2])]) == 0
  step = _data((runs[2] / "explore" / "explore.html").read_text())["steps"][-1]
  assert step["decisive"]["labelled"] == 2 and step["decisive"]["flags"] == d.decisive.sum()


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


def test_lanes_of_judge_tree_and_sigma_signals_are_sequential_with_a_note(tmp_path):
  """The lanes a record derives from a method's extras (judge scores and changes, the tree gap, σ) survive the
  record file (version 2: new `signal/*` arrays only) and render on a sequential scale from their minimum, the
  legend saying what each is."""
  names = ("entropy", "judge_score", "judge_change", "tree-sibling-gap", "xroll-sigma")
  rec = synthetic_record(signals=names)
  back = load_record(save_record(tmp_path, rec))
  assert list(back.signals) == list(names)
  lanes = {l["name"]: l for l in _data(page_html([back], initial_step=rec.step))["steps"][0]["lanes"]}
  for name in names[1:]:
    v = rec.signals[name][rec.mask]
    assert lanes[name]["kind"] == "sequential" and lanes[name]["lo"] == pytest.approx(v.min(), rel=1e-6)
    assert lanes[name]["hi"] == pytest.approx(v.max(), rel=1e-6) and lanes[name]["note"]
  assert "score change" in lanes["judge_change"]["note"] and "TreeRL" in lanes["tree-sibling-gap"]["note"]
  assert lanes["credit"]["kind"] == "diverging" and lanes["credit"]["note"] == ""

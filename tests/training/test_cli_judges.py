"""Judge-credit experiments from the CLI: they run, log the judge's cost, list the judges, refuse bad settings."""

import json

import numpy as np
import pytest

from tcred import cli

TINY = ["--set", "model.hidden_size=32", "--set", "model.intermediate_size=64", "--set", "model.num_hidden_layers=1",
        "--set", "sft.steps=5", "--set", "sft.batch_size=8", "--set", "rl.prompts_per_step=4",
        "--set", "rl.group_size=2", "--set", "rl.final_eval_prompts=8", "--set", "rl.final_eval_samples=2",
        "--set", "rl.eval_prompts=4", "--set", "rl.eval_samples=2", "--set", "rl.eval_every=2",
        "--set", "rl.checkpoint_every=2"]  # tests/training/test_cli.py's: the base policy is shared


@pytest.mark.parametrize("name, extra", [
    ("countdown-judge-oracle", []),
    pytest.param("countdown-judge-mc", ["--set", "credit.judge_settings=continuations=2,fork_rows=16"],
                 marks=pytest.mark.slow),  # the continuation sampler's compilations
])
def test_judge_experiments_run_and_log_the_judge_cost(tmp_path, name, extra):
  assert cli.main(["run", name, "--steps", "2", "--out", str(tmp_path), "--no-progress", *TINY, *extra]) == 0
  run = tmp_path / name / "seed-0"
  rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
  summary = json.loads((run / "summary.json").read_text())
  assert [r["step"] for r in rows] == [1, 2] and all(r["optim/skipped"] == 0.0 for r in rows)
  assert all("time/judge_s" in r and "counts/judge_tokens" in r and "credit/process_abs" in r for r in rows)
  assert summary["judge_tokens"] == sum(r["counts/judge_tokens"] for r in rows)
  assert summary["judge_wall_s"] > 0
  if name.endswith("oracle"):
    assert summary["judge_tokens"] == 0  # the oracle runs no model
    _judge_lanes_are_the_oracle_step_scores(run)
  else:  # at least the 4 x 2 prompts and responses prefilled, and one continuation token per prompt prefix
    assert all(r["counts/judge_tokens"] > 4 * 2 + 4 for r in rows)


def _judge_lanes_are_the_oracle_step_scores(run):
  """The run's record holds the oracle judge's step scores spread on each step's tokens: s_k, the prefix value
  after step k, is the record's `oracle_value` at the step's last token (the judge's |s_k − s_{k−1}| likewise)."""
  from tcred.judges.credit import token_steps
  from tcred.tasks.registry import make_task
  from tcred.training.record import load_record, record_path
  task = make_task("countdown")
  rec = load_record(record_path(run, 2))
  tk = task.tokenizer
  for i, j in np.ndindex(rec.mask.shape[:2]):
    ids = rec.tokens[i, j][rec.mask[i, j]]
    body = ids[:-1] if len(ids) and np.isin(ids[-1], tk.eos_ids) else ids
    ends = [int(e) for e in tk.step_token_ends(body, task.step_ends(rec.texts[i][j]))]
    steps = token_steps(ends, len(ids), rec.mask.shape[-1])
    s = np.array([1.0] + [rec.signals["oracle_value"][i, j, e - 1] for e in ends])  # s_0: countdown's prior is 1
    np.testing.assert_array_equal(rec.signals["judge_score"][i, j], np.where(steps > 0, s[steps], 0.0))
    change = np.concatenate([[0.0], np.abs(np.diff(s))])
    np.testing.assert_allclose(rec.signals["judge_change"][i, j], np.where(steps > 0, change[steps], 0.0))


def test_list_shows_the_judges_and_their_experiments(capsys):
  assert cli.main(["list"]) == 0
  out = capsys.readouterr().out
  assert "judges (credit method `judge`, credit.judge=NAME):" in out
  for line in ("  mc ", "  oracle ", "countdown-judge-oracle", "graph-path-judge-mc", "long-addition-judge-oracle",
               "suite-judges"):
    assert line in out


@pytest.mark.parametrize("setting, needle", [
    ("credit.judge=nope", "unknown judge 'nope'; allowed: ["),
    ("credit.judge_settings=samples=2", "judge 'mc' has no setting 'samples'; allowed: ["),
    ("credit.lam=-1", "credit.lam must be a number >= 0"),
])
def test_bad_judge_settings_exit_2_and_list_allowed(setting, needle, capsys, tmp_path):
  assert cli.main(["run", "countdown-judge-mc", "--set", setting, "--out", str(tmp_path)]) == 2
  assert needle in capsys.readouterr().err

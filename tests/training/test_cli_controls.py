"""The credit controls from the CLI (issue 24): they run, draw from the run's key reproducibly, log the
judge's cost, and are listed."""

import json

import pytest

from tcred import cli
from tests.training.test_cli_judges import TINY


def _rows(run):
  return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


# CI time: the default run trains `shuffled` (wrapping verifier, with the credit key) in a train step
# (tests/credit/test_methods.py) and the judge-oracle CLI test runs the judge host arrays through the loop.
@pytest.mark.slow
@pytest.mark.parametrize("name, extra", [
    ("countdown-shuffled-verifier-process", []),  # the oracle's host arrays, the credit key and the shuffle in the step
    ("countdown-policy-value", ["--set", "credit.continuations=2", "--set", "credit.fork_rows=16"]),
])
def test_control_experiments_run_and_log_the_judge_cost(tmp_path, name, extra):
  assert cli.main(["run", name, "--steps", "2", "--out", str(tmp_path), "--no-progress", *TINY, *extra]) == 0
  rows = _rows(tmp_path / name / "seed-0")
  assert [r["step"] for r in rows] == [1, 2] and all(r["optim/skipped"] == 0.0 for r in rows)
  assert all("counts/judge_tokens" in r and "credit/process_abs" in r for r in rows)


def _settings(row):
  return {k: v for k, v in row.items() if not k.startswith("time/") and "wall" not in k}


@pytest.mark.slow  # two runs
def test_random_mask_run_is_reproducible_from_its_seed(tmp_path):
  name = "countdown-random-top20"
  runs = []
  for out in (tmp_path / "a", tmp_path / "b"):
    assert cli.main(["run", name, "--steps", "2", "--out", str(out), "--no-progress", *TINY]) == 0
    runs.append(_rows(out / name / "seed-0"))
  # ceil(0.2·n) of each response's n tokens: about a fifth of the tokens train (more on short responses).
  assert all(0.2 <= r["credit/kept_token_frac"] < 0.5 for r in runs[0])
  assert [_settings(r) for r in runs[0]] == [_settings(r) for r in runs[1]]  # the same seed: the same masks


def test_list_shows_the_controls(capsys):
  assert cli.main(["list"]) == 0
  out = capsys.readouterr().out
  for name in ("countdown-policy-value", "countdown-verifier", "countdown-verifier-process", "countdown-random-top20",
               "countdown-shuffled-verifier-process", "graph-path-shuffled-entropy-top20", "long-addition-verifier",
               "jsonl-random-top20"):
    assert f"  {name} " in out
  assert "jsonl-verifier" not in out  # no oracle: no positive controls

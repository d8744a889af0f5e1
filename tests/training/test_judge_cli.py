"""`tcred judge train|eval` end to end on a tiny base policy (the TINY policy of test_cli.py)."""

import json
import os
import pathlib
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from tcred import cli
from tcred.evaluation import judges as eval_judges
from tcred.judges.prm import ReadyPRM
from tcred.training import judges as training_judges

POLICY = ["--set", "model.hidden_size=32", "--set", "model.intermediate_size=64", "--set", "model.num_hidden_layers=1",
          "--set", "sft.steps=5", "--set", "sft.batch_size=8", "--set", "rl.final_eval_prompts=8",
          "--set", "rl.eval_prompts=4"]
JUDGE = ["--set", "judge.labels=24", "--set", "judge.steps=4", "--set", "judge.checkpoint_every=2",
         "--set", "judge.hidden_size=32", "--set", "judge.layers=1", "--set", "judge.continuations=2",
         "--set", "judge.exclude_prompts=8", "--set", "judge.batch_size=8"]


def _sets(args):
  return [v for k, v in zip(args, args[1:]) if k == "--set"]


def test_a_trained_prm_saves_loads_is_reused_and_scores(tmp_path, capsys):
  args = ["judge", "train", "prm", "--task", "countdown", *POLICY, *JUDGE, "--out", str(tmp_path), "--no-progress"]
  assert cli.main(args) == 0
  first = capsys.readouterr()
  info = json.loads(first.out)
  assert " trained: " in first.err and info["labels"] == 24 and info["settings"]["steps"] == 4
  logs = next((tmp_path / "judges").iterdir())
  assert logs.name.startswith("prm-")
  assert [json.loads(line)["step"] for line in (logs / "metrics.jsonl").read_text().splitlines()] == [1, 2, 3, 4]
  assert any(p.name.startswith("events.out.tfevents") for p in logs.iterdir())
  # A second call reuses the cached judge and says so.
  assert cli.main(args) == 0
  assert "is cached; reusing it" in capsys.readouterr().err
  # Loaded from the cache, it scores a batch: s_0 is the prior (the training labels' good fraction).
  s = eval_judges.setup("prm", "countdown", _sets(POLICY + JUDGE))
  ctx = eval_judges.policy_context(s.cfg, s.task)
  trained = training_judges.train_judge(s.judge, s.task, ctx)
  assert trained.reused and isinstance(trained.judge, ReadyPRM) and training_judges.judge_dir(s.judge, s.task, ctx) == trained.directory
  assert training_judges.checkpoint_steps(trained.directory) == [2, 4]
  p = s.task.make_problem((2, 3, 5), 25)
  out = trained.judge.score_groups(s.task, [p], [["2+3=5,5*5=25#25", "2*3=6#6"]], ctx)
  assert out.scores.shape == (1, 2, 4)
  np.testing.assert_array_equal(out.valid, [[[1, 1, 1, 1], [1, 1, 1, 0]]])
  assert np.all((out.scores >= 0) & (out.scores <= 1)) and out.tokens > 0
  assert np.all(out.scores[..., 0] == np.float32(info["prior"]))
  # The same weights score the same way after a reload (no training: read from the checkpoint).
  again = training_judges.train_judge(s.judge, s.task, ctx).judge
  np.testing.assert_array_equal(again.score_groups(s.task, [p], [["2+3=5,5*5=25#25", "2*3=6#6"]], ctx).scores,
                                out.scores)


@pytest.mark.parametrize("args, message", [
    (["judge", "train", "mc", "--task", "countdown"], "judge 'mc' needs no training"),
    (["judge", "train", "oracle", "--task", "countdown"], "needs no training (it scores with the policy or the task "
     "alone); trainable judges: ["),
    (["judge", "train", "nope", "--task", "countdown"], "unknown judge 'nope'; allowed: ["),
    (["judge", "eval", "prm", "--task", "nope"], "allowed: ['countdown', 'graph-path', 'long-addition']"),
    (["judge", "train", "prm", "--task", "countdown", "--set", "judge.bogus=1"],
     "judge 'prm' has no setting 'bogus'; allowed: ["),
    (["judge", "train", "prm", "--task", "countdown", "--set", "judge.steps=0"], "judge.steps must be a positive"),
    (["judge", "train", "prm", "--task", "countdown", "--set", "judge.steps=x"], "expected a value of type int"),
    (["judge", "eval", "mc", "--task", "countdown", "--prompts", "0"], "--prompts must be an integer >= 1"),
    (["judge", "eval", "prm", "--task", "countdown", "--prompts", "300"], "exceeds judge.exclude_prompts=256"),
    # Issue 22: jax.random.key overflows at 2**63; an infinite label weight is not a setting.
    (["judge", "eval", "mc", "--task", "countdown", "--seed", str(2**63)], "--seed must be an integer in [0, 2**63"),
    (["judge", "train", "prm", "--task", "countdown", "--set", "judge.alpha=inf"], "judge.alpha must be a finite"),
    (["judge", "train", "prm", "--task", "countdown", "--set", f"judge.seed={2**63}"], "judge.seed must be an"),
])
def test_bad_judge_input_exits_2_listing_what_is_allowed(args, message, capsys):
  assert cli.main(args) == 2
  assert message in capsys.readouterr().err


@pytest.mark.slow  # ~60 s on a quiet machine: a subprocess trains, is killed after a checkpoint and resumes
def test_a_killed_judge_training_resumes_from_its_checkpoint(tmp_path):
  sets = [*POLICY, *JUDGE[:2], "--set", "judge.steps=3000", *JUDGE[4:], "--set", "judge.checkpoint_every=20"]
  cmd = [sys.executable, "-m", "tcred.cli", "judge", "train", "prm", "--task", "graph-path", *sets,
         "--out", str(tmp_path), "--no-progress"]
  env = dict(os.environ)
  proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
  deadline = time.time() + 240
  found = []
  while time.time() < deadline and not found:
    assert proc.poll() is None, proc.stderr.read().decode()
    found = [p for p in env_cache(env).glob("judges/prm-*/checkpoints/*") if p.name.isdigit()]
    time.sleep(0.2)
  time.sleep(0.5)
  proc.send_signal(signal.SIGKILL)
  proc.wait()
  # Without --resume the interrupted training is refused, naming the flag.
  again = subprocess.run(cmd, capture_output=True, text=True, env=env)
  assert again.returncode == 2 and "pass --resume" in again.stderr
  done = subprocess.run(cmd + ["--resume"], capture_output=True, text=True, env=env)
  assert done.returncode == 0, done.stderr
  info = json.loads(done.stdout)
  assert info["resumed_from"] >= 20 and info["resumed_from"] % 20 == 0
  logs = next((tmp_path / "judges").iterdir())
  steps = [json.loads(line)["step"] for line in (logs / "metrics.jsonl").read_text().splitlines()]
  assert steps == list(range(1, 3001))  # the lines after the checkpoint were dropped and written again


def env_cache(env):
  return pathlib.Path(env["TCRED_CACHE"])


@pytest.mark.slow  # ~20 s: held-out rollouts, the oracle and the mc judge scored ProcessBench-style
def test_judge_eval_reports_f1_with_intervals(capsys):
  assert cli.main(["judge", "eval", "oracle", "--task", "countdown", *POLICY, "--prompts", "8", "--rollouts", "2",
                   "--bootstrap", "50", "--no-progress"]) == 0
  oracle = json.loads(capsys.readouterr().out)
  assert oracle["rollouts"] == 16 and oracle["acc_error"] == 1.0  # the oracle finds its own first errors
  assert cli.main(["judge", "eval", "mc", "--task", "countdown", *POLICY, "--set", "judge.continuations=2",
                   "--prompts", "8", "--rollouts", "2", "--bootstrap", "50", "--no-progress"]) == 0
  mc = json.loads(capsys.readouterr().out)
  # The same held-out rollouts (the tiny policy's are all wrong, so F1 has no error-free class: null).
  assert mc["erroneous"] == oracle["erroneous"] and 0 <= mc["acc_error"] <= 1 and mc["score_tokens"] > 0
  low, high = mc["acc_error_ci"]
  assert low <= mc["acc_error"] <= high


def test_judge_eval_writes_null_and_prints_na_for_an_undefined_f1(monkeypatch, capsys):
  """With no error-free rollout, acc. error-free and F1 are undefined (NaN): the JSON says null (NaN is not
  JSON), the summary "n/a". The judge's evaluation is replaced by such a result (no policy is sampled)."""
  nan = float("nan")
  result = {"judge": "mc", "rollouts": 4, "erroneous": 4, "error_free": 0, "f1": nan, "acc_error": 0.75,
            "acc_correct": nan, "f1_ci": [nan, nan], "acc_error_ci": [0.5, 1.0], "acc_correct_ci": [nan, nan],
            "score_tokens": 10, "score_seconds": 0.5}
  monkeypatch.setattr(eval_judges, "setup", lambda kind, task, overrides: None)
  monkeypatch.setattr(eval_judges, "evaluate", lambda s, **kwargs: result)
  assert cli.main(["judge", "eval", "mc", "--task", "countdown", "--no-progress"]) == 0
  out = capsys.readouterr()

  def reject(constant):
    raise AssertionError(f"{constant} is not JSON")

  written = json.loads(out.out, parse_constant=reject)
  assert written["f1"] is None and written["acc_correct"] is None and written["f1_ci"] == [None, None]
  assert written["acc_error"] == 0.75 and written["acc_error_ci"] == [0.5, 1.0]
  assert "F1 n/a, acc. erroneous 0.750 [0.500, 1.000], acc. error-free n/a" in out.err

"""End-to-end: the CLI contract of DESIGN §2 on a tiny config (a few steps)."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from tcred import cli

TINY = ["--set", "model.hidden_size=32", "--set", "model.intermediate_size=64", "--set", "model.num_hidden_layers=1",
        "--set", "sft.steps=5", "--set", "sft.batch_size=8", "--set", "rl.prompts_per_step=4",
        "--set", "rl.group_size=2", "--set", "rl.final_eval_prompts=8", "--set", "rl.final_eval_samples=2",
        "--set", "rl.eval_prompts=4", "--set", "rl.eval_samples=2", "--set", "rl.eval_every=2",
        "--set", "rl.checkpoint_every=2"]
TIMING = ("wall_s", "time/")


def _rows(path):
  rows = [json.loads(line) for line in path.read_text().splitlines()]
  return [{k: v for k, v in r.items() if not k.startswith(TIMING)} for r in rows]


def test_run_writes_the_design_layout(tmp_path, capsys):
  assert cli.main(["run", "countdown-grpo", "--steps", "3", "--out", str(tmp_path), "--no-progress", *TINY]) == 0
  run = tmp_path / "countdown-grpo" / "seed-0"
  summary = json.loads((run / "summary.json").read_text())
  for key in ("base_pass1", "final_pass1", "steps", "samples", "tokens_generated", "wall_s"):
    assert key in summary
  assert summary["steps"] == 3 and summary["samples"] == 3 * 4 * 2
  config = json.loads((run / "config.json").read_text())
  assert config["rl"]["steps"] == 3 and config["model"]["hidden_size"] == 32 and config["seed"] == 0
  rows = _rows(run / "metrics.jsonl")
  assert [r["step"] for r in rows] == [1, 2, 3]
  assert "eval/pass1" in rows[1] and "train/reward" in rows[0] and "policy/entropy" in rows[0]
  assert any(p.name.startswith("events.out.tfevents") for p in run.iterdir())
  assert sorted(int(p.name) for p in (run / "checkpoints").iterdir() if p.name.isdigit()) == [2, 3]
  # The credit explorer's records: at the evaluation steps (rl.eval_every=2) and the last step; the page renders.
  assert sorted(p.name for p in (run / "explore").iterdir()) == ["step-000002.npz", "step-000003.npz"]
  assert cli.main(["explore", str(run)]) == 0 and (run / "explore" / "explore.html").stat().st_size > 1000
  # The same directory is not overwritten without --resume.
  assert cli.main(["run", "countdown-grpo", "--steps", "3", "--out", str(tmp_path), "--no-progress", *TINY]) == 2
  assert "--resume" in capsys.readouterr().err


def test_resumed_run_repeats_the_uninterrupted_metrics(tmp_path, capsys):
  args = ["--out", str(tmp_path / "a"), "--no-progress", *TINY]
  assert cli.main(["run", "graph-path-grpo", "--steps", "4", *args]) == 0
  # Interrupted after step 2 (its checkpoint), then resumed to step 4.
  args_b = ["--out", str(tmp_path / "b"), "--no-progress", *TINY]
  assert cli.main(["run", "graph-path-grpo", "--steps", "2", *args_b]) == 0
  capsys.readouterr()
  assert cli.main(["run", "graph-path-grpo", "--steps", "4", "--resume", *args_b]) == 0
  run_b = tmp_path / "b" / "graph-path-grpo" / "seed-0"
  assert f"tcred: resuming {run_b} from its checkpoint at step 2 (of 4)" in capsys.readouterr().err
  a = _rows(tmp_path / "a" / "graph-path-grpo" / "seed-0" / "metrics.jsonl")
  b = _rows(tmp_path / "b" / "graph-path-grpo" / "seed-0" / "metrics.jsonl")
  assert a == b
  sa = json.loads((tmp_path / "a" / "graph-path-grpo" / "seed-0" / "summary.json").read_text())
  sb = json.loads((tmp_path / "b" / "graph-path-grpo" / "seed-0" / "summary.json").read_text())
  untimed = lambda s: {k: v for k, v in s.items() if not k.endswith("wall_s")}
  assert untimed(sa) == untimed(sb)


@pytest.mark.slow  # ~13 s (CI time); test_fault_injection kills and resumes a run too
def test_killed_run_resumes_from_its_checkpoint(tmp_path):
  out = tmp_path / "runs"
  cmd = [sys.executable, "-m", "tcred.cli", "run", "countdown-grpo", "--steps", "400", "--out", str(out),
         "--no-progress", *TINY]
  proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
  ckpts = out / "countdown-grpo" / "seed-0" / "checkpoints"
  deadline = time.time() + 240
  while time.time() < deadline and not (ckpts.exists() and any(p.name.isdigit() for p in ckpts.iterdir())):
    assert proc.poll() is None, proc.stderr.read().decode()
    time.sleep(0.5)
  time.sleep(1.0)
  proc.send_signal(signal.SIGKILL)
  proc.wait()
  steps = sorted(int(p.name) for p in ckpts.iterdir() if p.name.isdigit())
  assert steps, "no checkpoint was written before the kill"
  # The dead process left its lock behind; resuming takes it over and continues.
  resumed = steps[-1] + 2
  assert cli.main(["run", "countdown-grpo", "--steps", str(resumed), "--out", str(out), "--resume",
                   "--no-progress", *TINY]) == 0
  rows = _rows(out / "countdown-grpo" / "seed-0" / "metrics.jsonl")
  assert [r["step"] for r in rows] == list(range(1, resumed + 1))


@pytest.mark.parametrize("argv,needle", [
    (["run", "no-such-experiment"], "allowed"),
    (["run", "countdown-grpo", "--set", "rl.nope=1"], "rl fields"),
    (["run", "countdown-grpo", "--set", "nope.x=1"], "allowed"),
    (["run", "countdown-grpo", "--set", "rl.lr=fast"], "float"),
    (["run", "countdown-grpo", "--set", "rl.lr=-1"], "rl.lr"),
    (["run", "countdown-grpo", "--set", "loss.aggregation=sum"], "token-mean"),
    (["run", "countdown-grpo", "--set", "task_config.num_numbers=9"], "num_numbers"),
])
def test_bad_input_exits_2_and_lists_allowed(argv, needle, capsys, tmp_path):
  assert cli.main([*argv, "--out", str(tmp_path)]) == 2
  assert needle in capsys.readouterr().err


def test_list_names_every_experiment(capsys):
  assert cli.main(["list"]) == 0
  out = capsys.readouterr().out
  for name in ("countdown-grpo", "countdown-dr-grpo", "countdown-dapo", "graph-path-grpo", "graph-path-dapo"):
    assert name in out


# Two in the default run (a refill filter and an extra signal; countdown-dro-r3 also runs in
# test_extras_cost.py); the rest under -m slow to keep the default run short.
@pytest.mark.parametrize("name", ["countdown-dapo", "countdown-mi-peaks",
                                  pytest.param("graph-path-variance-filter", marks=pytest.mark.slow),
                                  pytest.param("graph-path-mi-weight", marks=pytest.mark.slow),
                                  pytest.param("countdown-dro-r3", marks=pytest.mark.slow)])
def test_methods_with_filters_and_extra_signals_run_by_name(tmp_path, name, capsys):
  # Without --no-progress and with stderr not a terminal: progress lines (one per step here), and
  # the final evaluations say what they do.
  assert cli.main(["run", name, "--steps", "2", "--out", str(tmp_path), *TINY]) == 0
  err = capsys.readouterr().err
  assert f"{name} seed 0: step 1/2, reward " in err and f"{name} seed 0: step 2/2, reward " in err
  assert "tcred: evaluating the final policy on 8 held-out prompts x 2 samples" in err
  rows = _rows(tmp_path / name / "seed-0" / "metrics.jsonl")
  assert len(rows) == 2 and all(r["optim/skipped"] == 0.0 for r in rows)
  summary = json.loads((tmp_path / name / "seed-0" / "summary.json").read_text())
  # Filters refill: at least B x G rollouts per step were generated.
  assert summary["samples"] >= 2 * 4 * 2


def test_a_reader_that_leaves_early_is_no_error(tmp_path):
  # `tcred list | head -1`: the pipe closes before tcred writes; no traceback, exit 0.
  proc = subprocess.Popen([sys.executable, "-m", "tcred.cli", "list"], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
  proc.stdout.close()
  err = proc.stderr.read().decode()
  assert proc.wait(timeout=120) == 0 and "Traceback" not in err and "BrokenPipe" not in err, err

"""Tables and learning curves built from hand-written run directories (nothing is trained)."""

import dataclasses
import json
import math
import shutil

import numpy as np
import pytest

from tcred import cli
from tcred.evaluation import tables
from tcred.experiments import Suite, get_experiment, get_suite, suite_names
from tcred.runtime import shown_path


def write_run(out, name, seed, *, task, final, base=0.2, greedy=0.3, pass8=0.6, wall_s=600.0, curve=(),
              config=None, extra=None, bases=3):
  """A finished run: config.json (the registered config of `name` with the SFT base of seed `seed`
  over `bases` bases, or `config`), summary.json, and metrics.jsonl with eval/pass1 at the `curve` points.

  `curve` is a list of `(samples, tokens, pass1)` at steps 1, 2, ...
  """
  run = out / name / f"seed-{seed}"
  run.mkdir(parents=True)
  if config is None:
    config = get_experiment(name).to_dict()
    config["sft"]["seed"] += seed % bases
  (run / "config.json").write_text(json.dumps({**config, "seed": seed}))
  summary = {"name": name, "seed": seed, "task": task, "credit": "outcome", "base_pass1": base,
             "final_pass1": final, "base_pass1_greedy": 0.25, "final_pass1_greedy": greedy, "base_pass8": 0.5,
             "final_pass8": pass8, "eval_samples": 2048, "steps": config["rl"]["steps"], "samples": 0,
             "tokens_generated": curve[-1][1] if curve else 0, "wall_s": wall_s, **(extra or {})}
  (run / "summary.json").write_text(json.dumps(summary))
  rows = []
  for step, (samples, tokens, pass1) in enumerate(curve, start=1):
    rows.append({"step": step, "train/reward": 0.1, "counts/samples": samples - 1,
                 "counts/tokens_generated": tokens - 1, "wall_s": step})  # a row between evals
    rows.append({"step": step, "train/reward": 0.2, "eval/pass1": pass1, "counts/samples": samples,
                 "counts/tokens_generated": tokens, "wall_s": step})
  (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
  return run


SUITE = Suite(name="suite-test", description="a hand-made suite",
              experiments=("countdown-dapo", "countdown-grpo", "countdown-dr-grpo"), seeds=3)


@pytest.fixture
def runs(tmp_path):
  out = tmp_path / "runs"
  # Seed s starts from base s (3 bases) with base pass@1 0.05 + 0.1 s, the same for every method (paired).
  # Baseline: final pass@1 [0.2, 0.3, 0.4] (mean 0.3); its curves end at [0.375, 0.25, 0.275]:
  # budget target = 0.3, the mean of those last eval points (the curves' own evaluation).
  for s, (final, last) in enumerate(((0.2, 0.375), (0.3, 0.25), (0.4, 0.275))):
    write_run(out, "countdown-grpo", s, final=final, base=0.05 + 0.1 * s, task="countdown",
              curve=[(100, 1000, 0.25), (200, 2000, 0.31 if s else 0.29), (300, 3000, last)])
  for s in range(3):  # reaches 0.3 at 100 samples in every seed, at 1000·(s+1) tokens
    write_run(out, "countdown-dapo", s, final=0.5, base=0.05 + 0.1 * s, greedy=0.4, pass8=0.7, wall_s=60.0 * (s + 1),
              task="countdown", curve=[(100, 1000 * (s + 1), 0.31), (200, 4000, 0.45)])
  for s in range(3):  # only seed 0 reaches 0.3
    write_run(out, "countdown-dr-grpo", s, final=0.25, base=0.05 + 0.1 * s, task="countdown",
              curve=[(150, 900, 0.32 if s == 0 else 0.1), (300, 1800, 0.2)])
  return out


def _row(markdown, method):
  rows = [line for line in markdown.splitlines() if line.startswith(f"| countdown | {method} |")]
  assert len(rows) == 1, markdown
  return [c.strip() for c in rows[0].strip("|").split("|")]


def test_load_runs_reads_summary_and_metrics(runs):
  loaded = tables.load_runs(runs, "countdown-grpo", 3)
  assert [r["seed"] for r in loaded] == [0, 1, 2]
  assert loaded[1]["summary"]["final_pass1"] == 0.3 and len(loaded[1]["metrics"]) == 6
  curve = tables.eval_curve(loaded[1])
  assert curve["samples"].tolist() == [0, 100, 200, 300]
  assert curve["tokens"].tolist() == [0, 1000, 2000, 3000]
  assert curve["pass1"].tolist() == pytest.approx([0.15, 0.25, 0.31, 0.25])


def test_load_runs_missing_and_corrupt(runs):
  with pytest.raises(tables.RunDataError, match="seed-3"):
    tables.load_runs(runs, "countdown-grpo", 4)
  assert [r["seed"] for r in tables.load_runs(runs, "countdown-grpo", [0, 7], missing="skip")] == [0]
  with pytest.raises(ValueError, match="raise"):
    tables.load_runs(runs, "countdown-grpo", 3, missing="ignore")
  (runs / "countdown-grpo" / "seed-0" / "summary.json").write_text("{\"name\": ")
  with pytest.raises(tables.RunDataError, match="corrupt"):
    tables.load_runs(runs, "countdown-grpo", 3)
  with (runs / "countdown-dapo" / "seed-1" / "metrics.jsonl").open("a") as f:
    f.write("{not json\n")
  with pytest.raises(tables.RunDataError, match="line 5"):
    tables.load_runs(runs, "countdown-dapo", [1])
  summary = runs / "countdown-dr-grpo" / "seed-2" / "summary.json"
  summary.write_text(json.dumps({**json.loads(summary.read_text()), "seed": 5}))
  with pytest.raises(tables.RunDataError, match="not 'countdown-dr-grpo' seed 2"):
    tables.load_runs(runs, "countdown-dr-grpo", 3)


def test_pending_runs(runs):
  assert tables.pending_runs(SUITE, runs) == []
  assert tables.pending_runs(SUITE, runs, seeds=4) == [(n, 3) for n in SUITE.experiments]


def test_suite_table_means_and_budgets(runs):
  md = tables.suite_table(SUITE, runs, command="tcred table suite-test --out runs")
  assert "tcred table suite-test --out runs" in md and "CPUs" in md
  assert "final pass@1 30.0%" in md and "last eval/pass1 30.0%" in md
  assert "over 3 SFT base policies" in md and "resampling the 3 bases, then the seeds" in md
  grpo = _row(md, "grpo")
  # Three bases of one seed each: the 95% percentile interval of the bootstrap mean of three values is
  # their range (all three draws equal the smallest with probability 1/27 > 2.5%).
  # base [5, 15, 25], final [20, 30, 40], Δ = final − base = 15 in every seed.
  assert grpo[2:6] == ["3", "15.0 [5.0, 25.0]", "30.0 [20.0, 40.0]", "15.0 [15.0, 15.0]"]
  assert grpo[6:8] == ["60.0 [60.0, 60.0]", "30.0 [30.0, 30.0]"]
  # Seed 0 first reaches 0.3 at its last eval (300 samples), seeds 1 and 2 at 200: mean 233.
  assert grpo[8] == "233 [200, 300]"
  dapo = _row(md, "dapo")
  # base [5, 15, 25], final 50: Δ = [45, 35, 25]; reaches at 100 samples, tokens [1000, 2000, 3000].
  assert dapo[3:6] == ["15.0 [5.0, 25.0]", "50.0 [50.0, 50.0]", "35.0 [25.0, 45.0]"]
  assert dapo[6:8] == ["70.0 [70.0, 70.0]", "40.0 [40.0, 40.0]"]
  assert dapo[8] == "100 [100, 100]" and dapo[9] == "2k [1k, 3k]"
  assert dapo[10] == "4k [4k, 4k]"  # tokens generated: the last curve point of every seed
  assert dapo[11] == "2.0 [1.0, 3.0]"  # wall [1, 2, 3] min
  drgrpo = _row(md, "dr-grpo")
  assert drgrpo[8:10] == ["150 (1/3)", "900 (1/3)"]
  # The baseline comes first within its task.
  order = [line.split("|")[2].strip() for line in md.splitlines() if line.startswith("| countdown |")]
  assert order == ["grpo", "dapo", "dr-grpo"]


def test_suite_table_without_baseline_and_single_seed(tmp_path):
  out = tmp_path / "runs"
  write_run(out, "graph-path-dapo", 0, final=0.5, task="graph-path", curve=[(10, 100, 0.5)])
  suite = Suite(name="suite-one", description="one run", experiments=("graph-path-dapo",), seeds=1)
  assert "Paired statistics" not in tables.suite_table(suite, out)
  md = tables.suite_table(suite, out)
  row = [line for line in md.splitlines() if line.startswith("| graph-path | dapo |")][0]
  assert "50.0 (n=1)" in row and row.count("—") == 2
  assert "no `grpo` experiment of graph-path in this suite" in md


def test_judge_runs_list_the_judge_cost(tmp_path):
  out = tmp_path / "runs"
  for s in range(2):  # judge tokens 4000 and 6000 against 1000 generated: 4× and 6×; 1 and 3 min
    write_run(out, "countdown-judge-oracle", s, final=0.3, task="countdown", curve=[(10, 1000, 0.3)],
              extra={"judge_tokens": 4000 + 2000 * s, "judge_wall_s": 60.0 + 120.0 * s})
  write_run(out, "countdown-grpo", 0, final=0.3, task="countdown", curve=[(10, 1000, 0.3)])
  suite = Suite(name="suite-j", description="judges", experiments=("countdown-grpo", "countdown-judge-oracle"),
                seeds=2)
  md = tables.suite_table(suite, out, missing="skip")
  lines = [line for line in md.splitlines() if line.startswith("- countdown ")]
  # Two seeds on two bases: the interval of the bootstrap mean of two values is their range.
  assert lines == ["- countdown judge-oracle: 5k [4k, 6k] judge tokens (5.0 [4.0, 6.0]× the tokens generated), "
                   "2.0 [1.0, 3.0] min"]
  only_grpo = Suite(name="suite-g", description="grpo", experiments=("countdown-grpo",), seeds=1)
  assert "Step-judge cost" not in tables.suite_table(only_grpo, out, missing="skip")  # no judge runs: no lines


def test_base_policy_already_at_target_needs_no_samples(tmp_path):
  out = tmp_path / "runs"
  write_run(out, "graph-path-grpo", 0, final=0.3, base=0.4, task="graph-path", curve=[(10, 100, 0.3)])
  write_run(out, "graph-path-dapo", 0, final=0.5, base=0.4, task="graph-path", curve=[(10, 100, 0.5)])
  suite = Suite(name="suite-two", description="two runs", experiments=("graph-path-grpo", "graph-path-dapo"),
                seeds=1)
  row = [line for line in tables.suite_table(suite, out).splitlines() if line.startswith("| graph-path | dapo |")][0]
  assert row.split("|")[9:11] == [" 0 ", " 0 "]


def test_budget_target_is_the_baselines_last_eval_point_not_its_final_pass1(tmp_path):
  # The curves come from a smaller periodic evaluation than the final pass@1; a baseline whose final
  # evaluation reads 0.9 but whose curve ends at 0.4 sets the target 0.4, which its own curve reaches.
  out = tmp_path / "runs"
  write_run(out, "graph-path-grpo", 0, final=0.9, task="graph-path", curve=[(10, 100, 0.3), (20, 200, 0.4)])
  write_run(out, "graph-path-dapo", 0, final=0.5, task="graph-path", curve=[(10, 100, 0.45), (20, 200, 0.5)])
  suite = Suite(name="suite-two", description="two runs", experiments=("graph-path-grpo", "graph-path-dapo"),
                seeds=1)
  md = tables.suite_table(suite, out)
  rows = {m: [line for line in md.splitlines() if line.startswith(f"| graph-path | {m} |")][0].split("|")
          for m in ("grpo", "dapo")}
  assert rows["grpo"][9:11] == [" 20 ", " 200 "] and rows["dapo"][9:11] == [" 10 ", " 100 "]
  assert tables.curve_target(tables.load_runs(out, "graph-path-grpo", 1)) == 0.4


def test_learning_curves_writes_a_png(runs, tmp_path):
  path = tables.learning_curves(SUITE, runs, tmp_path / "results" / "curves.png")
  assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 10_000


def test_registered_suites():
  assert {"suite-foundation", "suite-quick", "suite-full"} <= set(suite_names())
  assert get_suite("suite-foundation").experiments == (
      "countdown-grpo", "countdown-dr-grpo", "countdown-dapo", "graph-path-grpo", "graph-path-dr-grpo",
      "graph-path-dapo")
  quick = get_suite("suite-quick")
  assert "quick comparison" in quick.description and quick.seeds == 3 and quick.bases == 3
  assert all(get_suite(n).bases == 3 for n in ("suite-trees", "suite-judges", "suite-foundation", "suite-full"))
  assert get_suite("suite-demo").bases == 1
  assert {get_experiment(n).task for n in quick.experiments} == {"countdown", "graph-path"}
  assert {"countdown-entropy-top20", "graph-path-mi-peaks"} <= set(quick.experiments)
  assert get_suite("suite-full").seeds == 5


def test_cli_table_unknown_suite_exits_2(capsys):
  assert cli.main(["table", "no-such-suite"]) == 2
  err = capsys.readouterr().err
  assert "no-such-suite" in err and "suite-foundation" in err


@pytest.mark.parametrize("flag", [["--seeds", "0"], ["--jobs", "0"]])
def test_cli_table_bad_numbers_exit_2(flag, capsys, tmp_path):
  assert cli.main(["table", "suite-foundation", "--out", str(tmp_path), *flag]) == 2
  assert flag[0] in capsys.readouterr().err


def test_cli_table_reuses_finished_runs(tmp_path, capsys, monkeypatch):
  monkeypatch.setattr(cli, "_run_one", lambda *a: pytest.fail("a run started"))
  monkeypatch.setattr(cli, "_run_parallel", lambda *a: pytest.fail("a run started"))
  out, results = tmp_path / "runs", tmp_path / "results"
  # Runs made before suites had bases (sft.seed 0 for every seed, under --out itself): `--bases 1` reads them.
  for name in get_suite("suite-foundation").experiments:
    task = get_experiment(name).task
    for s in range(2):
      write_run(out, name, s, final=0.3 + 0.1 * s, task=task, curve=[(64, 640, 0.3), (128, 1280, 0.4)], bases=1)
  argv = ["table", "suite-foundation", "--seeds", "2", "--bases", "1", "--out", str(out), "--jobs", "2",
          "--results", str(results)]
  assert cli.main(argv) == 0  # every run is finished: nothing is trained
  md = (results / "suite-foundation.md").read_text()
  assert f"tcred table suite-foundation --seeds 2 --bases 1 --out {shown_path(str(out))}" in md
  assert "one SFT base policy" in md and str(tmp_path) not in md  # no absolute path of this machine
  assert md.count("| 2 | 20.0 [20.0, 20.0] | 35.0 [30.0, 40.0] | ") == 6
  assert (results / "suite-foundation.png").stat().st_size > 10_000
  assert "0 runs" not in capsys.readouterr().err
  # The same suite over 2 bases keeps its runs under runs/suite-foundation/, seed 1 on base 1.
  root = out / "suite-foundation"
  for name in get_suite("suite-foundation").experiments:
    for s in range(2):
      write_run(root, name, s, final=0.3 + 0.1 * s, task=get_experiment(name).task,
                curve=[(64, 640, 0.3), (128, 1280, 0.4)])
  assert cli.main(argv[:4] + argv[6:]) == 0
  md = (results / "suite-foundation.md").read_text()
  assert "over 2 SFT base policies" in md and md.count("| 2 | 20.0 [20.0, 20.0] | 35.0 [30.0, 40.0] | ") == 6
  assert "**Resolution**" in md  # paired against GRPO, per task


def test_cli_table_bad_bases_exit_2(tmp_path, capsys):
  for bases in ("0", "4"):  # suite-foundation has 3 seeds
    assert cli.main(["table", "suite-foundation", "--out", str(tmp_path), "--bases", bases]) == 2
    assert "--bases must be an integer from 1 to the number of seeds (3)" in capsys.readouterr().err


def test_cli_table_runs_of_one_base_need_bases_1(tmp_path, capsys, monkeypatch):
  """Runs made before the suite had bases hold sft.seed 0 in every seed: the default 3 bases refuses
  them, naming the field and `--bases 1`."""
  monkeypatch.setattr(cli, "_run_one", lambda *a: pytest.fail("a run started"))
  suite = get_suite("suite-quick")
  root = suite.runs_root(tmp_path / "runs")
  write_run(root, "countdown-grpo", 1, final=0.3, task="countdown", curve=[(64, 640, 0.3)], bases=1,
            config=suite.config("countdown-grpo").to_dict())
  assert cli.main(["table", "suite-quick", "--out", str(tmp_path / "runs"), "--results", str(tmp_path / "r")]) == 2
  err = capsys.readouterr().err
  assert "sft.seed: 0 here, 1 wanted" in err and "`--bases 1` reads them" in err


_FAKE_RUN = """
import json, pathlib, sys
name, seed, out, task, config = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4], json.loads(sys.argv[5])
run = pathlib.Path(out) / name / f"seed-{seed}"
(run / "config.json").write_text(json.dumps({**config, "seed": seed}))
summary = {"name": name, "seed": seed, "task": task, "base_pass1": 0.2, "final_pass1": 0.4, "base_pass1_greedy": 0.2,
           "final_pass1_greedy": 0.5, "final_pass8": 0.7, "eval_samples": 64, "steps": config["rl"]["steps"],
           "samples": 8, "tokens_generated": 80, "wall_s": 1.0}
(run / "metrics.jsonl").write_text(json.dumps({"step": 1, "eval/pass1": 0.4, "counts/samples": 8,
                                               "counts/tokens_generated": 80}) + "\\n")
(run / "summary.json").write_text(json.dumps(summary))
"""


def test_cli_table_runs_missing_runs_in_parallel(tmp_path, monkeypatch, capsys):
  """The --jobs scheduler, with each `tcred run` replaced by a subprocess writing a fake finished run."""
  import sys

  out, results = tmp_path / "runs", tmp_path / "results"
  monkeypatch.setattr(cli, "_run_command", lambda suite, name, seed, out_: [
      sys.executable, "-c", _FAKE_RUN, name, str(seed), out_, get_experiment(name).task,
      json.dumps(suite.config(name, seed).to_dict())])
  monkeypatch.setattr(cli, "_base_key", lambda cfg: (cfg.task, False))  # no base policy cached yet
  write_run(out / "suite-foundation", "countdown-grpo", 1, final=0.4, task="countdown", curve=[(8, 80, 0.4)])
  argv = ["table", "suite-foundation", "--seeds", "2", "--out", str(out), "--jobs", "3", "--results", str(results)]
  assert cli.main(argv) == 0
  err = capsys.readouterr().err
  started = [line.split()[1] for line in err.splitlines() if line.startswith("[start]")]
  assert "1 of 12 runs finished" in err and len(started) == 11 and "[11/11 done]" in err
  # One run per task builds its base policy before the other runs of that task start.
  assert started[:2] == ["countdown-grpo", "graph-path-grpo"]
  md = (results / "suite-foundation.md").read_text()
  assert md.count("| 2 | 20.0 [20.0, 20.0] | 40.0 [40.0, 40.0] |") == 6


def test_suite_overrides_apply_to_every_experiment_and_keep_runs_apart(tmp_path):
  import pathlib

  from tcred.experiments import get_suite
  from tcred.experiments.registry import Suite, register_suite

  quick, trees = get_suite("suite-quick"), get_suite("suite-trees")
  assert quick.overrides and all(quick.config(n).rl.steps == 40 for n in quick.experiments)
  assert quick.runs_root(tmp_path) == pathlib.Path(tmp_path) / "suite-quick" == trees.runs_root(tmp_path)
  assert get_suite("suite-demo").runs_root(tmp_path) == pathlib.Path(tmp_path) / "suite-demo"  # its own budget
  assert set(trees.experiments) <= set(quick.experiments)
  with pytest.raises(ValueError, match="unknown --set key"):
    register_suite(Suite(name="bad-suite", description="", experiments=("countdown-grpo",), overrides=("rl.nope=1",)))
  with pytest.raises(ValueError, match="same overrides"):
    register_suite(Suite(name="bad-share", description="", experiments=("countdown-grpo",),
                         overrides=("rl.steps=3",), runs_under="suite-quick"))
  # The command that runs a suite's missing run passes its overrides on.
  argv = cli._run_command(quick, "countdown-grpo", 0, "runs")
  assert argv[argv.index("--set") + 1] == "rl.steps=40"
  # ... and the SFT base of its seed: seed 4 of 3 bases starts from base 1.
  assert "sft.seed=1" in cli._run_command(quick, "countdown-grpo", 4, "runs")
  assert quick.config("countdown-grpo", 4).sft.seed == 1 and quick.config("countdown-grpo", 3).sft.seed == 0
  with pytest.raises(ValueError, match="same overrides"):
    register_suite(Suite(name="bad-share-bases", description="", experiments=("countdown-grpo",),
                         overrides=quick.overrides, bases=2, runs_under="suite-quick"))


def test_cli_table_refuses_a_run_of_another_config(tmp_path, capsys, monkeypatch):
  """`tcred run lock-chain-k8-grpo --steps 6` and then the README's `tcred table suite-demo`: the 6-step
  run is not the suite's 120-step run; the table refuses, naming the run and the field, before
  running or writing anything (issue 17)."""
  out, results = tmp_path / "runs", tmp_path / "results"
  suite = get_suite("suite-demo")
  grpo = suite.experiments[0]
  assert grpo == "lock-chain-k8-grpo"
  for name in suite.experiments:
    for seed in range(suite.seeds):
      config = suite.config(name, seed).with_overrides(["rl.steps=6"] if (name, seed) == (grpo, 0) else []).to_dict()
      write_run(suite.runs_root(out), name, seed, final=0.3, task="lock-chain-k8", curve=[(64, 640, 0.3)],
                config=config)
  monkeypatch.setattr(cli, "_run_one", lambda *a: pytest.fail("a run started"))
  assert cli.main(["table", "suite-demo", "--out", str(out), "--results", str(results)]) == 2
  err = capsys.readouterr().err
  assert f"{suite.runs_root(out) / grpo / 'seed-0'} is not a run of {grpo} seed 0" in err
  assert "rl.steps: 6 here, 120 wanted" in err and "1 run directory holds another config" in err
  assert not results.exists()
  # The API refuses it too.
  with pytest.raises(tables.RunDataError, match="rl.steps: 6 here, 120 wanted"):
    tables.suite_table(suite, suite.runs_root(out))


def test_table_rows_record_steps_and_config_hash(runs):
  from tcred.training.config import run_config_hash

  md = tables.suite_table(SUITE, runs)
  assert "| steps | config |" in md
  for name in SUITE.experiments:  # one hash per row: the config at base 0 (the seeds differ in sft.seed only)
    config = get_experiment(name).to_dict()
    method = name.removeprefix("countdown-")
    assert _row(md, method)[-2:] == ["300", run_config_hash(config)]
  # A summary whose steps disagree with its config.json is not used.
  summary = runs / "countdown-dapo" / "seed-1" / "summary.json"
  summary.write_text(json.dumps({**json.loads(summary.read_text()), "steps": 6}))
  with pytest.raises(tables.RunDataError, match="says 6 steps"):
    tables.suite_table(SUITE, runs)


# ------------------------------------------------------------------------------------------ paired statistics

PAIRED = Suite(name="suite-paired", description="paired, 4 seeds over 2 bases", seeds=4, bases=2, oracle="dr-grpo",
               experiments=("countdown-grpo", "countdown-dapo", "countdown-dr-grpo"))


def _trapezoid_mean(xs, ys):
  return sum((xs[i + 1] - xs[i]) * (ys[i] + ys[i + 1]) / 2 for i in range(len(xs) - 1)) / xs[-1]


@pytest.fixture
def paired_runs(tmp_path):
  """Seeds 0–3 over 2 bases (base pass@1 0.2 in every run). Curves at 1000 and 2000 tokens:
  GRPO [0.3, 0.4]; dapo [0.4 + 0.01 s, 0.5]; dr-grpo (the oracle) [0.5, 0.6 + 0.02 s]."""
  out = tmp_path / "runs"
  ys = {"countdown-grpo": lambda s: (0.3, 0.4), "countdown-dapo": lambda s: (0.4 + 0.01 * s, 0.5),
        "countdown-dr-grpo": lambda s: (0.5, 0.6 + 0.02 * s)}
  for name, y in ys.items():
    for s in range(4):
      write_run(out, name, s, final=0.4, task="countdown", bases=2,
                curve=[(10, 1000, y(s)[0]), (20, 2000, y(s)[1])])
  return out, {name: [_trapezoid_mean([0, 1000, 2000], [0.2, *y(s)]) for s in range(4)] for name, y in ys.items()}


def _paired_row(md, method):
  rows = [line for line in md.splitlines() if line.startswith(f"| {method} |")]
  assert len(rows) == 1, md
  return [c.strip() for c in rows[0].strip("|").split("|")]


def _number(cell):
  return float(cell.split()[0])


def test_paired_section_against_references(paired_runs):
  from scipy import stats as st

  from tcred.evaluation import stats

  out, area = paired_runs
  md = tables.suite_table(PAIRED, out)
  assert "## Paired statistics" in md and "### countdown: paired against `countdown-grpo`" in md
  tree = [[0, 2], [1, 3]]  # bases, then seeds: seed s on base s mod 2
  draws = stats.cluster_draws(tree, reps=stats.BOOTSTRAP_REPS, rng=np.random.default_rng(0))
  d = {m: np.subtract(area[f"countdown-{m}"], area["countdown-grpo"]) for m in ("dapo", "dr-grpo")}
  units = {m: np.array([v[[0, 2]].mean(), v[[1, 3]].mean()]) for m, v in d.items()}
  p = {m: st.ttest_1samp(u, 0.0).pvalue for m, u in units.items()}
  lo, hi = sorted(p.values())
  holm = {m: (min(1, 2 * lo) if v == lo else max(min(1, 2 * lo), v)) for m, v in p.items()}
  for m in ("dapo", "dr-grpo"):
    row = _paired_row(md, m)
    assert row[1] == "4"
    assert _number(row[2]) == pytest.approx(100 * np.mean(area[f"countdown-{m}"]), abs=0.051)
    iv = stats.cluster_bootstrap(stats.weighted_mean(d[m]), tree, draws=draws)
    assert row[3] == f"{100 * iv.estimate:.1f} [{100 * iv.low:.1f}, {100 * iv.high:.1f}]"
    assert _number(row[4]) == pytest.approx(holm[m], abs=5e-4) and ("*" in row[4]) == (holm[m] < 0.05)
    # Tokens to GRPO's last level (0.4, reached by GRPO at 2000 tokens): both reach it at 1000.
    assert row[5] == "1k [1k, 1k]" and row[6] == "0.50 [0.50, 0.50]"
    mde = stats.minimum_detectable_effect(units[m])
    assert row[9] == f"{100 * mde:.1f}"
  # Credit score of dapo: Σ Δ_dapo / Σ Δ_oracle, with the ratio's bootstrap interval on the same draws.
  score = stats.cluster_bootstrap(stats.ratio_of_means(d["dapo"], d["dr-grpo"]), tree, draws=draws)
  assert score.estimate == pytest.approx(d["dapo"].sum() / d["dr-grpo"].sum())
  assert _paired_row(md, "dapo")[8] == f"{score.estimate:.2f} [{score.low:.2f}, {score.high:.2f}]"
  assert _paired_row(md, "dr-grpo")[8] == "1 (oracle)"
  # Resolution: pooled variance of the base-level differences over the two methods, 2 units.
  pooled = stats.mde_from_sd(math.sqrt(np.mean([np.var(u, ddof=1) for u in units.values()])), 2)
  assert f"minimum detectable effect on the area is **{100 * pooled:.1f} points**" in md
  assert "80% power" in md and "over 2 bases, across 2 methods" in md
  gain = d["dr-grpo"].mean()
  assert f"The oracle's gain over `countdown-grpo` is {100 * gain:.1f} points: resolution / gain = " \
         f"{pooled / gain:.2f}." in md


def test_resolution_leaves_out_negative_controls(paired_runs):
  """A suite naming dapo a negative control pools the oracle's variance alone, and prints the pool with dapo."""
  from tcred.evaluation import stats

  out, area = paired_runs
  # dapo spreads more than the fixture's (whose two methods' unit variances are equal): [0.4 + 0.04 s, 0.5].
  shutil.rmtree(out / "countdown-dapo")
  for s in range(4):
    write_run(out, "countdown-dapo", s, final=0.4, task="countdown", bases=2,
              curve=[(10, 1000, 0.4 + 0.04 * s), (20, 2000, 0.5)])
  area["countdown-dapo"] = [_trapezoid_mean([0, 1000, 2000], [0.2, 0.4 + 0.04 * s, 0.5]) for s in range(4)]
  suite = dataclasses.replace(PAIRED, negative_controls=("dapo",))
  md = tables.suite_table(suite, out)
  units = {}
  for m in ("dapo", "dr-grpo"):
    d = np.subtract(area[f"countdown-{m}"], area["countdown-grpo"])
    units[m] = np.array([d[[0, 2]].mean(), d[[1, 3]].mean()])
  alone = stats.mde_from_sd(float(np.std(units["dr-grpo"], ddof=1)), 2)
  both = stats.mde_from_sd(math.sqrt(np.mean([np.var(u, ddof=1) for u in units.values()])), 2)
  assert abs(alone - both) > 1e-3  # the test can tell the two pools apart
  assert f"minimum detectable effect on the area is **{100 * alone:.1f} points**" in md
  assert "over 2 bases, across 1 method)" in md
  assert (f"The negative controls (dapo) are left out of the pool: a control that collapses differs from the "
          f"baseline by the baseline's own area") in md
  assert f"pooled with them the resolution is {100 * both:.1f} points." in md
  # Only negative controls beside the baseline: they are the pool, and nothing is said left out.
  only = dataclasses.replace(PAIRED, negative_controls=("dapo", "dr-grpo"), oracle=None)
  md = tables.suite_table(only, out)
  assert f"**{100 * both:.1f} points**" in md and "left out of the pool" not in md


def test_suite_refuses_a_negative_control_that_is_its_oracle():
  with pytest.raises(ValueError, match="negative control 'dr-grpo' is also its baseline or oracle"):
    dataclasses.replace(PAIRED, negative_controls=("dr-grpo",))


def test_paired_tokens_never_reached_are_infinite(paired_runs):
  out, _ = paired_runs
  run = out / "countdown-dapo" / "seed-1"  # dapo seed 1 now stays at 0.35: never reaches GRPO's 0.4
  rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
  for row in rows:
    if "eval/pass1" in row:
      row["eval/pass1"] = 0.35
  (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
  row = _paired_row(tables.suite_table(PAIRED, out), "dapo")
  assert row[5] == "1k (3/4 reached)" and row[6].startswith("∞ [") and row[7] == "—"


def test_paired_statistics_refuse_runs_of_different_base_policies(paired_runs, tmp_path, capsys, monkeypatch):
  out, _ = paired_runs
  summary = out / "countdown-dapo" / "seed-1" / "summary.json"
  summary.write_text(json.dumps({**json.loads(summary.read_text()), "base_pass1": 0.25}))
  with pytest.raises(tables.UnpairedRunsError, match="countdown-dapo seed 1 and countdown-grpo seed 1 evaluated "
                                                      "different base policies"):
    tables.suite_table(PAIRED, out)
  assert "Paired statistics" not in tables.suite_table(dataclasses.replace(PAIRED, paired=False), out)
  # Through the CLI: exit 2 with the message, no table written.
  from tcred.experiments import registry

  monkeypatch.setitem(registry._SUITES, PAIRED.name, PAIRED)
  monkeypatch.setattr(cli, "_run_one", lambda *a: pytest.fail("a run started"))
  root = tmp_path / "o"
  root.mkdir()
  out.rename(root / PAIRED.name)
  assert cli.main(["table", PAIRED.name, "--out", str(root), "--results", str(tmp_path / "results")]) == 2
  assert "tcred: error: paired statistics need runs of one seed to share" in capsys.readouterr().err
  assert not (tmp_path / "results").exists()


def test_cli_refuses_a_suite_whose_runs_would_not_be_paired(tmp_path, capsys, monkeypatch):
  """A suite whose experiment trains another SFT base (or holds out other prompts) than its GRPO
  cannot give paired statistics: `tcred table` exits 2 naming the runs and the fields, before
  running or writing anything."""
  from tcred.experiments import registry

  grpo = get_experiment("countdown-grpo")
  other = dataclasses.replace(grpo, name="countdown-grpo-sft", method="grpo-sft",
                              sft=dataclasses.replace(grpo.sft, steps=grpo.sft.steps + 1))
  held = dataclasses.replace(grpo, name="countdown-grpo-held", method="grpo-held",
                             rl=dataclasses.replace(grpo.rl, final_eval_prompts=grpo.rl.final_eval_prompts + 8))
  for cfg in (other, held):
    monkeypatch.setitem(registry._EXPERIMENTS, cfg.name, cfg)
  suite = Suite(name="suite-unpaired", description="", seeds=2, experiments=("countdown-grpo", other.name, held.name))
  monkeypatch.setitem(registry._SUITES, suite.name, suite)
  monkeypatch.setattr(cli, "_run_one", lambda *a: pytest.fail("a run started"))
  out, results = tmp_path / "runs", tmp_path / "results"
  assert cli.main(["table", suite.name, "--out", str(out), "--results", str(results)]) == 2
  err = capsys.readouterr().err
  steps = grpo.sft.steps
  assert (f"countdown-grpo-sft seed 1 and countdown-grpo seed 1 do not share their SFT base policy "
          f"(sft.steps {steps + 1} vs {steps})") in err
  n = grpo.rl.held_out_prompts
  assert f"countdown-grpo-held seed 0 and countdown-grpo seed 0 do not share their prompt stream (held-out prompts " \
         f"{n + 8} vs {n})" in err
  assert "asks for paired statistics" in err and not out.exists() and not results.exists()


E2E_OVERRIDES = ("model.hidden_size=32", "model.intermediate_size=64", "model.num_hidden_layers=1", "sft.steps=5",
                 "sft.batch_size=8", "rl.steps=2", "rl.prompts_per_step=4", "rl.group_size=2",
                 "rl.final_eval_prompts=8", "rl.final_eval_samples=2", "rl.eval_prompts=4", "rl.eval_samples=2",
                 "rl.eval_every=1", "rl.checkpoint_every=2")


@pytest.mark.slow
def test_paired_table_end_to_end_on_tiny_runs(tmp_path, capsys, monkeypatch):
  """2 methods × 2 seeds over 2 SFT bases × 2 RL steps, trained for real: each seed's runs share one
  base policy (sft.seed = seed), the two bases differ, and the table has its paired section."""
  from tcred.experiments import registry

  suite = Suite(name="suite-e2e", description="tiny paired runs", seeds=2, bases=2, oracle="dr-grpo",
                experiments=("countdown-grpo", "countdown-dr-grpo"), overrides=E2E_OVERRIDES)
  monkeypatch.setitem(registry._SUITES, suite.name, suite)
  out, results = tmp_path / "runs", tmp_path / "results"
  assert cli.main(["table", suite.name, "--out", str(out), "--results", str(results)]) == 0
  root = out / suite.name
  configs = {(n, s): json.loads((root / n / f"seed-{s}" / "config.json").read_text())
             for n in suite.experiments for s in range(2)}
  assert [configs["countdown-grpo", s]["sft"]["seed"] for s in range(2)] == [0, 1]
  summaries = {k: json.loads((root / k[0] / f"seed-{k[1]}" / "summary.json").read_text()) for k in configs}
  for s in range(2):  # one base per seed, shared by both methods
    assert summaries["countdown-grpo", s]["base_pass1"] == summaries["countdown-dr-grpo", s]["base_pass1"]
    assert configs["countdown-grpo", s]["sft"] == configs["countdown-dr-grpo", s]["sft"]
  md = (results / "suite-e2e.md").read_text()
  assert "over 2 SFT base policies" in md and "### countdown: paired against `countdown-grpo`" in md
  assert "**Resolution**" in md and "| dr-grpo | 2 |" in md
  oracle_row = next(line for line in md.splitlines() if line.startswith("| dr-grpo | 2 |"))
  assert "1 (oracle)" in oracle_row or "(oracle not above baseline)" in oracle_row  # tiny policies may score 0
  assert (results / "suite-e2e.png").stat().st_size > 10_000


def test_a_run_directory_of_a_failed_start_is_not_another_config(tmp_path):
  """A run that failed before its first step (config.json only) holds no run: the table runs it afresh instead
  of refusing it as another config (issue 22)."""
  suite = get_suite("suite-demo")
  path = tables.run_dir(tmp_path, "lock-chain-k8-grpo", 0)
  path.mkdir(parents=True)
  config = suite.config("lock-chain-k8-grpo", 0).with_overrides(["rl.steps=6"]).to_dict()
  (path / "config.json").write_text(json.dumps({**config, "seed": 0}))
  assert tables.run_mismatch(suite, tmp_path, "lock-chain-k8-grpo", 0) is None
  assert ("lock-chain-k8-grpo", 0) in tables.pending_runs(suite, tmp_path, 1)
  (path / "started").write_text("{}")
  assert "rl.steps: 6 here, 120 wanted" in tables.run_mismatch(suite, tmp_path, "lock-chain-k8-grpo", 0)


# ------------------------------------------------------------------------------------------ scaling picture

SCALING = Suite(name="suite-scaling", description="two levels of a knob", seeds=3,
                experiments=("countdown-grpo", "countdown-dapo", "countdown-dr-grpo", "graph-path-grpo",
                             "graph-path-dapo", "graph-path-dr-grpo"),
                scaling=(("countdown", 2), ("graph-path", 4)), knob="keys k")


def test_scaling_section_and_figure(tmp_path):
  """GRPO ends at 0.5 (countdown) and 0.375 (graph-path): T = 0.375. Tokens to T: GRPO 2000 → 4000 (b = 1),
  dapo 1000 → 4000 (b = 2, ratios 0.5 and 1), dr-grpo reaches T on graph-path in 2 of 3 seeds (no b)."""
  out = tmp_path / "runs"
  curves = {"countdown-grpo": lambda s: [(10, 1000, 0.3), (20, 2000, 0.5)],
            "countdown-dapo": lambda s: [(10, 1000, 0.45), (20, 2000, 0.5)],
            "countdown-dr-grpo": lambda s: [(10, 1000, 0.1), (20, 3000, 0.41)],
            "graph-path-grpo": lambda s: [(10, 2000, 0.2), (20, 4000, 0.375)],
            "graph-path-dapo": lambda s: [(10, 2000, 0.3), (20, 4000, 0.42)],
            "graph-path-dr-grpo": lambda s: [(10, 2000, 0.4 if s else 0.1), (20, 4000, 0.3)]}
  for name, curve in curves.items():
    for s in range(3):
      write_run(out, name, s, final=0.4, task=name.rsplit("-", 1)[0].removesuffix("-dr"), curve=curve(s))
  md = tables.suite_table(SCALING, out)
  assert "## Scaling with keys k" in md and "Target T = 37.5%" in md
  rows = {(r[0], r[1]): r for r in (
      [c.strip() for c in line.strip("|").split("|")] for line in md.splitlines()[md.splitlines().index(
          "| method | keys k | seeds | tokens to T [95% CI] | ratio to `grpo` [95% CI] |"):])
      if len(r) == 5 and r[1] in ("2", "4")}
  assert rows[("grpo", "2")][3].startswith("2k [") and rows[("grpo", "4")][3].startswith("4k [")
  assert rows[("dapo", "2")][4].startswith("0.50") and rows[("dapo", "4")][4].startswith("1.00")
  assert rows[("dr-grpo", "4")][3] == "2k (2/3 reached)"
  assert "- `grpo`: b = 1.00" in md and "- `dapo`: b = 2.00" in md
  assert "- `dr-grpo`: b = — (T reached by every seed at 1 level(s))" in md
  png = tables.scaling_figure(SCALING, out, tmp_path / "scaling.png")
  assert png.stat().st_size > 0


def test_scaling_ratio_is_undefined_where_the_baseline_never_reached(tmp_path):
  """Countdown's GRPO ends at 0.2 on seed 0 (mean last eval 0.4; graph-path's 0.375 sets T): that seed never
  reaches T, so every countdown ratio is undefined ("—", not 0), while graph-path's stay."""
  out = tmp_path / "runs"
  curves = {"countdown-grpo": lambda s: [(10, 1000, 0.1), (20, 2000, 0.2 if s == 0 else 0.5)],
            "countdown-dapo": lambda s: [(10, 1000, 0.45), (20, 2000, 0.5)],
            "countdown-dr-grpo": lambda s: [(10, 1000, 0.45), (20, 2000, 0.5)],
            "graph-path-grpo": lambda s: [(10, 2000, 0.2), (20, 4000, 0.375)],
            "graph-path-dapo": lambda s: [(10, 2000, 0.4), (20, 4000, 0.42)],
            "graph-path-dr-grpo": lambda s: [(10, 2000, 0.4), (20, 4000, 0.42)]}
  for name, curve in curves.items():
    for s in range(3):
      write_run(out, name, s, final=0.4, task=name.rsplit("-", 1)[0].removesuffix("-dr"), curve=curve(s))
  md = tables.suite_table(SCALING, out)
  assert "| dapo | 2 | 3 | 1k [1k, 1k] | — (`grpo` reached T on 2/3) |" in md
  assert "| grpo | 2 | 3 | 2k (2/3 reached) | 1 |" in md
  assert "| dapo | 4 | 3 | 2k [2k, 2k] | 0.50 [0.50, 0.50] |" in md
  tables.scaling_figure(SCALING, out, tmp_path / "scaling.png")  # the undefined ratio is left out, not drawn at 0


def test_scaling_suite_must_name_its_levels_and_knob():
  from tcred.experiments.registry import register_suite
  with pytest.raises(ValueError, match="scaling must list at least two distinct tasks"):
    register_suite(Suite(name="bad-scaling", description="", experiments=("countdown-grpo",),
                         scaling=(("countdown", 1), ("graph-path", 2)), knob="k"))
  with pytest.raises(ValueError, match="knob must name the knob"):
    register_suite(Suite(name="bad-knob", description="", experiments=("countdown-grpo", "graph-path-grpo"),
                         scaling=(("countdown", 1), ("graph-path", 2))))


def test_cost_line_sums_runs_and_the_cached_bases(runs, tmp_path, monkeypatch):
  """Runs: GRPO and dr-grpo 600 s x 3 seeds, dapo 60 + 120 + 180 s: 66 min. Bases: 3 (one per seed, shared by
  the methods); the cache holds base 0's info (SFT 120 s) and not the others."""
  from tcred.tasks.registry import make_task_from_config
  from tcred.training.sft import base_policy_dir

  monkeypatch.setenv("TCRED_CACHE", str(tmp_path / "cache"))
  cfg = SUITE.config("countdown-grpo", 0)
  d = base_policy_dir(cfg.model, make_task_from_config(cfg.task, cfg.task_config).name, cfg.task_config, cfg.sft,
                      held_out=cfg.rl.held_out_prompts)
  d.mkdir(parents=True)
  (d / "info.json").write_text(json.dumps({"sft_wall_s": 120.0}))
  line = tables.cost_line(SUITE, tables.load_suite_runs(SUITE, runs, None, "raise"))
  assert "sum to 66 min and the SFT of their 3 base policies to 2 min; 2 of them not in this cache" in line
  assert "68 min of one job, about 34 min of wall time with --jobs 2" in line


def test_cli_table_finished_only_writes_a_partial_table_and_runs_nothing(tmp_path, monkeypatch):
  monkeypatch.setattr(cli, "_run_one", lambda *a: pytest.fail("a run started"))
  monkeypatch.setattr(cli, "_run_parallel", lambda *a: pytest.fail("a run started"))
  out, results = tmp_path / "runs", tmp_path / "results"
  names = get_suite("suite-foundation").experiments
  for name in names:
    for s in range(2):
      if (name, s) != (names[-1], 1):  # one run still missing
        write_run(out, name, s, final=0.3, task=get_experiment(name).task, curve=[(64, 640, 0.3)], bases=1)
  argv = ["table", "suite-foundation", "--seeds", "2", "--bases", "1", "--out", str(out), "--results", str(results),
          "--finished-only"]
  assert cli.main(argv) == 0
  md = (results / "suite-foundation.md").read_text()
  assert f"- **Partial**: 11 of 12 runs were finished when this table was written; missing: {names[-1]} seed 1." in md
  assert (results / "suite-foundation.png").exists()

"""Tables and learning curves built from hand-written run directories (nothing is trained)."""

import json
import math

import pytest

from tcred import cli
from tcred.evaluation import tables
from tcred.evaluation.stats import student_t_quantile
from tcred.experiments import Suite, get_experiment, get_suite, suite_names

T2 = student_t_quantile(0.975, 2)  # 4.303


def write_run(out, name, seed, *, task, final, base=0.2, greedy=0.3, pass8=0.6, wall_s=600.0, curve=(),
              config=None, extra=None):
  """A finished run: config.json (the registered config of `name`, or `config`), summary.json, and
  metrics.jsonl with eval/pass1 at the `curve` points.

  `curve` is a list of `(samples, tokens, pass1)` at steps 1, 2, ...
  """
  run = out / name / f"seed-{seed}"
  run.mkdir(parents=True)
  config = config or get_experiment(name).to_dict()
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
  # Baseline: final pass@1 [0.2, 0.3, 0.4] (mean 0.3); its curves end at [0.375, 0.25, 0.275]:
  # budget target = 0.3, the mean of those last eval points (the curves' own evaluation).
  for s, (final, last) in enumerate(((0.2, 0.375), (0.3, 0.25), (0.4, 0.275))):
    write_run(out, "countdown-grpo", s, final=final, task="countdown",
              curve=[(100, 1000, 0.25), (200, 2000, 0.31 if s else 0.29), (300, 3000, last)])
  for s in range(3):  # reaches 0.3 at 100 samples in every seed, at 1000·(s+1) tokens
    write_run(out, "countdown-dapo", s, final=0.5, base=0.05 + 0.1 * s, greedy=0.4, pass8=0.7, wall_s=60.0 * (s + 1),
              task="countdown", curve=[(100, 1000 * (s + 1), 0.31), (200, 4000, 0.45)])
  for s in range(3):  # only seed 0 reaches 0.3
    write_run(out, "countdown-dr-grpo", s, final=0.25, task="countdown",
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
  assert curve["pass1"].tolist() == [0.2, 0.25, 0.31, 0.25]


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
  grpo = _row(md, "grpo")
  # base 20, final [20, 30, 40] → 30 ± t(0.975, 2)·10/√3, Δ = final − base.
  assert grpo[2:6] == ["3", "20.0 ± 0.0", f"30.0 ± {T2 * 10 / math.sqrt(3):.1f}",
                       f"10.0 ± {T2 * 10 / math.sqrt(3):.1f}"]
  assert grpo[6:8] == ["60.0 ± 0.0", "30.0 ± 0.0"]
  # Seed 0 first reaches 0.3 at its last eval (300 samples), seeds 1 and 2 at 200: mean 233.
  assert grpo[8] == f"233 ± {T2 * math.sqrt(3333.3333) / math.sqrt(3):.0f}"
  dapo = _row(md, "dapo")
  # base [5, 15, 25], final 50: Δ = [45, 35, 25]; reaches at 100 samples, tokens [1000, 2000, 3000].
  assert dapo[3:6] == [f"15.0 ± {T2 * 10 / math.sqrt(3):.1f}", "50.0 ± 0.0", f"35.0 ± {T2 * 10 / math.sqrt(3):.1f}"]
  assert dapo[6:8] == ["70.0 ± 0.0", "40.0 ± 0.0"]
  assert dapo[8] == "100 ± 0" and dapo[9] == f"2k ± {T2 * 1000 / math.sqrt(3) / 1000:.3g}k"
  assert dapo[10] == "4k ± 0"  # tokens generated: the last curve point of every seed
  assert dapo[11] == f"2.0 ± {T2 * 1 / math.sqrt(3):.1f}"  # wall [1, 2, 3] min
  drgrpo = _row(md, "dr-grpo")
  assert drgrpo[8:10] == ["150 (1/3)", "900 (1/3)"]
  # The baseline comes first within its task.
  order = [line.split("|")[2].strip() for line in md.splitlines() if line.startswith("| countdown |")]
  assert order == ["grpo", "dapo", "dr-grpo"]


def test_suite_table_without_baseline_and_single_seed(tmp_path):
  out = tmp_path / "runs"
  write_run(out, "graph-path-dapo", 0, final=0.5, task="graph-path", curve=[(10, 100, 0.5)])
  suite = Suite(name="suite-one", description="one run", experiments=("graph-path-dapo",), seeds=1)
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
  # Two seeds: half-width t(0.975, 1) · sd / √2 = 12.706 · sd / √2; sd of [4000, 6000] = 1414.2 -> 12.7k,
  # of the ratios [4, 6] -> 12.7, of the minutes [1, 3] -> 12.7.
  assert lines == ["- countdown judge-oracle: 5k ± 12.7k judge tokens (5.0 ± 12.7× the tokens generated), "
                   "2.0 ± 12.7 min"]
  only_grpo = Suite(name="suite-g", description="grpo", experiments=("countdown-grpo",), seeds=1)
  assert "Step-judge cost" not in tables.suite_table(only_grpo, out, missing="skip")  # no judge runs: no lines


def test_base_policy_already_at_target_needs_no_samples(tmp_path):
  out = tmp_path / "runs"
  write_run(out, "graph-path-grpo", 0, final=0.3, task="graph-path", curve=[(10, 100, 0.3)])
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
  assert "quick comparison" in quick.description and quick.seeds == 3
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


def test_cli_table_reuses_finished_runs(tmp_path, capsys):
  out, results = tmp_path / "runs", tmp_path / "results"
  for name in get_suite("suite-foundation").experiments:
    task = get_experiment(name).task
    for s in range(2):
      write_run(out, name, s, final=0.3 + 0.1 * s, task=task, curve=[(64, 640, 0.3), (128, 1280, 0.4)])
  argv = ["table", "suite-foundation", "--seeds", "2", "--out", str(out), "--jobs", "2", "--results", str(results)]
  assert cli.main(argv) == 0  # every run is finished: nothing is trained
  md = (results / "suite-foundation.md").read_text()
  assert f"tcred table suite-foundation --seeds 2 --out {out}" in md
  assert md.count("| 2 | 20.0 ± 0.0 | 35.0 ± ") == 6
  assert (results / "suite-foundation.png").stat().st_size > 10_000
  assert "0 runs" not in capsys.readouterr().err


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
      json.dumps(suite.config(name).to_dict())])
  monkeypatch.setattr(cli, "_base_key", lambda cfg: (cfg.task, False))  # no base policy cached yet
  write_run(out, "countdown-grpo", 1, final=0.4, task="countdown", curve=[(8, 80, 0.4)])  # reused
  argv = ["table", "suite-foundation", "--seeds", "2", "--out", str(out), "--jobs", "3", "--results", str(results)]
  assert cli.main(argv) == 0
  err = capsys.readouterr().err
  started = [line.split()[1] for line in err.splitlines() if line.startswith("[start]")]
  assert "1 of 12 runs finished" in err and len(started) == 11 and "[11/11 done]" in err
  # One run per task builds its base policy before the other runs of that task start.
  assert started[:2] == ["countdown-grpo", "graph-path-grpo"]
  md = (results / "suite-foundation.md").read_text()
  assert md.count("| 2 | 20.0 ± 0.0 | 40.0 ± 0.0 |") == 6


def test_suite_overrides_apply_to_every_experiment_and_keep_runs_apart(tmp_path):
  import pathlib

  from tcred.experiments import get_suite
  from tcred.experiments.registry import Suite, register_suite

  quick, trees = get_suite("suite-quick"), get_suite("suite-trees")
  assert quick.overrides and all(quick.config(n).rl.steps == 40 for n in quick.experiments)
  assert quick.runs_root(tmp_path) == pathlib.Path(tmp_path) / "suite-quick" == trees.runs_root(tmp_path)
  assert get_suite("suite-demo").runs_root(tmp_path) == pathlib.Path(tmp_path)
  assert set(trees.experiments) <= set(quick.experiments)
  with pytest.raises(ValueError, match="unknown --set key"):
    register_suite(Suite(name="bad-suite", description="", experiments=("countdown-grpo",), overrides=("rl.nope=1",)))
  with pytest.raises(ValueError, match="same overrides"):
    register_suite(Suite(name="bad-share", description="", experiments=("countdown-grpo",),
                         overrides=("rl.steps=3",), runs_under="suite-quick"))
  # The command that runs a suite's missing run passes its overrides on.
  argv = cli._run_command(quick, "countdown-grpo", 0, "runs")
  assert argv[argv.index("--set") + 1] == "rl.steps=40"


def test_cli_table_refuses_a_run_of_another_config(tmp_path, capsys, monkeypatch):
  """`tcred run countdown-grpo --steps 6` and then the README's `tcred table suite-demo`: the 6-step
  run is not the suite's 300-step run; the table refuses, naming the run and the field, before
  running or writing anything (issue 17)."""
  out, results = tmp_path / "runs", tmp_path / "results"
  suite = get_suite("suite-demo")
  for name in suite.experiments:
    config = get_experiment(name).with_overrides(["rl.steps=6"] if name == "countdown-grpo" else []).to_dict()
    write_run(out, name, 0, final=0.3, task="countdown", curve=[(64, 640, 0.3)], config=config)
  monkeypatch.setattr(cli, "_run_one", lambda *a: pytest.fail("a run started"))
  assert cli.main(["table", "suite-demo", "--out", str(out), "--results", str(results)]) == 2
  err = capsys.readouterr().err
  assert f"{out / 'countdown-grpo' / 'seed-0'} is not a run of countdown-grpo seed 0" in err
  assert "rl.steps: 6 here, 300 wanted" in err and "1 run directory holds another config" in err
  assert not results.exists()
  # The API refuses it too.
  with pytest.raises(tables.RunDataError, match="rl.steps: 6 here, 300 wanted"):
    tables.suite_table(suite, out)


def test_table_rows_record_steps_and_config_hash(runs):
  from tcred.training.config import run_config_hash

  md = tables.suite_table(SUITE, runs)
  assert "| steps | config |" in md
  for name in SUITE.experiments:
    config = get_experiment(name).to_dict()
    method = name.removeprefix("countdown-")
    assert _row(md, method)[-2:] == ["300", run_config_hash(config)]
  # A summary whose steps disagree with its config.json is not used.
  summary = runs / "countdown-dapo" / "seed-1" / "summary.json"
  summary.write_text(json.dumps({**json.loads(summary.read_text()), "steps": 6}))
  with pytest.raises(tables.RunDataError, match="says 6 steps"):
    tables.suite_table(SUITE, runs)


def test_a_run_directory_of_a_failed_start_is_not_another_config(tmp_path):
  """A run that failed before its first step (config.json only) holds no run: the table runs it afresh instead
  of refusing it as another config (issue 22)."""
  suite = get_suite("suite-demo")
  path = tables.run_dir(tmp_path, "countdown-grpo", 0)
  path.mkdir(parents=True)
  config = get_experiment("countdown-grpo").with_overrides(["rl.steps=6"]).to_dict()
  (path / "config.json").write_text(json.dumps({**config, "seed": 0}))
  assert tables.run_mismatch(suite, tmp_path, "countdown-grpo", 0) is None
  assert ("countdown-grpo", 0) in tables.pending_runs(suite, tmp_path, 1)
  (path / "started").write_text("{}")
  assert "rl.steps: 6 here, 300 wanted" in tables.run_mismatch(suite, tmp_path, "countdown-grpo", 0)

"""Results tables and learning curves of a suite, read from finished run directories (DESIGN §5).

A run directory `OUT/NAME/seed-S/` (written by `tcred run`) holds `config.json`, `summary.json` and
`metrics.jsonl`; this module only reads them, so a table can be rebuilt at any time from the runs.
A suite's table uses a run only if its `config.json` equals the config the suite resolves for that
experiment and seed, `rl.steps` included (`run_mismatch`); each row shows the steps and the config
hash (`run_config_hash`) of its runs.

Conventions of every table:
  * values are the mean ± 95% Student-t confidence half-width over seeds (`stats.mean_ci`);
    pass@1 and pass@k are in percent;
  * Δ is the per-seed (paired) difference final − base pass@1;
  * "to baseline" budgets: the target is where the task's baseline experiment (method `grpo`
    unless the suite names another, `Suite.baseline`) ends on the *same evaluation as the curves*: the mean over its
    seeds of the last eval/pass1 point (`rl.eval_prompts` × `rl.eval_samples`, a subset of the
    final evaluation's prompts, so its level can differ from the final pass@1 by a few points).
    For each seed, the first point of its eval/pass1 curve with pass@1 ≥ target gives the samples
    (`counts/samples`) and generated tokens (`counts/tokens_generated`) spent so far; the curve
    starts with the base policy (0 samples, `base_pass1`). No interpolation between eval points.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import logging
import math
import os
import pathlib
import platform
import re
from typing import Any, Iterable, Sequence

import numpy as np

from tcred.credit.base import credit_class
from tcred.evaluation.stats import format_count, format_mean_ci, mean_ci, samples_to_reach, student_t_quantile
from tcred.experiments.registry import Suite, get_experiment
from tcred.losses.pg import Aggregation
from tcred.training.rl import run_started
from tcred.training.config import config_diff, normalised_config, run_config_hash
from tcred.training.rl import run_dir_of as run_dir

log = logging.getLogger(__name__)

SUMMARY_KEYS = ("name", "seed", "task", "base_pass1", "final_pass1", "base_pass1_greedy", "final_pass1_greedy",
                "eval_samples", "steps", "samples", "tokens_generated", "wall_s")
MISSING_MODES = ("raise", "skip")
_PASSK = re.compile(r"^final_pass(\d+)$")


class RunDataError(ValueError):
  """A run directory needed by a table is missing or unreadable."""


def _seed_list(seeds: int | Iterable[int]) -> list[int]:
  if isinstance(seeds, int):
    if seeds < 1:
      raise ValueError(f"seeds must be >= 1, got {seeds}")
    return list(range(seeds))
  return [int(s) for s in seeds]


def _read_object(path: pathlib.Path) -> dict[str, Any]:
  """The JSON object in `path`; RunDataError naming the file if it is unreadable or not an object."""
  try:
    obj = json.loads(path.read_text())
  except (OSError, json.JSONDecodeError) as e:
    raise RunDataError(f"corrupt {path}: {e}") from None
  if not isinstance(obj, dict):
    raise RunDataError(f"corrupt {path}: expected a JSON object, got {type(obj).__name__}")
  return obj


def _read_config(path: pathlib.Path) -> dict[str, Any]:
  config_path = path / "config.json"
  if not config_path.exists():
    raise RunDataError(f"{config_path} does not exist (a run directory holds the config it ran)")
  return normalised_config(_read_object(config_path))  # fields added to tcred since the run hold their defaults


def run_mismatch(suite: Suite, out_dir: str | pathlib.Path, experiment: str, seed: int) -> str | None:
  """Why the run directory of (experiment, seed) cannot count for `suite`, or None if it can (or is empty).

  A directory that holds a run (one that finished a step, `tcred.training.rl.run_started`) must hold
  exactly the config the suite resolves (`suite.config(experiment)` with the seed; the description is not
  a setting): the message names every differing field, e.g. `rl.steps: 6 here, 300 wanted`. A run that
  failed before its first step holds nothing: the table's run starts there afresh.
  """
  path = run_dir(out_dir, experiment, seed)
  if not run_started(path):
    return None
  try:
    found = _read_config(path)
  except RunDataError as e:
    return str(e)
  differ = config_diff(found, {**suite.config(experiment).to_dict(), "seed": seed})
  return "; ".join(differ) if differ else None


def mismatched_runs(suite: Suite, out_dir: str | pathlib.Path, seeds: int | None = None) -> dict[tuple[str, int], str]:
  """`{(experiment, seed): why}` for the suite's run directories that hold another config (`run_mismatch`)."""
  found = {(name, s): run_mismatch(suite, out_dir, name, s)
           for name in suite.experiments for s in _seed_list(seeds or suite.seeds)}
  return {k: v for k, v in found.items() if v is not None}


def _read_run(path: pathlib.Path, experiment: str, seed: int, expected: dict[str, Any] | None = None) -> dict[str, Any]:
  summary_path = path / "summary.json"
  if not summary_path.exists():
    raise RunDataError(f"run {experiment} seed {seed} is not finished: {summary_path} does not exist")
  summary = _read_object(summary_path)
  missing = [k for k in SUMMARY_KEYS if k not in summary]
  if missing:
    raise RunDataError(f"{summary_path} lacks the keys {missing}; required: {list(SUMMARY_KEYS)}")
  if summary["name"] != experiment or summary["seed"] != seed:
    raise RunDataError(f"{summary_path} belongs to {summary['name']!r} seed {summary['seed']}, "
                       f"not {experiment!r} seed {seed}")
  config = None
  if expected is not None:
    config = _read_config(path)
    differ = config_diff(config, {**expected, "seed": seed})
    if differ:
      raise RunDataError(f"run {experiment} seed {seed} ({path}) holds another config than the table's: "
                         + "; ".join(differ))
    if summary["steps"] != config["rl"]["steps"]:
      raise RunDataError(f"{summary_path} says {summary['steps']} steps, its config.json rl.steps "
                         f"{config['rl']['steps']}")
  metrics_path = path / "metrics.jsonl"
  if not metrics_path.exists():
    raise RunDataError(f"run {experiment} seed {seed}: {metrics_path} does not exist")
  rows = []
  for i, line in enumerate(metrics_path.read_text().splitlines(), start=1):
    if not line.strip():
      continue
    try:
      row = json.loads(line)
    except json.JSONDecodeError as e:
      raise RunDataError(f"corrupt {metrics_path} line {i}: {e}") from None
    if not isinstance(row, dict) or "step" not in row:
      raise RunDataError(f"corrupt {metrics_path} line {i}: expected an object with a 'step' key")
    rows.append(row)
  return {"experiment": experiment, "seed": seed, "run_dir": path, "summary": summary, "metrics": rows,
          "config_hash": None if config is None else run_config_hash(config)}


def load_runs(out_dir: str | pathlib.Path, experiment: str, seeds: int | Iterable[int], *,
              missing: str = "raise", expected: dict[str, Any] | None = None) -> list[dict[str, Any]]:
  """Reads the finished runs of one experiment.

  Args:
    out_dir: the `--out` root of the runs.
    experiment: the experiment name.
    seeds: the seeds to read: a count K (seeds 0..K−1) or explicit seeds.
    missing: "raise" (a missing, unfinished or corrupt run raises `RunDataError`) or "skip"
      (it is logged and left out).
    expected: the resolved config (`ExperimentConfig.to_dict()`, without the seed) every run must
      hold in its config.json, `rl.steps` included; a run with another is treated as corrupt.

  Returns:
    One dict per run, in seed order: `experiment`, `seed`, `run_dir`, `summary` (summary.json),
    `metrics` (the rows of metrics.jsonl) and `config_hash` (of its config.json; None without `expected`).
  """
  if missing not in MISSING_MODES:
    raise ValueError(f"missing must be one of {MISSING_MODES}, got {missing!r}")
  runs = []
  for seed in _seed_list(seeds):
    try:
      runs.append(_read_run(run_dir(out_dir, experiment, seed), experiment, seed, expected))
    except RunDataError as e:
      if missing == "raise":
        raise
      log.warning("skipping: %s", e)
  return runs


def pending_runs(suite: Suite, out_dir: str | pathlib.Path, seeds: int | None = None) -> list[tuple[str, int]]:
  """`(experiment, seed)` pairs of the suite without a finished run (no summary.json), in suite order."""
  return [(name, s) for name in suite.experiments for s in _seed_list(seeds or suite.seeds)
          if not (run_dir(out_dir, name, s) / "summary.json").exists()]


def eval_curve(run: dict[str, Any]) -> dict[str, np.ndarray]:
  """The pass@1 curve of one run: `samples`, `tokens` and `pass1`, each `[E + 1]`.

  Point 0 is the base policy (0 samples, 0 tokens, `base_pass1`); then one point per metrics row
  with `eval/pass1`, at that row's cumulative `counts/samples` and `counts/tokens_generated`.
  """
  pts = [(0.0, 0.0, float(run["summary"]["base_pass1"]))]
  for row in run["metrics"]:
    if "eval/pass1" in row:
      pts.append((float(row["counts/samples"]), float(row["counts/tokens_generated"]), float(row["eval/pass1"])))
  a = np.asarray(pts, dtype=np.float64)
  return {"samples": a[:, 0], "tokens": a[:, 1], "pass1": a[:, 2]}


def curve_target(baseline_runs: list[dict[str, Any]]) -> float:
  """The to-baseline target: the mean over the baseline's seeds of its last eval/pass1 curve point."""
  return float(np.mean([eval_curve(r)["pass1"][-1] for r in baseline_runs]))


def baseline_of(suite: Suite, task: str) -> str | None:
  """The baseline experiment of `task` in `suite`: its experiment of that task whose method is
  `suite.baseline`; None when the suite has none."""
  found = [n for n in suite.experiments if suite.config(n).task == task and suite.config(n).method == suite.baseline]
  return found[0] if found else None


def _method_of(experiment: str) -> str:
  return get_experiment(experiment).method


def _load_suite(suite: Suite, out_dir, seeds: int | None, missing: str) -> dict[str, list[dict[str, Any]]]:
  runs = {name: load_runs(out_dir, name, seeds or suite.seeds, missing=missing, expected=suite.config(name).to_dict())
          for name in suite.experiments}
  return {name: r for name, r in runs.items() if r}


def _ordered(suite: Suite, runs: dict[str, list[dict[str, Any]]]) -> list[tuple[str, list[str]]]:
  """`[(task, [experiment, ...])]`: tasks in suite order, the task's baseline first."""
  by_task: dict[str, list[str]] = {}
  for name in suite.experiments:
    if name in runs:
      by_task.setdefault(runs[name][0]["summary"]["task"], []).append(name)
  out = []
  for task, names in by_task.items():
    base = baseline_of(suite, task)
    out.append((task, sorted(names, key=lambda n: n != base)))
  return out


def _pct(values: Sequence[float]) -> str:
  return format_mean_ci(*mean_ci([100.0 * v for v in values]))


def _budget_cell(values: list[float | None]) -> str:
  reached = [v for v in values if v is not None]
  if not reached:
    return "—"
  m, hw = mean_ci(reached)
  if len(reached) < len(values):
    return f"{format_count(m)} ({len(reached)}/{len(values)})"
  return format_count(m) if math.isnan(hw) else f"{format_count(m)} ± {format_count(hw)}"


def machine_description() -> str:
  """CPU model (from /proc/cpuinfo where there is one), `platform.processor()`, `os.cpu_count()`
  and the OS of this machine, the one that wrote the table."""
  processor = platform.processor() or platform.machine()
  model = processor
  try:
    for line in pathlib.Path("/proc/cpuinfo").read_text().splitlines():
      if line.startswith("model name"):
        model = line.split(":", 1)[1].strip()
        break
  except OSError:
    pass
  cpu = model if model == processor else f"{model} ({processor})"
  return f"{cpu}, {os.cpu_count()} CPUs, {platform.platform()}"


# Convention fields (benchmarks/results/conformance.md) and the value a run config without the field had.
_CONVENTIONS = (("credit", "std_ddof", 0), ("credit", "eps", 1e-6), ("credit", "lone", "zero"),
                ("credit", "peak_rule", "outlier"), ("credit", "mi_layer", -1), ("credit", "mi_norm", "post"),
                ("credit", "mi_sigma", "width"), ("credit", "ties", "all"), ("credit", "pool", "batch"),
                ("credit", "normaliser", "kept"), ("loss", "dual_clip", 0.0), ("tree", "root", "chain"))


def conventions_of(config: dict[str, Any]) -> list[str]:
  """`section.field=value` of the reference conventions a resolved run config used (conformance.md).

  Only the fields that apply to the run's credit method (its class has the field; `tree.root` for
  TreeRL) are listed. A field absent from the config (a run made before session 5) is reported with
  the value it had then: notably `tree.root=chain` (per-chain roots) for a TreeRL run.
  """
  credit, tree, loss = config.get("credit", {}), config.get("tree", {}), config.get("loss", {})
  try:
    fields = {f.name for f in dataclasses.fields(credit_class(credit.get("name", "")))}
  except ValueError:
    fields = set()
  out = []
  for section, field, old in _CONVENTIONS:
    if section == "credit" and field not in fields:
      continue
    if section == "tree" and not (tree.get("enabled") and credit.get("name") == "treerl"):
      continue
    part = {"credit": credit, "tree": tree, "loss": loss}[section]
    value = part.get(field, old)
    out.append(f"{section}.{field}={value}")
    if field == "peak_rule" and value == "top-k":
      out.append(f"credit.peak_k={credit.get('peak_k', 20)}")
    if field == "pool" and value == "micro-batch":
      out.append(f"credit.micro_batch={credit.get('micro_batch')}")
  if loss.get("aggregation") == Aggregation.SEQ_MEAN_TOKEN_SUM_NORM:
    out.append(f"loss.sum_norm_divisor={loss.get('sum_norm_divisor', 'sequences-x-T')}")
  return out


def _conventions_lines(runs: dict[str, list[dict[str, Any]]]) -> list[str]:
  """One header line per distinct set of conventions, naming the experiments that used it."""
  groups: dict[str, list[str]] = {}
  for name, rs in runs.items():
    path = pathlib.Path(rs[0]["run_dir"]) / "config.json"
    try:
      config = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
      continue
    key = ", ".join(f"`{c}`" for c in conventions_of(config)) or "none that apply"
    groups.setdefault(key, []).append(name)
  return [f"- Conventions (benchmarks/results/conformance.md) of {', '.join(f'`{n}`' for n in names)}: {key}."
          for key, names in groups.items()]


def suite_table(suite: Suite, out_dir: str | pathlib.Path, *, seeds: int | None = None, command: str | None = None,
                missing: str = "raise", runs_wall_s: float | None = None) -> str:
  """The Markdown results table of a suite (one row per experiment), built from its run directories.

  Args:
    suite: the suite.
    out_dir: the `--out` root of its runs.
    seeds: seeds per experiment (0..seeds−1); default `suite.seeds`.
    command: the exact command that produced the runs and table, quoted in the header.
    missing: "raise" or "skip", as in `load_runs`.
    runs_wall_s: wall time of the command that ran the missing runs (quoted in the header).

  Returns:
    Markdown text: a header (suite, command, machine, date, conventions) and the table.
  """
  n_seeds = seeds or suite.seeds
  runs = _load_suite(suite, out_dir, n_seeds, missing)
  if not runs:
    raise RunDataError(f"no finished runs of suite {suite.name!r} under {out_dir}")
  ks = {int(m.group(1)) for rs in runs.values() for r in rs for key in r["summary"]
        if (m := _PASSK.match(key)) and m.group(1) != "1"}
  k = min(ks) if ks else None
  eval_samples = sorted({int(r["summary"]["eval_samples"]) for rs in runs.values() for r in rs})

  lines = [
      f"# {suite.name}", "", suite.description, "",
      f"- Command: `{command or f'tcred table {suite.name} --seeds {n_seeds}'}`",
      f"- Machine: {machine_description()}",
      f"- Date: {datetime.datetime.now(datetime.timezone.utc).strftime('%Y-%m-%d %H:%M UTC')}",
      f"- Runs: `{out_dir}`, seeds 0–{n_seeds - 1}; cells are mean ± 95% CI (Student t) over seeds, "
      f"\"(n=1)\" where one seed only.",
      f"- pass@1 in %, at temperature 1.0 on held-out prompts ({', '.join(map(str, eval_samples))} samples "
      f"per final evaluation); greedy pass@1: one greedy rollout per held-out prompt; Δ: paired final − base.",
      "- To baseline: samples and generated tokens until the run's eval pass@1 curve (base policy at 0) "
      "first reaches the task baseline's mean last eval pass@1 (the same periodic evaluation as the curve, "
      "not the final one); \"(k/n)\": only k of n seeds reached it (mean over those); \"—\": none did.",
      "- Tokens generated: per run over the whole RL loop (a tree's shared prefix counts once; refills count).",
      "- Wall: minutes per run as each run measured it (runs made with `--jobs` > 1 shared the CPU).",
      "- Steps, config: the RL steps and the config hash (`tcred show NAME` prints it) of the row's runs; "
      "every run's config.json equals the config this suite resolves, `rl.steps` included.",
  ]
  if suite.overrides:
    lines.append(f"- Suite overrides (on every experiment): `{' '.join(suite.overrides)}`")
  lines += _conventions_lines(runs)
  if runs_wall_s is not None:
    lines.append(f"- This command ran its missing runs in {runs_wall_s / 60:.1f} min of wall time.")
  lines.append("")
  targets: dict[str, float | None] = {}
  for task, _ in _ordered(suite, runs):
    base = baseline_of(suite, task)
    if base in runs:
      targets[task] = curve_target(runs[base])
      final = float(np.mean([r["summary"]["final_pass1"] for r in runs[base]]))
      lines.append(f"- Baseline of {task}: `{base}`, final pass@1 {100 * final:.1f}%; budgets to baseline use "
                   f"the curves' own evaluation, where it ends at last eval/pass1 {100 * targets[task]:.1f}%.")
    else:
      targets[task] = None
      lines.append(f"- Baseline of {task}: no `{suite.baseline}` experiment of {task} in this suite; no budget to "
                   "baseline.")
  pk = f"pass@{k}" if k else "pass@k"
  lines += ["", f"| task | method | seeds | base pass@1 | final pass@1 | Δ pass@1 | final {pk} | greedy pass@1 "
            f"| samples to baseline | tokens to baseline | tokens generated | wall (min) | steps | config |",
            "|" + "---|" * 2 + "---:|" * 11 + "---|"]
  for task, names in _ordered(suite, runs):
    for name in names:
      rs = runs[name]
      s = [r["summary"] for r in rs]
      base = [x["base_pass1"] for x in s]
      final = [x["final_pass1"] for x in s]
      passk = [x.get(f"final_pass{k}") for x in s] if k else []
      passk_cell = _pct(passk) if passk and None not in passk else "—"
      target = targets[task]
      curves = [eval_curve(r) for r in rs]
      if target is None:
        samples_cell = tokens_cell = "—"
      else:
        samples_cell = _budget_cell([samples_to_reach(c["samples"], c["pass1"], target) for c in curves])
        tokens_cell = _budget_cell([samples_to_reach(c["tokens"], c["pass1"], target) for c in curves])
      wall = format_mean_ci(*mean_ci([x["wall_s"] / 60.0 for x in s]))
      generated = _budget_cell([float(x["tokens_generated"]) for x in s])
      lines.append(f"| {task} | {_method_of(name)} | {len(rs)} | {_pct(base)} | {_pct(final)} "
                   f"| {_pct([f - b for f, b in zip(final, base)])} | {passk_cell} "
                   f"| {_pct([x['final_pass1_greedy'] for x in s])} | {samples_cell} | {tokens_cell} "
                   f"| {generated} | {wall} | {'/'.join(sorted({str(x['steps']) for x in s}))} "
                   f"| {'/'.join(sorted({str(r['config_hash']) for r in rs}))} |")
  judged = [(task, name) for task, names in _ordered(suite, runs) for name in names
            if all("judge_tokens" in r["summary"] for r in runs[name])]
  if judged:  # judge-credit runs (credit method `judge`): the judge's own cost, beside the policy's
    lines += ["", "Step-judge cost per run (on top of the policy's tokens generated; mean ± 95% CI over seeds):"]
    for task, name in judged:
      s = [r["summary"] for r in runs[name]]
      ratio = [x["judge_tokens"] / max(x["tokens_generated"], 1) for x in s]
      lines.append(f"- {task} {_method_of(name)}: {_budget_cell([float(x['judge_tokens']) for x in s])} judge "
                   f"tokens ({format_mean_ci(*mean_ci(ratio))}× the tokens generated), "
                   f"{format_mean_ci(*mean_ci([x['judge_wall_s'] / 60.0 for x in s]))} min")
  return "\n".join(lines) + "\n"


def _band(curves: list[dict[str, np.ndarray]], x_key: str, points: int = 60):
  """Mean and 95% CI half-width of pass@1 across seeds on a common grid of `x_key`, `[points]` each.

  Each seed's curve is linearly interpolated onto the grid `[0, min over seeds of its last x]`.
  """
  x_max = min(float(c[x_key][-1]) for c in curves)
  grid = np.linspace(0.0, x_max, points) if x_max > 0 else np.zeros(1)
  ys = np.stack([np.interp(grid, c[x_key], c["pass1"]) for c in curves])  # [seeds, points]
  mean = ys.mean(0)
  if len(curves) < 2:
    return grid, mean, np.zeros_like(mean)
  hw = student_t_quantile(0.975, len(curves) - 1) * ys.std(0, ddof=1) / math.sqrt(len(curves))
  return grid, mean, hw


def learning_curves(suite: Suite, out_dir: str | pathlib.Path, path_png: str | pathlib.Path, *,
                    seeds: int | None = None, missing: str = "raise") -> pathlib.Path:
  """Plots pass@1 (%) against generated tokens: one subplot per task, one line per method with a
  95% CI band across seeds, and the task baseline's final mean pass@1 as a dashed line.

  Returns:
    The path of the PNG written.
  """
  import matplotlib

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  runs = _load_suite(suite, out_dir, seeds, missing)
  if not runs:
    raise RunDataError(f"no finished runs of suite {suite.name!r} under {out_dir}")
  tasks = _ordered(suite, runs)
  fig, axes = plt.subplots(1, len(tasks), figsize=(6.0 * len(tasks), 4.2), squeeze=False)
  for ax, (task, names) in zip(axes[0], tasks):
    for i, name in enumerate(names):  # 10 colours, then the same colours dashed, dotted
      grid, mean, hw = _band([eval_curve(r) for r in runs[name]], "tokens")
      (line,) = ax.plot(grid, 100 * mean, color=f"C{i % 10}", ls=("-", "--", ":")[i // 10 % 3],
                        label=f"{_method_of(name)} (n={len(runs[name])})")
      if np.any(hw > 0):  # the band is clipped to the possible range [0, 100]
        ax.fill_between(grid, np.clip(100 * (mean - hw), 0, 100), np.clip(100 * (mean + hw), 0, 100),
                        color=line.get_color(), alpha=0.15, lw=0)
    base = baseline_of(suite, task)
    if base in runs:
      ax.axhline(100 * curve_target(runs[base]), color="grey", ls="--", lw=0.8,
                 label=f"{_method_of(base)} last eval (target)")
    ax.set_title(task)
    ax.set_xlabel("generated tokens")
    ax.set_ylabel("pass@1 (%)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
  fig.suptitle(f"{suite.name}: eval pass@1, mean ± 95% CI over seeds")
  fig.tight_layout()
  path = pathlib.Path(path_png)
  path.parent.mkdir(parents=True, exist_ok=True)
  fig.savefig(path, dpi=120)
  plt.close(fig)
  return path

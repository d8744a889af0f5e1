"""Results tables and learning curves of a suite, read from finished run directories (DESIGN §5).

A run directory `OUT/NAME/seed-S/` (written by `tcred run`) holds `config.json`, `summary.json` and
`metrics.jsonl`; this module only reads them, so a table can be rebuilt at any time from the runs.
A suite's table uses a run only if its `config.json` equals the config the suite resolves for that
experiment and seed, `rl.steps` included (`run_mismatch`); each row shows the steps and the config
hash (`run_config_hash`) of its runs.

Conventions of every table:
  * seed s of every experiment starts from SFT base `s mod suite.bases` (`Suite.config(name, seed)`),
    so the runs of one seed share their base policy and prompt stream (paired design);
  * values are the mean over seeds [95% percentile interval of a cluster bootstrap: bases, then
    seeds within a base (`Design`)]; pass@1 and pass@k are in percent;
  * Δ is the per-seed (paired) difference final − base pass@1;
  * "to baseline" budgets: the target is where the task's baseline experiment (method `grpo`
    unless the suite names another, `Suite.baseline`) ends on the *same evaluation as the curves*: the mean over its
    seeds of the last eval/pass1 point (`rl.eval_prompts` × `rl.eval_samples`, a subset of the
    final evaluation's prompts, so its level can differ from the final pass@1 by a few points).
    For each seed, the first point of its eval/pass1 curve with pass@1 ≥ target gives the samples
    (`counts/samples`) and generated tokens (`counts/tokens_generated`) spent so far; the curve
    starts with the base policy (0 samples, `base_pass1`). No interpolation between eval points.
  * per task with a baseline, the paired statistics against it (`paired_section`): area under the
    pass@1-vs-tokens curve, tokens to the baseline's level, the credit score against the suite's
    oracle, Holm-adjusted p-values and the resolution (minimum detectable effect) of the task.
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
from typing import Any, Callable, Iterable, Sequence

import numpy as np

from tcred.credit.base import credit_class
from tcred.evaluation import stats
from tcred.evaluation.stats import Interval, format_count, format_interval, samples_to_reach
from tcred.experiments.registry import Suite, get_experiment
from tcred.losses.pg import Aggregation
from tcred.runtime import shown_path
from tcred.tasks.registry import make_task_from_config
from tcred.training.config import config_diff, flat_config, normalised_config, run_config_hash
from tcred.training.rl import run_dir_of as run_dir
from tcred.training.rl import run_started
from tcred.training.sft import base_policy_dir
from tcred.training.tracking import atomic_path

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
  exactly the config the suite resolves (`suite.config(experiment, seed)` with the seed; the description is
  not a setting): the message names every differing field, e.g. `rl.steps: 6 here, 300 wanted`. A run that
  failed before its first step holds nothing: the table's run starts there afresh.
  """
  path = run_dir(out_dir, experiment, seed)
  if not run_started(path):
    return None
  try:
    found = _read_config(path)
  except RunDataError as e:
    return str(e)
  differ = config_diff(found, {**suite.config(experiment, seed).to_dict(), "seed": seed})
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
    rows.append({k: math.nan if v is None else v for k, v in row.items()})  # null: a non-finite value
  return {"experiment": experiment, "seed": seed, "run_dir": path, "summary": summary, "metrics": rows,
          "config": config, "config_hash": None if config is None else run_config_hash(config)}


def load_runs(out_dir: str | pathlib.Path, experiment: str, seeds: int | Iterable[int], *,
              missing: str = "raise", expected: dict[str, Any] | Callable[[int], dict[str, Any]] | None = None
              ) -> list[dict[str, Any]]:
  """Reads the finished runs of one experiment.

  Args:
    out_dir: the `--out` root of the runs.
    experiment: the experiment name.
    seeds: the seeds to read: a count K (seeds 0..K−1) or explicit seeds.
    missing: "raise" (a missing, unfinished or corrupt run raises `RunDataError`) or "skip"
      (it is logged and left out).
    expected: the resolved config (`ExperimentConfig.to_dict()`, without the seed) every run must
      hold in its config.json, `rl.steps` included, or a function of the seed giving it (a suite's
      seeds differ in their SFT base); a run with another is treated as corrupt.

  Returns:
    One dict per run, in seed order: `experiment`, `seed`, `run_dir`, `summary` (summary.json),
    `metrics` (the rows of metrics.jsonl), `config` and `config_hash` (its config.json and the hash of
    it; None without `expected`).
  """
  if missing not in MISSING_MODES:
    raise ValueError(f"missing must be one of {MISSING_MODES}, got {missing!r}")
  runs = []
  for seed in _seed_list(seeds):
    try:
      wanted = expected(seed) if callable(expected) else expected
      runs.append(_read_run(run_dir(out_dir, experiment, seed), experiment, seed, wanted))
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


def _experiment_of(suite: Suite, task: str, method: str) -> str | None:
  """The suite's experiment of `task` with `method`; None when it has none."""
  found = [n for n in suite.experiments if suite.config(n).task == task and suite.config(n).method == method]
  return found[0] if found else None


def baseline_of(suite: Suite, task: str) -> str | None:
  """The baseline experiment of `task` in `suite`: its experiment of that task whose method is
  `suite.baseline`; None when the suite has none."""
  return _experiment_of(suite, task, suite.baseline)


def _method_of(experiment: str) -> str:
  return get_experiment(experiment).method


def load_suite_runs(suite: Suite, out_dir, seeds: int | None, missing: str) -> dict[str, list[dict[str, Any]]]:
  """`{experiment: runs}` of the suite's experiments that have runs under `out_dir` (`load_runs`), each run's
  config checked against the suite's config for its seed; `seeds` None: the suite's."""
  runs = {name: load_runs(out_dir, name, seeds or suite.seeds, missing=missing,
                          expected=lambda s, n=name: suite.config(n, s).to_dict())
          for name in suite.experiments}
  return {name: r for name, r in runs.items() if r}


def runs_by_task(suite: Suite, runs: dict[str, list[dict[str, Any]]]) -> list[tuple[str, list[str]]]:
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


def oracle_of(suite: Suite, task: str) -> str | None:
  """The positive control of `task` in `suite`: its experiment of that task whose method is
  `suite.oracle`; None when the suite names none or has none for the task."""
  return None if suite.oracle is None else _experiment_of(suite, task, suite.oracle)


class Design:
  """The statistical design of a table: each run's seed s started from SFT base `s mod bases`.

  Every interval is a 95% percentile cluster bootstrap (`stats.cluster_bootstrap`) over the tree
  bases → seeds within a base (`stats.base_tree`), `stats.BOOTSTRAP_REPS` replicates drawn from a
  fixed generator once per set of seeds, so a table is a deterministic function of its runs.
  """

  def __init__(self, bases: int, reps: int = stats.BOOTSTRAP_REPS):
    self.bases, self.reps = bases, reps
    self._draws: dict[tuple[int, ...], np.ndarray] = {}

  @classmethod
  def of(cls, suite: Suite, seeds: int | None = None) -> "Design":
    """The design of `suite`'s table over `seeds` seeds (default the suite's): its bases, at most one per seed."""
    return cls(min(suite.bases, seeds or suite.seeds))

  def tree(self, seeds: Sequence[int]):
    return stats.base_tree(seeds, self.bases)

  def draws(self, seeds: Sequence[int]) -> np.ndarray:
    """`[reps, len(seeds)]` bootstrap counts of the runs of `seeds` (`stats.cluster_draws`), drawn once."""
    key = tuple(int(s) for s in seeds)
    if key not in self._draws:
      self._draws[key] = stats.cluster_draws(self.tree(key), reps=self.reps, rng=np.random.default_rng(0))
    return self._draws[key]

  def interval(self, statistic, seeds: Sequence[int]) -> Interval:
    return stats.cluster_bootstrap(statistic, self.tree(seeds), draws=self.draws(seeds))

  def mean(self, values: Sequence[float], seeds: Sequence[int]) -> Interval:
    return self.interval(stats.weighted_mean(values), seeds)

  def units(self, values: Sequence[float], seeds: Sequence[int]) -> np.ndarray:
    """The independent units of paired differences `values`: per-base means (one value per seed with one base)."""
    return stats.unit_means(values, self.tree(seeds))


def _scaled(iv: Interval, k: float) -> Interval:
  return Interval(iv.estimate * k, iv.low * k, iv.high * k)


def _pct(design: Design, values: Sequence[float], seeds: Sequence[int]) -> str:
  return format_interval(_scaled(design.mean(values, seeds), 100.0))


def _budget_cell(design: Design, values: list[float | None], seeds: Sequence[int]) -> str:
  reached = [(v, s) for v, s in zip(values, seeds) if v is not None]
  if not reached:
    return "—"
  if len(reached) < len(values):
    return f"{format_count(float(np.mean([v for v, _ in reached])))} ({len(reached)}/{len(values)})"
  if len(reached) == 1:
    return format_count(reached[0][0])
  return format_interval(design.mean([v for v, _ in reached], [s for _, s in reached]), fmt=format_count)


# ---------------------------------------------------------------------------------------------------
# The paired design: what a run's base policy and prompt stream depend on.

class UnpairedRunsError(RunDataError):
  """Paired statistics were asked for runs that do not share their base policy or prompt stream."""


def _held_out(flat: dict[str, Any]) -> int:
  return max(int(flat.get("rl.final_eval_prompts", 0)), int(flat.get("rl.eval_prompts", 0)))


def pairing_keys(config: dict[str, Any], seed: int) -> tuple[dict[str, Any], dict[str, Any]]:
  """`(base, stream)`: the settings a run's SFT base policy and its RL prompt stream are functions of.

  The base policy is cached by (model, task, task_config, sft, held-out count) (`sft.base_policy_dir`);
  the prompts of RL step t are drawn from (task, task_config, seed, t) outside the held-out set
  (`data.training_problems`). `rl.prompts_per_step` only sets how many of a step's prompts are drawn:
  the first B of a larger batch are the B of a smaller one, so it does not break the pairing.
  """
  flat = flat_config(config)
  base = {k: v for k, v in flat.items() if k == "task" or k.startswith(("model.", "task_config.", "sft."))}
  base["held-out prompts"] = _held_out(flat)
  stream = {k: v for k, v in flat.items() if k == "task" or k.startswith("task_config.")}
  stream.update({"seed": seed, "held-out prompts": base["held-out prompts"]})
  return base, stream


def _key_diff(a: dict[str, Any], b: dict[str, Any]) -> str:
  keys = sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))
  return ", ".join(f"{k} {json.dumps(a.get(k))} vs {json.dumps(b.get(k))}" for k in keys)


def _pair_problems(name: str, config: dict[str, Any], ref: str, ref_config: dict[str, Any], seed: int) -> list[str]:
  (base, stream), (rbase, rstream) = pairing_keys(config, seed), pairing_keys(ref_config, seed)
  out = []
  if base != rbase:
    out.append(f"{name} seed {seed} and {ref} seed {seed} do not share their SFT base policy "
               f"({_key_diff(base, rbase)})")
  if stream != rstream:
    out.append(f"{name} seed {seed} and {ref} seed {seed} do not share their prompt stream "
               f"({_key_diff(stream, rstream)})")
  return out


def unpaired_experiments(suite: Suite, seeds: int | None = None) -> list[str]:
  """Why the suite's paired statistics would compare runs of different base policies or prompt
  streams, one message per (experiment, seed) against its task's baseline; [] when the design is
  paired (or the suite reports no paired statistics). Read from the configs alone: call it before
  running anything."""
  if not suite.paired:
    return []
  out = []
  tasks = {suite.config(n).task for n in suite.experiments}
  for task in sorted(tasks):
    ref = baseline_of(suite, task)
    if ref is None:
      continue
    for name in suite.experiments:
      if name == ref or suite.config(name).task != task:
        continue
      for seed in _seed_list(seeds or suite.seeds):
        out += _pair_problems(name, suite.config(name, seed).to_dict(), ref, suite.config(ref, seed).to_dict(), seed)
  return out


def _unpaired_runs(suite: Suite, runs: dict[str, list[dict[str, Any]]], task: str, names: list[str]) -> list[str]:
  """`unpaired_experiments` on the runs' own config.json files, plus the base policy's evaluation:
  paired runs of one seed read the same cached base, so equal evaluation settings give equal
  `base_pass1` (a base rebuilt between the runs does not)."""
  ref = baseline_of(suite, task)
  out = []
  by_seed = {r["seed"]: r for r in runs.get(ref, [])}
  for name in names:
    if name == ref:
      continue
    for r in runs[name]:
      other = by_seed.get(r["seed"])
      if other is None:
        continue
      a, b = _read_config(pathlib.Path(r["run_dir"])), _read_config(pathlib.Path(other["run_dir"]))
      problems = _pair_problems(name, a, ref, b, r["seed"])
      same_eval = all(a["rl"].get(k) == b["rl"].get(k) for k in ("final_eval_prompts", "final_eval_samples",
                                                                    "temperature"))
      if not problems and same_eval and r["summary"]["base_pass1"] != other["summary"]["base_pass1"]:
        problems.append(f"{name} seed {r['seed']} and {ref} seed {r['seed']} evaluated different base policies "
                        f"(base pass@1 {r['summary']['base_pass1']} vs {other['summary']['base_pass1']} with the same "
                        "evaluation settings: the base policy was rebuilt between the runs)")
      out += problems
  return out


def _tokens_to(curve: dict[str, np.ndarray], level: float) -> float:
  """Generated tokens until the curve first reaches `level`; inf if it never does (within its budget)."""
  hit = samples_to_reach(curve["tokens"], curve["pass1"], level)
  return math.inf if hit is None else hit


def _ratio_fmt(v: float) -> str:
  return "∞" if math.isinf(v) else f"{v:.2f}"


def _stars(p: float) -> str:
  return "—" if math.isnan(p) else f"{p:.3f}{' *' if p < 0.05 else ''}"


def paired_stats(suite: Suite, runs: dict[str, list[dict[str, Any]]], task: str, names: list[str],
                 design: Design, *, alpha: float = 0.05, power: float = 0.8) -> dict[str, Any] | None:
  """The numbers of `paired_section` for one task: None without a baseline (or an unpaired suite); else a dict
  with the baseline `ref`, the `oracle` (None if absent), `x_max` (the area's token budget; the other keys are
  absent if it is 0), `rows` (per method: `name`, `seeds`, `area`, `d_area`, `ratio`, `score`, `mde` and the
  Holm-adjusted `p_area`, `p_tokens`), `ref_seeds`, `ref_area`, `ref_tokens`, the pooled `resolution` (and
  `resolution_all`, with the negative controls, which `left_out` names), `pool_size`, `units`, `unit`, and the
  oracle's mean gain `gain` (None without an oracle)."""
  ref = baseline_of(suite, task)
  if ref is None or ref not in runs or not suite.paired:
    return None
  problems = _unpaired_runs(suite, runs, task, names)
  if problems:
    raise UnpairedRunsError("paired statistics need runs of one seed to share their base policy and prompt "
                            "stream: " + "; ".join(problems))
  curves = {n: {r["seed"]: eval_curve(r) for r in runs[n]} for n in names}
  x_max = min(float(c["tokens"][-1]) for n in names for c in curves[n].values())
  levels = {s: float(c["pass1"][-1]) for s, c in curves[ref].items()}  # the baseline's final level, per seed
  oracle = oracle_of(suite, task)
  oracle = oracle if oracle in curves else None
  if x_max <= 0:
    return dict(ref=ref, x_max=x_max)
  area = {n: {s: stats.curve_area(c["tokens"], c["pass1"], x_max) for s, c in curves[n].items()} for n in names}
  tokens = {n: {s: _tokens_to(c, levels[s]) for s, c in curves[n].items() if s in levels} for n in names}
  rows, p_area, p_tokens, variances, n_units = [], [], [], [], []
  for name in names:
    seeds = sorted(set(curves[name]) & set(curves[ref]))
    if name == ref or not seeds:
      continue
    d_area = [area[name][s] - area[ref][s] for s in seeds]
    t_m, t_g = [tokens[name][s] for s in seeds], [tokens[ref][s] for s in seeds]
    reached = [t for t in t_m if math.isfinite(t)]
    units = design.units(d_area, seeds)
    p_area.append(stats.paired_t_pvalue(units) if units.size > 1 else math.nan)
    tok_units = design.units(np.subtract(t_m, t_g), seeds) if len(reached) == len(t_m) else np.zeros(1)
    p_tokens.append(stats.paired_t_pvalue(tok_units) if tok_units.size > 1 else math.nan)
    if units.size > 1:
      method = _method_of(name)
      variances.append((float(np.var(units, ddof=1)), method in suite.negative_controls, method))
      n_units.append(units.size)
    score = None
    if oracle is not None:
      both = [s for s in seeds if s in curves[oracle]]
      if both:
        gain = [area[name][s] - area[ref][s] for s in both]
        top = [area[oracle][s] - area[ref][s] for s in both]
        score = (design.interval(stats.ratio_of_means(gain, top), both), float(np.mean(top)))
    if len(reached) == len(t_m):
      tok = format_interval(design.mean(t_m, seeds), fmt=format_count)
    else:
      tok = (f"{format_count(float(np.mean(reached)))} " if reached else "") + f"({len(reached)}/{len(t_m)} reached)"
    rows.append(dict(name=name, seeds=seeds, area=design.mean([area[name][s] for s in seeds], seeds),
                     d_area=design.mean(d_area, seeds), tokens=tok,
                     ratio=design.interval(stats.ratio_of_means(t_m, t_g), seeds),
                     score=score, mde=stats.minimum_detectable_effect(units, alpha=alpha, power=power)
                     if units.size > 1 else math.nan))
  for row, pa, pt in zip(rows, stats.holm(p_area), stats.holm(p_tokens)):
    row.update(p_area=float(pa), p_tokens=float(pt))
  ref_seeds = sorted(curves[ref])
  everything = [v for v, _, _ in variances]
  pool = [v for v, negative, _ in variances if not negative] or everything
  left_out = [m for _, negative, m in variances if negative] if len(pool) < len(everything) else []

  def mde(of):
    return stats.mde_from_sd(math.sqrt(float(np.mean(of))), min(n_units), alpha=alpha, power=power)

  pooled = mde(pool) if pool else math.nan
  gain = next((r["d_area"].estimate for r in rows if r["name"] == oracle), None)
  return dict(ref=ref, oracle=oracle, x_max=x_max, rows=rows, ref_seeds=ref_seeds,
              ref_area=design.mean([area[ref][s] for s in ref_seeds], ref_seeds),
              ref_tokens=design.mean([tokens[ref][s] for s in ref_seeds], ref_seeds),
              resolution=pooled, resolution_all=mde(everything) if everything else math.nan, pool_size=len(pool),
              left_out=left_out, units=min(n_units) if n_units else 0, gain=gain,
              unit="bases" if design.bases > 1 else "seeds")


def paired_section(suite: Suite, runs: dict[str, list[dict[str, Any]]], task: str, names: list[str],
                   design: Design, *, alpha: float = 0.05, power: float = 0.8) -> list[str]:
  """The paired statistics of one task against its baseline (Markdown lines; [] without a baseline).

  For each seed s and method M, against the baseline G (GRPO) of the same seed:
    * area: the mean pass@1 over the first X generated tokens (`stats.curve_area`), X the smallest
      last curve point of the task's runs (no curve is extrapolated); Δ area = area_M(s) − area_G(s);
    * tokens to the baseline's level: generated tokens until the curve first reaches the last eval
      pass@1 of the baseline's run of the same seed (T_G: the baseline's own first arrival there; a
      method that never arrives has T_M = ∞); the ratio of means Σ_s T_M / Σ_s T_G;
    * credit score: Σ_s (area_M − area_G) / Σ_s (area_O − area_G), O the suite's oracle (positive control).
  Intervals: `Design.interval` (cluster bootstrap, bases then seeds). p-values: two-sided paired
  t-test on the units (per-base means of the differences), Holm-adjusted across the task's methods
  (one family for Δ area, one for the tokens). Resolution: the minimum detectable Δ area at
  α = `alpha`, two-sided, with `power`, from the pooled variance of the units across methods, leaving out the
  suite's negative controls (`Suite.negative_controls`) when another method remains: a control that collapses
  to 0 differs from the baseline by the baseline's whole area, so its spread is the baseline's spread over bases,
  which pairing cancels for every method that learns; the line also prints the pool with them.
  """
  ps = paired_stats(suite, runs, task, names, design, alpha=alpha, power=power)
  if ps is None:
    return []
  ref, x_max = ps["ref"], ps["x_max"]
  if x_max <= 0:
    return [f"- Paired statistics of {task}: none (a run generated no tokens)."]
  oracle, rows, pooled, unit, left_out = ps["oracle"], ps["rows"], ps["resolution"], ps["unit"], ps["left_out"]
  lines = [f"### {task}: paired against `{ref}`", ""]
  if math.isnan(pooled):
    lines.append(f"- **Resolution**: not estimable (fewer than 2 {unit} paired with `{ref}`).")
  else:
    gain = ps["gain"]
    versus = "" if gain is None or gain <= 0 else (
        f" The oracle's gain over `{ref}` is {100 * gain:.1f} points: resolution / gain = {pooled / gain:.2f}.")
    controls = "" if not left_out else (
        f" The negative controls ({', '.join(left_out)}) are left out of the pool: a control that collapses "
        f"differs from the baseline by the baseline's own area, whose spread over {unit} the pairing does not "
        f"cancel; pooled with them the resolution is {100 * ps['resolution_all']:.1f} points.")
    lines.append(f"- **Resolution**: the minimum detectable effect on the area is **{100 * pooled:.1f} points** of "
                 f"mean pass@1 (two-sided paired t-test at α = {alpha}, {100 * power:.0f}% power; from the pooled "
                 f"variance of the paired differences over {ps['units']} {unit}, across {ps['pool_size']} "
                 f"method{'s' * (ps['pool_size'] != 1)})." + versus + controls)
  lines += [
      f"- Area: mean pass@1 (%) over the first {format_count(x_max)} generated tokens (the shortest run of the "
      f"task; curves linear between eval points, base policy at 0 tokens). Tokens to level: generated tokens "
      f"until the curve first reaches the last eval pass@1 of `{ref}`'s run of the same seed (for `{ref}`, its "
      "own first arrival there); \"(k/n reached)\": the other runs never reached it (their tokens count as ∞: "
      "the ratio is ∞ where such a run is drawn, and they have no p-value).",
      "- Δ and ratio are paired within a seed (method − baseline; Σ method / Σ baseline); p: paired t-test on the "
      f"{unit}' mean differences, Holm-adjusted across this task's methods (\"*\": below 0.05)."]
  if oracle is not None:
    lines.append(f"- Credit score: (area − `{ref}`) / (`{oracle}` − `{ref}`), the ratio of the mean gains; 0 is no "
                 "credit beyond the baseline, 1 is the oracle's (positive control's) credit.")
  else:
    lines.append(f"- Credit score: none (suite {suite.name} names no oracle experiment of {task}).")
  lines += ["", "| method | pairs | area (%) | Δ area [95% CI] | p (Holm) | tokens to level | ratio [95% CI] "
            "| p (Holm) | credit score [95% CI] | MDE |", "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
  ref_area, ref_tokens, ref_seeds = ps["ref_area"], ps["ref_tokens"], ps["ref_seeds"]
  lines.append(f"| {_method_of(ref)} (baseline) | {len(ref_seeds)} | {format_interval(_scaled(ref_area, 100))} "
               f"| 0 | — | {format_interval(ref_tokens, fmt=format_count)} | 1 | — | 0 | — |")
  for row in rows:
    pa, pt = row["p_area"], row["p_tokens"]
    score = "—"
    if row["score"] is not None:
      iv, top = row["score"]
      score = "— (oracle not above baseline)" if top <= 0 else (
          "1 (oracle)" if row["name"] == oracle else format_interval(iv, 2))
    mde = "—" if math.isnan(row["mde"]) else f"{100 * row['mde']:.1f}"
    lines.append(f"| {_method_of(row['name'])} | {len(row['seeds'])} | {format_interval(_scaled(row['area'], 100))} "
                 f"| {format_interval(_scaled(row['d_area'], 100))} | {_stars(pa)} | {row['tokens']} "
                 f"| {format_interval(row['ratio'], fmt=_ratio_fmt)} | {_stars(pt)} | {score} | {mde} |")
  return lines + [""]


def _growth_exponent(log_knob: np.ndarray, tokens: np.ndarray) -> Callable[[np.ndarray], np.ndarray]:
  """The statistic `w ↦` least-squares slope of log(weighted mean tokens) on `log_knob`, for `tokens`
  `[levels, seeds]` (every value finite) and seed weights `w [R, seeds]`: the growth exponent b of
  tokens ∝ knob^b."""
  x = log_knob - log_knob.mean()

  def stat(w):
    y = np.log((w @ tokens.T) / w.sum(axis=1, keepdims=True))  # [R, levels]
    return (y - y.mean(axis=1, keepdims=True)) @ x / (x @ x)

  return stat


def scaling_data(suite: Suite, runs: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
  """The scaling picture of a suite with `suite.scaling` levels (tasks in knob order).

  The target T is the lowest, over the levels, of the baseline's mean last eval pass@1 (`curve_target`), so
  the baseline reaches it on average at every level and the tokens to T compare one level of skill across
  levels. Per method and level: the generated tokens until each seed's curve first reaches T (inf if never).

  Returns:
    `{"target": T, "levels": [(task, value)], "methods": [method], "tokens": {(method, task): {seed: tokens}},
    "baseline": method}`
    over the levels whose baseline has runs; methods in suite order, the baseline first.
  """
  levels = [(task, float(v)) for task, v in suite.scaling if _experiment_of(suite, task, suite.baseline) in runs]
  if not levels:
    raise RunDataError(f"suite {suite.name!r}: no level of its scaling picture has finished `{suite.baseline}` runs")
  target = min(curve_target(runs[_experiment_of(suite, task, suite.baseline)]) for task, _ in levels)
  methods = list(dict.fromkeys([suite.baseline] + [suite.config(n).method for n in suite.experiments]))
  tokens = {}
  for method in methods:
    for task, _ in levels:
      name = _experiment_of(suite, task, method)
      if name in runs:
        tokens[(method, task)] = {r["seed"]: _tokens_to(eval_curve(r), target) for r in runs[name]}
  return {"target": target, "levels": levels, "methods": [m for m in methods if any(k[0] == m for k in tokens)],
          "tokens": tokens, "baseline": suite.baseline}


def _scaling_ratio(design: Design, data: dict[str, Any], method: str, task: str) -> Interval | None:
  """The paired ratio Σ_s tokens(method, s) / Σ_s tokens(baseline, s) to T at one level (`scaling_data`), with its
  interval; None without seeds shared with the baseline, or where a seed of the baseline never reached T (the
  ratio is then undefined, not 0)."""
  by_seed, ref_seed = data["tokens"][(method, task)], data["tokens"].get((data["baseline"], task), {})
  both = [s for s in sorted(by_seed) if s in ref_seed]
  if not both or not all(math.isfinite(ref_seed[s]) for s in both):
    return None
  return design.interval(stats.ratio_of_means([by_seed[s] for s in both], [ref_seed[s] for s in both]), both)


def scaling_section(suite: Suite, runs: dict[str, list[dict[str, Any]]], design: Design) -> list[str]:
  """Markdown lines of the scaling picture (`scaling_data`): per method and level, the tokens to the common
  target T and their ratio to the baseline's (paired within a seed), and per method the growth exponent b of
  tokens ∝ knob^b (fitted on the levels where every seed reached T), each with its cluster-bootstrap interval."""
  data = scaling_data(suite, runs)
  target, levels, tokens = data["target"], data["levels"], data["tokens"]
  ref = suite.baseline
  lines = [f"## Scaling with {suite.knob}", "",
           f"- Target T = {100 * target:.1f}% eval pass@1: the lowest, over the levels, of `{ref}`'s mean last eval "
           f"pass@1, so `{ref}` reaches it on average at every level. Tokens to T: generated tokens until a run's "
           "curve first reaches T (\"(k/n reached)\": the other seeds never did; they count as ∞).",
           f"- Ratio: Σ_s tokens(method, s) / Σ_s tokens(`{ref}`, s), paired within a seed, where every seed of "
           f"`{ref}` reached T (else undefined: \"—\"); growth exponent b: the "
           f"least-squares slope of log(mean tokens to T) on log({suite.knob}) over the levels where every seed of "
           "the method reached T (\"—\": fewer than two such levels). Intervals: the table's cluster bootstrap.",
           "", f"| method | {suite.knob} | seeds | tokens to T [95% CI] | ratio to `{ref}` [95% CI] |",
           "|---|---:|---:|---:|---:|"]
  exponents = []
  for method in data["methods"]:
    fit_levels, fit_tokens, fit_seeds = [], [], None
    for task, value in levels:
      by_seed = tokens.get((method, task))
      if not by_seed:
        continue
      seeds = sorted(by_seed)
      t = [by_seed[s] for s in seeds]
      reached = [v for v in t if math.isfinite(v)]
      if len(reached) == len(t):
        cell = format_interval(design.mean(t, seeds), fmt=format_count)
        if fit_seeds is None or fit_seeds == seeds:
          fit_seeds = seeds
          fit_levels.append(value)
          fit_tokens.append(t)
      else:
        cell = (f"{format_count(float(np.mean(reached)))} " if reached else "") + f"({len(reached)}/{len(t)} reached)"
      ref_tokens = list(tokens.get((ref, task), {}).values())
      ref_missed = sum(not math.isfinite(v) for v in ref_tokens)
      iv = None if method == ref else _scaling_ratio(design, data, method, task)
      ratio = ("1" if method == ref else f"— (`{ref}` reached T on {len(ref_tokens) - ref_missed}/{len(ref_tokens)})"
               if ref_missed else "—" if iv is None else format_interval(iv, fmt=_ratio_fmt))
      lines.append(f"| {method} | {value:g} | {len(seeds)} | {cell} | {ratio} |")
    if len(fit_levels) >= 2:
      iv = design.interval(_growth_exponent(np.log(fit_levels), np.asarray(fit_tokens)), fit_seeds)
      exponents.append(f"- `{method}`: b = {format_interval(iv, 2)} over {suite.knob} = "
                       f"{', '.join(f'{v:g}' for v in fit_levels)}")
    else:
      exponents.append(f"- `{method}`: b = — (T reached by every seed at {len(fit_levels)} level(s))")
  return lines + ["", f"Growth exponent b (tokens to T ∝ {suite.knob}^b):", "", *exponents, ""]


def scaling_figure(suite: Suite, out_dir: str | pathlib.Path, path_png: str | pathlib.Path, *,
                   seeds: int | None = None, missing: str = "raise") -> pathlib.Path:
  """Plots the scaling picture (`scaling_data`): tokens to T against the knob (log-log) and the ratio to the
  baseline against the knob, one line per method, 95% cluster-bootstrap bars; a level where not every seed
  reached T is left out of the line (the table says so)."""
  import matplotlib

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  runs = load_suite_runs(suite, out_dir, seeds, missing)
  design = Design.of(suite, seeds)
  data = scaling_data(suite, runs)
  ref = suite.baseline
  fig, (ax_t, ax_r) = plt.subplots(1, 2, figsize=(11.0, 4.2))
  for i, method in enumerate(data["methods"]):
    xs, ts, rs = [], [], []
    for task, value in data["levels"]:
      by_seed = data["tokens"].get((method, task))
      if not by_seed or not all(math.isfinite(v) for v in by_seed.values()):
        continue
      seeds_l = sorted(by_seed)
      xs.append(value)
      ts.append(design.mean([by_seed[s] for s in seeds_l], seeds_l))
      rs.append(_scaling_ratio(design, data, method, task) or Interval(math.nan, math.nan, math.nan))
    if not xs:
      continue
    for ax, ivs in ((ax_t, ts), (ax_r, rs)):
      est = np.array([iv.estimate for iv in ivs])
      err = np.array([[iv.estimate - iv.low for iv in ivs], [iv.high - iv.estimate for iv in ivs]])
      ax.errorbar(xs, est, yerr=np.where(np.isfinite(err), err, 0.0), color=f"C{i % 10}", marker="o", capsize=3,
                  label=method)
  ax_t.set_xscale("log", base=2)
  ax_t.set_yscale("log")
  ax_t.set_ylabel(f"generated tokens to {100 * data['target']:.1f}% pass@1")
  ax_r.set_xscale("log", base=2)
  ax_r.axhline(1.0, color="grey", ls="--", lw=0.8)
  ax_r.set_ylabel(f"tokens to T / {ref}'s (paired)")
  for ax in (ax_t, ax_r):
    ax.set_xlabel(suite.knob)
    ax.set_xticks([v for _, v in data["levels"]], [f"{v:g}" for _, v in data["levels"]])
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
  fig.suptitle(f"{suite.name}: cost of reaching T = {100 * data['target']:.1f}% pass@1 as {suite.knob} grows "
               f"(mean, 95% cluster-bootstrap bars, {design.bases} base{'s' if design.bases > 1 else ''})")
  return _save_figure(fig, path_png)


def _save_figure(fig, path_png) -> pathlib.Path:
  """Lays out `fig`, writes it atomically to `path_png` (120 dpi), closes it and returns the path."""
  import matplotlib.pyplot as plt

  fig.tight_layout()
  path = pathlib.Path(path_png)
  path.parent.mkdir(parents=True, exist_ok=True)
  with atomic_path(path) as tmp:
    fig.savefig(tmp, dpi=120)
  plt.close(fig)
  return path


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


def cost_line(suite: Suite, runs: dict[str, list[dict[str, Any]]], jobs: int = 2) -> str:
  """The suite's cost from an empty cache, from what its runs and base policies measured: the sum of the runs'
  wall times (`summary.json`), plus the SFT wall time of each distinct base policy they start from (its cache
  `info.json`, where the cache still holds it), divided by `jobs` for the wall time with that many jobs."""
  run_s = sum(float(r["summary"]["wall_s"]) for rs in runs.values() for r in rs)
  bases, sft_s, unknown = set(), 0.0, 0
  for name, rs in runs.items():
    for r in rs:
      cfg = suite.config(name, r["seed"])
      task = make_task_from_config(cfg.task, cfg.task_config)
      d = base_policy_dir(cfg.model, task.name, cfg.task_config, cfg.sft, held_out=cfg.rl.held_out_prompts)
      if d in bases:
        continue
      bases.add(d)
      try:
        sft_s += float(json.loads((d / "info.json").read_text())["sft_wall_s"])
      except (OSError, ValueError, KeyError):
        unknown += 1
  total = (run_s + sft_s) / 60.0
  missing = f"; {unknown} of them not in this cache (not counted)" if unknown else ""
  return (f"- Cost from an empty cache: the runs' own wall times sum to {run_s / 60:.0f} min and the SFT of their "
          f"{len(bases)} base policies to {sft_s / 60:.0f} min{missing}: {total:.0f} min of one job, about "
          f"{total / jobs:.0f} min of wall time with --jobs {jobs} (each as measured, with other jobs sharing the CPU).")


def suite_table(suite: Suite, out_dir: str | pathlib.Path, *, seeds: int | None = None, command: str | None = None,
                missing: str = "raise", runs_wall_s: float | None = None) -> str:
  """The Markdown results table of a suite (one row per experiment), built from its run directories,
  then, per task with a baseline, the paired statistics against it (`paired_section`).

  Args:
    suite: the suite (its `bases`: seed s of every experiment started from SFT base s mod bases).
    out_dir: the runs root of the suite (`suite.runs_root(--out)`).
    seeds: seeds per experiment (0..seeds−1); default `suite.seeds`.
    command: the exact command that produced the runs and table, quoted in the header.
    missing: "raise" or "skip", as in `load_runs`.
    runs_wall_s: wall time of the command that ran the missing runs (quoted in the header).

  Returns:
    Markdown text: a header (suite, command, machine, date, design, conventions), the table, and the
    paired sections, each with its resolution line.

  Raises:
    RunDataError: a run is missing, unfinished, corrupt or of another config.
    UnpairedRunsError: paired runs (one seed, one task) do not share their base policy or prompt stream.
  """
  n_seeds = seeds or suite.seeds
  runs = load_suite_runs(suite, out_dir, n_seeds, missing)
  if not runs:
    raise RunDataError(f"no finished runs of suite {suite.name!r} under {out_dir}")
  design = Design.of(suite, n_seeds)
  bases = design.bases
  ks = {int(m.group(1)) for rs in runs.values() for r in rs for key in r["summary"]
        if (m := _PASSK.match(key)) and m.group(1) != "1"}
  k = min(ks) if ks else None
  eval_samples = sorted({int(r["summary"]["eval_samples"]) for rs in runs.values() for r in rs})
  if bases > 1:
    design_line = (f"- Design: seeds 0–{n_seeds - 1} over {bases} SFT base policies (a random factor): seed s of "
                   f"every experiment starts from base s mod {bases} (`sft.seed` + s mod {bases}) and draws the "
                   "prompt stream of seed s, so the runs of one seed are paired.")
  else:
    design_line = (f"- Design: seeds 0–{n_seeds - 1}, one SFT base policy; every run of one seed draws the prompt "
                   "stream of seed s (paired); base variation is not covered (`--bases` > 1 covers it).")
  lines = [
      f"# {suite.name}", "", suite.description, "",
      f"- Command: `{command or f'tcred table {suite.name} --seeds {n_seeds} --bases {bases}'}`",
      f"- Machine: {machine_description()}",
      f"- Date: {datetime.datetime.now(datetime.timezone.utc).strftime('%Y-%m-%d %H:%M UTC')}",
      design_line,
      f"- Runs: `{shown_path(str(out_dir))}`; cells are the mean over seeds [95% percentile interval of a cluster bootstrap, "
      f"{stats.BOOTSTRAP_REPS:,} replicates, resampling "
      + (f"the {bases} bases, then the seeds within each drawn base: intervals cover base variation"
         if bases > 1 else "seeds") + "], \"(n=1)\" where one seed only. With few clusters (here "
      f"{bases if bases > 1 else n_seeds}) percentile intervals are narrow: read them with the resolution line of "
      "each paired table.",
      f"- pass@1 in %, at temperature 1.0 on held-out prompts ({', '.join(map(str, eval_samples))} samples "
      f"per final evaluation); greedy pass@1: one greedy rollout per held-out prompt; Δ: paired final − base.",
      "- To baseline: samples and generated tokens until the run's eval pass@1 curve (base policy at 0) "
      "first reaches the task baseline's mean last eval pass@1 (the same periodic evaluation as the curve, "
      "not the final one); \"(k/n)\": only k of n seeds reached it (mean over those); \"—\": none did.",
      "- Tokens generated: per run over the whole RL loop (a tree's shared prefix counts once; refills count).",
      "- Wall: minutes per run as each run measured it (runs made with `--jobs` > 1 shared the CPU).",
      "- Steps, config: the RL steps and the config hash (`tcred show NAME` prints it) of the row's runs, "
      "with `sft.seed` at base 0's; every run's config.json equals the config this suite resolves for its seed "
      "(`rl.steps` included; seed s differs only in its base's `sft.seed`).",
  ]
  if suite.overrides:
    lines.append(f"- Suite overrides (on every experiment): `{' '.join(suite.overrides)}`")
  expected = len(suite.experiments) * n_seeds
  found = sum(len(rs) for rs in runs.values())
  if found < expected:  # missing="skip": a suite in progress
    absent = [f"{name} seed {s}" for name in suite.experiments for s in range(n_seeds)
              if s not in {r["seed"] for r in runs.get(name, [])}]
    lines.append(f"- **Partial**: {found} of {expected} runs were finished when this table was written; missing: "
                 f"{', '.join(absent)}. Rows, pairs and intervals use the finished runs only.")
  lines += _conventions_lines(runs)
  if runs_wall_s is not None:
    lines.append(f"- This command ran its missing runs in {runs_wall_s / 60:.1f} min of wall time.")
  lines.append(cost_line(suite, runs))
  lines.append("")
  targets: dict[str, float | None] = {}
  for task, _ in runs_by_task(suite, runs):
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
  for task, names in runs_by_task(suite, runs):
    for name in names:
      rs = runs[name]
      s = [r["summary"] for r in rs]
      sd = [r["seed"] for r in rs]
      base = [x["base_pass1"] for x in s]
      final = [x["final_pass1"] for x in s]
      passk = [x.get(f"final_pass{k}") for x in s] if k else []
      passk_cell = _pct(design, passk, sd) if passk and None not in passk else "—"
      target = targets[task]
      curves = [eval_curve(r) for r in rs]
      if target is None:
        samples_cell = tokens_cell = "—"
      else:
        samples_cell = _budget_cell(design, [samples_to_reach(c["samples"], c["pass1"], target) for c in curves], sd)
        tokens_cell = _budget_cell(design, [samples_to_reach(c["tokens"], c["pass1"], target) for c in curves], sd)
      wall = format_interval(design.mean([x["wall_s"] / 60.0 for x in s], sd))
      generated = _budget_cell(design, [float(x["tokens_generated"]) for x in s], sd)
      lines.append(f"| {task} | {_method_of(name)} | {len(rs)} | {_pct(design, base, sd)} | {_pct(design, final, sd)} "
                   f"| {_pct(design, [f - b for f, b in zip(final, base)], sd)} | {passk_cell} "
                   f"| {_pct(design, [x['final_pass1_greedy'] for x in s], sd)} | {samples_cell} | {tokens_cell} "
                   f"| {generated} | {wall} | {'/'.join(sorted({str(x['steps']) for x in s}))} "
                   f"| {'/'.join(sorted({_base0_hash(suite, name, r) for r in rs}))} |")
  judged = [(task, name) for task, names in runs_by_task(suite, runs) for name in names
            if all("judge_tokens" in r["summary"] for r in runs[name])]
  if judged:  # judge-credit runs (credit method `judge`): the judge's own cost, beside the policy's
    lines += ["", "Step-judge cost per run (on top of the policy's tokens generated; mean [95% CI] over seeds):"]
    for task, name in judged:
      s = [r["summary"] for r in runs[name]]
      sd = [r["seed"] for r in runs[name]]
      ratio = [x["judge_tokens"] / max(x["tokens_generated"], 1) for x in s]
      lines.append(f"- {task} {_method_of(name)}: {_budget_cell(design, [float(x['judge_tokens']) for x in s], sd)} "
                   f"judge tokens ({format_interval(design.mean(ratio, sd))}× the tokens generated), "
                   f"{format_interval(design.mean([x['judge_wall_s'] / 60.0 for x in s], sd))} min")
  paired = [line for task, names in runs_by_task(suite, runs) for line in paired_section(suite, runs, task, names, design)]
  if paired:
    lines += ["", "## Paired statistics (sample efficiency and credit score)", "", *paired]
  if suite.scaling:
    lines += ["", *scaling_section(suite, runs, design)]
  return "\n".join(lines).rstrip("\n") + "\n"


def _base0_hash(suite: Suite, name: str, run: dict[str, Any]) -> str:
  """The config hash of `run` with its `sft.seed` set to base 0's: one hash for every seed of a row."""
  config = run.get("config")
  if config is None:
    return str(run["config_hash"])
  sft = {**config.get("sft", {}), "seed": suite.config(name).sft.seed}
  return run_config_hash({**config, "sft": sft})


def _band(curves: list[dict[str, np.ndarray]], seeds: Sequence[int], design: Design, x_key: str, points: int = 60):
  """Mean and 95% interval (`Design`: cluster bootstrap) of pass@1 across seeds on a common grid of
  `x_key`: `(grid, mean, low, high)`, each `[points]`.

  Each seed's curve is linearly interpolated onto the grid `[0, min over seeds of its last x]`.
  """
  x_max = min(float(c[x_key][-1]) for c in curves)
  grid = np.linspace(0.0, x_max, points) if x_max > 0 else np.zeros(1)
  ys = np.stack([np.interp(grid, c[x_key], c["pass1"]) for c in curves])  # [seeds, points]
  mean = ys.mean(0)
  if len(curves) < 2:
    return grid, mean, mean, mean
  draws = design.draws(seeds)
  boot = (draws @ ys) / draws.sum(1, keepdims=True)  # [R, points]
  low, high = np.quantile(boot, [0.025, 0.975], axis=0)
  return grid, mean, low, high


def learning_curves(suite: Suite, out_dir: str | pathlib.Path, path_png: str | pathlib.Path, *,
                    seeds: int | None = None, missing: str = "raise") -> pathlib.Path:
  """Plots pass@1 (%) against generated tokens: one subplot per task, one line per method with a
  95% band across seeds (the table's cluster bootstrap, bases then seeds), and the task baseline's
  last eval pass@1 (the budget target) as a dashed line.

  Returns:
    The path of the PNG written.
  """
  import matplotlib

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  runs = load_suite_runs(suite, out_dir, seeds, missing)
  if not runs:
    raise RunDataError(f"no finished runs of suite {suite.name!r} under {out_dir}")
  design = Design.of(suite, seeds)
  tasks = runs_by_task(suite, runs)
  fig, axes = plt.subplots(1, len(tasks), figsize=(6.0 * len(tasks), 4.2), squeeze=False)
  for ax, (task, names) in zip(axes[0], tasks):
    for i, name in enumerate(names):  # 10 colours, then the same colours dashed, dotted
      grid, mean, low, high = _band([eval_curve(r) for r in runs[name]], [r["seed"] for r in runs[name]], design,
                                    "tokens")
      (line,) = ax.plot(grid, 100 * mean, color=f"C{i % 10}", ls=("-", "--", ":")[i // 10 % 3],
                        label=f"{_method_of(name)} (n={len(runs[name])})")
      if np.any(high > low):
        ax.fill_between(grid, 100 * low, 100 * high, color=line.get_color(), alpha=0.15, lw=0)
    base = baseline_of(suite, task)
    if base in runs:
      ax.axhline(100 * curve_target(runs[base]), color="grey", ls="--", lw=0.8,
                 label=f"{_method_of(base)} last eval (target)")
    ax.set_title(task)
    ax.set_xlabel("generated tokens")
    ax.set_ylabel("pass@1 (%)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
  fig.suptitle(f"{suite.name}: eval pass@1, mean and 95% cluster-bootstrap band over seeds "
               f"({design.bases} base{'s' if design.bases > 1 else ''})")
  return _save_figure(fig, path_png)

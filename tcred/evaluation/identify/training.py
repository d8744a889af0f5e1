"""The identifiability study across training (`tcred identify TASK --policy RUN[,RUN...] --steps 0,10,20,40`,
issue 25 item 1): the same study (`io._run_bases`: `run_study` per policy, pooled; `evaluate_study`) at several
checkpoints of a run, on the same held-out prompts at every step, and every row's figures as a curve over
training (`identify-<task>-training-<method>.md`, `.png`).

Step 0 is the run's base policy (the SFT base its config names: `model`, `task_config`, `sft`; read from the
base cache, trained if missing); step s > 0 is the run's Orbax checkpoint of step s (`run_policy`). A run keeps
only its last two checkpoints unless it was run with `--set rl.keep_every=N` (every N-th step kept).

Every step's study also has the row `delta-logp` (log π_step(o_t) − log π_base(o_t), arXiv 2603.22117), the
policy's change from its run's base on the step's rollouts (0 everywhere at step 0).

Several runs (e.g. the seeds of one experiment) are pooled at each step as the study pools SFT bases: every
interval resamples runs, then prompts within a run (two-level cluster bootstrap). At step 0, runs that share
one base policy are studied once (the same policy).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import pathlib
import time
from typing import Any, NamedTuple, Sequence

import numpy as np

from tcred.evaluation.identify import report
from tcred.evaluation.identify.config import IdentifyConfig, UsageError
from tcred.evaluation.identify.io import _in_cache, _run_bases, check_run_dir, report_paths
from tcred.evaluation.identify.metrics import BOUND_ROW, Results, evaluate_study
from tcred.evaluation.identify.signals import describe_signals, judges_of
from tcred.evaluation.identify.study import StudyData
from tcred.tasks.registry import make_task_from_config
from tcred.training.config import config_hash
from tcred.training.data import eval_problems
from tcred.training.export import ExportError, run_policy
from tcred.training.rl import checkpoint_steps
from tcred.training.sft import base_policy
from tcred.training.tracking import atomic_path, write_atomic

# The figures drawn as curves over training (each a metric of `evaluate_study`, with its CI).
CURVE_METRICS = ("auroc_decisive", "auroc_fatal", "auroc_minus_bound", "auroc_p_bound", "auroc_p_decile",
                 "auroc_decisive_same_position")


class RunCheckpoints(NamedTuple):
  """A run directory checked for the study: its config, seed and the steps it can give (0: its base)."""

  run_dir: pathlib.Path
  config: Any  # ExperimentConfig
  seed: Any
  steps: tuple[int, ...]  # 0 and every checkpoint step

  @property
  def base_key(self) -> str:
    """The base policy's identity (the base cache key's parts)."""
    c = self.config
    return config_hash(c.model, c.task, c.task_config, c.sft)

  def label(self) -> str:
    return f"`{self.config.name}` seed {self.seed} (`{self.run_dir}`)"


def task_and_problems(checked, prompts: int):
  """The task of checked runs (`check_runs`: one task for all) and its first `prompts` held-out problems."""
  first = checked[0].config
  task = make_task_from_config(first.task, first.task_config)
  return task, eval_problems(task, prompts)


def parse_steps(text: str) -> tuple[int, ...]:
  """`"0,10,20"` -> (0, 10, 20): distinct integers >= 0 in increasing order; UsageError otherwise."""
  try:
    steps = [int(s) for s in text.split(",") if s.strip()]
  except ValueError:
    raise UsageError(f"--steps must be comma-separated checkpoint steps >= 0 (0: the run's base policy), e.g. "
                     f"0,10,20,40; got {text!r}") from None
  if not steps or any(s < 0 for s in steps) or len(set(steps)) != len(steps):
    raise UsageError(f"--steps must be distinct checkpoint steps >= 0 (0: the run's base policy), e.g. 0,10,20,40; "
                     f"got {text!r}")
  return tuple(sorted(steps))


def check_runs(task_name: str, runs: Sequence[str], steps: Sequence[int], *, prompts: int, mi_layer: int = -1,
               alternatives: int | None = None) -> list[RunCheckpoints]:
  """Each run directory checked for a study of `task_name` at `steps` (reads config.json and lists the checkpoint
  directories; opens nothing): UsageError naming the run and what exists for a step beyond the run's `rl.steps`, a
  step without a checkpoint, runs of different tasks, models or task configs (they must share the held-out
  prompts and the vocabulary), or runs of different methods (one study pools the seeds of one method)."""
  if not runs:
    raise UsageError("--policy must name at least one run directory with --steps")
  out = []
  for run in runs:
    cfg = check_run_dir(task_name, run, prompts=prompts, mi_layer=mi_layer, alternatives=alternatives)
    run_dir = pathlib.Path(run)
    seed = json.loads((run_dir / "config.json").read_text()).get("seed")
    have = (0, *checkpoint_steps(run_dir / "checkpoints"))
    where = (f"run {run!r} ({cfg.name}, rl.steps = {cfg.rl.steps}) has checkpoints at steps "
             f"{', '.join(map(str, have[1:])) or 'none'} (and 0, its base policy)")
    for s in steps:
      if s > cfg.rl.steps:
        raise UsageError(f"--steps {s} is out of range: {where}; allowed steps: 0..{cfg.rl.steps}")
      if s not in have:
        raise UsageError(f"--steps {s}: no checkpoint of step {s}; {where} (a run keeps its last two checkpoints; "
                         "run it with --set rl.keep_every=N to keep every N-th step)")
    out.append(RunCheckpoints(run_dir, cfg, seed, have))
  first = out[0].config
  for r in out[1:]:
    if r.config.method != first.method:
      raise UsageError(f"--policy: runs {str(out[0].run_dir)!r} ({first.method}) and {str(r.run_dir)!r} "
                       f"({r.config.method}) use different methods; one study pools the runs (seeds) of one "
                       "method: run one study per method")
    for what in ("model", "task_config"):
      if getattr(r.config, what) != getattr(first, what):
        raise UsageError(f"--policy: runs {str(out[0].run_dir)!r} and {str(r.run_dir)!r} have different {what} "
                         f"settings; the runs of one study must share the policy's architecture and vocabulary and "
                         "the held-out prompts (same model and task_config)")
  return out


def policy_at(run: RunCheckpoints, step: int, *, progress: bool = False):
  """`(graphdef, params, description)` of `run` at `step` (0: its base policy)."""
  cfg = run.config
  if step == 0:
    task = make_task_from_config(cfg.task, cfg.task_config)
    graphdef, params, directory = base_policy(cfg.model, task, cfg.task_config, cfg.sft,
                                              eval_prompts=cfg.rl.held_out_prompts, progress=progress)
    return graphdef, params, f"base policy of {run.label()}: sft.seed = {cfg.sft.seed} (`{_in_cache(directory)}`)"
  try:
    _, graphdef, params, got = run_policy(run.run_dir, step=step)
  except ExportError as e:
    raise UsageError(f"--policy {str(run.run_dir)!r}: {e}") from e
  return graphdef, params, f"{run.label()} checkpoint step {got}"


class StepStudy(NamedTuple):
  """The study at one training step (pooled over the runs' policies at that step)."""

  step: int
  data: StudyData
  results: Results
  policies: list[str]
  wall_s: float


def identify_training(task_name: str, runs: Sequence[str], steps: Sequence[int], *,
                      config: IdentifyConfig = IdentifyConfig(rollouts_from="chains"), out: Any = "benchmarks/results",
                      command: str = "", progress: bool = False) -> tuple[list[StepStudy], pathlib.Path, pathlib.Path]:
  """The study at each of `steps` of the runs `runs` on the same held-out prompts; writes
  `out/identify-<task>-training-<method>.md` and `.png` (the runs' credit method: the runs of one study share
  it). K is fixed at the first step (`--continuations auto` chooses it
  there) and reused at every later step. `config.rollouts_from`: "chains" or "tree" (one study per step).

  Raises UsageError (bad task, runs or steps) before any policy is read or any file written.
  """
  if config.rollouts_from == "both":
    raise UsageError("--rollouts-from both is for a single study; with --steps choose chains or tree")
  t_start = time.time()
  load_start = os.getloadavg()[0] if hasattr(os, "getloadavg") else math.nan
  checked = check_runs(task_name, runs, steps, prompts=config.prompts, mi_layer=config.mi_layer,
                       alternatives=config.alternatives)
  task, problems = task_and_problems(checked, config.prompts)
  md_path, png_path = report_paths(out, f"identify-{task_name}-training-{checked[0].config.method}")
  studies = []
  bases = {}  # base key -> the base's parameters: each policy's reference (the `delta-logp` row)
  for step in steps:
    t0 = time.time()
    policies, references, described, seen = [], [], [], set()
    for run in checked:
      key = run.base_key if step == 0 else str(run.run_dir)
      if key in seen:  # runs sharing one base: one policy at step 0
        continue
      seen.add(key)
      graphdef, params, desc = policy_at(run, step, progress=progress)
      if run.base_key not in bases:
        bases[run.base_key] = params if step == 0 else policy_at(run, 0, progress=progress)[1]
      policies.append((graphdef, params))
      references.append(bases[run.base_key])
      described.append(desc)
    data, chosen = _run_bases(policies, task, problems, config, progress=progress, source=config.rollouts_from,
                              references=references)
    config = chosen  # the K of the first step at every later step
    studies.append(StepStudy(step, data, evaluate_study(data), described, time.time() - t0))
    del policies
  meta = {"command": command or f"tcred identify {task_name} --steps {','.join(map(str, steps))}",
          "runs": [r.label() for r in checked], "task_config": repr(checked[0].config.task_config), "load_start": load_start,
          "wall_s": time.time() - t_start, "machine": report.machine_description(), "png": png_path.name}
  plot_training(studies, png_path)
  write_atomic(md_path, training_report(studies, meta))
  return studies, md_path, png_path


def _rows(studies: Sequence[StepStudy]) -> list[str]:
  """Every row of any step, in the first step's order."""
  names = []
  for s in studies:
    for n in s.results.scores:
      if n not in names:
        names.append(n)
  return names


def _curve_table(studies: Sequence[StepStudy], metric: str, scores_of=lambda s: s.results.scores) -> list[str]:
  out = ["| signal | " + " | ".join(f"step {s.step}" for s in studies) + " |", "|---|" + "---|" * len(studies)]
  for name in _rows(studies):
    cells = []
    for s in studies:
      sc = (scores_of(s) or {}).get(name)
      cells.append("n/a" if sc is None else report._cell(sc.values[metric], sc.ci[metric]))
    out.append(f"| {name} | " + " | ".join(cells) + " |")
  return out


def _changed_rows(studies: Sequence[StepStudy], metric: str = "auroc_decisive") -> tuple[list[str], list[str]]:
  """Rows whose `metric` at the last step lies outside the first step's 95% interval and vice versa (rose, fell)."""
  a, b = studies[0].results.scores, studies[-1].results.scores
  rose, fell = [], []
  for n in _rows(studies):
    if n not in a or n not in b:
      continue
    (lo_a, hi_a), (lo_b, hi_b) = a[n].ci[metric], b[n].ci[metric]
    if all(map(math.isfinite, (lo_a, hi_a, lo_b, hi_b))):
      if lo_b > hi_a:
        rose.append(n)
      elif hi_b < lo_a:
        fell.append(n)
  return rose, fell


def training_report(studies: Sequence[StepStudy], meta: dict[str, Any]) -> str:
  """The markdown report of the study across training. `meta`: command, runs, task_config, machine, wall_s, png."""
  s0 = studies[0]
  cfg = s0.data.config
  n, g, t = s0.data.rollout.tokens.shape
  pct = round(100 * cfg.top_fraction)
  runs = len(meta["runs"])
  boot = (f"a two-level cluster bootstrap ({cfg.bootstrap} replicates): the runs' policies at a step resampled "
          "with replacement, then the prompts within each; so the intervals cover seed (and base) variation"
          if runs > 1 else f"a cluster bootstrap over prompts ({cfg.bootstrap} replicates; one run: the intervals "
          "do not cover seed or base variation)")
  out = [f"# Identifiability across training: {s0.data.task_name}", "",
         "Does each signal's ability to find the decisive tokens hold, grow or fade as RL trains the policy (issue 25)? "
         "The identifiability study of `tcred identify` (DESIGN §5: Monte-Carlo advantages, the oracle's fatal "
         "errors, the bound row and the controls), run at several checkpoints of the same run(s) on the same "
         "held-out prompts. Written by `tcred identify --steps`; the numbers come from one run of the command.", "",
         "```", meta["command"], "```", "",
         "## Settings", "",
         f"- **Runs** ({runs}): " + "; ".join(meta["runs"]) + ".",
         f"- **Steps**: {', '.join(str(s.step) for s in studies)} (0: each run's SFT base policy; runs sharing a base "
         "are studied once there).",
         f"- **Task**: `{s0.data.task_name}` with `{meta.get('task_config', '')}`; response budget T = {t} tokens.",
         f"- **Rollouts** ({s0.data.source}): the same {cfg.prompts} held-out prompts (`eval_problems`, never seen in "
         f"SFT or RL) at every step × {g} rollouts of each policy at temperature {cfg.temperature}, with the same "
         "seed (the rollouts differ because the policies do).",
         f"- **Ground truth**: Monte-Carlo A_t from K = {cfg.continuations} continuations of the policy under study "
         f"(fixed at the first step; {report.estimator_text(cfg)}); decisive when |A_t| ≥ δ = {cfg.delta}; "
         "fatal errors from the task oracle. "
         "Each step's truth is the policy's own: a trained policy's sharper probabilities move the bound row, so "
         "read each row beside the bound row and its p-conditioned figures.",
         f"- **Intervals**: 95% percentile intervals of {boot}.",
         f"- **Machine**: {meta['machine']}; 1-min load average at the start {meta.get('load_start', math.nan):.1f}.",
         f"- **Wall time**: {meta['wall_s']:.0f} s end to end (" + ", ".join(
             f"step {s.step} {s.wall_s:.0f} s" for s in studies) + "; metrics and report included).", "",
         "## Rows", "", "| row | definition |", "|---|---|"]
  desc = describe_signals(judges=judges_of(_rows(studies)), reference=True)
  desc[BOUND_ROW] = "the indicator p(token) ≤ 1 − δ (not a signal: only these tokens can be decisive)"
  out += [f"| {n} | {report._md(desc.get(n, ''))} |" for n in _rows(studies)]
  out += ["", "`delta-logp` compares each step's policy with its run's base on the step's rollouts (0 at step 0).", "",
         "## The policy at each step", "",
         "| step | mean reward | decisive (\\|A_t\\| ≥ δ) | fatal errors | can decide (p ≤ 1 − δ) | noise share of "
         "decisive labels" + ("" if cfg.advantage_estimator == "difference" else " (expected)")
         + " | mean entropy | tokens | policies |", "|---|---|---|---|---|---|---|---|---|"]
  for s in studies:
    r, d = s.results, s.data
    ent = float(np.asarray(d.policy["entropy"])[d.rollout.mask].mean()) if d.rollout.mask.any() else math.nan
    nf = r.noise
    out.append(f"| {s.step} | {report._fmt(r.reward_mean)} | {report._pct(r.decisive_rate)} | "
               f"{report._pct(r.fatal_rate)} | {report._pct(nf.can_decide) if nf else 'n/a'} | "
               f"{report._pct(report.noise_share(r, cfg))} | {report._fmt(ent)} | {r.tokens} | {len(s.policies)} |")
  for metric in CURVE_METRICS:
    title = report.METRIC_TITLES[metric].format(pct=pct)
    out += ["", f"## {title}", ""] + _curve_table(studies, metric)
  if all(s.results.forking is not None and s.results.forking.scores for s in studies):
    out += ["", "## AUROC at the forking positions (the alternatives' values spread ≥ δ)", ""]
    out += _curve_table(studies, "auroc_decisive", lambda s: s.results.forking.scores)
  if all(s.results.overlap is not None for s in studies):
    out += ["", "## High-entropy tokens vs MI peaks over training", "",
            f"| step | Jaccard of top-{pct}% sets (chance) | within positions (chance) | Spearman | within positions |",
            "|---|---|---|---|---|"]
    for s in studies:
      o = s.results.overlap
      out.append(f"| {s.step} | {report._fmt(o.jaccard_top)} ({report._fmt(o.jaccard_top_chance)}) | "
                 f"{report._fmt(o.jaccard_top_position)} ({report._fmt(o.jaccard_top_position_chance)}) | "
                 f"{report._fmt(o.spearman)} | {report._fmt(o.spearman_position)} |")
  out += ["", "## Summary (generated from the numbers)", ""]
  if len(studies) > 1:
    a, b = studies[0].step, studies[-1].step
    for metric in ("auroc_decisive", "auroc_fatal", "auroc_p_bound"):
      rose, fell = _changed_rows(studies, metric)
      title = report.METRIC_TITLES[metric].format(pct=pct)
      out.append(f"- {title}: rows whose value at step {b} lies above step {a}'s 95% interval (non-overlapping "
                 f"intervals): {', '.join(rose) or 'none'}; below: {', '.join(fell) or 'none'}.")
  for s in studies:
    beat = [nm for nm, sc in s.results.scores.items() if nm != BOUND_ROW
            and math.isfinite(sc.ci["auroc_minus_bound"][0]) and sc.ci["auroc_minus_bound"][0] > 0]
    out.append(f"- Step {s.step}: rows that beat the bound row (paired 95% CI of the AUROC difference above 0): "
               f"{', '.join(beat) or 'none'}.")
  if meta.get("png"):
    out += ["", f"![AUROC over training]({meta['png']})", "",
            "Each panel: a figure of every row against the training step, with its 95% interval (shaded). The "
            "bound row is dashed black."]
  return "\n".join(out) + "\n"


def plot_training(studies: Sequence[StepStudy], path: str | pathlib.Path) -> None:
  """A panel per figure (every row against the step, 95% intervals shaded: AUROC for decisive tokens, for fatal
  errors, minus the bound row's, among p ≤ 1 − δ), one of the policy (reward, decisive and fatal shares) and the
  legend."""
  import matplotlib

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt


  metrics = ("auroc_decisive", "auroc_fatal", "auroc_minus_bound", "auroc_p_bound")
  x = np.array([s.step for s in studies], float)
  fig, grid = plt.subplots(2, 3, figsize=(15.0, 8.5))
  axes = grid.reshape(-1)
  cmap = plt.get_cmap("tab20")
  names = _rows(studies)
  handles = []
  for ax, metric in zip(axes, metrics):
    handles = []
    for k, name in enumerate(names):
      vals = np.array([s.results.scores[name].values[metric] if name in s.results.scores else np.nan
                       for s in studies], float)
      ci = np.array([s.results.scores[name].ci[metric] if name in s.results.scores else (np.nan, np.nan)
                     for s in studies], float)
      style = dict(color="k", ls="--") if name == BOUND_ROW else dict(color=cmap(k % 20))
      handles += ax.plot(x, vals, marker="o", ms=3, label=name, **style)
      if np.isfinite(ci).any():
        ax.fill_between(x, ci[:, 0], ci[:, 1], alpha=0.10, color=style["color"])
    ax.axhline(0.0 if metric == "auroc_minus_bound" else 0.5, color="grey", lw=0.8, ls=":")
    ax.set_ylim(*((-0.6, 0.6) if metric == "auroc_minus_bound" else (0.0, 1.02)))
    ax.set_title(report.METRIC_TITLES[metric].format(pct=round(100 * studies[0].data.config.top_fraction)),
                 fontsize=10)
    ax.set_xlabel("training step")
    ax.set_xticks(x)
  ax = axes[len(metrics)]
  ax.plot(x, [s.results.reward_mean for s in studies], marker="o", label="mean reward of the rollouts")
  ax.plot(x, [s.results.decisive_rate for s in studies], marker="o", label="decisive share (|A_t| ≥ δ)")
  ax.plot(x, [s.results.fatal_rate for s in studies], marker="o", label="fatal-error share")
  ax.set_xlabel("training step")
  ax.set_xticks(x)
  ax.set_title("the policy", fontsize=10)
  ax.legend(fontsize=8, frameon=False)
  axes[-1].axis("off")
  axes[-1].legend(handles=handles, loc="center", ncol=2, fontsize=8, frameon=False, title="rows")
  fig.suptitle(f"{studies[0].data.task_name}: identifiability across training")
  fig.tight_layout()
  with atomic_path(path) as tmp:
    fig.savefig(tmp, dpi=100)
  plt.close(fig)

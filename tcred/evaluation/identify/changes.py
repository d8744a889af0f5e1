"""Which tokens did RL change, and did the base policy's signals see it coming? (`tcred identify TASK --changes
RUN[,RUN...]`, issue 25 item 2; report `rl-changes-<task>.md`, `.png`.)

On the held-out rollouts of the reference policy (default: each run's own SFT base; `--policy RUN_DIR`: that run's
last checkpoint), the trained policy of each run scores the same tokens (`response_change`, one forward of each):

  Δlog p_t = log π_run(o_t) − log π_ref(o_t)  (the sampled token's log-probability change; arXiv 2603.22117)
  KL_t = KL(π_ref(·|o<t) ‖ π_run(·|o<t))       (the next-token distribution's change, nats)
  flip_t = 1[argmax π_ref(·|o<t) ≠ argmax π_run(·|o<t)]  (the most probable next token changed)

A position is *changed* when the chosen measure reaches the threshold (default |Δlog p| ≥ ln 2: the sampled token's
probability at least doubled or halved). The rollouts are sampled from the reference (the base), not from the
trained policy: the question is whether the *base's* signals, on the base's own rollouts, flag in advance the
positions RL will move, so every row is the base's (the study of `run_study` on the base: every registered signal,
the judges, the Monte-Carlo |A_t| and the bound row p ≤ 1 − δ), and one rollout set serves every run of that base,
which makes the changed sets of two runs comparable token by token (Jaccard).

For each experiment (the runs of one method, pooled: the intervals resample runs, then prompts): the share of
changed positions (ReasonMaxxer, arXiv 2605.06241, reports 1–3%), each row's AUROC at predicting the changed
positions (pooled, within a position, within p-deciles), and its top-20% set against the changed set (precision,
recall, Jaccard; expected values with ties at the threshold broken at random). For every pair of runs with the
same reference: the Jaccard of their changed sets, against two random sets of the same sizes.
"""

from __future__ import annotations

import itertools
import json
import math
import os
import pathlib
import time
from typing import Any, NamedTuple, Sequence

import jax
import numpy as np

from tcred.evaluation import identify_metrics as im
from tcred.evaluation.identify import report
from tcred.evaluation.identify.bootstrap import metric_cis, prompt_clusters
from tcred.evaluation.identify.config import _NS_BOOTSTRAP, IdentifyConfig, UsageError
from tcred.evaluation.identify.io import _run_bases, check_run_dir, report_paths
from tcred.evaluation.identify.metrics import BOUND_ROW, SignalScore, bound_indicator
from tcred.evaluation.identify.rollouts import _batched
from tcred.evaluation.identify.study import StudyData, pool_studies
from tcred.evaluation.identify.training import RunCheckpoints, policy_at, task_and_problems
from tcred.models.forward import response_change
from tcred.training.rl import checkpoint_steps
from tcred.training.tracking import atomic_path, write_atomic

CHANGE_MEASURES = ("logp", "kl", "argmax")  # |Δlog p| ≥ τ, KL ≥ τ, argmax flipped (τ unused)
DEFAULT_THRESHOLD = math.log(2.0)
TRUTH_ROW = "abs-advantage (MC)"  # |A_t|: the base's Monte-Carlo |A_t| as a row: do the decisive tokens change?
CHANGE_METRICS = ("auroc_changed", "auroc_changed_same_position", "auroc_changed_p_decile", "precision_top",
                  "recall_top", "jaccard_top")
CHANGE_TITLES = {"auroc_changed": "AUROC, changed", "auroc_changed_same_position": "AUROC, changed, same position",
                 "auroc_changed_p_decile": "AUROC, changed, within p-deciles",
                 "precision_top": "precision of top {pct}%", "recall_top": "recall of top {pct}%",
                 "jaccard_top": "Jaccard, top {pct}% vs changed"}
# The shares reported beside the chosen threshold (ReasonMaxxer's 1–3% does not say which measure it uses).
LOGP_GRID = (0.1, 0.25, 0.5, math.log(2.0), 1.0, 2.0)
KL_GRID = (0.01, 0.05, 0.1, 0.5)


class Change(NamedTuple):
  """One run against its reference on the reference's rollouts: `[N, G, T]` arrays (0 on padding)."""

  run: str  # label
  method: str  # the run's experiment name
  group: int  # index of its reference (rollout set)
  delta_logp: np.ndarray
  kl: np.ndarray
  flip: np.ndarray


def changed_mask(change: Change, mask: np.ndarray, measure: str, threshold: float) -> np.ndarray:
  """`[N, G, T]` bool: the valid positions `change` moved beyond `threshold` by `measure` (CHANGE_MEASURES)."""
  if measure == "logp":
    moved = np.abs(change.delta_logp) >= threshold
  elif measure == "kl":
    moved = change.kl >= threshold
  elif measure == "argmax":
    moved = change.flip > 0
  else:
    raise ValueError(f"measure {measure!r}: allowed values are {', '.join(CHANGE_MEASURES)}")
  return np.asarray(mask, bool) & moved


_response_change_jit = jax.jit(response_change, static_argnames=("graphdef_p", "graphdef_q", "temperature",
                                                                "chunk_size"))


def policy_change(graphdef_ref, params_ref, graphdef_run, params_run, data: StudyData, *, temperature: float,
                  batch: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """`(Δlog p, KL(ref ‖ run), argmax flipped)` `[N, G, T]` on the study's rollouts (`response_change`, batched by
  prompts), 0 on padding."""
  r = data.rollout
  fn = lambda pr, pv, t, m: _response_change_jit(graphdef_ref, params_ref, graphdef_run, params_run, pr, pv, t, m,
                                                 temperature=temperature)
  logp, logq, kl, flip = _batched(fn, (r.prompt, r.prompt_valid, r.tokens, r.mask), batch)
  m = r.mask
  return (np.where(m, logq - logp, 0.0).astype(np.float64), np.where(m, kl, 0.0).astype(np.float64),
          np.where(m, flip, 0.0).astype(np.float64))


class MethodResult(NamedTuple):
  """The change study of one experiment's runs (pooled)."""

  method: str
  runs: list[str]
  tokens: int
  changed_share: float
  changed_share_ci: tuple[float, float]
  grid: dict[str, float]  # "|Δlog p| ≥ x" / "KL ≥ x" / "argmax flipped" -> share of positions
  mean_abs_delta: float
  mean_kl: float
  scores: dict  # row -> metrics.SignalScore over CHANGE_METRICS
  changed_rate: float


def evaluate_changes(data: StudyData, changed: np.ndarray, changes: Sequence[Change], *, measure: str,
                     threshold: float) -> MethodResult:
  """Every row of `data` (the reference's study, pooled over the method's runs; `changed [N·R, G, T]` aligned
  with it) at predicting the changed positions, with cluster-bootstrap CIs (runs, then prompts)."""
  cfg = data.config
  mask = data.rollout.mask
  flat = lambda x: np.asarray(x)[mask]
  clusters = prompt_clusters(mask, data.base if data.bases > 1 else None)
  label = flat(changed)
  position = flat(np.broadcast_to(np.arange(mask.shape[-1]), mask.shape))
  logp = flat(data.policy["logp"])
  p_decile = im.quantile_strata(np.exp(logp), 10)
  rows = {BOUND_ROW: bound_indicator(logp, cfg.delta), **{n: flat(s) for n, s in data.signals.items()},
          TRUTH_ROW: np.abs(flat(data.truth.advantages))}
  frac = cfg.top_fraction

  def all_metrics(idx):
    out = {}
    y, pos, dec = label[idx], position[idx], p_decile[idx]
    n, c = len(idx), int(y.sum())
    k = min(n, math.ceil(round(frac * n, 9))) if n else 0
    out[("changed", "share")] = float(y.mean()) if n else math.nan
    for name, s in rows.items():
      s = s[idx]
      out[(name, "auroc_changed")] = im.auroc(s, y)
      out[(name, "auroc_changed_same_position")] = im.stratified_auroc(s, y, pos)
      out[(name, "auroc_changed_p_decile")] = im.stratified_auroc(s, y, dec)
      precision = im.top_fraction_precision(s, y, frac) if n else math.nan
      hits = precision * k  # expected changed positions among the top k
      out[(name, "precision_top")] = precision
      out[(name, "recall_top")] = hits / c if c else math.nan
      out[(name, "jaccard_top")] = hits / (k + c - hits) if (k + c) else math.nan
    return out

  rng = np.random.default_rng([_NS_BOOTSTRAP, cfg.seed, 0xC4])
  point = all_metrics(np.arange(label.shape[0]))
  ci = metric_cis(all_metrics, clusters, list(point), reps=cfg.bootstrap, rng=rng)

  scores = {n: SignalScore({m: point[(n, m)] for m in CHANGE_METRICS}, {m: ci[(n, m)] for m in CHANGE_METRICS})
            for n in rows}
  delta = np.concatenate([c.delta_logp for c in changes])[mask]
  kl = np.concatenate([c.kl for c in changes])[mask]
  flip = np.concatenate([c.flip for c in changes])[mask]
  grid = {**{f"|Δlog p| ≥ {x:.3g}": float((np.abs(delta) >= x).mean()) for x in LOGP_GRID},
          **{f"KL ≥ {x:g}": float((kl >= x).mean()) for x in KL_GRID}, "argmax flipped": float(flip.mean())}
  return MethodResult(changes[0].method, [c.run for c in changes], int(label.shape[0]), point[("changed", "share")],
                      ci[("changed", "share")], grid, float(np.abs(delta).mean()), float(kl.mean()), scores,
                      float(label.mean()))


class PairJaccard(NamedTuple):
  a: str
  b: str
  same_method: bool
  jaccard: float
  chance: float


def pair_jaccards(changes: Sequence[Change], changed: Sequence[np.ndarray], masks: Sequence[np.ndarray]
                  ) -> list[PairJaccard]:
  """The Jaccard of the changed sets of every two runs with the same reference (the same rollouts), and that of
  two random sets of the same sizes."""
  out = []
  for i, j in itertools.combinations(range(len(changes)), 2):
    if changes[i].group != changes[j].group:
      continue
    m = masks[changes[i].group]
    a, b = changed[i][m], changed[j][m]
    out.append(PairJaccard(changes[i].run, changes[j].run, changes[i].method == changes[j].method,
                           im.jaccard(a, b), im.chance_jaccard(int(a.sum()), int(b.sum()), int(m.sum()))))
  return out


def check_change_runs(task_name: str, runs: Sequence[str], reference: str, *, prompts: int, mi_layer: int = -1,
                      alternatives: int | None = None) -> tuple[list[RunCheckpoints], RunCheckpoints | None]:
  """The runs and the reference run (None: each run's base), checked before anything is read but config.json and
  the checkpoint directory listings: UsageError naming what exists for a run without a checkpoint, runs (or a
  reference) of another task, another vocabulary or other held-out prompts."""
  if not runs:
    raise UsageError("--changes must name at least one run directory (comma-separated), e.g. "
                     "runs/countdown-grpo/seed-0,runs/countdown-entropy-top20/seed-0")
  checked = []
  for run in runs:
    cfg = check_run_dir(task_name, run, prompts=prompts, mi_layer=mi_layer, alternatives=alternatives,
                        flag="--changes")
    have = checkpoint_steps(pathlib.Path(run) / "checkpoints")
    if not have:
      raise UsageError(f"--changes {run!r}: the run has no checkpoint (checkpoints/ is missing or empty); allowed: "
                       "run directories with a checkpoint of the trained policy")
    seed = json.loads((pathlib.Path(run) / "config.json").read_text()).get("seed")
    checked.append(RunCheckpoints(pathlib.Path(run), cfg, seed, (0, *have)))
  ref = None
  if reference != "base":
    cfg = check_run_dir(task_name, reference, prompts=prompts, mi_layer=mi_layer, alternatives=alternatives)
    have = checkpoint_steps(pathlib.Path(reference) / "checkpoints")
    if not have:
      raise UsageError(f"--policy {reference!r}: the run has no checkpoint; allowed values are 'base' (each run's "
                       "SFT base) or a run directory with a checkpoint")
    ref = RunCheckpoints(pathlib.Path(reference), cfg, json.loads((pathlib.Path(reference) / "config.json")
                                                                  .read_text()).get("seed"), (0, *have))
  first = ref if ref is not None else checked[0]
  for r in checked:
    v_a, v_b = first.config.model.vocab_size, r.config.model.vocab_size
    if v_a != v_b:
      raise UsageError(f"{str(r.run_dir)!r} has a vocabulary of {v_b} tokens and {str(first.run_dir)!r} of {v_a}: "
                       "the change study compares next-token distributions over one vocabulary")
    if r.config.task_config != first.config.task_config:
      raise UsageError(f"{str(r.run_dir)!r} and {str(first.run_dir)!r} have different task_config settings "
                       f"({r.config.task_config!r} vs {first.config.task_config!r}): the change study needs the "
                       "same held-out prompts and tokenizer")
  return checked, ref


def change_study(task_name: str, runs: Sequence[str], *, reference: str = "base",
                 config: IdentifyConfig = IdentifyConfig(rollouts_from="chains"), measure: str = "logp",
                 threshold: float = DEFAULT_THRESHOLD, out: Any = "benchmarks/results", command: str = "",
                 progress: bool = False):
  """The change study of `runs` (each its last checkpoint) against `reference` ("base": each run's SFT base;
  else a run directory's last checkpoint); writes `out/rl-changes-<task>.md` and `.png`.

  Returns `(method results, pair Jaccards, md path, png path)`. UsageError before anything is read or written
  for bad runs, reference, measure or threshold.
  """
  if measure not in CHANGE_MEASURES:
    raise UsageError(f"--change-by {measure!r}: allowed values are {', '.join(CHANGE_MEASURES)}")
  if not (math.isfinite(threshold) and threshold > 0):
    raise UsageError(f"--change-threshold must be a number > 0 (nats), got {threshold!r}")
  if config.rollouts_from != "chains":
    raise UsageError(f"--rollouts-from {config.rollouts_from}: the change study samples chains from the base "
                     "(allowed: chains)")
  t_start = time.time()
  load_start = os.getloadavg()[0] if hasattr(os, "getloadavg") else math.nan
  checked, ref = check_change_runs(task_name, runs, reference, prompts=config.prompts, mi_layer=config.mi_layer,
                                   alternatives=config.alternatives)
  task, problems = task_and_problems(checked, config.prompts)
  md_path, png_path = report_paths(out, f"rl-changes-{task_name}")
  # One reference (and one rollout set) per base, or the reference run for all.
  groups: dict[str, list[int]] = {}
  for i, r in enumerate(checked):
    groups.setdefault("ref" if ref is not None else r.base_key, []).append(i)
  studies, changes, references = [], [None] * len(checked), []
  chosen = config
  for g, members in enumerate(groups.values()):
    if ref is not None:
      graphdef, params, desc = policy_at(ref, ref.steps[-1], progress=progress)
    else:
      graphdef, params, desc = policy_at(checked[members[0]], 0, progress=progress)
    references.append(desc)
    data, chosen = _run_bases([(graphdef, params)], task, problems, chosen, progress=progress, source="chains")
    studies.append(data)
    for i in members:
      r = checked[i]
      g_run, p_run, run_desc = policy_at(r, r.steps[-1], progress=progress)
      d, kl, flip = policy_change(graphdef, params, g_run, p_run, data, temperature=config.temperature,
                                  batch=config.extras_batch)
      changes[i] = Change(run_desc, r.config.name, g, d, kl, flip)
  masks = [s.rollout.mask for s in studies]
  changed = [changed_mask(c, masks[c.group], measure, threshold) for c in changes]
  methods: dict[str, list[int]] = {}
  for i, c in enumerate(changes):
    methods.setdefault(c.method, []).append(i)
  results = []
  for name, members in methods.items():
    data = pool_studies([studies[changes[i].group] for i in members])
    results.append(evaluate_changes(data, np.concatenate([changed[i] for i in members]),
                                    [changes[i] for i in members], measure=measure, threshold=threshold))
  pairs = pair_jaccards(changes, changed, masks)
  meta = {"command": command or f"tcred identify {task_name} --changes {','.join(runs)}", "references": references,
          "task_config": repr(checked[0].config.task_config), "load_start": load_start, "wall_s": time.time() - t_start,
          "machine": report.machine_description(), "png": png_path.name, "measure": measure, "threshold": threshold}
  plot_changes(results, studies[0], png_path)
  write_atomic(md_path, changes_report(results, pairs, studies[0], meta))
  return results, pairs, md_path, png_path


def _criterion(measure: str, threshold: float) -> str:
  return {"logp": f"|Δlog p| ≥ {threshold:.3g}", "kl": f"KL(ref ‖ run) ≥ {threshold:.3g}",
          "argmax": "argmax flipped"}[measure]


def changes_report(results: Sequence[MethodResult], pairs: Sequence[PairJaccard], data: StudyData,
                   meta: dict[str, Any]) -> str:
  """The markdown report of the change study."""
  cfg = data.config
  pct = round(100 * cfg.top_fraction)
  crit = _criterion(meta["measure"], meta["threshold"])
  n, g, t = data.rollout.tokens.shape
  out = [f"# What RL changed, and whether the base saw it coming: {data.task_name}", "",
         "Which token positions did RL move, and do the base policy's signals flag them in advance (issue 25)? "
         "Written by `tcred identify --changes`; the numbers come from one run of the command.", "",
         "```", meta["command"], "```", "",
         "## Settings", "",
         "- **Reference policies** (their rollouts are the study's): " + "; ".join(meta["references"]) + ".",
         f"- **Task**: `{data.task_name}` with `{meta.get('task_config', '')}`; response budget T = {t} tokens.",
         f"- **Rollouts**: {cfg.prompts} held-out prompts (`eval_problems`) × {g} rollouts sampled from the "
         f"reference at temperature {cfg.temperature}; every run of a reference is scored on the same tokens. "
         "Sampled from the base, not the trained policy: the question is whether the base's signals, on its own "
         "rollouts, flag the positions RL will move (RL's own rollouts would put the trained policy's choices in the "
         "tokens and the base's signals would be read off-policy).",
         "- **Change measures** per position t: Δlog p = log π_run(o_t) − log π_ref(o_t) (the sampled token); "
         "KL(π_ref ‖ π_run) of the next-token distributions (nats, temperature "
         f"{cfg.temperature}); argmax flipped (the most probable next token differs).",
         f"- **Changed** (the label every AUROC below predicts): **{crit}** (`--change-by {meta['measure']} "
         f"--change-threshold {meta['threshold']:.4g}`; default ln 2: the sampled token's probability at least doubled "
         "or halved).",
         f"- **Rows**: every signal of the study computed on the reference (the base), the bound row (p ≤ 1 − δ, "
         f"δ = {cfg.delta}), the `random` row (chance) and `{TRUTH_ROW}` (the base's Monte-Carlo |A_t|, K = "
         f"{cfg.continuations}: do the tokens that decide the outcome change?).",
         f"- **Intervals**: 95% percentile intervals of a cluster bootstrap ({cfg.bootstrap} replicates) over the "
         "runs of a method, then the prompts within each (one run: prompts only).",
         f"- **Machine**: {meta['machine']}; 1-min load average at the start {meta.get('load_start', math.nan):.1f}; "
         f"wall time {meta['wall_s']:.0f} s end to end.", "",
         "## How much changed", "",
         "| experiment | runs | tokens | changed (" + report._md(crit) + ") | mean \\|Δlog p\\| | mean KL | "
         + " | ".join(report._md(k) for k in results[0].grid) + " |",
         "|---|---|---|---|---|---|" + "---|" * len(results[0].grid)]
  for r in results:
    share = report._pct(r.changed_share) + (f" [{100 * r.changed_share_ci[0]:.1f}, {100 * r.changed_share_ci[1]:.1f}]"
                                            if all(map(math.isfinite, r.changed_share_ci)) else "")
    out.append(f"| {r.method} | {len(r.runs)} | {r.tokens} | {share} | {report._fmt(r.mean_abs_delta)} | "
               f"{report._fmt(r.mean_kl, 4)} | " + " | ".join(report._pct(v) for v in r.grid.values()) + " |")
  out += ["", "ReasonMaxxer (arXiv 2605.06241) reports that RL changes 1–3% of token positions; the columns give the "
          "share here under several measures and thresholds, since the criterion decides the number."]
  for r in results:
    out += ["", f"## {r.method}: which rows predict the changed positions", "",
            "Runs: " + "; ".join(r.runs) + f". Changed positions: {report._pct(r.changed_rate)} of {r.tokens}.", ""]
    out += report._results_table(None, pct, CHANGE_METRICS, r.scores, CHANGE_TITLES, r.changed_rate)[:-1]
    chance_j = im.chance_jaccard(math.ceil(cfg.top_fraction * r.tokens), round(r.changed_rate * r.tokens), r.tokens)
    out.append(f"| *random* | 0.5 | 0.5 | 0.5 | {r.changed_rate:.3f} | {cfg.top_fraction:.3f} | {report._fmt(chance_j)} |")
    ranked = sorted(((n, s.values["auroc_changed"], s.ci["auroc_changed"]) for n, s in r.scores.items()
                     if n not in (BOUND_ROW, TRUTH_ROW) and math.isfinite(s.values["auroc_changed"])),
                    key=lambda x: -x[1])
    above = [n for n, _, ci in ranked if math.isfinite(ci[0]) and ci[0] > 0.5]
    pos = [n for n, s in r.scores.items() if n not in (BOUND_ROW, TRUTH_ROW)
           and math.isfinite(s.ci["auroc_changed_same_position"][0]) and s.ci["auroc_changed_same_position"][0] > 0.5]
    out += ["", "- Ranking by AUROC for the changed positions: " + ", ".join(f"{n} {report._fmt(v)}" for n, v, _ in ranked)
            + ".", f"- 95% CI above 0.5: {', '.join(above) or 'none'}; within a position: {', '.join(pos) or 'none'}."]
  out += ["", "## Do different runs change the same positions?", ""]
  if pairs:
    out += ["| run A | run B | same experiment | Jaccard of changed sets | random sets of these sizes |",
            "|---|---|---|---|---|"]
    for p in pairs:
      out.append(f"| {p.a} | {p.b} | {'yes' if p.same_method else 'no'} | {report._fmt(p.jaccard)} | "
                 f"{report._fmt(p.chance)} |")
    for same, what in ((True, "within an experiment (seed to seed)"), (False, "across experiments")):
      js = [p.jaccard for p in pairs if p.same_method == same and math.isfinite(p.jaccard)]
      cs = [p.chance for p in pairs if p.same_method == same and math.isfinite(p.chance)]
      if js:
        out.append(f"\n- Mean Jaccard {what}: {np.mean(js):.3f} over {len(js)} pairs (random sets {np.mean(cs):.3f}).")
  else:
    out.append("No two runs share a reference (rollout set), so no changed sets can be compared token by token.")
  out += ["", f"![changed positions]({meta['png']})", "",
          "Left: each row's AUROC at predicting the changed positions, per experiment (95% intervals). Right: the "
          "share of positions changed against the |Δlog p| threshold, per experiment."]
  return "\n".join(out) + "\n"


def plot_changes(results: Sequence[MethodResult], data: StudyData, path: str | pathlib.Path) -> None:
  import matplotlib

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt


  names = list(results[0].scores)
  fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(max(10.0, 0.6 * len(names) + 6), 4.8),
                                 gridspec_kw={"width_ratios": [3, 1]})
  x = np.arange(len(names))
  w = 0.8 / len(results)
  for k, r in enumerate(results):
    vals = np.array([r.scores[n].values["auroc_changed"] for n in names], float)
    cis = np.array([r.scores[n].ci["auroc_changed"] for n in names], float)
    err = np.where(np.isfinite(cis), np.abs(cis - vals[:, None]), 0).T  # [2, rows]
    ax1.bar(x - 0.4 + (k + 0.5) * w, np.nan_to_num(vals), width=w, yerr=err, capsize=2, label=r.method)
  ax1.axhline(0.5, color="k", lw=0.8, ls="--")
  ax1.set_xticks(x, names, rotation=30, ha="right", fontsize=8)
  ax1.set_ylim(0, 1.05)
  ax1.set_ylabel("AUROC, changed positions")
  ax1.legend(fontsize=8, frameon=False)
  for r in results:
    keys = [k for k in r.grid if k.startswith("|Δlog p|")]
    ax2.plot(list(LOGP_GRID), [100 * r.grid[k] for k in keys], marker="o", label=r.method)
  ax2.set_xscale("log")
  ax2.set_xlabel("|Δlog p| threshold (nats)")
  ax2.set_ylabel("% of positions changed")
  ax2.axhspan(1, 3, color="grey", alpha=0.15, label="ReasonMaxxer 1–3%")
  ax2.legend(fontsize=7, frameon=False)
  fig.suptitle(f"{data.task_name}: what RL changed, seen from the base")
  fig.tight_layout()
  with atomic_path(path) as tmp:
    fig.savefig(tmp, dpi=100)
  plt.close(fig)

"""Markdown report and plots of an identifiability study (`tcred identify`)."""

from __future__ import annotations

import dataclasses
import math
import os
import pathlib
import platform
from typing import Any

import numpy as np

from tcred.evaluation.identify.metrics import BOUND_ROW, CONTROL_METRICS, FORKING_METRICS, METRICS, Results
from tcred.evaluation.identify.signals import describe_signals, judges_of
from tcred.evaluation.identify.study import StudyData
from tcred.training.tracking import atomic_path

METRIC_TITLES = {
    "auroc_decisive": "AUROC, |A_t| ≥ δ",
    "spearman_abs_adv": "Spearman with |A_t|",
    "precision_top": "precision of top {pct}%",
    "auroc_fatal": "AUROC, fatal errors",
    "auroc_decisive_reasoning": "AUROC, |A_t| ≥ δ, reasoning tokens",
    "auroc_decisive_same_position": "AUROC, |A_t| ≥ δ, same position",
    "auroc_minus_bound": "AUROC − bound row's (paired)",
    "auroc_p_bound": "AUROC among p ≤ 1 − δ",
    "auroc_p_decile": "AUROC within p-deciles",
    "spearman_p_bound": "Spearman with |A_t| among p ≤ 1 − δ",
    "spearman_same_position": "Spearman with |A_t|, same position",
    "precision_top_same_position": "precision of top {pct}% within each position",
}
FORKING_TITLES = {**METRIC_TITLES, "auroc_decisive": "AUROC, spread ≥ δ",
                  "auroc_decisive_same_position": "AUROC, spread ≥ δ, same position",
                  "spearman_abs_adv": "Spearman with the spread", "spearman_p_bound": "Spearman with the spread among p ≤ 1 − δ",
                  "spearman_same_position": "Spearman with the spread, same position"}


def _fmt(x: float, digits: int = 3) -> str:
  return "n/a" if x is None or not math.isfinite(x) else f"{x:.{digits}f}"


def _cell(value: float, ci: tuple[float, float]) -> str:
  if not math.isfinite(value):
    return "n/a"
  if all(math.isfinite(c) for c in ci):
    return f"{value:.3f} [{ci[0]:.2f}, {ci[1]:.2f}]"
  return f"{value:.3f}"


def machine_description() -> str:
  import jax

  dev = jax.devices()[0]
  load = os.getloadavg()[0] if hasattr(os, "getloadavg") else math.nan
  return (f"{platform.machine()} {platform.system()}, {os.cpu_count()} CPU cores, JAX {jax.__version__} on "
          f"{dev.platform} ({dev.device_kind}); 1-min load average at the end {load:.1f}")


def example_rollout(data: StudyData, delta: float) -> tuple[int, int]:
  """(prompt, rollout) to draw: one with a fatal token and a decisive token, the largest max |A_t|; on tree
  leaves, first one where the tree sibling gap is not 0 everywhere (a leaf below a fork)."""
  adv = np.abs(data.truth.advantages)
  fatal = data.truth.fatal.any(-1)
  decisive = (adv >= delta).any(-1)
  best = adv.max(-1) + 2.0 * (fatal & decisive) + 1.0 * decisive
  if "tree-fork-gap" in data.signals:
    best = best + 4.0 * (data.signals["tree-fork-gap"] > 0).any(-1)
  i, j = np.unravel_index(int(np.argmax(best)), best.shape)
  return int(i), int(j)


def _auto_summary(results: Results, delta: float) -> list[str]:
  lines = []
  rows = [(name, s.values["auroc_decisive"], s.ci["auroc_decisive"]) for name, s in results.scores.items()
          if name not in ("oracle-judge", BOUND_ROW) and math.isfinite(s.values["auroc_decisive"])]
  rows.sort(key=lambda r: -r[1])
  if rows:
    lines.append("- Ranking by AUROC for |A_t| ≥ δ (the oracle judge aside): "
                 + ", ".join(f"{n} {_fmt(v)}" for n, v, _ in rows) + ".")
    above = [n for n, _, ci in rows if math.isfinite(ci[0]) and ci[0] > 0.5]
    below = [n for n, _, ci in rows if math.isfinite(ci[1]) and ci[1] < 0.5]
    chance = [n for n, _, ci in rows if math.isfinite(ci[0]) and ci[0] <= 0.5 <= ci[1]]
    if any(math.isfinite(ci[0]) for _, _, ci in rows):
      lines.append(f"- 95% CI above chance (0.5): {', '.join(above) or 'none'}; below chance: "
                   f"{', '.join(below) or 'none'}; includes chance: {', '.join(chance) or 'none'}.")
  if BOUND_ROW in results.scores:
    beat = [n for n, s in results.scores.items() if n != BOUND_ROW
            and math.isfinite(s.ci["auroc_minus_bound"][0]) and s.ci["auroc_minus_bound"][0] > 0]
    b = results.scores[BOUND_ROW].values
    lines.append(f"- The bound row (p ≤ 1 − δ) scores AUROC {_fmt(b['auroc_decisive'])}; rows that beat it (paired 95% "
                 f"CI of the difference above 0): {', '.join(beat) or 'none'}.")
    cond = [(n, s.values["auroc_p_bound"], s.ci["auroc_p_bound"]) for n, s in results.scores.items()
            if n not in (BOUND_ROW, "oracle-judge")]
    above = [n for n, _, ci in cond if math.isfinite(ci[0]) and ci[0] > 0.5]
    lines.append(f"- Among tokens that can be decisive (p ≤ 1 − δ), rows with AUROC CI above 0.5: "
                 f"{', '.join(above) or 'none'}.")
  o = results.scores.get("oracle-judge")
  if o is not None:
    lines.append(f"- The oracle judge (exact prefix values) reaches AUROC {_fmt(o.values['auroc_decisive'])} for "
                 "|A_t| ≥ δ: a token can be fatal while the policy's value before it was already below δ, and a "
                 "token can move V by ≥ δ without changing solvability (the policy's skill, not the oracle's "
                 "reachability); its fatal-error AUROC is 1 by construction.")
  return lines


def _search_text(steps, bases: int) -> str:
  """`--continuations auto`'s search: `(K, share)` pairs (one base) or `(base, K, share)` triples, grouped by
  base; a base that needed a larger K than the bases before it made those rerun at its K."""
  if steps and len(steps[0]) == 3 and {b for b, _, _ in steps} == {0}:
    steps = [(k, v) for _, k, v in steps]
  if steps and len(steps[0]) == 2:
    return ", ".join(f"K = {k}: {_pct(v)}" for k, v in steps)
  by_base: dict = {}
  for b, k, v in steps:
    by_base.setdefault(b, []).append(f"K = {k}: {_pct(v)}")
  text = "; ".join(f"base {b}: " + ", ".join(tries) for b, tries in by_base.items())
  return text + (" (a base that needs a larger K than the bases before it makes them rerun at its K)"
                 if bases > 1 else "")


def _used_config(data: StudyData):
  """The study's config with the K its ground truth used (`--continuations auto` may have raised it)."""
  k = data.truth.continuations or data.config.continuations
  return dataclasses.replace(data.config, continuations=k)


def markdown_report(data: StudyData, results: Results, meta: dict[str, Any]) -> str:
  """The study's report. `meta`: command, policy, wall_s, machine, task_config, png (file name)."""
  cfg = _used_config(data)
  n, g, t = data.rollout.tokens.shape
  pct = round(100 * cfg.top_fraction)
  lengths = data.rollout.mask.sum(-1)
  tm = results.timings
  out = [f"# Identifiability of reasoning tokens: {data.task_name}", "",
         "Which token signals pick out the tokens that decide the outcome (DESIGN §5)? Written by "
         "`tcred identify`; the numbers below come from one run of the command.", "",
         "```", meta["command"], "```", "",
         "## Settings", "",
         f"- **Policy**: {meta['policy']}.",
         f"- **Task**: `{data.task_name}` with `{meta.get('task_config', '')}`; response budget T = {t} tokens.",
         (f"- **Bases**: {results.bases} SFT bases (`sft.seed` = {', '.join(map(str, range(results.bases)))}; "
          "`--bases`), each studied on the same prompts and pooled; every interval resamples bases, then prompts "
          "within a base." if results.bases > 1 else
          "- **Bases**: 1 policy; the intervals cover prompt resampling only, not the SFT base (`--bases 3` for "
          "reported studies)."),
         f"- **Rollouts**: {n // results.bases} held-out prompts (`eval_problems`, never seen in SFT or RL) × {g} "
         + ("rollouts" if data.trees is None else f"tree leaves ({_tree_shape(data)})")
         + f" at temperature {cfg.temperature}; mean reward {_fmt(results.reward_mean)}; mean length "
         f"{lengths.mean():.1f} tokens (EOS included); {results.tokens} response tokens in all.",
         f"- **Ground truth 1, Monte-Carlo advantages** `A_t = V(o≤t) − V(o<t)`: V of every prefix of every "
         f"rollout from K = {cfg.continuations} continuations of the same policy ({data.truth.unique_prefixes} "
         f"distinct prefixes continued, {data.truth.unique_prefixes * cfg.continuations} continuations"
         + ("; prefixes the oracle calls lost have V = 0 exactly and are not continued" if cfg.skip_lost else "")
         + "); V after the whole response is its reward. "
         + (f"Standard error of A_t: at most sqrt(1/(2K)) = {cfg.advantage_se_bound:.3f}, "
            f"mean plug-in sqrt(V(1−V)/K) summed over both ends {results.mean_advantage_se:.3f}. "
            if cfg.advantage_estimator == "difference" else
            "Estimator **Rao-Blackwellised over the sampled token's probability** (`--advantage-estimator "
            "rao-blackwell`): A_t = (1 − p_t)(Q̂ − V̂₋ₐ), p_t known, Q̂ the value after the token (pooled with the "
            "continuations of o<t that drew o_t), V̂₋ₐ the mean of the continuations of o<t that drew another token; "
            f"|A_t| ≤ 1 − p_t holds by construction; mean plug-in SE {results.mean_advantage_se:.3f}. ")
         + "A token is "
         f"*decisive* when |A_t| ≥ δ = {cfg.delta}: {100 * results.decisive_rate:.1f}% of tokens; Monte-Carlo "
         f"noise alone would label about {100 * results.noise_positive_rate:.1f}% of tokens decisive (normal "
         "approximation with V̂ smoothed to (wins + 1)/(K + 2), and SE 0 where the oracle says the prefix "
         f"is lost, since V = 0 there exactly): {_noise_reading(results)}",
         f"- **Ground truth 2, fatal errors**: tokens across which the task oracle's exact prefix value goes "
         f"1 → 0 ({100 * results.fatal_rate:.1f}% of tokens).",
         f"- **Metrics** pool every valid response token of the study. AUROC is Mann–Whitney with ties "
         f"counted 1/2; Spearman uses average ranks; precision of the top {pct}% is pooled over the whole "
         f"study (the top ceil({cfg.top_fraction}·n) tokens by the signal, ties at the threshold broken "
         f"uniformly at random, its expectation), to compare with the decisive share "
         f"{100 * results.decisive_rate:.1f}%. Brackets: 95% percentile intervals of a {_bootstrap_words(results)} "
         f"({cfg.bootstrap} replicates).",
         f"- **Machine**: {meta['machine']}; 1-min load average at the start "
         f"{meta.get('load_start', math.nan):.1f} (the machine is shared; wall times scale with the load).",
         f"- **Wall time**: {meta['wall_s']:.0f} s end to end (policy load {meta.get('load_s', math.nan):.0f} s, "
         f"rollouts {tm.get('rollouts_s', 0):.0f} s, policy forward + extras {tm.get('signals_forward_s', 0):.0f} s, "
         f"Monte-Carlo continuations + oracle {tm.get('ground_truth_s', 0):.0f} s, "
         + "".join(f"judge {j} {tm.get(f'{j}_s', 0):.0f} s ({tm.get(f'{j}_tokens', 0):.0f} tokens), "
                   for j in judges_of(list(data.signals)))
         + (f"replica agreement {tm.get('replicas_s', 0):.0f} s, " if "replicas_s" in tm else "")
         + (f"forking truth {tm.get('forking_s', 0):.0f} s, " if "forking_s" in tm else "")
         + f"metrics + bootstrap {tm.get('metrics_s', 0):.0f} s; compilation included"
         + (f"; times summed over the {results.bases} bases" if results.bases > 1 else "") + ").", "",
         "## Signals", "", "| signal | definition |", "|---|---|"]
  desc = describe_signals(judges=judges_of(list(data.signals)))
  for name in data.signals:
    out.append(f"| {name} | {_md(desc.get(name, ''))} |")
  out += ["", "## Results", ""] + _results_table(results, pct)
  out += ["", "*Same position*: AUROC over pairs of a decisive and a non-decisive token at the same position t "
          "only, so knowing the position alone is worth 0.5 (the `early-position` control). *Reasoning tokens*: "
          "only the tokens before the answer cue (the cue, the answer and EOS left out). *bound*: the indicator "
          f"p(token) ≤ 1 − δ = {1 - cfg.delta:.2f}, not a signal: on-policy Monte-Carlo values bound |A_t| ≤ 1 − p, so "
          "only these tokens can be decisive; every signal must beat it."]
  out += ["", "## Controls", ""] + _controls_intro(cfg, pct) + [""] + _results_table(results, pct, CONTROL_METRICS)
  out += _noise_section(results, cfg)
  if results.signed:
    out += ["", "Signed agreement with A_t (Spearman): "
            + "; ".join(f"{k} {_fmt(v)}" for k, v in results.signed.items()) + "."]
  o = results.overlap
  if o is not None:
    peak_rule = (f"Q3 + {cfg.mi_tau}·IQR" if cfg.mi_peak_rule == "outlier"
                 else f"the top {cfg.mi_peak_k} tokens by MI")
    out += ["", "## High-entropy tokens vs MI peaks", "",
            f"- Jaccard of the top-{pct}% entropy set and the top-{pct}% HSIC-MI set (both `forking_mask`, "
            f"pooled): **{_fmt(o.jaccard_top)}** {_ci(o.jaccard_top_ci)} (two independent random sets of these "
            f"sizes: {_fmt(o.jaccard_top_chance)}).",
            f"- Jaccard of the top-{pct}% entropy set and the MI-peak set (`mi_peaks`, {peak_rule} per "
            f"rollout, {100 * o.peak_fraction:.1f}% of tokens): **{_fmt(o.jaccard_peaks)}** (chance "
            f"{_fmt(o.jaccard_peaks_chance)}).",
            f"- HSIC MI inputs: {cfg.mi_inputs.describe()} (`--mi-layer {cfg.mi_layer} --mi-norm {cfg.mi_norm} "
            f"--mi-sigma {cfg.mi_sigma}`).",
            f"- Spearman(entropy, MI): pooled **{_fmt(o.spearman)}** {_ci(o.spearman_ci)}; mean within a "
            f"rollout {_fmt(o.spearman_within)}.",
            f"- **Position-controlled** (entropy falls along the response and MI rises): the top-{pct}% sets taken "
            f"within each position (ties kept) have Jaccard **{_fmt(o.jaccard_top_position)}** "
            f"{_ci(o.jaccard_top_position_ci)} against {_fmt(o.jaccard_top_position_chance)} for random sets of the "
            f"same sizes within each position; Spearman(entropy, MI) within a position (size-weighted mean over "
            f"positions) **{_fmt(o.spearman_position)}** {_ci(o.spearman_position_ci)}.",
            f"- **p-conditioned** (within deciles of the sampled token's p): Jaccard of the top-{pct}% sets "
            f"{_fmt(o.jaccard_top_p_decile)} (random sets within deciles {_fmt(o.jaccard_top_p_decile_chance)}); "
            f"Spearman(entropy, MI) within a decile {_fmt(o.spearman_p_decile)}."]
  if results.forking is not None:
    out += _forking_section(results, cfg, pct)
  out += ["", "## Summary (generated from the numbers)", ""] + _auto_summary(results, cfg.delta)
  if meta.get("png"):
    out += ["", f"![AUROCs and one rollout]({meta['png']})", "",
            "Top: AUROC of each signal for decisive tokens (all pairs, and pairs at the same position) and for "
            "fatal errors (95% bootstrap intervals). "
            "Bottom: one rollout, each row a signal scaled to [0, 1] within the rollout, with |A_t| and the "
            "fatal-error marks for comparison."]
  return "\n".join(out) + "\n"


def _results_table(results: Results, pct: int, metrics=METRICS, scores=None, titles=METRIC_TITLES,
                   decisive_rate: float | None = None) -> list[str]:
  scores = results.scores if scores is None else scores
  rate = results.decisive_rate if decisive_rate is None else decisive_rate
  out = ["| signal | " + " | ".join(_md(titles[m].format(pct=pct)) for m in metrics) + " |",
         "|---|" + "---|" * len(metrics)]
  for name, score in scores.items():
    out.append(f"| {name} | " + " | ".join(_cell(score.values[m], score.ci[m]) for m in metrics) + " |")
  random = {"spearman_abs_adv": "0", "precision_top": f"{rate:.3f}", "spearman_p_bound": "0",
            "spearman_same_position": "0", "precision_top_same_position": "base rate", "auroc_minus_bound": "n/a"}
  out.append("| *random* | " + " | ".join(random.get(m, "0.5") for m in metrics) + " |")
  return out


def _pct(x: float) -> str:
  return f"{100 * x:.1f}%" if math.isfinite(x) else "n/a"


def _bootstrap_words(results: Results) -> str:
  if results.bases > 1:
    return (f"two-level cluster bootstrap (the {results.bases} SFT bases resampled with replacement, then the prompts "
            "within each drawn base), so the intervals cover base variation")
  return "cluster bootstrap over prompts (one SFT base: the intervals do not cover base variation)"


def _controls_intro(cfg, pct: int) -> list[str]:
  return [f"Each pooled figure beside its controls. *AUROC − bound row's*: the signal's AUROC minus the bound row's "
          "on the same bootstrap replicates (above 0: it beats the bound). *Among p ≤ 1 − δ*: only the tokens "
          "whose true |A_t| can reach δ. *Within p-deciles*: pairs of tokens in the same decile of p (deciles of the "
          "pooled p; ties share a bin, so there may be fewer than ten). *Same position*: Spearman within each "
          "position t (mean over positions weighted by their tokens), and the top "
          f"{pct}% chosen within each position (precision pooled over positions)."]


def _noise_section(results: Results, cfg) -> list[str]:
  nf = results.noise
  if nf is None:
    return []
  if cfg.advantage_estimator != "difference":
    expected = noise_share(results, cfg)
    out = ["", "### Label noise floor", "",
           f"- Tokens that can be decisive (p ≤ 1 − δ): {100 * nf.can_decide:.1f}%. The Rao-Blackwell estimate keeps "
           "|A_t| ≤ 1 − p_t, so no decisive label breaks the bound and the bound-violating share measures nothing "
           "here. Its noise measure is the expected share of the decisive labels that Monte-Carlo noise alone "
           f"would produce (normal approximation with each term's smoothed standard error): **{_pct(expected)}**, "
           f"against a stated level of {100 * nf.target:.0f}%: "
           + ("n/a (no decisive label)." if not math.isfinite(expected) else "below it." if expected <= nf.target
              else "**above it: raise K.**"),
           f"- K = {nf.continuations}, fixed in this study."]
    return out + _replica_lines(nf, results)
  out = ["", "### Label noise floor", "",
         f"- Tokens that can be decisive (p ≤ 1 − δ): {100 * nf.can_decide:.1f}%. Decisive labels on tokens with "
         f"p > 1 − δ are provably Monte-Carlo noise (their true |A_t| ≤ 1 − p < δ): **{_pct(nf.violating)}** "
         f"{_ci(tuple(100 * c for c in nf.violating_ci))} of the decisive labels ({100 * nf.violating_tokens:.2f}% of "
         f"all tokens), against a stated level of {100 * nf.target:.0f}%: "
         + ("n/a (no decisive label)." if not math.isfinite(nf.violating) else "below it." if nf.violating <= nf.target
            else "**above it: raise K (`--continuations auto`).**")]
  if nf.continuation_steps:
    out.append(f"- K chosen by `--continuations auto` (double K until the share is at most {100 * nf.target:.0f}% "
               f"or K would pass {cfg.max_continuations}): "
               + _search_text(nf.continuation_steps, results.bases) + f"; used K = {nf.continuations}.")
  else:
    out.append(f"- K = {nf.continuations}, fixed in this study (`--continuations auto` chooses K on the chain "
               f"studies of every base, doubling it until each base's share is at most {100 * nf.target:.0f}%, and "
               "the other studies reuse it).")
  return out + _replica_lines(nf, results)


def noise_share(results: Results, cfg) -> float:
  """The share of the decisive labels that are noise: the bound-violating share for the difference estimator (a
  lower bound, exact for the labels it can see), the normal-approximation expectation for the Rao-Blackwell one
  (which never breaks the bound)."""
  if cfg.advantage_estimator == "difference":
    return results.noise.violating if results.noise else math.nan
  return results.noise_positive_rate / results.decisive_rate if results.decisive_rate > 0 else math.nan


def estimator_text(cfg) -> str:
  """How the study's A_t was estimated, in a phrase."""
  if cfg.advantage_estimator == "difference":
    return "the difference of the two prefix values"
  return "Rao-Blackwellised over the sampled token's known probability, (1 − p_t)(Q̂ − V̂₋ₐ)"


def _replica_lines(nf, results: Results) -> list[str]:
  if not nf.replica:
    return []
  on = " of base 0" if results.bases > 1 else ""
  return [f"- Monte-Carlo replica agreement at K = {nf.continuations} (the mc judge's step labels from two "
          f"independent replicas on the rollouts{on}, `tcred.judges.mc.replica_agreement`): "
          + "; ".join(f"{rule} labels {100 * a.labels:.1f}%, first error {100 * a.first_error:.1f}% "
                      f"({a.steps} steps)" for rule, a in nf.replica.items()) + "."]


def _forking_section(results: Results, cfg, pct: int) -> list[str]:
  f = results.forking
  out = ["", "## Forking ground truth at positions", "",
         f"At {f.positions} positions sampled uniformly ({cfg.fork_positions} per rollout), the {f.alternatives} most "
         f"probable next tokens are each appended to the prefix and continued K = {f.continuations} times "
         f"({f.continued} distinct prefix + token rows continued, {f.tokens} tokens through the policy); a stop "
         "token's value is the prefix's reward. A position is *decisive* when the alternatives' values spread "
         f"(max − min) by at least δ = {cfg.delta}: {100 * f.decisive_rate:.1f}% of the positions (mean spread "
         f"{_fmt(f.mean_spread)}). This truth is about where the trajectory can branch, and is not bounded by "
         "1 − p of the sampled token. Each row scores a position by its value at the sampled token there.", ""]
  if f.scores:
    out += _results_table(results, pct, FORKING_METRICS, f.scores, FORKING_TITLES, f.decisive_rate)
    out += ["", "Controls at the positions:", ""]
    out += _results_table(results, pct, CONTROL_METRICS, f.scores, FORKING_TITLES, f.decisive_rate)
    beat = [n for n, s in f.scores.items() if n != BOUND_ROW and math.isfinite(s.ci["auroc_minus_bound"][0])
            and s.ci["auroc_minus_bound"][0] > 0]
    found = [n for n, s in f.scores.items() if n != BOUND_ROW and math.isfinite(s.ci["auroc_decisive"][0])
             and s.ci["auroc_decisive"][0] > 0.5]
    out += ["", f"- Rows whose AUROC for decisive positions has its 95% CI above 0.5: {', '.join(found) or 'none'}.",
            f"- Rows whose AUROC for decisive positions beats the bound row (paired 95% CI of the difference "
            f"above 0): {', '.join(beat) or 'none'}."]
    e = f.scores.get("entropy")
    if e is not None:
      out.append(f"- Entropy (the forking-token claim): AUROC {_cell(e.values['auroc_decisive'], e.ci['auroc_decisive'])}, "
                 f"same position {_cell(e.values['auroc_decisive_same_position'], e.ci['auroc_decisive_same_position'])}, "
                 f"among p ≤ 1 − δ {_cell(e.values['auroc_p_bound'], e.ci['auroc_p_bound'])}.")
  return out


def _tree_shape(data: StudyData) -> str:
  t = data.config.tree
  where = "at the task's step boundaries" if t.fork_at == "step" else f"at its top-{t.forks} tokens by {t.fork_at}"
  return (f"M = {t.trees} trees per prompt, each a chain forked {t.forks}× {where}, {t.branch} continuation per "
          f"fork, {t.rounds} round; `TreeConfig(enabled=True, trees={t.trees}, rounds={t.rounds}, forks={t.forks}, "
          f"branch={t.branch}, fork_at={t.fork_at!r})`")


def tree_support(data: StudyData, name: str = "tree-sibling-gap") -> float:
  """Share of the valid leaf tokens where the tree signal `name` is not 0."""
  mask = data.rollout.mask
  return float((data.signals[name][mask] != 0).mean()) if mask.any() else math.nan


def tree_section(data: StudyData, results: Results, png: str | None = None) -> str:
  """The report's tree section: the same study on the leaves of tree rollouts, with the tree signals."""
  cfg = _used_config(data)
  n, g, t = data.rollout.tokens.shape
  pct = round(100 * cfg.top_fraction)
  lengths = data.rollout.mask.sum(-1)
  tm = results.timings
  generated = sum(a.num_packed for a in data.trees.arrays)
  out = ["", "## Tree rollouts: the tree sibling gap", "",
         "The same study with each prompt's G rollouts sampled as the leaves of a tree (EPTree-style, DESIGN §4.5) "
         "instead of independent chains, so that a tree signal exists: a tree compares sibling subtrees for free. "
         "The ground truth (Monte-Carlo A_t from K continuations of every distinct prefix, and the oracle's fatal "
         "errors) and every other signal are computed by the same functions on the same tree leaves, so the table "
         "compares like with like (it is not comparable cell by cell with the chain table above: other rollouts).",
         "",
         "- **Tree signals**: with V(s) the mean reward of the leaves below segment s (`node_values`), "
         "`tree-sibling-gap` scores a leaf token |A(s)| of its segment s, A(s) = [(V(s) − V(root)) + "
         "(V(s) − V(parent s))] / sqrt(|leaves(s)|) (`treerl_segment_advantages`, TreeRL's training advantage), "
         "mapped to tokens with `TreeArrays.token_node`; a segment with its parent's and its root's value (a "
         "trunk before the first fork, or a fork whose sibling subtrees score alike) gets 0, and a segment with its "
         "parent's value but not its root's keeps the root term |V(s) − V(root)|/sqrt(|leaves(s)|). "
         "`tree-fork-gap` scores |V(s) − V(parent s)| on the first token of each segment only (where siblings "
         "diverge) and 0 elsewhere.",
         f"- **Trees**: {n} prompts (the same held-out prompts) × {g} leaves: {_tree_shape(data)}. "
         f"{generated} tokens generated for {results.tokens} leaf tokens ({results.tokens / max(generated, 1):.2f} "
         f"leaf tokens per generated token); mean reward {_fmt(results.reward_mean)}; mean length "
         f"{lengths.mean():.1f} tokens. `tree-sibling-gap` is non-zero on "
         f"{100 * tree_support(data):.1f}% of the leaf tokens, `tree-fork-gap` on "
         f"{100 * tree_support(data, 'tree-fork-gap'):.1f}%.",
         f"- **Ground truth**: K = {cfg.continuations} continuations of {data.truth.unique_prefixes} distinct "
         f"prefixes (shared prefixes continued once). Decisive (|A_t| ≥ δ = {cfg.delta}): "
         f"{100 * results.decisive_rate:.1f}% of leaf tokens (MC noise alone: about "
         f"{100 * results.noise_positive_rate:.1f}%: {_noise_reading(results)}); fatal errors "
         f"{100 * results.fatal_rate:.1f}%. Mean plug-in SE of A_t {results.mean_advantage_se:.3f}.",
         f"- **Metrics** as above, pooled over every valid token of every leaf (a prefix shared by k leaves counts "
         f"k times, with one signal value and one A_t); {_bootstrap_words(results)} ({cfg.bootstrap} replicates).",
         f"- **Wall time** of this section: rollouts {tm.get('rollouts_s', 0):.0f} s, policy forward + extras "
         f"{tm.get('signals_forward_s', 0):.0f} s, Monte-Carlo continuations + oracle "
         f"{tm.get('ground_truth_s', 0):.0f} s, metrics + bootstrap {tm.get('metrics_s', 0):.0f} s (included in the "
         "end-to-end time above).", "",
         "### Results on tree leaves", ""] + _results_table(results, pct)
  out += ["", "Controls on tree leaves:", ""] + _results_table(results, pct, CONTROL_METRICS) + _noise_section(
      results, cfg)
  if results.signed:
    out += ["", "Signed agreement with A_t (Spearman): "
            + "; ".join(f"{k} {_fmt(v)}" for k, v in results.signed.items()) + "."]
  o = results.overlap
  if o is not None:
    out += ["", f"Entropy vs MI on tree leaves: Jaccard of the top-{pct}% sets {_fmt(o.jaccard_top)} (chance "
            f"{_fmt(o.jaccard_top_chance)}), Spearman {_fmt(o.spearman)}; within positions: Jaccard "
            f"{_fmt(o.jaccard_top_position)} (random sets {_fmt(o.jaccard_top_position_chance)}), Spearman "
            f"{_fmt(o.spearman_position)}."]
  out += ["", "### Summary of the tree section (generated from the numbers)", ""] + _auto_summary(results, cfg.delta)
  if png:
    out += ["", f"![AUROCs on tree leaves and one leaf]({png})", "",
            "As above, on the tree leaves (the drawn leaf's rows include the tree signals)."]
  return "\n".join(out) + "\n"


def _noise_reading(results: Results) -> str:
  ratio = results.noise_positive_rate / results.decisive_rate if results.decisive_rate > 0 else math.inf
  if ratio < 0.2:
    return "the labels are mostly signal."
  if ratio < 0.5:
    return "a sizeable minority of the decisive labels may be noise."
  return "**the decisive labels are dominated by Monte-Carlo noise; raise K.**"


def _md(text: str) -> str:
  """Text for a Markdown table cell (pipes escaped)."""
  return text.replace("|", "\\|")


def _ci(ci: tuple[float, float]) -> str:
  return f"[{ci[0]:.2f}, {ci[1]:.2f}]" if all(math.isfinite(c) for c in ci) else ""


def plot(data: StudyData, results: Results, path: str | pathlib.Path) -> tuple[int, int]:
  """Writes the PNG (AUROC bars + one rollout's signals over its characters); returns the rollout drawn."""
  import matplotlib

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  names = list(results.scores)
  i, j = example_rollout(data, data.config.delta)
  length = int(data.rollout.mask[i, j].sum())
  fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(max(9.0, 0.42 * length + 3), 8.5),
                                 gridspec_kw={"height_ratios": [1, 1.25]})
  x = np.arange(len(names))
  for off, metric, label in ((-0.27, "auroc_decisive", f"|A_t| ≥ {data.config.delta}"),
                             (0.0, "auroc_decisive_same_position", f"|A_t| ≥ {data.config.delta}, same position"),
                             (0.27, "auroc_fatal", "fatal error")):
    vals = np.array([results.scores[n].values[metric] for n in names], float)
    cis = np.array([results.scores[n].ci[metric] for n in names], float)
    err = np.vstack([vals - cis[:, 0], cis[:, 1] - vals])
    err = np.where(np.isfinite(err), np.maximum(err, 0), 0)
    ax1.bar(x + off, np.nan_to_num(vals), width=0.27, yerr=err, capsize=2, label=label)
  ax1.axhline(0.5, color="k", lw=0.8, ls="--")
  ax1.set_xticks(x, names, rotation=20)
  ax1.set_ylim(0, 1.18)
  ax1.set_ylabel("AUROC")
  ax1.set_title(f"{data.task_name}: which signals find decisive tokens? (N={data.config.prompts}, "
                f"G={data.config.rollouts}" + (" tree leaves" if data.trees is not None else "")
                + f", K={data.config.continuations})")
  ax1.legend(loc="upper center", ncol=3, fontsize=9, frameon=False)

  rows = [("|A_t|", np.abs(data.truth.advantages[i, j, :length])),
          ("fatal", data.truth.fatal[i, j, :length].astype(float))]
  for n in data.signals:
    rows.append((n, data.signals[n][i, j, :length]))
  mat = []
  for _, v in rows:
    v = np.asarray(v, float)
    lo, hi = np.min(v), np.max(v)
    mat.append((v - lo) / (hi - lo) if hi > lo else np.zeros_like(v))
  ax2.imshow(np.array(mat), aspect="auto", cmap="viridis", vmin=0, vmax=1)
  tk = data.tokenizer
  chars = [tk.decode([int(c)]) or ("⏎" if int(c) in tk.eos_ids else "·")
           for c in data.rollout.tokens[i, j, :length]]
  ax2.set_xticks(np.arange(length), chars, fontsize=11, family="monospace")
  ax2.set_yticks(np.arange(len(rows)), [r[0] for r in rows])
  adv = data.truth.advantages[i, j, :length]
  for tpos in range(length):
    bright = mat[0][tpos] > 0.6
    ax2.text(tpos, 0, f"{adv[tpos]:+.2f}".replace("+0.00", "0").replace("-0.00", "0"), ha="center",
             va="center", fontsize=6, color="k" if bright else "w")
  prompt = data.problems[i].prompt
  ax2.set_title(f"prompt {prompt!r}, reward {data.rollout.rewards[i, j]:.0f}; row-wise min–max scaled "
                f"(⏎ = EOS; numbers: A_t)")
  fig.tight_layout()
  with atomic_path(path) as tmp:
    fig.savefig(tmp, dpi=110)
  plt.close(fig)
  return i, j

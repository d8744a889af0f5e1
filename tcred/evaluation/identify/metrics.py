"""The study's metrics: how well each row's scores pick out the decisive tokens and the fatal errors
(`evaluate_study`, plain NumPy functions of `tcred.evaluation.identify_metrics` on every valid response
token of the study, pooled), and whether the high-entropy tokens and the MI peaks coincide.

Shapes: N prompts, G rollouts per prompt, T the response budget.
"""

from __future__ import annotations

import math
import time
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from tcred.credit.extras import cue_index
from tcred.evaluation import identify_metrics as im
from tcred.evaluation.identify.bootstrap import metric_cis, prompt_clusters
from tcred.evaluation.identify.config import _NS_BOOTSTRAP
from tcred.evaluation.identify.forking import ForkingTruth
from tcred.evaluation.identify.rollouts import Rollout
from tcred.evaluation.identify.study import StudyData
from tcred.signals.entropy import forking_mask
from tcred.signals.information import mi_peaks


METRICS = ("auroc_decisive", "auroc_decisive_same_position", "auroc_decisive_reasoning", "spearman_abs_adv",
           "precision_top", "auroc_fatal")
# The controls beside every pooled figure (DESIGN §5): the difference from the bound row (paired: the same
# bootstrap replicates), the p-conditioned versions (tokens with p ≤ 1 − δ, the only ones whose true |A_t|
# can reach δ; and within p-deciles) and the position-controlled ones (within a position).
CONTROL_METRICS = ("auroc_minus_bound", "auroc_p_bound", "auroc_p_decile", "spearman_p_bound",
                   "spearman_same_position", "precision_top_same_position")
BOUND_ROW = "bound"  # the indicator p(token) ≤ 1 − δ: a baseline row, not a signal


class SignalScore(NamedTuple):
  """One signal's metrics (`METRICS` then `CONTROL_METRICS`), each a point estimate with a (low, high) CI."""

  values: dict[str, float]
  ci: dict[str, tuple[float, float]]


class Overlap(NamedTuple):
  """High-entropy set vs MI sets (all over the pooled valid tokens)."""

  jaccard_top: float  # top-fraction by entropy vs top-fraction by MI (forking_mask on each, pooled)
  jaccard_top_chance: float
  jaccard_peaks: float  # top-fraction by entropy vs MI peaks (mi_peaks per rollout, Tukey fence)
  jaccard_peaks_chance: float
  peak_fraction: float  # share of tokens that are MI peaks
  spearman: float  # entropy vs MI, pooled
  spearman_within: float  # mean over rollouts (≥ 3 tokens) of the within-rollout Spearman
  spearman_ci: tuple[float, float]
  jaccard_top_ci: tuple[float, float]
  # Position-controlled: the top fraction within each position, and the within-position Spearman.
  jaccard_top_position: float = math.nan
  jaccard_top_position_chance: float = math.nan  # random sets of the same sizes within each position
  jaccard_top_position_ci: tuple[float, float] = (math.nan, math.nan)
  spearman_position: float = math.nan
  spearman_position_ci: tuple[float, float] = (math.nan, math.nan)
  # p-conditioned: the same within deciles of the sampled token's p (point estimates).
  jaccard_top_p_decile: float = math.nan
  jaccard_top_p_decile_chance: float = math.nan
  spearman_p_decile: float = math.nan


class NoiseFloor(NamedTuple):
  """How much of the decisive labelling is provably Monte-Carlo noise (DESIGN §5's controls).

  On-policy values bound |A_t| ≤ 1 − p(token) (exact for true values), so a decisive label on a token
  with p > 1 − δ is noise.

  Attributes:
    can_decide: share of tokens with p ≤ 1 − δ (the bound row's positives).
    violating: share of the decisive labels that sit on tokens with p > 1 − δ (provably noise).
    violating_tokens: the same as a share of all tokens.
    violating_ci: cluster-bootstrap CI of `violating`.
    target: the level `violating` should stay below (`IdentifyConfig.noise_target`).
    continuations: the K the ground truth used (chosen by `--continuations auto`, or given).
    continuation_steps: `[(K, violating share)]` of each K tried by `--continuations auto` (else one entry).
    replica: `{label rule: ReplicaAgreement}` of the mc judge's labels from two independent replicas of K
      continuations each on the study's rollouts (`tcred.judges.mc.replica_agreement`), or {} when skipped.
  """

  can_decide: float
  violating: float
  violating_tokens: float
  violating_ci: tuple[float, float]
  target: float
  continuations: int
  continuation_steps: tuple = ()
  replica: dict = {}


class Results(NamedTuple):
  scores: dict[str, SignalScore]
  overlap: Overlap | None
  decisive_rate: float
  fatal_rate: float
  tokens: int
  mean_advantage_se: float
  signed: dict[str, float]  # Spearman of signed signals with signed A_t
  noise_positive_rate: float  # expected share of |A| ≥ δ from MC noise alone (normal approx.)
  reward_mean: float
  timings: dict[str, float]
  noise: NoiseFloor | None = None
  bases: int = 1  # SFT bases pooled (the CIs resample bases, then prompts, when > 1)
  forking: Any = None  # `forking.ForkingResults` of the positions' ground truth, or None


def bound_indicator(logp: np.ndarray, delta: float) -> np.ndarray:
  """The bound row: `1.0` where the sampled token's p = exp(logp) ≤ 1 − δ, else `0.0` (any shape).

  Rollouts and Monte-Carlo continuations come from the same policy, so `|A_t| ≤ 1 − p(token)` for the
  true values: only these tokens can be decisive at δ.
  """
  return (np.exp(np.asarray(logp, np.float64)) <= 1.0 - delta).astype(np.float64)


def control_metrics(score: np.ndarray, decisive: np.ndarray, magnitude: np.ndarray, can_decide: np.ndarray,
                    p_decile: np.ndarray, position: np.ndarray, frac: float) -> dict[str, float]:
  """The controls of one row on flat `[n]` token arrays (`CONTROL_METRICS` but `auroc_minus_bound`, which
  needs the bound row): AUROC and Spearman with `magnitude` among tokens that `can_decide`, AUROC within
  `p_decile` strata, Spearman and top-`frac` precision within `position` strata."""
  cd = can_decide
  return {"auroc_p_bound": im.auroc(score[cd], decisive[cd]),
          "auroc_p_decile": im.stratified_auroc(score, decisive, p_decile),
          "spearman_p_bound": im.spearman(score[cd], magnitude[cd]),
          "spearman_same_position": im.stratified_spearman(score, magnitude, position),
          "precision_top_same_position": im.stratified_top_precision(score, decisive, position, frac)}


def reasoning_mask(cue_id: int, rollout: Rollout) -> np.ndarray:
  """`[N, G, T]` bool: valid tokens before the first answer cue (no cue: all but the last token)."""
  cue = np.asarray(cue_index(jnp.asarray(rollout.tokens), jnp.asarray(rollout.mask),
                             cue_id))  # [N, G]
  return rollout.mask & (np.arange(rollout.mask.shape[-1]) < cue[..., None])


def _flat_valid(data: StudyData):
  """`flat(x)`: the valid tokens of an `[N, G, T]` array, pooled; and the bootstrap clusters of that pool
  (prompts; bases then prompts when the study pools several SFT bases)."""
  mask = data.rollout.mask
  flat = lambda x: np.asarray(x)[mask]
  return flat, prompt_clusters(mask, data.base if data.bases > 1 else None)


def _normal_two_sided_tail(z: np.ndarray) -> np.ndarray:
  """P(|Z| ≥ z) for a standard normal, via math.erfc."""
  return np.vectorize(lambda v: math.erfc(v / math.sqrt(2.0)))(z)


def evaluate_study(data: StudyData) -> Results:
  """Every metric of every row (the bound row first), with cluster-bootstrap CIs over prompts (bases, then
  prompts, for a study pooled over several bases), the label noise floor, and the entropy–MI overlap."""
  t0 = time.time()
  cfg = data.config
  flat, clusters = _flat_valid(data)
  abs_adv = np.abs(flat(data.truth.advantages))
  decisive = abs_adv >= cfg.delta
  fatal = flat(data.truth.fatal)
  reasoning = flat(reasoning_mask(data.tokenizer.cue_id(data.task_answer_cue), data.rollout))
  position = flat(np.broadcast_to(np.arange(data.rollout.mask.shape[-1]), data.rollout.mask.shape))
  logp = flat(data.policy["logp"])
  bound = bound_indicator(logp, cfg.delta)
  can_decide = bound > 0
  p_decile = im.quantile_strata(np.exp(logp), 10)
  frac = cfg.top_fraction
  rows = {BOUND_ROW: bound, **{name: flat(signal) for name, signal in data.signals.items()}}

  def metrics_of(s: np.ndarray, idx: np.ndarray) -> dict[str, float]:
    s = s[idx]
    out = {"auroc_decisive": im.auroc(s, decisive[idx]), "spearman_abs_adv": im.spearman(s, abs_adv[idx]),
           "precision_top": im.top_fraction_precision(s, decisive[idx], frac),
           "auroc_fatal": im.auroc(s, fatal[idx]),
           "auroc_decisive_reasoning": im.auroc(s[reasoning[idx]], decisive[idx][reasoning[idx]]),
           "auroc_decisive_same_position": im.stratified_auroc(s, decisive[idx], position[idx])}
    out.update(control_metrics(s, decisive[idx], abs_adv[idx], can_decide[idx], p_decile[idx], position[idx], frac))
    return out

  def all_metrics(idx: np.ndarray) -> dict[tuple[str, str], float]:
    out = {}
    for name, s in rows.items():
      for m, v in metrics_of(s, idx).items():
        out[(name, m)] = v
    for name in rows:  # paired with the bound row on the same tokens
      out[(name, "auroc_minus_bound")] = out[(name, "auroc_decisive")] - out[(BOUND_ROW, "auroc_decisive")]
    out[("noise", "violating")] = im.violating_share(decisive[idx], can_decide[idx])
    return out

  everything = np.arange(abs_adv.shape[0])
  rng = np.random.default_rng([_NS_BOOTSTRAP, cfg.seed])
  point = all_metrics(everything)
  ci = metric_cis(all_metrics, clusters, list(point), reps=cfg.bootstrap, rng=rng)
  scores = {name: SignalScore({m: point[(name, m)] for m in METRICS + CONTROL_METRICS},
                              {m: ci[(name, m)] for m in METRICS + CONTROL_METRICS}) for name in rows}

  overlap = None
  if "entropy" in data.signals and "hsic-mi" in data.signals:
    overlap = entropy_mi_overlap(data, rng)

  signed = {}
  adv = flat(data.truth.advantages)
  if "info_gain" in data.extras:
    signed["info-gain (signed)"] = im.spearman(flat(data.extras["info_gain"]), adv)
  o = data.truth.oracle
  signed["oracle Δ (signed)"] = im.spearman(flat(np.nan_to_num(o[..., 1:] - o[..., :-1])), adv)
  se = flat(data.truth.advantage_se)
  # A token with true A = 0 is labelled decisive with probability P(|Z| ≥ δ / SE); averaged over tokens,
  # with the smoothed SE (the plug-in SE is 0 whenever V̂ is 0 or 1).
  se_smooth = flat(data.truth.advantage_se_smoothed)
  z = np.where(se_smooth > 0, cfg.delta / np.maximum(se_smooth, 1e-12), np.inf)
  noise_rate = float(np.mean(_normal_two_sided_tail(z))) if z.size else math.nan
  noise = NoiseFloor(can_decide=float(can_decide.mean()) if can_decide.size else math.nan,
                     violating=point[("noise", "violating")],
                     violating_tokens=float((decisive & ~can_decide).mean()) if decisive.size else math.nan,
                     violating_ci=ci[("noise", "violating")], target=cfg.noise_target,
                     continuations=data.truth.continuations or cfg.continuations,
                     continuation_steps=tuple(data.truth.continuation_steps), replica=dict(data.replica or {}))
  forking = None
  if data.forking is not None:
    forking = evaluate_forking(data, rng)
  timings = dict(data.timings)
  timings["metrics_s"] = time.time() - t0
  return Results(scores, overlap, float(decisive.mean()), float(fatal.mean()), int(abs_adv.shape[0]),
                 float(se.mean()), signed, noise_rate, float(data.rollout.rewards.mean()), timings, noise,
                 data.bases, forking)


def entropy_mi_overlap(data: StudyData, rng: np.random.Generator) -> Overlap:
  """Do the high-entropy tokens and the MI peaks coincide? (DESIGN §5's open question)

  Sets use the training code's selectors: `forking_mask` (top fraction, pooled over the study,
  ties kept) on entropy and on MI, and `mi_peaks` (per rollout, the configured rule) on MI.
  """
  cfg = data.config
  mask = data.rollout.mask
  ent, mi = data.signals["entropy"], data.signals["hsic-mi"]
  top_ent = np.asarray(forking_mask(ent, mask, rho=cfg.top_fraction))
  top_mi = np.asarray(forking_mask(mi, mask, rho=cfg.top_fraction))
  n, g, t = mask.shape
  peaks = np.asarray(jax.vmap(lambda m, k: mi_peaks(m, k, tau=cfg.mi_tau, rule=cfg.mi_peak_rule, k=cfg.mi_peak_k))(
      jnp.asarray(mi.reshape(n * g, t), jnp.float32), jnp.asarray(mask.reshape(n * g, t)))).reshape(mask.shape)
  flat, clusters = _flat_valid(data)
  a, b, c = flat(top_ent), flat(top_mi), flat(peaks)
  e, m = flat(ent), flat(mi)
  total = a.shape[0]
  within = []
  for i in range(n):
    for j in range(g):
      valid = mask[i, j]
      if valid.sum() >= 3:
        r = im.spearman(ent[i, j][valid], mi[i, j][valid])
        if math.isfinite(r):
          within.append(r)
  # Position-controlled: the top fraction within each position (ties kept), the Spearman within positions.
  position = flat(np.broadcast_to(np.arange(t), mask.shape))
  top = lambda x, idx: im.stratified_top_mask(x[idx], position[idx], cfg.top_fraction)
  pos_jaccard = lambda idx: im.jaccard(top(e, idx), top(m, idx))
  pos_spearman = lambda idx: im.stratified_spearman(e[idx], m[idx], position[idx])
  everything = np.arange(total)
  p_decile = im.quantile_strata(np.exp(flat(data.policy["logp"])), 10)
  top_e_p, top_m_p = (im.stratified_top_mask(x, p_decile, cfg.top_fraction) for x in (e, m))
  sp_ci = jac_ci = pos_sp_ci = pos_jac_ci = (math.nan, math.nan)
  if cfg.bootstrap:
    sp_ci = im.cluster_bootstrap_ci(lambda idx: im.spearman(e[idx], m[idx]), clusters, reps=cfg.bootstrap, rng=rng)
    jac_ci = im.cluster_bootstrap_ci(lambda idx: im.jaccard(a[idx], b[idx]), clusters, reps=cfg.bootstrap, rng=rng)
    pos_sp_ci = im.cluster_bootstrap_ci(pos_spearman, clusters, reps=cfg.bootstrap, rng=rng)
    pos_jac_ci = im.cluster_bootstrap_ci(pos_jaccard, clusters, reps=cfg.bootstrap, rng=rng)
  return Overlap(
      jaccard_top=im.jaccard(a, b), jaccard_top_chance=im.chance_jaccard(int(a.sum()), int(b.sum()), total),
      jaccard_peaks=im.jaccard(a, c), jaccard_peaks_chance=im.chance_jaccard(int(a.sum()), int(c.sum()), total),
      peak_fraction=float(c.mean()) if total else math.nan, spearman=im.spearman(e, m),
      spearman_within=float(np.mean(within)) if within else math.nan, spearman_ci=sp_ci, jaccard_top_ci=jac_ci,
      jaccard_top_position=pos_jaccard(everything),
      jaccard_top_position_chance=im.stratified_chance_jaccard(top(e, everything), top(m, everything), position),
      jaccard_top_position_ci=pos_jac_ci, spearman_position=pos_spearman(everything), spearman_position_ci=pos_sp_ci,
      jaccard_top_p_decile=im.jaccard(top_e_p, top_m_p),
      jaccard_top_p_decile_chance=im.stratified_chance_jaccard(top_e_p, top_m_p, p_decile),
      spearman_p_decile=im.stratified_spearman(e, m, p_decile))


def describe_signals() -> dict[str, str]:
  return {name: s.description for name, s in _SIGNALS.items()}


# --- The forking ground truth's rows (positions where the trajectory can branch, issue 23 item 4) ---------------

FORKING_METRICS = ("auroc_decisive", "auroc_decisive_same_position", "spearman_abs_adv", "precision_top")


class ForkingResults(NamedTuple):
  """Every row's metrics at the sampled positions (`FORKING_METRICS` then `metrics.CONTROL_METRICS`; the
  `abs_adv` metrics read the spread), and the positions' summary."""

  scores: dict  # row -> metrics.SignalScore
  positions: int
  decisive_rate: float
  mean_spread: float
  alternatives: int
  continuations: int
  continued: int
  tokens: int


def evaluate_forking(data, rng: np.random.Generator) -> ForkingResults:
  """The rows of `data` (a `StudyData` with `forking`) scored at the forking positions, with the controls
  (bound row, p ≤ 1 − δ, p-deciles, same position) and cluster-bootstrap CIs (bases, then prompts)."""
  f: ForkingTruth = data.forking
  cfg = data.config
  at = (f.prompt, f.rollout, f.position)
  spread = f.spread
  decisive = spread >= cfg.delta
  logp = data.policy["logp"][at]
  bound = bound_indicator(logp, cfg.delta)
  can_decide = bound > 0
  p_decile = im.quantile_strata(np.exp(logp), 10)
  position = f.position
  rows = {BOUND_ROW: bound, **{name: np.asarray(s)[at] for name, s in data.signals.items()}}
  # Clusters: the sampled positions of each prompt row (bases, then prompts, for a pooled study).
  one_hot = np.zeros((data.rollout.mask.shape[0], 1, max(len(position), 1)), bool)
  one_hot[f.prompt, 0, np.arange(len(position))] = True
  clusters = prompt_clusters(one_hot, data.base if data.bases > 1 else None)
  frac = cfg.top_fraction

  def all_metrics(idx: np.ndarray) -> dict:
    out = {}
    d, m, pos = decisive[idx], spread[idx], position[idx]
    for name, s in rows.items():
      s = s[idx]
      out[(name, "auroc_decisive")] = im.auroc(s, d)
      out[(name, "auroc_decisive_same_position")] = im.stratified_auroc(s, d, pos)
      out[(name, "spearman_abs_adv")] = im.spearman(s, m)
      out[(name, "precision_top")] = im.top_fraction_precision(s, d, frac)
      for key, v in control_metrics(s, d, m, can_decide[idx], p_decile[idx], pos, frac).items():
        out[(name, key)] = v
    for name in rows:
      out[(name, "auroc_minus_bound")] = out[(name, "auroc_decisive")] - out[(BOUND_ROW, "auroc_decisive")]
    return out

  if len(position) == 0:
    return ForkingResults({}, 0, math.nan, math.nan, cfg.alternatives, f.continuations, f.continued, f.tokens)
  # `one_hot` flattens in (prompt, position-index) order: positions sorted by prompt row, which they are.
  order = np.argsort(f.prompt, kind="stable")
  if not (order == np.arange(len(order))).all():
    raise ValueError("forking positions must be sorted by prompt row")
  point = all_metrics(np.arange(len(position)))
  ci = metric_cis(all_metrics, clusters, list(point), reps=cfg.bootstrap, rng=rng)
  names = FORKING_METRICS + CONTROL_METRICS
  scores = {name: SignalScore({m: point[(name, m)] for m in names}, {m: ci[(name, m)] for m in names})
            for name in rows}
  return ForkingResults(scores, len(position), float(decisive.mean()), float(spread.mean()), cfg.alternatives,
                        f.continuations, f.continued, f.tokens)

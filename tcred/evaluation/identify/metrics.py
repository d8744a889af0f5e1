"""The study's metrics: how well each row's scores pick out the decisive tokens and the fatal errors
(`evaluate_study`, plain NumPy functions of `tcred.evaluation.identify_metrics` on every valid response
token of the study, pooled), and whether the high-entropy tokens and the MI peaks coincide.

Shapes: N prompts, G rollouts per prompt, T the response budget.
"""

from __future__ import annotations

import math
import time
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from tcred.credit.extras import cue_index
from tcred.evaluation import identify_metrics as im
from tcred.evaluation.identify.bootstrap import metric_cis, prompt_clusters
from tcred.evaluation.identify.config import _NS_BOOTSTRAP
from tcred.evaluation.identify.rollouts import Rollout
from tcred.evaluation.identify.study import StudyData
from tcred.signals.entropy import forking_mask
from tcred.signals.information import mi_peaks


METRICS = ("auroc_decisive", "auroc_decisive_same_position", "auroc_decisive_reasoning", "spearman_abs_adv",
           "precision_top", "auroc_fatal")


class SignalScore(NamedTuple):
  """One signal's metrics (`METRICS` order), each a point estimate with a (low, high) CI."""

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


def reasoning_mask(cue_id: int, rollout: Rollout) -> np.ndarray:
  """`[N, G, T]` bool: valid tokens before the first answer cue (no cue: all but the last token)."""
  cue = np.asarray(cue_index(jnp.asarray(rollout.tokens), jnp.asarray(rollout.mask),
                             cue_id))  # [N, G]
  return rollout.mask & (np.arange(rollout.mask.shape[-1]) < cue[..., None])


def _flat_valid(data: StudyData):
  """`flat(x)`: the valid tokens of an `[N, G, T]` array, pooled; and each prompt's positions in that pool."""
  mask = data.rollout.mask
  flat = lambda x: np.asarray(x)[mask]
  return flat, prompt_clusters(mask)


def _normal_two_sided_tail(z: np.ndarray) -> np.ndarray:
  """P(|Z| ≥ z) for a standard normal, via math.erfc."""
  return np.vectorize(lambda v: math.erfc(v / math.sqrt(2.0)))(z)


def evaluate_study(data: StudyData) -> Results:
  """Every metric of every signal, with cluster-bootstrap CIs over prompts, and the entropy–MI overlap."""
  t0 = time.time()
  cfg = data.config
  flat, clusters = _flat_valid(data)
  abs_adv = np.abs(flat(data.truth.advantages))
  decisive = abs_adv >= cfg.delta
  fatal = flat(data.truth.fatal)
  reasoning = flat(reasoning_mask(data.tokenizer.cue_id(data.task_answer_cue), data.rollout))
  position = flat(np.broadcast_to(np.arange(data.rollout.mask.shape[-1]), data.rollout.mask.shape))
  frac = cfg.top_fraction

  def metrics_of(score: np.ndarray, idx: np.ndarray) -> dict[str, float]:
    s = score[idx]
    return {"auroc_decisive": im.auroc(s, decisive[idx]), "spearman_abs_adv": im.spearman(s, abs_adv[idx]),
            "precision_top": im.top_fraction_precision(s, decisive[idx], frac),
            "auroc_fatal": im.auroc(s, fatal[idx]),
            "auroc_decisive_reasoning": im.auroc(s[reasoning[idx]], decisive[idx][reasoning[idx]]),
            "auroc_decisive_same_position": im.stratified_auroc(s, decisive[idx], position[idx])}

  everything = np.arange(abs_adv.shape[0])
  rng = np.random.default_rng([_NS_BOOTSTRAP, cfg.seed])
  scores = {}
  for name, signal in data.signals.items():
    s = flat(signal)
    point = metrics_of(s, everything)
    ci = metric_cis(lambda idx: metrics_of(s, idx), clusters, METRICS, reps=cfg.bootstrap, rng=rng)
    scores[name] = SignalScore(point, ci)

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
  timings = dict(data.timings)
  timings["metrics_s"] = time.time() - t0
  return Results(scores, overlap, float(decisive.mean()), float(fatal.mean()), int(abs_adv.shape[0]),
                 float(se.mean()), signed, noise_rate, float(data.rollout.rewards.mean()), timings)


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
  sp_ci = jac_ci = (math.nan, math.nan)
  if cfg.bootstrap:
    sp_ci = im.cluster_bootstrap_ci(lambda idx: im.spearman(e[idx], m[idx]), clusters, reps=cfg.bootstrap, rng=rng)
    jac_ci = im.cluster_bootstrap_ci(lambda idx: im.jaccard(a[idx], b[idx]), clusters, reps=cfg.bootstrap, rng=rng)
  return Overlap(
      jaccard_top=im.jaccard(a, b), jaccard_top_chance=im.chance_jaccard(int(a.sum()), int(b.sum()), total),
      jaccard_peaks=im.jaccard(a, c), jaccard_peaks_chance=im.chance_jaccard(int(a.sum()), int(c.sum()), total),
      peak_fraction=float(c.mean()) if total else math.nan, spearman=im.spearman(e, m),
      spearman_within=float(np.mean(within)) if within else math.nan, spearman_ci=sp_ci, jaccard_top_ci=jac_ci)


def describe_signals() -> dict[str, str]:
  return {name: s.description for name, s in _SIGNALS.items()}

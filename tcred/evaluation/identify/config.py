"""Settings of an identifiability study (`IdentifyConfig`), its seed namespaces, and its usage error."""

from __future__ import annotations

import dataclasses
import math

from tcred.judges import judge_names
from tcred.sampling.tree import ForkRule
from tcred.signals.information import PEAK_RULES, MIInputs
from tcred.training.config import TreeConfig
from tcred.validation import require_finite, require_seed

class UsageError(ValueError):
  """A bad task name, policy or setting given by the user (the CLI exits with status 2)."""


# Seed namespaces of the study's random draws (rollouts, continuations, bootstrap; tree rollouts and
# their continuations have their own, so the chain study's draws do not change when trees are added).
_NS_ROLLOUTS, _NS_CONTINUATIONS, _NS_BOOTSTRAP = 0x1D, 0x1D + 1, 0x1D + 2
_NS_TREE_ROLLOUTS, _NS_TREE_CONTINUATIONS = 0x1D + 4, 0x1D + 5
_NS_JUDGES = 0x1D + 6  # the step judges' own sampling (the mc judge's continuations)
_NS_REPLICAS = 0x1D + 16  # the mc judge's replica agreement at K (the noise floor)
_NS_FORKING, _NS_FORK_POSITIONS = 0x1D + 17, 0x1D + 18  # the forking truth's continuations, its position draw

# Where the study's rollouts come from: independent chains, tree leaves, or both (two sections).
ROLLOUT_SOURCES = ("chains", "tree", "both")

# How the Monte-Carlo token advantages are estimated from the continuations (`truth.ground_truth`): the difference
# of the two prefix values, or its Rao-Blackwellisation over the sampled token's known probability.
ADVANTAGE_ESTIMATORS = ("difference", "rao-blackwell")


@dataclasses.dataclass(frozen=True, kw_only=True)
class IdentifyConfig:
  """Settings of one identifiability study.

  Attributes:
    prompts: N held-out prompts.
    rollouts: G rollouts per prompt.
    continuations: K continuations per prefix for the Monte-Carlo values.
    delta: δ, a token is decisive when |A_t| ≥ δ.
    top_fraction: the fraction of tokens each signal selects (precision@top, overlap sets).
    mi_tau: Tukey fence multiplier of the MI-peak set (arXiv 2506.02867: 1.5).
    temperature: the sampling temperature of rollouts and continuations (the policy's).
    seed: seeds the rollouts, the continuations and the bootstrap.
    skip_lost: do not continue prefixes the task oracle calls lost (value exactly 0: no
      continuation can be correct, so their Monte-Carlo estimate is 0 for any K); saves the
      continuations after every fatal error. False continues them anyway (tests check the 0s).
    bootstrap: cluster-bootstrap replicates for the confidence intervals (0: none).
    prefix_batch: prefixes continued per sampler call (× K rows); one compiled shape.
    extras_batch: prompts per `compute_extras` / forward call; one compiled shape.
    rollouts_from: "chains" (G independent rollouts), "tree" (the G leaves of an EPTree forest per
      prompt, see `tree`) or "both" (two studies, one report with a tree section).
    tree_trees: M, the chains (trees) per prompt of the tree rollouts; G must be a multiple of M with
      G/M ≥ 2 (each tree forks G/M − 1 times in one round).
    tree_fork_at: where the trees fork (`TreeConfig.fork_at`: "entropy", "neg-logp" or "step").
    mi_peak_rule, mi_peak_k: the MI-peak set (`mi_peaks`): "outlier" (Q3 + mi_tau·IQR, default) or
      "top-k" (the mi_peak_k = 20 highest-MI tokens per rollout, the released MI-Peaks code).
    mi_layer, mi_norm, mi_sigma: the HSIC MI inputs (`MIInputs`): default the last layer after the
      final norm with σ scaled by width; the MI-Peaks code: the layer's output before the norm, σ = 50.
    judges: registered step judges whose rows (`judge-<name>`) the study adds, each at its default settings
      (default none here; `tcred identify --judges` defaults to oracle,mc, the judges that need no training).
    noise_target: the level the bound-violating share (decisive labels on tokens with p > 1 − δ, provably
      Monte-Carlo noise) should stay below; reported beside the share, and the stopping rule of
      `auto_continuations`.
    auto_continuations: choose K per task (`--continuations auto`): start at `continuations`, and while the
      bound-violating share of the chain study exceeds `noise_target` and K < `max_continuations`, add K more
      continuations of every prefix (fresh draws: K doubles); the report gives each K tried and its share.
    max_continuations: the largest K `auto_continuations` may reach.
    advantage_estimator: "difference" (A_t = V̂(o≤t) − V̂(o<t), two independent K-sample means) or
      "rao-blackwell" (A_t = (1 − p_t)(Q̂ − V̂₋ₐ): p_t the sampled token's probability, known exactly; Q̂ the
      value after the token, pooled with the continuations of o<t that drew the same token; V̂₋ₐ the mean over
      the continuations of o<t that drew another token). The second keeps |A_t| ≤ 1 − p_t by construction and
      has far smaller variance on likely tokens (`truth.rao_blackwell_advantages`); fixed K only.
    replicas: measure the mc judge's replica agreement at K on the chain study's rollouts
      (`tcred.judges.mc.replica_agreement`: two independent replicas of K continuations per step end).
    bases: B SFT bases the study pools (`sft.seed` = 0..B−1 selects each base); every CI resamples bases,
      then prompts within a base (two-level cluster bootstrap). One base: the prompt bootstrap.
    fork_positions: positions sampled per rollout for the forking ground truth (0: none); at each, the
      `alternatives` most probable tokens are continued K times each, and the position is decisive when
      their values spread (max − min) by at least δ (`tcred.evaluation.identify.forking`).
    alternatives: k, the top-k tokens continued at each sampled position (≤ the vocabulary; ≥ 2).
  """

  prompts: int = 32
  rollouts: int = 8
  continuations: int = 32
  delta: float = 0.25
  top_fraction: float = 0.2
  mi_tau: float = 1.5
  temperature: float = 1.0
  seed: int = 0
  skip_lost: bool = True
  bootstrap: int = 200
  prefix_batch: int = 32
  extras_batch: int = 8
  rollouts_from: str = "both"
  tree_trees: int = 2
  tree_fork_at: str = "entropy"
  mi_peak_rule: str = "outlier"
  mi_peak_k: int = 20
  mi_layer: int = -1
  mi_norm: str = "post"
  mi_sigma: str = "width"
  judges: tuple[str, ...] = ()
  noise_target: float = 0.05
  auto_continuations: bool = False
  max_continuations: int = 256
  advantage_estimator: str = "difference"
  replicas: bool = False
  bases: int = 1
  fork_positions: int = 0
  alternatives: int = 3

  def __post_init__(self):
    require_finite(self, "")  # mi_tau=inf, temperature=inf: the CLI writes a flag's field as the flag
    if isinstance(self.judges, str) or not all(isinstance(j, str) for j in self.judges):
      raise ValueError(f"judges must be a sequence of judge names, got {self.judges!r}")
    object.__setattr__(self, "judges", tuple(self.judges))
    for j in self.judges:
      if j not in judge_names():
        raise ValueError(f"judges: unknown judge {j!r}; allowed: {', '.join(judge_names())}")
    if self.mi_peak_rule not in PEAK_RULES:
      raise ValueError(f"mi_peak_rule {self.mi_peak_rule!r}: allowed values are {', '.join(PEAK_RULES)}")
    if isinstance(self.mi_peak_k, bool) or not isinstance(self.mi_peak_k, int) or self.mi_peak_k < 1:
      raise ValueError(f"mi_peak_k must be an integer >= 1, got {self.mi_peak_k!r}")
    MIInputs(layer=self.mi_layer, norm=self.mi_norm, sigma=self.mi_sigma)  # validates the MI inputs
    for name, low in (("prompts", 2), ("rollouts", 1), ("continuations", 1), ("prefix_batch", 1),
                      ("extras_batch", 1), ("bases", 1), ("fork_positions", 0), ("alternatives", 2),
                      ("max_continuations", 1)):
      value = getattr(self, name)
      if isinstance(value, bool) or not isinstance(value, int) or value < low:
        bound = " and at most the policy's vocabulary size" if name == "alternatives" else ""
        raise ValueError(f"{name} must be an integer >= {low}{bound}, got {value!r}")
    if self.auto_continuations and self.max_continuations < self.continuations:
      raise ValueError(f"max_continuations must be at least the starting K = {self.continuations} (auto doubles K "
                       f"from there), got {self.max_continuations}")
    if self.advantage_estimator not in ADVANTAGE_ESTIMATORS:
      raise ValueError(f"advantage_estimator {self.advantage_estimator!r}: allowed values are "
                       f"{', '.join(ADVANTAGE_ESTIMATORS)}")
    if self.auto_continuations and self.advantage_estimator != "difference":
      raise ValueError("advantage_estimator rao-blackwell takes a fixed K: auto's stopping rule (the bound-violating "
                       "share) is 0 by construction for it; give continuations")
    if isinstance(self.bootstrap, bool) or not isinstance(self.bootstrap, int) or self.bootstrap < 0:
      raise ValueError(f"bootstrap must be an integer >= 0, got {self.bootstrap!r}")
    require_seed(self.seed, "seed")
    if not 0.0 < self.delta < 1.0:
      raise ValueError(f"delta must be in (0, 1) (a change in success probability; the bound row p ≤ 1 − δ needs "
                       f"δ < 1), got {self.delta!r}")
    if not 0.0 < self.noise_target < 1.0:
      raise ValueError(f"noise_target must be in (0, 1), got {self.noise_target!r}")
    if not 0.0 < self.top_fraction <= 1.0:
      raise ValueError(f"top_fraction must be in (0, 1], got {self.top_fraction!r}")
    if not self.mi_tau >= 0.0:
      raise ValueError(f"mi_tau must be >= 0, got {self.mi_tau!r}")
    if not self.temperature > 0.0:
      raise ValueError(f"temperature must be > 0, got {self.temperature!r}")
    if self.rollouts_from not in ROLLOUT_SOURCES:
      raise ValueError(f"rollouts_from {self.rollouts_from!r}: allowed values are {', '.join(ROLLOUT_SOURCES)}")
    ForkRule.parse(self.tree_fork_at, field="tree_fork_at")  # checked even for chains: a typo never passes
    if self.uses_trees:
      m = self.tree_trees
      if isinstance(m, bool) or not isinstance(m, int) or m < 1:
        raise ValueError(f"tree_trees must be an integer >= 1, got {m!r}")
      if self.rollouts % m or self.rollouts // m < 2:
        raise ValueError(f"tree rollouts need rollouts G a multiple of tree_trees M = {m} with G/M >= 2 "
                         f"(M chains, G/M − 1 forks each), got G = {self.rollouts}")

  @property
  def mi_inputs(self) -> MIInputs:
    return MIInputs(layer=self.mi_layer, norm=self.mi_norm, sigma=self.mi_sigma)

  @property
  def uses_trees(self) -> bool:
    return self.rollouts_from in ("tree", "both")

  @property
  def uses_chains(self) -> bool:
    return self.rollouts_from in ("chains", "both")

  @property
  def tree(self) -> TreeConfig:
    """The forest of the tree rollouts: M chains, one round of G/M − 1 forks per tree, G leaves."""
    return TreeConfig(enabled=True, trees=self.tree_trees, rounds=1, forks=self.rollouts // self.tree_trees - 1,
                      branch=1, fork_at=self.tree_fork_at)

  @property
  def advantage_se_bound(self) -> float:
    """Worst-case Monte-Carlo standard error of A_t: sqrt(2 · ¼ / K)."""
    return math.sqrt(0.5 / self.continuations)

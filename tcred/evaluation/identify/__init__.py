"""The identifiability study (DESIGN §5): do the token signals find the tokens that decide the outcome?

On held-out prompts, G rollouts per prompt are sampled from a policy at its temperature. Two
ground truths per response token t (0-based; the EOS token is a token):

- the Monte-Carlo token advantage `A_t = V(o_≤t) − V(o_<t)`, where `V(prefix)` is the mean
  reward of K continuations sampled from the same policy after `prompt + prefix` (every prefix of
  every rollout; identical prefixes are continued once). The value after the whole response is
  its reward, exactly. Each estimate is a mean of K Bernoulli rewards, so
  `SE(A_t) = sqrt(V_{t+1}(1 − V_{t+1})/K + V_t(1 − V_t)/K) ≤ sqrt(1/(2K))`. With
  `advantage_estimator="rao-blackwell"` the same continuations give `A_t = (1 − p_t)(Q − V₋ₐ)`, exact in
  p_t (the sampled token's probability) and estimated in Q and V₋ₐ only (`truth.rao_blackwell_advantages`).
- the oracle's fatal errors: token t is fatal when the task's exact `prefix_value` goes
  1 → 0 across it (`prefix_value(o_<t) = 1`, and `prefix_value(o_≤t) = 0`, or the reward
  0 when t is the response's last token).

Every row of the study is a registered token signal (`tcred.signals.registry`: the same pure
functions of one group that the credit methods train with, `signal-mask` / `signal-weight`), fed by the
library functions training uses: `response_logprobs` (the train step's fused log-prob/entropy forward),
`compute_extras` (answer information gain and HSIC MI, jitted once per batch shape) and the tree arrays
of `tree_extras`; plus the study's own ground-truth rows (`signals.TRUTH_ROWS`: the oracle judge and
the early-position control). A new signal registers one `TokenSignal` and is a row here, with nothing
else changed.

Two sources of rollouts (`IdentifyConfig.rollouts_from`):

- `chains`: G independent rollouts per prompt (`sample_and_score`), the original study.
- `tree`: the G rollouts of a prompt are the leaves of an EPTree-style forest
  (`sample_trees_and_score` with `TreeConfig(enabled=True, trees=M, rounds=1, forks=G/M − 1,
  fork_at="entropy")`; M = 2, G = 8: 2 chains, 3 forks each at their top-entropy tokens, 8 leaves).
  The ground truth is computed by the same functions on those leaves (`ground_truth`: K
  continuations of every distinct prefix, shared prefixes continued once; the oracle), and so are
  all the chain signals, so the tree table compares like with like. Two signals exist only here:

  * `tree-sibling-gap` (DESIGN §5's "tree sibling gap"): the comparison a tree gives for free. With
    `V(s)` the mean reward of the leaves under segment s (`node_values`), a leaf token of
    segment s scores `|A(s)|`, `A(s) = [(V(s) − V(root)) + (V(s) − V(parent s))] / sqrt(|leaves(s)|)`
    (`treerl_segment_advantages`, the advantage TreeRL trains with), mapped to tokens with
    `TreeArrays.token_node` (a copied prefix token maps to the segment that generated it). A
    segment with the value of its parent and of its root (the trunk of a tree before its first
    fork, or a fork whose sibling subtrees score alike) scores 0. A segment whose value equals its
    parent's but not its root's keeps `|V(s) − V(root)| / sqrt(|leaves(s)|)` (the formula's root term).
  * `tree-fork-gap`: `|V(s) − V(parent s)|` on the first token of each segment only (the token at
    which the segment and its siblings diverge: the fork re-samples it), 0 on every other token
    and exactly 0 where the value equals the parent's. It localises the sibling comparison to the
    fork token instead of spreading it over the segment.

  Every valid token of every leaf counts (a prefix shared by k leaves counts k times, with the same
  signal and the same A_t, as identical prefixes of independent chains do).

The metrics (`tcred.evaluation.identify_metrics`, plain NumPy) pool every valid response token of
the study; confidence intervals resample whole prompts (cluster bootstrap).

Controls (DESIGN §5, issue 23): every table starts with the *bound* row (the indicator p(token) ≤ 1 − δ:
on-policy values bound |A_t| ≤ 1 − p, so only those tokens can be decisive) and carries, beside each pooled
figure, its difference from the bound row (paired bootstrap), its p-conditioned versions (among p ≤ 1 − δ;
within p-deciles) and its position-controlled versions (within a position); the label noise floor (the
share of decisive labels on p > 1 − δ, provably noise; the mc judge's replica agreement at K; K chosen by
`auto_continuations`); a second ground truth at positions (`forking`: the top-k alternatives' value
spread); and several SFT bases pooled with a two-level cluster bootstrap (bases, then prompts).

Files: `config` (IdentifyConfig, seed namespaces, UsageError), `forking` (the positions' ground truth), `rollouts` (chains / tree leaves, the
policy forward and extras), `truth` (Monte-Carlo values, oracle, fatal errors), `signals` (the rows),
`study` (run_study), `metrics` (evaluate_study, the entropy–MI overlap), `bootstrap` (cluster
bootstrap), `io` (policy loading, `identify`, the written files), `report` (markdown and plots),
`tokens` (the one place the study touches the tokenizer).

Shapes: N prompts, G rollouts per prompt, T the response budget (tokens), K continuations.
"""
from __future__ import annotations

from tcred.evaluation.identify.config import ROLLOUT_SOURCES, IdentifyConfig, UsageError
from tcred.evaluation.identify.io import identify, load_policy, write_studies, write_study
from tcred.evaluation.identify.forking import ForkingTruth, forking_truth
from tcred.evaluation.identify.metrics import (BOUND_ROW, CONTROL_METRICS, FORKING_METRICS, METRICS, ForkingResults,
                                               NoiseFloor, Overlap, Results, evaluate_forking,
                                               SignalScore, bound_indicator, entropy_mi_overlap, evaluate_study,
                                               reasoning_mask)
from tcred.evaluation.identify.rollouts import (Rollout, policy_forward, sample_rollouts, sample_tree_rollouts,
                                                signal_extras)
from tcred.evaluation.identify.signals import TRUTH_ROWS, TruthRow, describe_signals, signal_names
from tcred.evaluation.identify.study import StudyData, pool_studies, run_study
from tcred.evaluation.identify.truth import GroundTruth, ground_truth, monte_carlo_values, oracle_values

__all__ = ["BOUND_ROW", "CONTROL_METRICS", "ForkingResults", "ForkingTruth", "NoiseFloor", "bound_indicator",
           "evaluate_forking", "forking_truth", "pool_studies", "METRICS", "ROLLOUT_SOURCES", "TRUTH_ROWS", "GroundTruth", "IdentifyConfig", "Overlap", "Results",
           "Rollout", "SignalScore", "StudyData", "TruthRow", "UsageError", "describe_signals", "entropy_mi_overlap",
           "evaluate_study", "ground_truth", "identify", "load_policy", "monte_carlo_values", "oracle_values",
           "policy_forward", "reasoning_mask", "run_study", "sample_rollouts", "sample_tree_rollouts",
           "signal_extras", "signal_names", "write_studies", "write_study"]

"""The suites `tcred table` runs: named lists of experiments with their seed counts and design.

Every suite here is paired over SFT bases (`Suite.bases`, 3 unless the suite has fewer seeds): seed s
of every experiment starts from base s mod 3 and draws the prompt stream of seed s, and each task's
table compares every method with its GRPO experiment (`Suite.baseline`) seed by seed; a suite holding
the positive control names it as `Suite.oracle` (the credit score's 1).

Suite files load after every method family file (of every experiments folder), so `suite-quick`
and `suite-full` follow the registry. Experiments are chosen by their `task` and `method` fields.

The judge-credit family (experiments/judges.py, credit method `judge`) is left out of suite-quick and
suite-full: its trained judges (prm, generative) need Monte-Carlo labels and a judge training run first,
and the mc judge samples several times the policy's tokens per step; suite-judges compares them. The controls
(experiments/controls.py: policy values, perfect verifier, random and shuffled credit) are left out of them
too: they belong to the credit suite, and the committed suite-quick and suite-full tables stay reproducible.
"""

from tcred.experiments.defaults import LONG_HORIZON_TASKS, SCALING_TASKS, TASKS
from tcred.experiments.registry import (Suite, experiment_for, experiment_names, families, get_experiment,
                                        register_suite)


def _pick(tasks, methods) -> tuple[str, ...]:
  return tuple(experiment_for(task, method) for task in tasks for method in methods)


POSITIVE_CONTROL = "verifier-process"
"""The method of the positive control that a suite holding it names as its oracle (the credit score's 1): the
perfect verifier as a pure process advantage (exact step correctness from the task's oracle: +1 a correct step,
-1 the fatal one, 0 after it; issue 24). Chosen on tuning seed 1000 over the verifier added to GRPO's outcome
advantage (lambda = 0.5), which learnt lock-chain-k8 more slowly (BUILD_NOTES, issue 24 pilots). The other
positive control, `policy-value` (the policy's own step values from Monte-Carlo continuations), costs C x
(steps) continuations per rollout (about 64 x the policy's tokens on lock-chain-k8 at C = 16), more than a
suite on this machine can afford; it stays registered for single runs."""


def _oracle(experiments: tuple[str, ...]) -> str | None:
  """`POSITIVE_CONTROL` if one of `experiments` has that method (the credit score's reference), else None."""
  return POSITIVE_CONTROL if any(get_experiment(n).method == POSITIVE_CONTROL for n in experiments) else None


NEGATIVE_CONTROLS = ("random-top20", "shuffled-verifier-process", "shuffled-entropy-top20")
"""The methods of the negative controls (experiments/controls.py), which a suite holding them names as
`Suite.negative_controls`: its resolution pools the variance of the methods under test and the positive control."""


def _negatives(experiments: tuple[str, ...]) -> tuple[str, ...]:
  """The `NEGATIVE_CONTROLS` among the methods of `experiments`."""
  methods = {get_experiment(n).method for n in experiments}
  return tuple(m for m in NEGATIVE_CONTROLS if m in methods)


def _controls(experiments: tuple[str, ...]) -> dict:
  """The `Suite` fields naming the controls among `experiments`: its oracle and its negative controls."""
  return dict(oracle=_oracle(experiments), negative_controls=_negatives(experiments))


_CONTROLS = frozenset(families().get("controls", ()))


def _automatic(name: str) -> bool:
  """Whether suite-quick / suite-full pick the experiment up from the registry (not the judge family, not
  the controls)."""
  return get_experiment(name).credit.name != "judge" and name not in _CONTROLS


register_suite(Suite(
    name="suite-foundation",
    description="outcome baselines (GRPO, Dr. GRPO, DAPO) on countdown and graph-path, 3 seeds",
    experiments=_pick(("countdown", "graph-path"), ("grpo", "dr-grpo", "dapo")),
    seeds=3))

# The README's main job (issue 24 item 6): a difference a newcomer can see in about 20 minutes from an empty cache.
# lock-chain-k8 holds 8 decisive keys 21 characters apart in a 170-character response, and the base policy's
# most likely key is wrong at its trap locks; the perfect verifier's process credit (the oracle) against GRPO's
# outcome credit and the top-20% entropy tokens, 2 seeds from one SFT base (the paired resolution needs two).
# Small updates (4 prompts x 8 rollouts a step, CREDIT_RL): where each update sees few rollouts, how well the
# credit is placed decides how far an update goes (BUILD_NOTES, issue 24 pilots: at 16 prompts a step GRPO
# learns about as fast as the verifier).
CREDIT_RL = ("rl.prompts_per_step=4", "rl.eval_every=20", "rl.eval_prompts=32")
DEMO_OVERRIDES = ("rl.steps=120", *CREDIT_RL, "rl.checkpoint_every=40")
_DEMO = _pick(("lock-chain-k8",), ("grpo", POSITIVE_CONTROL, "entropy-top20"))
register_suite(Suite(
    name="suite-demo",
    description="the README's main job: GRPO vs the perfect verifier's process credit (the oracle) vs top-20% "
                "entropy tokens on lock-chain-k8 (8 decisive keys in 170 characters), 2 seeds from one SFT base, "
                "120 RL steps of 4 prompts x 8",
    experiments=_DEMO, seeds=2, bases=1, oracle=_oracle(_DEMO), overrides=DEMO_OVERRIDES))

# The quick comparison fits in about an hour on a 2-core machine: 40 RL steps per run (most of GRPO's
# gain on both tasks comes in the first 50 steps, BUILD_NOTES.md) with the full held-out evaluation.
QUICK_OVERRIDES = ("rl.steps=40", "rl.eval_every=10", "rl.checkpoint_every=20")

_QUICK = tuple(n for task in ("countdown", "graph-path") for n in experiment_names()
               if get_experiment(n).task == task and _automatic(n))
register_suite(Suite(
    name="suite-quick",
    description="the quick comparison: every registered method on countdown and graph-path, 3 seeds over 3 SFT "
                "bases (paired), 40 RL steps per run",
    experiments=_QUICK, seeds=3, bases=3, oracle=_oracle(_QUICK), overrides=QUICK_OVERRIDES))

register_suite(Suite(
    name="suite-full",
    description="every registered experiment of every embedded task, 5 seeds",
    experiments=tuple(n for n in experiment_names()
                      if get_experiment(n).task in TASKS and _automatic(n)),  # real models need a checkpoint
    seeds=5))

register_suite(Suite(
    name="suite-trees",
    description="trees vs chains at equal generated tokens: GRPO, Tree-GRPO, TreeRL on countdown and graph-path, "
                "3 seeds, 40 RL steps (the runs of suite-quick)",
    experiments=_pick(("countdown", "graph-path"), ("grpo", "tree-grpo", "treerl")),
    seeds=3, overrides=QUICK_OVERRIDES, runs_under="suite-quick"))

# suite-judges leaves out `policy-value` (C continuations per step of every rollout: tens of times GRPO's tokens
# per run), as suite-credit does (`POSITIVE_CONTROL`); the perfect verifier is its positive control.
_JUDGES = tuple(n for task in ("countdown", "graph-path") for n in experiment_names()
                if get_experiment(n).task == task and get_experiment(n).method != "policy-value"
                and (not _automatic(n) or get_experiment(n).method == "grpo"))
register_suite(Suite(
    name="suite-judges",
    description="judge credit (each registered judge: oracle, mc, prm, generative) and the controls (perfect "
                "verifier, random and shuffled credit) against GRPO on countdown and graph-path, 3 seeds over 3 "
                "SFT bases (paired), 40 RL steps (GRPO's runs are suite-quick's)",
    experiments=_JUDGES, seeds=3, **_controls(_JUDGES), overrides=QUICK_OVERRIDES, runs_under="suite-quick"))

# The credit suite (issue 24): GRPO, the positive control (the perfect verifier's process advantage: the credit
# score's 1), the negative controls (a random 20% mask; the verifier's credits shuffled within a response, which
# keeps their amounts and loses their placement) and the token-signal methods, on countdown and the three
# long-horizon levels (lock-chain-k12 since session 15), 5 seeds over 3 SFT bases (paired). Countdown also holds
# the combined signal beside its parts (entropy, surprisal, MI: issue 25 item 4) and RSI-S. Budget: 160 RL steps
# of 4 prompts x 8 (CREDIT_RL, as suite-demo; the tokens of 40 steps of 16 prompts), evaluated every 20. Every 40th
# checkpoint is kept (`rl.keep_every`, not a setting of the results) for the studies over training
# (`tcred identify TASK --policy RUN --steps 0,40,...`).
CREDIT_OVERRIDES = ("rl.steps=160", *CREDIT_RL, "rl.checkpoint_every=40", "rl.keep_every=40")
CREDIT_METHODS = ("grpo", "verifier-process", "random-top20", "shuffled-verifier-process", "entropy-top20",
                  "surprisal-top20")
COUNTDOWN_METHODS = ("mi-peaks", "combined-top20", "rsi-s")
"""Countdown only (its runs are the cheapest): the combined signal and its MI part (HSIC MI is not registered on the
long-horizon levels), and RSI-S (relative surprisal in a band, issue 23)."""
_CREDIT = (*_pick(("countdown",), CREDIT_METHODS + COUNTDOWN_METHODS), *_pick(LONG_HORIZON_TASKS, CREDIT_METHODS))
register_suite(Suite(
    name="suite-credit",
    description="credit methods against positive and negative controls on countdown and three long-horizon tasks, "
                "5 seeds over 3 SFT bases (paired), 160 RL steps of 4 prompts x 8",
    experiments=_CREDIT, seeds=5, bases=3, **_controls(_CREDIT), overrides=CREDIT_OVERRIDES))

# The resolution with six bases (issue 24): suite-credit's t-tests on the bases' mean differences have 2 degrees of
# freedom (t(0.975, 2) = 4.30), which bounds its resolution; here suite-credit's six methods on long-addition-d8 (its
# cheapest long-horizon task) with its budget, 6 seeds over 6 SFT bases (one seed per base), to measure how far the
# resolution falls against the power calculation's 0.44-0.57 of the 3-base value (BUILD_NOTES, session 17).
_BASES = _pick(("long-addition-d8",), CREDIT_METHODS)
register_suite(Suite(
    name="credit-bases",
    description="suite-credit's methods on long-addition-d8 with 6 SFT bases: 6 seeds, one per base (paired), "
                "160 RL steps of 4 prompts x 8",
    experiments=_BASES, seeds=6, bases=6, **_controls(_BASES), overrides=CREDIT_OVERRIDES))

# The same with 4x the curve's evaluation (128 held-out prompts x 4 samples every 20 steps instead of 32 x 4): in
# credit-bases the binomial noise of the curve's evaluations bounds all of the oracle's paired variance and a third
# to a half of the token masks' (BUILD_NOTES, session 17), and evaluating costs no RL tokens.
register_suite(Suite(
    name="credit-bases-eval",
    description="credit-bases with 4x the learning curve's evaluation (128 held-out prompts x 4 samples every 20 "
                "steps): 6 seeds, one per base (paired), 160 RL steps of 4 prompts x 8",
    experiments=_BASES, seeds=6, bases=6, **_controls(_BASES), overrides=(*CREDIT_OVERRIDES, "rl.eval_prompts=128")))

# Six bases on lock-chain-k8 (issue 24): the long-horizon task with the largest gain of the oracle over GRPO in
# suite-credit (+26 points of final pass@1, resolution 0.50 of its gain with 3 bases), for GRPO, the oracle and the
# two token masks (the negative controls collapse on k8 and leave the resolution's pool), with the 128-prompt curve
# of credit-bases-eval: whether six bases bring a long-horizon task's resolution to a third of the oracle's gain.
MASK_METHODS = ("grpo", POSITIVE_CONTROL, "entropy-top20", "surprisal-top20")
"""GRPO, the oracle and the two token masks: the methods of the six-base suites and of credit-scaling."""


def _six_bases(task: str) -> tuple[str, ...]:
  """Registers `credit-bases-<level>`: GRPO, the oracle and the two token masks on `task` with 6 SFT bases (one
  seed a base), suite-credit's budget and the 128-prompt curve; returns its experiments."""
  experiments = _pick((task,), MASK_METHODS)
  register_suite(Suite(
      name=f"credit-bases-{task.rsplit('-', 1)[1]}",
      description=f"GRPO, the oracle and the two token masks on {task} with 6 SFT bases: 6 seeds, one per "
                  "base (paired), 160 RL steps of 4 prompts x 8, the curve on 128 held-out prompts x 4 samples",
      experiments=experiments, seeds=6, bases=6, **_controls(experiments),
      overrides=(*CREDIT_OVERRIDES, "rl.eval_prompts=128")))
  return experiments


_BASES_K8 = _six_bases("lock-chain-k8")

# Two seeds a base: credit-bases-k8 with seeds 6-11 added on its 6 bases (seed s on base s mod 6), so the spread
# of GRPO's runs on lock-chain-k8 splits into its base-level and run-level parts, and each paired unit (a base's
# mean difference) averages two runs. Its seeds 0-5 are credit-bases-k8's runs.
register_suite(Suite(
    name="credit-bases-k8x2",
    description="credit-bases-k8 with two seeds a base: 12 seeds over its 6 SFT bases (paired; seeds 0-5 are "
                "credit-bases-k8's runs), 160 RL steps of 4 prompts x 8, the curve on 128 held-out prompts x 4",
    experiments=_BASES_K8, seeds=12, bases=6, **_controls(_BASES_K8),
    overrides=(*CREDIT_OVERRIDES, "rl.eval_prompts=128"), runs_under="credit-bases-k8"))

# Six bases on lock-chain-k10 (issue 24): long-addition-d8 is ceiling-bound (GRPO ends at 88.6%, the oracle's gain is
# 5.6 points) and cannot meet the targets; on lock-chain-k8 GRPO's fast runs end near the oracle's plateau (93-95%),
# where the oracle needs most of GRPO's budget to reach GRPO's level (tokens ratio 0.60). Ten keys keep GRPO further
# below that plateau at the same budget, at a base cost below k12's. The same design as credit-bases-k8.
_six_bases("lock-chain-k10")

# Two seeds a base on long-addition-d8: GRPO, the oracle and the two token masks of credit-bases-eval (its 6 bases
# and 128-prompt curve) with seeds 6-11 added (seed s on base s mod 6; seeds 0-5 are credit-bases-eval's runs), as
# credit-bases-k8x2 does on lock-chain-k8: whether the second long-horizon task's resolution falls within a third of
# the oracle's gain when each paired unit averages two runs.
_BASES_D8 = _pick(("long-addition-d8",), MASK_METHODS)
register_suite(Suite(
    name="credit-bases-d8x2",
    description="GRPO, the oracle and the two token masks on long-addition-d8 with two seeds a base: 12 seeds over "
                "credit-bases-eval's 6 SFT bases (paired; seeds 0-5 are its runs), 160 RL steps of 4 prompts x 8, "
                "the curve on 128 held-out prompts x 4",
    experiments=_BASES_D8, seeds=12, bases=6, **_controls(_BASES_D8),
    overrides=(*CREDIT_OVERRIDES, "rl.eval_prompts=128"), runs_under="credit-bases-eval"))

# The scaling picture (issue 24 item 5): how the cost of reaching one level of skill grows with the number of
# decisive choices, for GRPO, the oracle and the signal methods, on lock-chain-k2/k4/k8/k12 with suite-credit's
# design and budget. Its lock-chain-k8 and -k12 runs are suite-credit's seeds 0-2 (one per base); it adds k2 and k4
# (k12 since session 14: base pass@1 0.02, where most of GRPO's early groups are all wrong).
SCALING_LEVELS = tuple((task, int(task.rsplit("-k", 1)[1])) for task in SCALING_TASKS)
_SCALING = _pick(SCALING_TASKS, MASK_METHODS)
register_suite(Suite(
    name="credit-scaling",
    description="how the tokens to one level of pass@1 grow with the number of decisive keys (lock-chain-k2, "
                "-k4, -k8, -k12) for GRPO, the oracle and the signal methods, 3 seeds over 3 SFT bases (paired), "
                "suite-credit's budget (its k8 and k12 runs)",
    experiments=_SCALING, seeds=3, bases=3, oracle=_oracle(_SCALING), overrides=CREDIT_OVERRIDES,
    runs_under="suite-credit", scaling=SCALING_LEVELS, knob="decisive keys k"))

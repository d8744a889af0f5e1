"""Controls of the credit suite (issue 24; DESIGN §5 "Credit suite"; `tcred.credit.controls`).

Each changes only the credit method of the task's GRPO experiment. Positive controls on every task with an
exact oracle, negative controls on every task (`default_tasks`, read when this file loads, so a task added
to `tcred/experiments/defaults.py` gets its controls without an edit here):

  <task>-policy-value       policy-value: A^π = V(after step) − V(before step) from C = CONTINUATIONS Monte-
                            Carlo continuations of the current policy (VinePPO); nothing after a fatal step
  <task>-verifier           verifier: GRPO + λ · exact step correctness from the oracle (+1 correct step,
                            −1 the fatal step, 0 after it)
  <task>-verifier-process   verifier, outcome=False: the pure process advantage r_k (λ = 1, a scale only);
                            `--set credit.after_fatal=local` judges the steps after the fatal one on the prefix
                            as written (lock-chain, long-addition: `Task.step_label`), not registered: on
                            lock-chain-k10's tuning seeds it learnt no faster than 0 after the fatal step
                            (BUILD_NOTES, session 21)
  <task>-random-top20       random-mask, ρ = 0.2: GRPO on exactly ceil(0.2·n) uniformly random tokens of each
                            response (the entropy mask's control: it keeps 20% of the tokens too)
  <task>-shuffled-<m>       shuffled: method m's token credits permuted within each response, for m in
                            SHUFFLED: the pure-process verifier (oracle tasks; the credit whose placement is
                            known right, so its shuffled twin measures what placing credit is worth) and the 20% entropy mask
                            (any task; its shuffled twin keeps each response's count of kept tokens at
                            random positions). Any other method: `--set credit.method=NAME
                            --set "credit.settings=key=value;key=value"`.

Label noise of policy-value (C = 16): each step value V_k is a Bernoulli mean of 16 continuations, standard
error sqrt(V(1 − V)/16) ≤ 0.125 (at V = 0.5; 0.075 at V = 0.1 or 0.9), a step advantage at most 0.177; the
runs log the plug-in value as credit/value_se. C = 32 halves the variance (≤ 0.088) at twice the judge tokens
(counts/judge_tokens: about C·K·T/2 per rollout, K steps, T the response budget).

Tuning (issue 24): λ (LAM), C (CONTINUATIONS) and every other setting of these controls must be chosen on
TUNING_SEEDS, which the reported tables never use: `tcred table` runs seeds 0 … K − 1 (`--seeds K`), so the
tuning seeds start at 1000. Tune with `tcred run <task>-verifier --seed 1000 --set credit.lam=...` over
TUNING_SEEDS, record the runs (command, seeds, values tried, the choice) in BUILD_NOTES.md, then set the
constants here. The values below are untuned: λ = 0.5 is the judge experiments' (experiments/judges.py).
"""

import dataclasses

from tcred.credit import make_credit
from tcred.experiments.defaults import default_tasks, register_method

TUNING_SEEDS = tuple(range(1000, 1005))
"""Seeds for choosing λ, C and the other settings of the controls; disjoint from the reported seeds 0 … K − 1."""
LAM = 0.5
CONTINUATIONS = 16
RHO = 0.2
PROCESS = {"lam": 1.0, "outcome": False}
"""The verifier's settings as a pure process advantage (`verifier-process`, and the one its shuffled twin wraps)."""
SHUFFLED = {"verifier-process": ("verifier", ";".join(f"{k}={str(v).lower()}" for k, v in PROCESS.items())),
            "entropy-top20": ("entropy-mask", f"rho={RHO}")}
"""Experiment suffix -> (wrapped credit method, its settings) of the shuffled controls."""


def _credit(name, **kw):
  credit = make_credit(name, **kw)
  return lambda c: dataclasses.replace(c, credit=credit)


ORACLE_TASKS = default_tasks(oracle=True)
ALL_TASKS = default_tasks()

register_method("policy-value", f"positive control: A^π from {CONTINUATIONS} continuations per step (VinePPO)",
                _credit("policy-value", continuations=CONTINUATIONS), tasks=ORACLE_TASKS)
register_method("verifier", f"positive control: GRPO + {LAM} × exact step correctness (perfect PRM)",
                _credit("verifier", lam=LAM), tasks=ORACLE_TASKS)
register_method("verifier-process", "positive control: exact step correctness alone (process advantage)",
                _credit("verifier", **PROCESS), tasks=ORACLE_TASKS)
register_method(f"random-top{round(RHO * 100)}",
                f"negative control: policy gradient on a random {round(RHO * 100)}% of each response's tokens",
                _credit("random-mask", rho=RHO), tasks=ALL_TASKS)
for _suffix, (_method, _settings) in SHUFFLED.items():
  register_method(f"shuffled-{_suffix}", f"negative control: {_suffix}'s credits shuffled within each response",
                  _credit("shuffled", method=_method, settings=_settings),
                  tasks=ORACLE_TASKS if _method == "verifier" else ALL_TASKS)

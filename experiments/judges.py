"""Judge credit: GRPO's outcome advantage plus λ times a step judge's process advantage (DESIGN §4.6).

`<task>-judge-<short>` for every embedded task and every registered judge (`tcred.judges.judge_names()`,
read when this file loads, so a judge module imported by `tcred/judges/__init__.py` gets its experiments
without an edit here): oracle -> `judge-oracle`, mc -> `judge-mc`, prm -> `judge-prm`, generative ->
`judge-gen`. Each changes only the credit method of the task's GRPO experiment.

Choices (the same for every judge, so the experiments differ in the judge alone):
  λ = 0.5: the process advantage d̂ is group-normalised like the outcome advantage (unit scale), so λ is
    the process term's weight relative to the outcome's. Below 1 the outcome stays the primary signal
    (a wrong rollout's tokens still lean negative), while a step's score change still reorders credit
    within a rollout; process-advantage RL (arXiv 2410.08146) likewise weights progress below the outcome.
  mc: C = 4 continuations per distinct prefix (Q in steps of 1/4). Cost: each rollout of K ≈ 3–4 steps
    adds K − 1 prefixes plus one shared prompt prefix per group, each continued C times for about half
    the budget, so the judge samples about 4·3·½ ≈ 6× the policy's own tokens per RL step (logged as
    counts/judge_tokens beside counts/tokens_generated). C = 8 would halve the noise of a Q (VinePPO uses
    9) at 12×; C = 2 gives mostly 0/½/1 values whose changes are noise (see the replica agreement,
    `tcred.judges.mc.replica_agreement`).
Trained judges (prm, generative) train on Monte-Carlo labels the first time an experiment needs them
(`Judge.prepare`, cached under $TCRED_CACHE/judges); they are left out of suite-quick and suite-full
(suites.py) and compared in suite-judges.
"""

import dataclasses

from tcred.credit import make_credit
from tcred.experiments.defaults import TASKS, register_method
from tcred.judges import judge_names

LAM = 0.5
SHORT = {"oracle": "oracle", "mc": "mc", "prm": "prm", "generative": "gen"}
SETTINGS = {"mc": "continuations=4"}


def _edit(judge: str):
  credit = make_credit("judge", judge=judge, judge_settings=SETTINGS.get(judge, ""), lam=LAM)
  return lambda c: dataclasses.replace(c, credit=credit)


for _judge in judge_names():
  register_method(f"judge-{SHORT.get(_judge, _judge)}",
                  f"GRPO + {LAM} × the {_judge} judge's process advantage (step score changes)",
                  _edit(_judge), tasks=TASKS)

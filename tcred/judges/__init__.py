"""Step judges and the credit they give (DESIGN §4.6).

The family, and where each part of it lives (layers point down, README "Layout"):

  judges/base.py        `Judge`, `JudgeContext` (what a judge may read, including `prepare_trained`), the registry
  judges/oracle.py      the task's exact prefix values           judges/mc.py    Monte-Carlo step values (`mc`)
  judges/labels.py      Monte-Carlo step labels (abs-q, rel-ratio, rel-effective)
  judges/trained.py     `TrainedJudge`: the trained judges' shared settings, data and trainer interface
  judges/prm.py         the `prm` judge (a decoder with a step-classification head)
  judges/generative.py  the `generative` judge (writes an analysis, then a verdict)
  judges/credit.py      process advantages from step score changes
  credit/judge.py       the `judge` credit method (a judge prepared once per run, its credit each step)
  training/judges.py    `prepare_trained`: the trained judges' data, cache and training (`TRAINERS`: prm, generative)
  training/generative_judge.py   the generative judge's SFT + GRPO training
  evaluation/judges.py  `tcred judge train|eval`; experiments/judges.py: the `<task>-judge-<name>` experiments
"""

from tcred.judges import mc, oracle, prm  # noqa: F401  (register the mc, oracle and prm judges)
from tcred.judges import generative  # noqa: F401  (registers the generative judge; its trainer: tcred.training)
from tcred.judges.base import (Judge, JudgeContext, JudgeScores, judge_class, judge_names, make_judge,
                               register_judge)
from tcred.judges.labels import LABEL_RULES, LabelRule, first_error, mc_labels

__all__ = ["Judge", "JudgeContext", "JudgeScores", "judge_class", "judge_names", "make_judge", "register_judge",
           "LABEL_RULES", "LabelRule", "first_error", "mc_labels"]

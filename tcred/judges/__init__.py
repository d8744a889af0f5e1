"""Step judges and the credit they give (DESIGN §4.6)."""

from tcred.judges import mc, oracle, prm  # noqa: F401  (register the mc, oracle and prm judges)
from tcred.judges import generative  # noqa: F401  (registers the generative judge; its trainer: tcred.training)
from tcred.judges.base import (Judge, JudgeContext, JudgeScores, judge_class, judge_names, make_judge,
                               register_judge)
from tcred.judges.labels import LABEL_RULES, LabelRule, first_error, mc_labels

__all__ = ["Judge", "JudgeContext", "JudgeScores", "judge_class", "judge_names", "make_judge", "register_judge",
           "LABEL_RULES", "LabelRule", "first_error", "mc_labels"]

"""Step judges and the credit they give (DESIGN §4.6)."""

from tcred.judges import oracle  # noqa: F401  (registers the oracle judge)
from tcred.judges.base import Judge, judge_class, judge_names, make_judge, register_judge
from tcred.judges.labels import LABEL_RULES, LabelRule, first_error, mc_labels

__all__ = ["Judge", "judge_class", "judge_names", "make_judge", "register_judge", "LABEL_RULES", "LabelRule",
           "first_error", "mc_labels"]

"""Variance: the spread of rewards across rollouts, per token and per prompt (DESIGN §4.4, DRO).

Each changes only the credit method of the task's GRPO experiment.
"""

import dataclasses

from tcred.credit import make_credit
from tcred.experiments.defaults import register_method

register_method("dro-r3", "outcome + σ-weighted reference-answer likelihood (DRO R3)",
                lambda c: dataclasses.replace(c, credit=make_credit("dro-r3")))
register_method("variance-filter", "DRO query filter: drop low-σ and all-equal prompts, refill",
                lambda c: dataclasses.replace(c, credit=make_credit("variance-filter")))

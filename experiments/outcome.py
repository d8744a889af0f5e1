"""Outcome baselines: one advantage per rollout from its group's rewards (DESIGN §4.1)."""

import dataclasses

from tcred.credit import make_credit
from tcred.experiments.defaults import CREDIT_TASKS, REAL_MODEL_TASKS, TASKS, register_method
from tcred.losses.pg import LossConfig

register_method("grpo", "GRPO: group-normalised outcome advantage, PPO-clip, token-mean", lambda c: c,
                tasks=TASKS + REAL_MODEL_TASKS + CREDIT_TASKS)  # the difficulty levels too (issue 24)
register_method("dr-grpo", "Dr. GRPO: no std normalisation, divide by the fixed generation budget",
                lambda c: dataclasses.replace(c, credit=make_credit("outcome", mode="dr-grpo"),
                                              loss=LossConfig(aggregation="seq-mean-token-sum-norm")))
register_method("dapo", "DAPO: clip-higher (0.2/0.28) and dynamic sampling of informative groups",
                lambda c: dataclasses.replace(c, loss=LossConfig(clip_low=0.2, clip_high=0.28),
                                              rl=dataclasses.replace(c.rl, dynamic_sampling=True)))

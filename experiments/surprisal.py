"""Surprisal: tokens the policy found unlikely, −log p of the sampled token (DESIGN §4.2; issue 12).

Its identifiability figures (AUROC 0.86 on countdown before the controls) largely restate the bound
|A_t| ≤ 1 − p that on-policy values obey (issue 23): see the controlled identify reports. Each changes only
the credit method of the task's GRPO experiment.
"""

import dataclasses

from tcred.credit import make_credit
from tcred.experiments.defaults import REAL_MODEL_TASKS, SIGNAL_CREDIT_TASKS, TASKS, register_method

register_method("surprisal-top20", "policy gradient on the top-20% surprisal (−log p) tokens",
                lambda c: dataclasses.replace(c, credit=make_credit("surprisal-top20")),
                tasks=TASKS + REAL_MODEL_TASKS + SIGNAL_CREDIT_TASKS)
register_method("surprisal-weight", "advantage scaled by normalised surprisal (−log p)",
                lambda c: dataclasses.replace(c, credit=make_credit("surprisal-weight")))

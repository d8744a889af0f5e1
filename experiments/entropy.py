"""Entropy: policy gradient on the tokens of highest (or lowest) entropy (DESIGN §4.2, arXiv 2506.01939).

Each changes only the credit method of the task's GRPO experiment.
"""

import dataclasses

from tcred.credit import make_credit
from tcred.experiments.defaults import REAL_MODEL_TASKS, SIGNAL_CREDIT_TASKS, TASKS, register_method


def _credit(name, **kw):
  return lambda c: dataclasses.replace(c, credit=make_credit(name, **kw))


register_method("entropy-top20", "policy gradient on the top-20% entropy (forking) tokens",
                _credit("entropy-mask", rho=0.2), tasks=TASKS + REAL_MODEL_TASKS + SIGNAL_CREDIT_TASKS)
register_method("entropy-top10", "policy gradient on the top-10% entropy tokens", _credit("entropy-mask", rho=0.1))
register_method("entropy-top50", "policy gradient on the top-50% entropy tokens", _credit("entropy-mask", rho=0.5))
register_method("entropy-bottom80", "ablation: policy gradient on the bottom-80% entropy tokens",
                _credit("entropy-mask", rho=0.2, keep="bottom"))

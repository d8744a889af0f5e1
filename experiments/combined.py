"""Combined signals: tokens ranked by several signals at once (issue 25 item 4).

The seeds' open question, "does optimising for one signal under-explore the others?": the top-20% tokens by the
equal-weight rank average of entropy, surprisal and HSIC MI (credit method `combined-mask`), beside its parts
(`entropy-top20`, `surprisal-top20`, `mi-peaks`) in the suites. Other lists: `--set credit.signals=a,b,...`.
"""

import dataclasses

from tcred.credit import make_credit
from tcred.experiments.defaults import register_method

register_method("combined-top20", "policy gradient on the top-20% tokens by the rank average of entropy, surprisal "
                "and HSIC MI", lambda c: dataclasses.replace(c, credit=make_credit("combined-mask", rho=0.2)))

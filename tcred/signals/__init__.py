"""Pure per-group token signals, and their registry (`tcred.signals.registry`).

Importing the package registers every built-in signal, in this order (the order of the study's rows):
entropy, surprisal (`entropy`), hsic-mi, info-gain (`information`), xroll-sigma, xroll-sigma-delta
(`variance`), tree-sibling-gap, tree-fork-gap (`tree`), random, entropy-bound (`controls`), delta-logp,
gmts-hidden, gmts-unembed (`policy`).
"""

from tcred.signals import entropy, information, variance, tree, controls, policy  # noqa: F401  (register the signals)
from tcred.signals.registry import TokenSignal, get_signal, register_signal, signal_names  # noqa: F401

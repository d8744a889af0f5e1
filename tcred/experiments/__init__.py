"""Named experiments and suites (importing this package registers them all)."""

from tcred.experiments.registry import (Suite, experiment_names, get_experiment, get_suite,
                                        register_experiment, register_suite, suite_names)
from tcred.experiments import definitions  # noqa: F401  (registers the experiments)
from tcred.experiments import suites  # noqa: F401,E402  (registers the suites; last: reads the registry)

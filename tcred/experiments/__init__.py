"""Named experiments and suites, defined by the files of the experiments folders
(`tcred.experiments.folders`) and loaded the first time the registry is read."""

from tcred.experiments.registry import (Suite, add_folders, experiment_for, experiment_names, families, family_file,
                                        get_experiment, get_suite, load, register_experiment, register_suite,
                                        suite_names)

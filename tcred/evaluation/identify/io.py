"""`tcred identify` end to end: the policy of a study (the SFT base or a run directory's checkpoint,
restored by `tcred.training.export.run_policy`, the loader `tcred export` and `--resume` share), the
studies, and the files they write (`identify-<task>.md`, `.png`).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import pathlib
import time
from typing import Any, Sequence

from flax import nnx

from tcred import experiments
from tcred.evaluation.identify import report
from tcred.evaluation.identify.config import IdentifyConfig, UsageError
from tcred.evaluation.identify.metrics import Results, evaluate_study
from tcred.evaluation.identify.study import StudyData, pool_studies, run_study
from tcred.tasks.base import Problem, Task
from tcred.tasks.registry import make_task_from_config, task_entry, task_names
from tcred.training.config import config_from_dict
from tcred.training.data import eval_problems
from tcred.training.export import ExportError, run_policy
from tcred.training.sft import base_policy, cache_root
from tcred.training.tracking import write_atomic


def report_paths(out, stem: str) -> tuple[pathlib.Path, pathlib.Path]:
  """`(out/<stem>.md, out/<stem>.png)`, the report and its figure, with `out` created."""
  out = pathlib.Path(out)
  out.mkdir(parents=True, exist_ok=True)
  return out / f"{stem}.md", out / f"{stem}.png"


def _in_cache(directory) -> str:
  """A base policy's directory as reports print it: `$TCRED_CACHE/...` (no path of this machine)."""
  directory = pathlib.Path(directory)
  try:
    return f"$TCRED_CACHE/{directory.resolve().relative_to(cache_root().resolve())}"
  except ValueError:
    return directory.name


def _check_prompts(cfg, prompts: int) -> int:
  n_eval = cfg.rl.held_out_prompts
  if prompts > n_eval:
    raise UsageError(f"--prompts must be <= {n_eval} (the held-out prompts excluded from the policy's "
                     f"training), got {prompts}")
  return n_eval


def _check_mi_layer(cfg, mi_layer: int) -> None:
  layers = cfg.model.num_hidden_layers
  if not -layers <= mi_layer < layers:
    raise UsageError(f"--mi-layer {mi_layer} must be in [{-layers}, {layers}) for this policy's {layers} decoder "
                     "layers (negative: from the last layer)")


def _check_alternatives(cfg, alternatives: int | None) -> None:
  vocab = cfg.model.vocab_size
  if alternatives is not None and not 2 <= alternatives <= vocab:
    raise UsageError(f"--alternatives must be in [2, {vocab}] (the policy's vocabulary has {vocab} tokens), "
                     f"got {alternatives}")


def _grpo_experiments(task_name: str) -> dict[str, str]:
  """`{task: its <task>-grpo experiment}` of the tasks identify studies (an exact oracle and a `<task>-grpo`
  experiment, whose config defines the base policy); UsageError naming them when `task_name` is not one."""
  grpo = {experiments.get_experiment(n).task: n for n in experiments.experiment_names()
          if experiments.get_experiment(n).method == "grpo"}
  tasks = [t for t in task_names() if t in grpo and getattr(task_entry(t).task_cls, "has_oracle", True)]
  if task_name not in tasks:
    raise UsageError(f"unknown task {task_name!r} (identify needs a task with an exact oracle and a "
                     f"`<task>-grpo` experiment); allowed: {', '.join(tasks)}")
  return grpo


def check_run_dir(task_name: str, policy: str, *, prompts: int = 1, mi_layer: int = -1, flag: str = "--policy",
                  alternatives: int | None = None):
  """The experiment config of the run directory `policy`, checked for a study of `task_name` (a tcred run of that
  task, enough held-out prompts, the MI layer and alternatives within the policy); UsageError otherwise. Reads
  config.json only."""
  _grpo_experiments(task_name)
  allowed = "'base' or a run directory" if flag == "--policy" else "a run directory"
  run_dir = pathlib.Path(policy)
  config_path = run_dir / "config.json"
  if not config_path.is_file():
    raise UsageError(f"{flag} {policy!r}: allowed values are {allowed} holding config.json "
                     "and checkpoints/ (e.g. runs/countdown-grpo/seed-0)")
  try:
    cfg = config_from_dict(json.loads(config_path.read_text()))
  except (ValueError, KeyError, TypeError) as e:  # e.g. a Hugging Face model directory (its own config.json)
    raise UsageError(f"{flag} {policy!r} is not a tcred run directory: its config.json is not a tcred run config "
                     f"({type(e).__name__}: {e}); allowed values are {allowed} of `tcred run` "
                     "(e.g. runs/countdown-grpo/seed-0)") from None
  if cfg.task != task_name:
    raise UsageError(f"{flag} {policy!r} is a run of task {cfg.task!r}, not {task_name!r}")
  _check_prompts(cfg, prompts)
  _check_mi_layer(cfg, mi_layer)
  _check_alternatives(cfg, alternatives)
  return cfg


def load_policy(task_name: str, policy: str, *, prompts: int = 1, progress: bool = False, mi_layer: int = -1,
                alternatives: int | None = None, bases: int = 1, sft_seed: int = 0
                ) -> tuple[Any, nnx.GraphDef, nnx.State, str]:
  """The policy of a study: `"base"` (the cached SFT base of `<task>-grpo`, trained with `sft.seed = sft_seed`:
  base b of a several-base study) or a run directory's final checkpoint.

  Returns `(experiment config, graphdef, params, description)`. Raises UsageError with the allowed
  values for an unknown task, a directory that is not a run of this task with a checkpoint, or
  more `prompts` than the held-out prompts excluded from the policy's training, an `mi_layer` the
  policy does not have, more `alternatives` than its vocabulary, or `bases` > 1 with a run directory (one
  policy); all before any policy is built or read.
  """
  grpo = _grpo_experiments(task_name)
  if policy == "base":
    cfg = experiments.get_experiment(grpo[task_name])
    task = make_task_from_config(cfg.task, cfg.task_config)
    n_eval = _check_prompts(cfg, prompts)
    _check_mi_layer(cfg, mi_layer)
    _check_alternatives(cfg, alternatives)
    sft = dataclasses.replace(cfg.sft, seed=sft_seed)
    cfg = dataclasses.replace(cfg, sft=sft)
    graphdef, params, directory = base_policy(cfg.model, task, cfg.task_config, sft, eval_prompts=n_eval,
                                              progress=progress)
    return cfg, graphdef, params, f"SFT base policy of `{cfg.name}` with sft.seed = {sft_seed} (`{_in_cache(directory)}`)"
  if bases != 1:
    raise UsageError(f"--bases must be 1 with --policy RUN_DIR (one trained policy), got {bases}; several bases "
                     "need --policy base")
  cfg = check_run_dir(task_name, policy, prompts=prompts, mi_layer=mi_layer, alternatives=alternatives)
  run_dir = pathlib.Path(policy)
  config_path = run_dir / "config.json"
  if not (run_dir / "checkpoints").is_dir():
    raise UsageError(f"--policy {policy!r}: no checkpoints/ directory; allowed values are 'base' or a run "
                     "directory with checkpoints")
  try:
    cfg, graphdef, params, step = run_policy(run_dir)  # the last usable checkpoint, as `tcred export`
  except ExportError as e:
    raise UsageError(f"--policy {policy!r}: {e}") from e
  return cfg, graphdef, params, f"`{cfg.name}` seed {json.loads(config_path.read_text()).get('seed')} " \
                                      f"checkpoint step {step} (`{run_dir}`)"


def identify(task_name: str, *, policy: str = "base", config: IdentifyConfig = IdentifyConfig(),
             out: Any = "benchmarks/results", command: str = "", progress: bool = False
             ) -> tuple[StudyData, Results, Any, Any]:
  """The whole study of `tcred identify`: loads the policy (with `config.bases` = B > 1, the SFT bases
  `sft.seed` = 0..B−1), runs the study on the first N held-out prompts (`eval_problems`) of each, pools
  them, writes `out/identify-<task>.md` and `out/identify-<task>.png`.

  Returns (data, results, md path, png path). Raises UsageError for a bad task, policy, --prompts,
  --alternatives or --bases, before any policy is built or any file written.
  """
  t_start = time.time()
  load_start = os.getloadavg()[0] if hasattr(os, "getloadavg") else math.nan
  check = dict(prompts=config.prompts, progress=progress, mi_layer=config.mi_layer,
               alternatives=config.alternatives, bases=config.bases)
  cfg, graphdef, params, description = load_policy(task_name, policy, **check)
  more = []
  for b in range(1, config.bases):
    _, g_b, p_b, d_b = load_policy(task_name, policy, **check, sft_seed=b)
    more.append((g_b, p_b))
    description += f"; {d_b}"
  task = make_task_from_config(cfg.task, cfg.task_config)
  load_s = time.time() - t_start
  return write_study(graphdef, params, task, eval_problems(task, config.prompts), config, out=out,
                     name=task_name, progress=progress, more_bases=more,
                     meta={"command": command or f"tcred identify {task_name}", "policy": description,
                           "load_s": load_s, "task_config": repr(cfg.task_config), "load_start": load_start},
                     t_start=t_start)


def write_study(graphdef, params, task: Task, problems: Sequence[Problem], config: IdentifyConfig, *, out: Any,
                name: str, meta: dict[str, Any], progress: bool = False, t_start: float | None = None,
                more_bases: Sequence[tuple[Any, Any]] = ()) -> tuple[StudyData, Results, Any, Any]:
  """Runs the study of `problems` and writes `out/identify-<name>.md` and `.png`.

  `config.rollouts_from`: "chains" or "tree" run one study (the report and plot of its rollouts);
  "both" runs the chain study, then the tree study, and writes one report (the chain sections, then
  a tree section) with a second plot `identify-<name>-tree.png`.

  `meta`: `command`, `policy` (a description), optionally `load_s` and `task_config`.
  Returns (data, results, md path, png path) of the first study (chains unless `rollouts_from="tree"`);
  `write_studies` also returns the tree study of "both".
  """
  data, results, md_path, png_path, _ = write_studies(graphdef, params, task, problems, config, out=out, name=name,
                                                      meta=meta, progress=progress, t_start=t_start,
                                                      more_bases=more_bases)
  return data, results, md_path, png_path


def write_studies(graphdef, params, task: Task, problems: Sequence[Problem], config: IdentifyConfig, *, out: Any,
                  name: str, meta: dict[str, Any], progress: bool = False, t_start: float | None = None,
                  more_bases: Sequence[tuple[Any, Any]] = ()):
  """`write_study`, also returning the tree study: (data, results, md, png, tree) where `tree` is
  (tree data, tree results, tree png) with `rollouts_from="both"`, else None.

  `more_bases`: `(graphdef, params)` of SFT bases 1..B−1 (`config.bases` = B); each runs the same studies
  on the same prompts, and the studies are pooled (`pool_studies`: the CIs resample bases, then prompts).
  """
  if len(more_bases) + 1 != config.bases:
    raise ValueError(f"config.bases = {config.bases} needs {config.bases - 1} more base policies, got "
                     f"{len(more_bases)}")
  policies = [(graphdef, params), *more_bases]
  t_start = time.time() if t_start is None else t_start
  md_path, png_path = report_paths(out, f"identify-{name}")
  first = "tree" if config.rollouts_from == "tree" else "chains"
  data, chosen = _run_bases(policies, task, problems, config, progress=progress, source=first)
  results = evaluate_study(data)
  report.plot(data, results, png_path)
  tree = None
  if config.rollouts_from == "both":
    tree_png = png_path.with_name(f"identify-{name}-tree.png")
    tree_data, _ = _run_bases(policies, task, problems, dataclasses.replace(chosen, fork_positions=0),
                              progress=progress, source="tree")
    tree_results = evaluate_study(tree_data)
    report.plot(tree_data, tree_results, tree_png)
    tree = (tree_data, tree_results, tree_png)
  meta = {"task_config": "", "load_s": 0.0, **meta, "wall_s": time.time() - t_start,
          "machine": report.machine_description(), "png": png_path.name}
  text = report.markdown_report(data, results, meta)
  if tree is not None:
    text += report.tree_section(tree[0], tree[1], tree[2].name)
  write_atomic(md_path, text)
  return data, results, md_path, png_path, tree


def _run_bases(policies, task, problems, config: IdentifyConfig, *, progress: bool, source: str,
               references=None) -> tuple[StudyData, IdentifyConfig]:
  """One study per base, pooled, all at one K. With `auto_continuations` every base searches K (doubling from
  the K chosen so far, `truth.ground_truth`), so that each base's bound-violating share stays at most the
  target; when a base needs a larger K than the bases before it, those are rerun at the new K (fixed), so the
  pooled study has one K and its pooled share (a weighted mean of the bases') meets the target too. The
  pooled truth's `continuation_steps` lists every base's search as `(base, K, share)`. The returned config has
  the chosen K (auto off) for the tree study; the replica agreement is measured on base 0 only (its cost is
  two step-level Monte-Carlo passes at K). `references`: each policy's reference parameters (the rows that read
  one, e.g. `delta-logp`), or None."""
  k = config.continuations
  studies: list = [None] * len(policies)
  search: list = []
  fixed = dataclasses.replace(config, auto_continuations=False)
  references = [None] * len(policies) if references is None else list(references)
  if len(references) != len(policies):
    raise ValueError(f"{len(references)} references for {len(policies)} policies")

  def study(b: int, cfg: IdentifyConfig):
    graphdef, params = policies[b]
    return run_study(graphdef, params, task, problems, dataclasses.replace(cfg, continuations=k,
                                                                            replicas=cfg.replicas and b == 0),
                     progress=progress, source=source, ref_params=references[b])

  for b in range(len(policies)):
    studies[b] = study(b, config)
    if config.auto_continuations:
      search += [(b, kk, share) for kk, share in studies[b].truth.continuation_steps]
    if studies[b].truth.continuations > k:
      k = studies[b].truth.continuations
      for earlier in range(b):  # one K for the pooled study
        studies[earlier] = study(earlier, fixed)
  data = pool_studies(studies)
  if config.auto_continuations:
    data = data._replace(truth=data.truth._replace(continuation_steps=tuple(search)))
  return data, dataclasses.replace(fixed, continuations=k)

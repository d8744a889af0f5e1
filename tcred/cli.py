"""`tcred` command line (README.md, "Usage").

  tcred [--experiments DIR ...] COMMAND ...   (DIR: a folder of the user's experiments files)
  tcred list
  tcred run NAME [--seed S] [--steps N] [--out DIR] [--set key=value ...] [--resume]
  tcred show NAME [--steps N] [--set key=value ...]
  tcred table SUITE [--seeds K] [--bases B] [--out DIR] [--jobs J] [--results DIR]
  tcred identify TASK [--policy base|RUN_DIR] [--prompts N] [--rollouts G] [--continuations K|auto] [--delta D]
                 [--bases B] [--fork-positions P] [--alternatives k] [--noise-target L] [--max-continuations K]
                 [--advantage-estimator difference|rao-blackwell]
                 [--rollouts-from chains|tree|both] [--tree-fork-at entropy|neg-logp|step] [--seed S] [--out DIR]
  tcred identify TASK --policy RUN_DIR[,RUN_DIR...] --steps 0,10,20,40 [study flags]
  tcred identify TASK --changes RUN_DIR[,RUN_DIR...] [--policy base|RUN_DIR] [--change-by logp|kl|argmax]
                 [--change-threshold X] [study flags]
  tcred export RUN_DIR --out DIR [--step N]
  tcred judge train KIND --task TASK [--set judge.x=V ...] [--out DIR] [--resume]
  tcred judge eval KIND --task TASK [--set judge.x=V ...] [--prompts N] [--rollouts R] [--seed S]

Unknown names and bad values exit with status 2 and a message listing what is allowed.
"""

from __future__ import annotations

import os

os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

import argparse
import dataclasses
import json
import logging
import pathlib
import shlex
import signal
import subprocess
import sys
import time

from tcred.runtime import shown_command


_RUN_EPILOG = ("NAME is a registered experiment: `tcred list` lists them, `tcred show NAME [--set ...]` prints the "
               "resolved config a run would use (with its config hash) without running anything.")


def _parser() -> argparse.ArgumentParser:
  p = argparse.ArgumentParser(prog="tcred", description="Token-level credit assignment for RL on LMs.")
  p.add_argument("--experiments", action="append", default=[], metavar="DIR",
                 help="also load the experiments files of DIR (repeatable; added to $TCRED_EXPERIMENTS): one "
                 "file per method family, plus suites.py")
  sub = p.add_subparsers(dest="command", required=True)
  sub.add_parser("list", help="list registered experiments, suites and step judges")
  run = sub.add_parser("run", help="run one experiment by name", epilog=_RUN_EPILOG)
  _add_config_args(run)
  run.add_argument("--seed", type=int, default=0, help="the run's seed, an integer >= 0 (default 0); the run "
                   "goes to OUT/NAME/seed-S/")
  run.add_argument("--out", default="runs", help="output root (default: runs/)")
  run.add_argument("--resume", action="store_true", help="continue the run in OUT/NAME/seed-S from its last good "
                   "checkpoint; the config must be the same (only --steps may grow)")
  run.add_argument("--no-progress", action="store_true", help="no progress bar on a terminal, no progress lines "
                   "otherwise (by default a run that does not write to a terminal prints one line per ~5%% of "
                   "its steps)")
  show = sub.add_parser("show", help="print an experiment's resolved config (JSON) and config hash; runs nothing",
                        epilog=_RUN_EPILOG)
  _add_config_args(show)
  table = sub.add_parser("table", help="run (or reuse) every run of a suite; write its Markdown table and curves",
                         epilog="A finished run is reused only if its config.json equals the suite's config for "
                         "it (rl.steps included); otherwise the table refuses, naming the differing fields.")
  table.add_argument("suite", help="a registered suite (see `tcred list`)")
  table.add_argument("--seeds", type=int, default=None, help="seeds per experiment (default: the suite's)")
  table.add_argument("--bases", type=int, default=None,
                     help="SFT base policies, a random factor: seed s starts from base s mod BASES (sft.seed + s mod "
                     "BASES), so every method of one seed is paired; 1..seeds (default: the suite's, 3 for the "
                     "registered suites, at most --seeds); every interval covers base variation")
  table.add_argument("--out", default="runs", help="runs root (default: runs/)")
  table.add_argument("--jobs", type=int, default=1, help="missing runs to run at once, as subprocesses (default 1)")
  table.add_argument("--results", default="benchmarks/results",
                     help="where SUITE.md and SUITE.png go (default: benchmarks/results/)")
  table.add_argument("--finished-only", action="store_true",
                     help="run nothing: build the table from the runs already finished (a suite in progress); its "
                     "header counts and names the missing runs")
  ident = sub.add_parser("identify", help="identifiability study of the token signals on one task")
  ident.add_argument("task", help="a task with an exact oracle and a <task>-grpo experiment (countdown, graph-path, "
                     "long-addition and the difficulty levels, e.g. lock-chain-k8, long-addition-d8)")
  ident.add_argument("--policy", default="base",
                     help="'base' (the task's cached SFT base policy) or a run directory (its final checkpoint); with "
                     "--steps, run directories (comma-separated: e.g. the seeds of one experiment, pooled); with "
                     "--changes, the reference: 'base' (each run's own SFT base, default) or a run directory")
  ident.add_argument("--steps", default=None, metavar="S,S,...",
                     help="the study at these checkpoint steps of the --policy run(s) (0: the run's base policy), "
                     "e.g. 0,10,20,40; writes identify-TASK-training-METHOD.md and .png (a run keeps every N-th checkpoint "
                     "with --set rl.keep_every=N)")
  ident.add_argument("--changes", default=None, metavar="RUN,RUN,...",
                     help="the change study: which positions the trained runs (comma-separated run directories, each "
                     "its last checkpoint) moved against the reference (--policy), and which of the reference's "
                     "signals predict them; writes rl-changes-TASK.md and .png")
  ident.add_argument("--change-by", default="logp",
                     help="with --changes, what makes a position changed: logp (|Δlog p| of the sampled token >= "
                     "--change-threshold, default), kl (KL(reference ‖ run) >= threshold) or argmax (the most "
                     "probable next token differs)")
  ident.add_argument("--change-threshold", type=float, default=None,
                     help="with --changes, the threshold in nats, > 0 (default ln 2 = 0.693)")
  ident.add_argument("--prompts", type=int, default=32, help="held-out prompts N (default 32)")
  ident.add_argument("--rollouts", type=int, default=8, help="rollouts per prompt G (default 8)")
  ident.add_argument("--continuations", default="32",
                     help="continuations per prefix K for the Monte-Carlo values (default 32), or auto: start at 32 "
                     "and double K until the bound-violating share of the decisive labels is at most --noise-target")
  ident.add_argument("--delta", type=float, default=0.25, help="a token is decisive when |A_t| >= delta, in (0, 1) (default 0.25)")
  ident.add_argument("--advantage-estimator", default="difference",
                     help="the Monte-Carlo advantage estimator: difference (V after the token minus V before it, "
                     "default) or rao-blackwell ((1 - p)(Q - V of the other tokens): p is known, so |A| <= 1 - p "
                     "holds by construction and likely tokens get far less noise; fixed K)")
  ident.add_argument("--max-continuations", type=int, default=256,
                     help="the largest K --continuations auto may reach (default 256); the report says when the "
                     "share is still above --noise-target there")
  ident.add_argument("--noise-target", type=float, default=0.05,
                     help="the level the share of decisive labels on tokens with p > 1 - delta (provably noise) should "
                     "stay below, in (0, 1) (default 0.05; the stopping rule of --continuations auto)")
  ident.add_argument("--bases", type=int, default=None,
                     help="SFT bases pooled (sft.seed = 0..B-1; CIs resample bases, then prompts); default 3 with "
                     "--policy base, 1 with a run directory")
  ident.add_argument("--fork-positions", type=int, default=2,
                     help="positions per rollout for the forking ground truth (top-k alternatives continued K times "
                     "each; 0: none; default 2)")
  ident.add_argument("--alternatives", type=int, default=3,
                     help="k, the most probable tokens continued at each forking position (2 to the vocabulary size; "
                     "default 3)")
  ident.add_argument("--no-replicas", action="store_true",
                     help="skip the mc judge's replica agreement at K (the label noise floor)")
  ident.add_argument("--rollouts-from", default=None,
                     help="chains (G independent rollouts), tree (G leaves of an EPTree forest per prompt, with "
                     "the tree sibling gap signal) or both (one report with a tree section); default both, and "
                     "chains with --steps or --changes")
  ident.add_argument("--tree-fork-at", default="entropy",
                     help="where the tree rollouts fork: entropy (default), neg-logp or step")
  ident.add_argument("--mi-peak-rule", default="outlier",
                     help="MI peaks: outlier (Q3 + 1.5·IQR per rollout, default) or top-k (MI-Peaks' code)")
  ident.add_argument("--mi-peak-k", type=int, default=20, help="peaks per rollout under --mi-peak-rule top-k")
  ident.add_argument("--mi-layer", type=int, default=-1,
                     help="decoder layer whose output HSIC MI uses (negative: from the end; default -1)")
  ident.add_argument("--mi-norm", default="post",
                     help="HSIC MI states after (post, default) or before (pre, MI-Peaks' code) the final RMSNorm")
  ident.add_argument("--mi-sigma", default="width",
                     help="HSIC σ: width (50·sqrt(D/4096), default) or fixed (50, MI-Peaks' code)")
  ident.add_argument("--judges", default="oracle,mc",
                     help="step judges added as rows (judge-NAME: the step score change on the step's tokens), "
                     "comma-separated (default oracle,mc, which need no training; '' for none; trained judges load "
                     "from the cache or train first)")
  ident.add_argument("--seed", type=int, default=0, help="seeds the rollouts, continuations and bootstrap (>= 0)")
  ident.add_argument("--bootstrap", type=int, default=200, help="bootstrap replicates for the CIs (0: none)")
  ident.add_argument("--out", default="benchmarks/results",
                     help="where identify-TASK.md and .png go (default: benchmarks/results/)")
  ident.add_argument("--no-progress", action="store_true", help="no progress bar")
  export = sub.add_parser("export", help="write a run's policy as a Hugging Face directory (config, safetensors, "
                          "tokenizer)")
  export.add_argument("run_dir", help="a run directory, e.g. runs/countdown-grpo/seed-0")
  export.add_argument("--out", required=True, help="the directory to write (must not exist or be empty)")
  export.add_argument("--step", type=int, default=None, help="checkpoint step to export (default: the last)")
  explore = sub.add_parser("explore", help="write a run's credit explorer page (one self-contained HTML file), or "
                           "for a folder of runs each run's page and an index page")
  explore.add_argument("run_dir", help="a run directory (e.g. runs/countdown-grpo/seed-0) or a folder of runs")
  explore.add_argument("--step", type=int, default=None,
                       help="show only this recorded step (default: every recorded step, with a step selector)")
  explore.add_argument("--out", default=None, help="the HTML file to write (default: RUN_DIR/explore/explore.html; "
                       "for a folder of runs, its index: ROOT/explore.html)")
  _add_judge_args(sub)
  return p


def _add_judge_args(sub) -> None:
  """`tcred judge train|eval` (`tcred.evaluation.judges`)."""
  judge = sub.add_parser("judge", help="train or evaluate a step judge on a task's base policy")
  commands = judge.add_subparsers(dest="judge_command", required=True)
  for name, what in (("train", "train a judge and cache it by its config (a second call reuses it)"),
                     ("eval", "ProcessBench F1 of a judge's first wrong step against the oracle's, on held-out "
                      "rollouts (trains a trained judge first if it is not cached)")):
    c = commands.add_parser(name, help=what)
    c.add_argument("kind", help="a judge (`tcred list` lists them)")
    c.add_argument("--task", required=True, help="an embedded task: countdown, graph-path, long-addition")
    c.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="judge.FIELD=V sets a judge setting; task_config/model/sft/rl.FIELD=V edit the task's "
                   "default experiment whose base policy the judge reads (repeatable)")
    c.add_argument("--no-progress", action="store_true", help="no progress bar")
  train, ev = commands.choices["train"], commands.choices["eval"]
  train.add_argument("--out", default="runs", help="metrics.jsonl and TensorBoard scalars go to "
                     "OUT/judges/<kind>-<config hash>/ (default: runs/); the weights go to the cache")
  train.add_argument("--resume", action="store_true", help="continue a training that was interrupted")
  ev.add_argument("--prompts", type=int, default=64, help="held-out prompts N (default 64)")
  ev.add_argument("--rollouts", type=int, default=4, help="rollouts per prompt R (default 4)")
  ev.add_argument("--seed", type=int, default=0, help="seeds the rollouts, the judge's sampling and the bootstrap")
  ev.add_argument("--bootstrap", type=int, default=1000, help="bootstrap replicates of the 95%% intervals (0: none)")


def _add_config_args(parser: argparse.ArgumentParser) -> None:
  """NAME, --steps and --set: what resolves an experiment's config (`run` and `show`)."""
  from tcred.training.config import FALSE_SPELLINGS, TRUE_SPELLINGS

  parser.add_argument("name", help="a registered experiment (see `tcred list`)")
  parser.add_argument("--steps", type=int, default=None, help="RL steps, an integer >= 1 (overrides rl.steps)")
  parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                      help="override a config field, e.g. --set rl.lr=3e-4 (repeatable); sections: task_config, "
                      "model, sft, rl, credit, loss, tree, mesh; `tcred show NAME` lists the fields; booleans: "
                      f"{'/'.join(TRUE_SPELLINGS)} or {'/'.join(FALSE_SPELLINGS)} (any case); none: unset")


def _resolve(args):
  """The experiment config of `run`/`show` arguments; raises ValueError naming the bad flag or field."""
  from tcred import experiments

  cfg = experiments.get_experiment(args.name)
  overrides = list(args.overrides)
  if args.steps is not None:
    if args.steps < 1:
      raise ValueError(f"--steps must be an integer >= 1, got {args.steps}")
    overrides.append(f"rl.steps={args.steps}")
  from tcred.training.pretrained import resolve_model  # a real-model task: the checkpoint's architecture

  return resolve_model(cfg.with_overrides(overrides))


# IdentifyConfig fields set by a flag: its messages name the flag the user typed.
_IDENTIFY_FLAGS = ("prompts", "rollouts", "continuations", "delta", "seed", "bootstrap", "rollouts_from",
                   "tree_fork_at", "mi_peak_rule", "mi_peak_k", "mi_layer", "mi_norm", "mi_sigma", "judges",
                   "noise_target", "max_continuations", "advantage_estimator", "bases", "fork_positions",
                   "alternatives")


def _as_flags(message: str, fields=_IDENTIFY_FLAGS) -> str:
  """`message` with each config field name that a flag sets written as that flag (`rollouts_from` ->
  `--rollouts-from`)."""
  import re

  pattern = r"(?<![\w.-])(" + "|".join(sorted(fields, key=len, reverse=True)) + r")\b"
  return re.sub(pattern, lambda m: "--" + m.group(1).replace("_", "-"), message)


def _export(args) -> int:
  from tcred.training.export import ExportError, export_run

  if args.step is not None and args.step < 0:
    return _usage_error(f"--step must be a checkpoint step >= 0, got {args.step}")
  try:
    out, step = export_run(args.run_dir, args.out, step=args.step)
  except ExportError as e:
    return _usage_error(str(e))
  print(f"wrote {out} (step {step} of {args.run_dir}): load it with "
        f"transformers.AutoModelForCausalLM.from_pretrained({str(out)!r})", file=sys.stderr)
  return 0


def _explore(args) -> int:
  from tcred.evaluation.explore import ExploreError, explore

  try:
    target, written = explore(args.run_dir, step=args.step, out=args.out)
  except ExploreError as e:
    return _usage_error(str(e))
  size = sum(p.stat().st_size for p in written)
  print(f"wrote {target}" + (f" and {len(written) - 1} run pages" if len(written) > 1 else "")
        + f" ({size / 1e6:.2f} MB); open it in a browser", file=sys.stderr)
  return 0


def _identify(args, argv: list[str]) -> int:
  from tcred.evaluation import identify

  auto = args.continuations == "auto"
  try:
    continuations = 32 if auto else int(args.continuations)
  except ValueError:
    return _usage_error(f"--continuations must be an integer >= 1 or auto, got {args.continuations!r}")
  if args.steps is not None and args.changes is not None:
    return _usage_error("--steps and --changes are two studies: give one of them")
  mode = "steps" if args.steps is not None else "changes" if args.changes is not None else "single"
  if mode != "single" and args.bases not in (None, 1):
    return _usage_error(f"--bases must be 1 with --{mode} (the runs' own bases are used), got {args.bases}")
  if mode == "steps" and args.policy == "base":
    return _usage_error("--steps needs --policy RUN_DIR[,RUN_DIR...] (the run whose checkpoints are studied), "
                        "not 'base'")
  if mode != "changes" and (args.change_by != "logp" or args.change_threshold is not None):
    return _usage_error("--change-by and --change-threshold belong to --changes")
  rollouts_from = args.rollouts_from or ("both" if mode == "single" else "chains")
  bases = args.bases if args.bases is not None else (3 if args.policy == "base" and mode == "single" else 1)
  try:
    config = identify.IdentifyConfig(prompts=args.prompts, rollouts=args.rollouts, continuations=continuations,
                                     auto_continuations=auto, noise_target=args.noise_target, bases=bases,
                                     max_continuations=args.max_continuations,
                                     advantage_estimator=args.advantage_estimator,
                                     fork_positions=args.fork_positions, alternatives=args.alternatives,
                                     replicas=not args.no_replicas,
                                     delta=args.delta, seed=args.seed, bootstrap=args.bootstrap,
                                     rollouts_from=rollouts_from, tree_fork_at=args.tree_fork_at,
                                     mi_peak_rule=args.mi_peak_rule, mi_peak_k=args.mi_peak_k, mi_layer=args.mi_layer,
                                     mi_norm=args.mi_norm, mi_sigma=args.mi_sigma,
                                     judges=tuple(j.strip() for j in args.judges.split(",") if j.strip()))
  except ValueError as e:
    return _usage_error(_as_flags(str(e)))
  from tcred.training.tracking import RunError, check_writable_dir

  try:
    check_writable_dir(args.out, "--out")
  except RunError as e:
    return _usage_error(str(e))
  command = shown_command(["tcred", *argv])
  progress = not args.no_progress and sys.stderr.isatty()
  runs = lambda text: [r.strip() for r in text.split(",") if r.strip()]
  try:
    if mode == "steps":
      from tcred.evaluation.identify import training

      steps = training.parse_steps(args.steps)
      _, md, png = training.identify_training(args.task, runs(args.policy), steps, config=config, out=args.out,
                                              command=command, progress=progress)
    elif mode == "changes":
      from tcred.evaluation.identify import changes

      threshold = changes.DEFAULT_THRESHOLD if args.change_threshold is None else args.change_threshold
      _, _, md, png = changes.change_study(args.task, runs(args.changes), reference=args.policy, config=config,
                                           measure=args.change_by, threshold=threshold, out=args.out,
                                           command=command, progress=progress)
    if mode != "single":
      print(md.read_text())
      print(f"wrote {md}, {png}", file=sys.stderr)
      return 0
    _, _, md, png = identify.identify(args.task, policy=args.policy, config=config, out=args.out,
                                      command=command, progress=progress)
  except identify.UsageError as e:
    return _usage_error(str(e))
  print(md.read_text())
  extra = f" and {png.with_name(png.stem + '-tree.png')}" if rollouts_from == "both" else ""
  print(f"wrote {md}, {png}{extra}", file=sys.stderr)
  return 0


def _judge(args) -> int:
  from tcred.evaluation import judges
  from tcred.training.tracking import RunError, check_writable_dir
  from tcred.validation import require_seed

  progress = not args.no_progress and sys.stderr.isatty()
  try:
    if args.judge_command == "train" and args.kind in judges.judge_names():
      judges.require_trainable(args.kind)  # before its settings: "mc needs no training" beats "no setting labels"
    s = judges.setup(args.kind, args.task, args.overrides)
    if args.judge_command == "train":
      check_writable_dir(args.out, "--out")
      trained = judges.train(s, resume=args.resume, log_root=pathlib.Path(args.out) / "judges", progress=progress)
    else:
      for flag, value, low in (("--prompts", args.prompts, 1), ("--rollouts", args.rollouts, 1),
                               ("--seed", args.seed, 0), ("--bootstrap", args.bootstrap, 0)):
        if value < low:
          raise ValueError(f"{flag} must be an integer >= {low}, got {value}")
      require_seed(args.seed, "--seed")
      result = judges.evaluate(s, prompts=args.prompts, rollouts=args.rollouts, seed=args.seed,
                               bootstrap=args.bootstrap, progress=progress)
  except (ValueError, RunError) as e:
    return _usage_error(str(e))
  if args.judge_command == "eval":
    print(f"tcred: judge {args.kind} on {args.task}: F1 {judges.format_metric(result, 'f1')}, acc. erroneous "
          f"{judges.format_metric(result, 'acc_error')}, acc. error-free "
          f"{judges.format_metric(result, 'acc_correct')}", file=sys.stderr)
    print(json.dumps(judges.json_ready(result), indent=1, allow_nan=False))  # undefined metrics: null
    return 0
  info = trained.info
  verb = "is cached; reusing it" if trained.reused else "trained"
  print(f"tcred: judge {args.kind} for {args.task} {verb}: {trained.directory} ({info['labels']} labels, "
        f"{info['data_seconds'] + info['train_seconds']:.0f} s to build)", file=sys.stderr)
  print(json.dumps(info, indent=1))
  return 0


def _usage_error(message: str) -> int:
  print(f"tcred: error: {message}", file=sys.stderr)
  return 2


def _base_key(cfg) -> tuple[str, bool]:
  """The SFT base policy a run needs, and whether it is cached already.

  It orders the parallel runs so that no job sits waiting on another's base-policy lock.
  """
  from tcred.training.sft import base_policy_dir

  directory = base_policy_dir(cfg.model, cfg.task, cfg.task_config, cfg.sft, held_out=cfg.rl.held_out_prompts)
  return directory.name, (directory / "info.json").exists()


def _run_one(suite, name: str, seed: int, out: str) -> str | None:
  """Runs one missing run in this process (resuming a partial one); returns an error or None."""
  from tcred.training.rl import run_experiment
  from tcred.training.tracking import RunError

  cfg = suite.config(name, seed)
  try:
    run_experiment(cfg, seed=seed, out=out, resume=True, progress=sys.stderr.isatty(),
                   log_every=0 if sys.stderr.isatty() else _log_every(cfg))
  except RunError as e:  # refused before it started: the message says why, no traceback
    return str(e)
  except Exception as e:  # noqa: BLE001  (one failed run must not lose the others)
    logging.getLogger("tcred.table").exception("run %s seed %d failed", name, seed)
    return f"{type(e).__name__}: {e}"
  return None


def _run_command(suite, name: str, seed: int, out: str) -> list[str]:
  """The subprocess that runs one missing run (`--resume` continues a partial one, if any); its
  stderr is a log file, so it writes progress lines there."""
  sets = [arg for item in suite.run_overrides(name, seed) for arg in ("--set", item)]
  return [sys.executable, "-m", "tcred.cli", "run", name, "--seed", str(seed), "--out", out, "--resume", *sets]


def _run_parallel(suite, pending: list[tuple[str, int]], out: str, jobs: int) -> dict[tuple[str, int], str]:
  """Runs `pending` as `tcred run ... --resume` subprocesses, `jobs` at a time; returns the failures.

  Runs whose base policy is not cached wait until one run of the same base (its "builder") has
  finished, so the SFT of a base policy happens once.

  No run outlives this command: SIGTERM or SIGHUP (like Ctrl-C) stops it by raising
  `tcred.runtime.Stopped`, and on the way out every child still running gets SIGTERM,
  which stops it after its current step with a checkpoint (`--resume` continues it);
  one still running after `STOP_GRACE_S` is killed (its last checkpoint is kept). A
  child also gets SIGTERM from Linux if this process dies, even by SIGKILL
  (`tcred.runtime.die_with_parent`, armed through `$TCRED_PARENT_PID`).
  """
  from tcred.runtime import PARENT_PID, stop_signals
  from tcred.training.rl import run_dir_of

  keys, ready = {}, set()
  for name, seed in pending:
    keys[(name, seed)], cached = _base_key(suite.config(name, seed))
    if cached:
      ready.add(keys[(name, seed)])
  queue, running, builders, failed = list(pending), {}, {}, {}
  total, done = len(pending), 0
  env = {**os.environ, PARENT_PID: str(os.getpid())}
  try:
    with stop_signals():
      while queue or running:
        for item in list(queue):
          if len(running) >= jobs:
            break
          key = keys[item]
          if key not in ready and key in builders:
            continue  # its base policy is being built by another run
          if key not in ready:
            builders[key] = item
          queue.remove(item)
          run_dir = run_dir_of(out, *item)
          run_dir.mkdir(parents=True, exist_ok=True)
          log_file = (run_dir / "table.log").open("w")
          proc = subprocess.Popen(_run_command(suite, *item, out), stdout=log_file, stderr=subprocess.STDOUT,
                                  env=env)
          running[item] = (proc, log_file, time.time())
          print(f"[start] {item[0]} seed {item[1]} (log {run_dir / 'table.log'})", file=sys.stderr)
        time.sleep(0.2)
        for item, (proc, log_file, t0) in list(running.items()):
          if proc.poll() is None:
            continue
          log_file.close()
          del running[item]
          done += 1
          key = keys[item]
          if builders.get(key) == item:
            del builders[key]  # built (now ready) or failed (the next run of this base builds it)
          minutes = (time.time() - t0) / 60
          if proc.returncode == 0:
            ready.add(key)
            print(f"[{done}/{total} done] {item[0]} seed {item[1]} ({minutes:.1f} min)", file=sys.stderr)
          else:
            tail = (run_dir_of(out, *item) / "table.log").read_text().strip().splitlines()[-5:]
            failed[item] = f"exit status {proc.returncode}: " + " | ".join(tail)
            print(f"[{done}/{total} FAILED] {item[0]} seed {item[1]}: {failed[item]}", file=sys.stderr)
  finally:
    _stop_children(running)
  return failed


STOP_GRACE_S = 120  # seconds a stopped `tcred run` child gets to finish its step and write its checkpoint


def _stop_children(running: dict) -> None:
  """SIGTERM to every child still running, then waits for each (SIGKILL after `STOP_GRACE_S`)."""
  for proc, _, _ in running.values():
    proc.terminate()
  for (name, seed), (proc, log_file, _) in running.items():
    try:
      proc.wait(timeout=STOP_GRACE_S)
    except subprocess.TimeoutExpired:
      print(f"tcred: {name} seed {seed} did not stop within {STOP_GRACE_S} s of SIGTERM; killing it",
            file=sys.stderr)
      proc.kill()
      proc.wait()
    log_file.close()
    print(f"[stopped] {name} seed {seed}; rerun the same command to resume it", file=sys.stderr)


def _table(args, argv: list[str]) -> int:
  from tcred import experiments

  try:
    suite = experiments.get_suite(args.suite)
  except ValueError as e:
    return _usage_error(str(e))
  if args.seeds is not None and args.seeds < 1:
    return _usage_error(f"--seeds must be >= 1, got {args.seeds}")
  seeds = args.seeds or suite.seeds
  if args.bases is not None and not 1 <= args.bases <= seeds:
    return _usage_error(f"--bases must be an integer from 1 to the number of seeds ({seeds}), got {args.bases}")
  suite = dataclasses.replace(suite, bases=args.bases if args.bases is not None else min(suite.bases, seeds))
  if args.jobs < 1:
    return _usage_error(f"--jobs must be >= 1, got {args.jobs}")
  from tcred.evaluation import tables
  from tcred.training.tracking import RunError, check_writable_dir, write_atomic

  try:
    check_writable_dir(args.out, "--out")
    check_writable_dir(args.results, "--results")
  except RunError as e:
    return _usage_error(str(e))
  root = str(suite.runs_root(args.out))
  unpaired = tables.unpaired_experiments(suite, seeds)
  if unpaired:  # before anything runs: paired statistics over runs of different bases or prompt streams
    for why in unpaired:
      print(f"tcred: {why}", file=sys.stderr)
    return _usage_error(f"suite {suite.name} asks for paired statistics against its baseline `{suite.baseline}`, but "
                        f"{len(unpaired)} pair{'s' if len(unpaired) > 1 else ''} of runs listed above would not share "
                        "their SFT base policy or prompt stream")
  mismatched = tables.mismatched_runs(suite, root, seeds)
  if mismatched:  # before anything runs: a table never mixes runs of other configs
    for (name, seed), why in mismatched.items():
      print(f"tcred: {tables.run_dir(root, name, seed)} is not a run of {name} seed {seed} as {suite.name} "
            f"configures it: {why}", file=sys.stderr)
    hint = (f"; runs made before the suite had {suite.bases} bases all hold sft.seed of base 0: `--bases 1` "
            "reads them" if suite.bases > 1 and any("sft.seed" in why for why in mismatched.values()) else "")
    return _usage_error(f"{len(mismatched)} run director{'y holds' if len(mismatched) == 1 else 'ies hold'} another "
                        f"config than suite {suite.name} (listed above); move them away or choose another --out "
                        f"(a table reuses a run only if its config.json equals the suite's, rl.steps included){hint}")
  pending = tables.pending_runs(suite, root, seeds)
  total = len(suite.experiments) * seeds
  print(f"{suite.name}: {total - len(pending)} of {total} runs finished under {root}; "
        + ("--finished-only: running none" if args.finished_only else f"running {len(pending)} with --jobs {args.jobs}"),
        file=sys.stderr)
  t0 = time.time()
  missing = "skip" if args.finished_only and pending else "raise"
  if args.finished_only:
    failed = {}
  elif args.jobs > 1 and len(pending) > 1:
    failed = _run_parallel(suite, pending, root, args.jobs)
  else:
    failed = {}
    for i, (name, seed) in enumerate(pending, start=1):
      print(f"[{i}/{len(pending)}] {name} seed {seed}", file=sys.stderr)
      if (error := _run_one(suite, name, seed, root)) is not None:
        failed[(name, seed)] = error
  if failed:
    for (name, seed), error in failed.items():
      print(f"tcred: run {name} seed {seed} failed: {error}", file=sys.stderr)
    print(f"tcred: error: {len(failed)} of {total} runs failed; finished runs are kept, rerun the same "
          "command to retry the others", file=sys.stderr)
    return 1
  command = shown_command(["tcred", *argv])
  results = pathlib.Path(args.results)
  try:
    markdown = tables.suite_table(suite, root, seeds=seeds, command=command, missing=missing,
                                  runs_wall_s=time.time() - t0 if pending and not args.finished_only else None)
    results.mkdir(parents=True, exist_ok=True)
    pngs = [results / f"{suite.name}{'-curves' if suite.scaling else ''}.png"]
    tables.learning_curves(suite, root, pngs[0], seeds=seeds, missing=missing)
    if suite.scaling:  # the scaling picture is the suite's figure; the learning curves sit beside it
      pngs.insert(0, tables.scaling_figure(suite, root, results / f"{suite.name}.png", seeds=seeds, missing=missing))
  except tables.UnpairedRunsError as e:
    return _usage_error(str(e))
  except tables.RunDataError as e:
    print(f"tcred: error: {e}", file=sys.stderr)
    return 1
  write_atomic(results / f"{suite.name}.md", markdown)
  print(markdown)
  print(f"wrote {results / f'{suite.name}.md'} and {' and '.join(map(str, pngs))}", file=sys.stderr)
  return 0


def _enable_compilation_cache() -> None:
  """XLA's persistent compilation cache under `$TCRED_CACHE/xla` (off with TCRED_XLA_CACHE=0).

  Every run of a suite compiles the same sampler, train step and evaluation; the
  cache turns each later run's compilations into loads (a 3-step countdown run
  took 93 s cold and 38 s with the cache warm, BUILD_NOTES.md).
  """
  if os.environ.get("TCRED_XLA_CACHE", "1") == "0":
    return
  import jax

  from tcred.training.sft import cache_root

  jax.config.update("jax_compilation_cache_dir", str(cache_root() / "xla"))
  jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)


def _log_every(cfg) -> int:
  """Steps between progress lines of a run that does not write to a terminal (about 20 lines a run)."""
  return max(1, cfg.rl.steps // 20)


def _show(args) -> int:
  from tcred.training.config import run_config_hash

  from tcred.tasks.registry import make_task_from_config

  try:
    cfg = _resolve(args)
    make_task_from_config(cfg.task, cfg.task_config).tokenizer  # a tokenizer directory `run` would refuse
  except ValueError as e:
    return _usage_error(str(e))
  resolved = cfg.to_dict()
  print(json.dumps(resolved, indent=1))
  print(f"config hash {run_config_hash(resolved)} (the `config` column of `tcred table`)", file=sys.stderr)
  return 0


def _run(args) -> int:
  from tcred.training.rl import NonFiniteError, run_experiment
  from tcred.training.sft import BasePolicyError
  from tcred.training.tracking import RunError

  from tcred.parallel import distributed

  try:
    distributed.initialize()  # one of several processes (TCRED_COORDINATOR, ...): join the others first
    cfg = _resolve(args)
  except ValueError as e:
    return _usage_error(str(e))
  tty = sys.stderr.isatty()
  try:
    summary = run_experiment(cfg, seed=args.seed, out=args.out, resume=args.resume,
                             progress=not args.no_progress and tty,
                             log_every=0 if args.no_progress or tty else _log_every(cfg))
  except RunError as e:
    return _usage_error(str(e))
  except (NonFiniteError, BasePolicyError) as e:
    print(f"tcred: error: {e}", file=sys.stderr)
    return 1
  print(json.dumps(summary, indent=1))
  return 0


def _interrupted(args, argv: list[str]) -> str:
  """The one line printed on Ctrl-C: how to continue what was interrupted."""
  if args.command == "run":
    again = ["tcred", *argv] + ([] if args.resume else ["--resume"])
    command = " ".join(shlex.quote(a) for a in again)
    return f"tcred: interrupted; the run keeps its last checkpoint: resume with `{command}`"
  if args.command == "table":
    return ("tcred: interrupted; finished runs are kept and partial ones resume from their last checkpoint: rerun "
            f"`tcred {' '.join(shlex.quote(a) for a in argv)}` to continue")
  if args.command == "judge" and args.judge_command == "train" and not args.resume:
    return (f"tcred: interrupted; the judge keeps its last checkpoint: resume with "
            f"`tcred {' '.join(shlex.quote(a) for a in argv)} --resume`")
  return f"tcred: interrupted; rerun `tcred {' '.join(shlex.quote(a) for a in argv)}` to start again"


def main(argv: list[str] | None = None) -> int:
  if argv is None:  # the real command line (not a call from Python): set up the process first
    from tcred.runtime import die_with_parent, reexec_with_huge_pages
    die_with_parent()  # a `tcred table` child: stop with the parent (re-armed after the re-execution)
    reexec_with_huge_pages()
  argv = sys.argv[1:] if argv is None else list(argv)
  args = _parser().parse_args(argv)
  logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
  try:
    code = _dispatch(args, argv)
    sys.stdout.flush()  # inside the try: a reader that left shows up here
    return code
  except KeyboardInterrupt as e:  # Ctrl-C, or SIGTERM/SIGHUP (`tcred.runtime.Stopped`)
    signum = getattr(e, "signum", signal.SIGINT)
    what = "interrupted" if signum == signal.SIGINT else f"stopped by {signal.Signals(signum).name}"
    print(_interrupted(args, argv).replace("interrupted", what, 1), file=sys.stderr)
    return 128 + signum
  except BrokenPipeError:  # `tcred list | head`: the reader left; say nothing more
    os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return 0


def _shown_path(path: pathlib.Path | None) -> str:
  """`path` relative to the working directory when it is below it, else absolute."""
  if path is None:
    return "registered in code"
  try:
    return str(path.relative_to(pathlib.Path.cwd()))
  except ValueError:
    return str(path)


def _dispatch(args, argv: list[str]) -> int:
  _enable_compilation_cache()
  from tcred import experiments

  try:
    experiments.add_folders(args.experiments)
    experiments.load()
  except (ValueError, FileNotFoundError) as e:  # a missing folder, a name defined twice
    return _usage_error(f"--experiments: {e}" if args.experiments else str(e))
  if args.command == "list":
    print("experiments, by family file:")
    for family, names in experiments.families().items():
      print(f"  {family} ({_shown_path(experiments.family_file(family))}):")
      for name in names:
        print(f"    {name:30s} {experiments.get_experiment(name).description}")
    print("suites:")
    for name in experiments.suite_names():
      print(f"  {name:32s} {experiments.get_suite(name).description}")
    from tcred import judges

    print("judges (credit method `judge`, credit.judge=NAME):")
    for name in judges.judge_names():
      print(f"  {name:32s} {judges.judge_class(name).description}")
    return 0
  if args.command == "run":
    return _run(args)
  if args.command == "show":
    return _show(args)
  if args.command == "table":
    return _table(args, argv)
  if args.command == "identify":
    return _identify(args, argv)
  if args.command == "export":
    return _export(args)
  if args.command == "explore":
    return _explore(args)
  if args.command == "judge":
    return _judge(args)
  return _usage_error(f"unknown command {args.command!r}")


if __name__ == "__main__":
  sys.exit(main())

"""`tcred` command line (DESIGN §2).

  tcred list
  tcred run NAME [--seed S] [--steps N] [--out DIR] [--set key=value ...] [--resume]
  tcred table SUITE [--seeds K] [--out DIR] [--jobs J] [--results DIR]
  tcred identify TASK [--policy base|RUN_DIR] [--prompts N] [--rollouts G] [--continuations K] [--delta D]
                 [--rollouts-from chains|tree|both] [--tree-fork-at entropy|neg-logp|step] [--seed S] [--out DIR]

Unknown names and bad values exit with status 2 and a message listing what is allowed.
"""

from __future__ import annotations

import os

os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

import argparse
import json
import logging
import pathlib
import shlex
import subprocess
import sys
import time


def _parser() -> argparse.ArgumentParser:
  p = argparse.ArgumentParser(prog="tcred", description="Token-level credit assignment for RL on LMs.")
  sub = p.add_subparsers(dest="command", required=True)
  sub.add_parser("list", help="list registered experiments and suites")
  run = sub.add_parser("run", help="run one experiment by name")
  run.add_argument("name")
  run.add_argument("--seed", type=int, default=0)
  run.add_argument("--steps", type=int, default=None, help="override rl.steps")
  run.add_argument("--out", default="runs", help="output root (default: runs/)")
  run.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config field, e.g. --set rl.lr=3e-4 (repeatable)")
  run.add_argument("--resume", action="store_true", help="continue from the last checkpoint")
  run.add_argument("--no-progress", action="store_true", help="no progress bar")
  table = sub.add_parser("table", help="run (or reuse) every run of a suite; write its Markdown table and curves")
  table.add_argument("suite")
  table.add_argument("--seeds", type=int, default=None, help="seeds per experiment (default: the suite's)")
  table.add_argument("--out", default="runs", help="runs root (default: runs/)")
  table.add_argument("--jobs", type=int, default=1, help="missing runs to run at once, as subprocesses")
  table.add_argument("--results", default="benchmarks/results",
                     help="where SUITE.md and SUITE.png go (default: benchmarks/results/)")
  ident = sub.add_parser("identify", help="identifiability study of the token signals on one task (DESIGN §5)")
  ident.add_argument("task")
  ident.add_argument("--policy", default="base",
                     help="'base' (the task's cached SFT base policy) or a run directory (its final checkpoint)")
  ident.add_argument("--prompts", type=int, default=32, help="held-out prompts N (default 32)")
  ident.add_argument("--rollouts", type=int, default=8, help="rollouts per prompt G (default 8)")
  ident.add_argument("--continuations", type=int, default=32,
                     help="continuations per prefix K for the Monte-Carlo values (default 32)")
  ident.add_argument("--delta", type=float, default=0.25, help="a token is decisive when |A_t| >= delta")
  ident.add_argument("--rollouts-from", default="both",
                     help="chains (G independent rollouts), tree (G leaves of an EPTree forest per prompt, with "
                     "the tree sibling gap signal) or both (default: both, one report with a tree section)")
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
  ident.add_argument("--seed", type=int, default=0)
  ident.add_argument("--bootstrap", type=int, default=200, help="bootstrap replicates for the CIs (0: none)")
  ident.add_argument("--out", default="benchmarks/results",
                     help="where identify-TASK.md and .png go (default: benchmarks/results/)")
  ident.add_argument("--no-progress", action="store_true", help="no progress bar")
  return p


def _identify(args, argv: list[str]) -> int:
  from tcred.evaluation import identify

  try:
    config = identify.IdentifyConfig(prompts=args.prompts, rollouts=args.rollouts, continuations=args.continuations,
                                     delta=args.delta, seed=args.seed, bootstrap=args.bootstrap,
                                     rollouts_from=args.rollouts_from, tree_fork_at=args.tree_fork_at,
                                     mi_peak_rule=args.mi_peak_rule, mi_peak_k=args.mi_peak_k, mi_layer=args.mi_layer,
                                     mi_norm=args.mi_norm, mi_sigma=args.mi_sigma)
  except ValueError as e:
    return _usage_error(str(e))
  command = "tcred " + " ".join(shlex.quote(a) for a in argv)
  try:
    _, _, md, png = identify.identify(args.task, policy=args.policy, config=config, out=args.out,
                                      command=command, progress=not args.no_progress and sys.stderr.isatty())
  except identify.UsageError as e:
    return _usage_error(str(e))
  print(md.read_text())
  extra = f" and {png.with_name(png.stem + '-tree.png')}" if args.rollouts_from == "both" else ""
  print(f"wrote {md}, {png}{extra}", file=sys.stderr)
  return 0


def _usage_error(message: str) -> int:
  print(f"tcred: error: {message}", file=sys.stderr)
  return 2


def _base_key(cfg) -> tuple[str, bool]:
  """The SFT base policy a run needs, and whether it is cached already.

  It orders the parallel runs so that no job sits waiting on another's base-policy lock.
  """
  from tcred.training.sft import base_policy_dir

  directory = base_policy_dir(cfg.model, cfg.task, cfg.task_config, cfg.sft)
  return directory.name, (directory / "info.json").exists()


def _run_one(suite, name: str, seed: int, out: str) -> str | None:
  """Runs one missing run in this process (resuming a partial one); returns an error or None."""
  from tcred.training.rl import run_experiment

  try:
    run_experiment(suite.config(name), seed=seed, out=out, resume=True, progress=sys.stderr.isatty())
  except Exception as e:  # noqa: BLE001  (one failed run must not lose the others)
    logging.getLogger("tcred.table").exception("run %s seed %d failed", name, seed)
    return f"{type(e).__name__}: {e}"
  return None


def _run_command(suite, name: str, seed: int, out: str) -> list[str]:
  """The subprocess that runs one missing run (`--resume` continues a partial one, if any)."""
  sets = [arg for item in suite.overrides for arg in ("--set", item)]
  return [sys.executable, "-m", "tcred.cli", "run", name, "--seed", str(seed), "--out", out, "--no-progress",
          "--resume", *sets]


def _run_parallel(suite, pending: list[tuple[str, int]], out: str, jobs: int) -> dict[tuple[str, int], str]:
  """Runs `pending` as `tcred run ... --resume` subprocesses, `jobs` at a time; returns the failures.

  Runs whose base policy is not cached wait until one run of the same base (its "builder") has
  finished, so the SFT of a base policy happens once.
  """
  from tcred import experiments
  from tcred.training.rl import run_dir_of

  keys, ready = {}, set()
  for name, _ in pending:
    if name not in keys:
      keys[name], cached = _base_key(suite.config(name))
      if cached:
        ready.add(keys[name])
  queue, running, builders, failed = list(pending), {}, {}, {}
  total, done = len(pending), 0
  try:
    while queue or running:
      for item in list(queue):
        if len(running) >= jobs:
          break
        key = keys[item[0]]
        if key not in ready and key in builders:
          continue  # its base policy is being built by another run
        if key not in ready:
          builders[key] = item
        queue.remove(item)
        run_dir = run_dir_of(out, *item)
        run_dir.mkdir(parents=True, exist_ok=True)
        log_file = (run_dir / "table.log").open("w")
        proc = subprocess.Popen(_run_command(suite, *item, out), stdout=log_file, stderr=subprocess.STDOUT)
        running[item] = (proc, log_file, time.time())
        print(f"[start] {item[0]} seed {item[1]} (log {run_dir / 'table.log'})", file=sys.stderr)
      time.sleep(0.2)
      for item, (proc, log_file, t0) in list(running.items()):
        if proc.poll() is None:
          continue
        log_file.close()
        del running[item]
        done += 1
        key = keys[item[0]]
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
    for proc, log_file, _ in running.values():  # interrupted: stop only the runs this command started
      proc.terminate()
      proc.wait()
      log_file.close()
  return failed


def _table(args, argv: list[str]) -> int:
  from tcred import experiments

  try:
    suite = experiments.get_suite(args.suite)
  except ValueError as e:
    return _usage_error(str(e))
  if args.seeds is not None and args.seeds < 1:
    return _usage_error(f"--seeds must be >= 1, got {args.seeds}")
  if args.jobs < 1:
    return _usage_error(f"--jobs must be >= 1, got {args.jobs}")
  from tcred.evaluation import tables

  seeds = args.seeds or suite.seeds
  root = str(suite.runs_root(args.out))
  pending = tables.pending_runs(suite, root, seeds)
  total = len(suite.experiments) * seeds
  print(f"{suite.name}: {total - len(pending)} of {total} runs finished under {root}; "
        f"running {len(pending)} with --jobs {args.jobs}", file=sys.stderr)
  t0 = time.time()
  if args.jobs > 1 and len(pending) > 1:
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
  command = "tcred " + " ".join(shlex.quote(a) for a in argv)
  results = pathlib.Path(args.results)
  results.mkdir(parents=True, exist_ok=True)
  try:
    markdown = tables.suite_table(suite, root, seeds=seeds, command=command,
                                  runs_wall_s=time.time() - t0 if pending else None)
    tables.learning_curves(suite, root, results / f"{suite.name}.png", seeds=seeds)
  except tables.RunDataError as e:
    print(f"tcred: error: {e}", file=sys.stderr)
    return 1
  (results / f"{suite.name}.md").write_text(markdown)
  print(markdown)
  print(f"wrote {results / f'{suite.name}.md'} and {results / f'{suite.name}.png'}", file=sys.stderr)
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


def main(argv: list[str] | None = None) -> int:
  if argv is None:  # the real command line (not a call from Python): set up the process first
    from tcred.runtime import reexec_with_huge_pages
    reexec_with_huge_pages()
  argv = sys.argv[1:] if argv is None else list(argv)
  args = _parser().parse_args(argv)
  logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
  _enable_compilation_cache()
  from tcred import experiments

  if args.command == "list":
    print("experiments:")
    for name in experiments.experiment_names():
      print(f"  {name:32s} {experiments.get_experiment(name).description}")
    print("suites:")
    for name in experiments.suite_names():
      print(f"  {name:32s} {experiments.get_suite(name).description}")
    return 0

  if args.command == "run":
    from tcred.training.rl import run_experiment
    from tcred.training.tracking import RunError

    try:
      cfg = experiments.get_experiment(args.name)
      overrides = list(args.overrides)
      if args.steps is not None:
        overrides.append(f"rl.steps={args.steps}")
      cfg = cfg.with_overrides(overrides)
    except ValueError as e:
      return _usage_error(str(e))
    try:
      summary = run_experiment(cfg, seed=args.seed, out=args.out, resume=args.resume,
                               progress=not args.no_progress and sys.stderr.isatty())
    except RunError as e:
      return _usage_error(str(e))
    print(json.dumps(summary, indent=1))
    return 0

  if args.command == "table":
    return _table(args, argv)
  if args.command == "identify":
    return _identify(args, argv)
  return _usage_error(f"unknown command {args.command!r}")


if __name__ == "__main__":
  sys.exit(main())

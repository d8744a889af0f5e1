"""`tcred` command line (DESIGN §2).

  tcred list
  tcred run NAME [--seed S] [--steps N] [--out DIR] [--set key=value ...] [--resume]

Unknown names and bad values exit with status 2 and a message listing what is allowed.
"""

from __future__ import annotations

import os

os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

import argparse
import json
import logging
import sys


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
  return p


def _usage_error(message: str) -> int:
  print(f"tcred: error: {message}", file=sys.stderr)
  return 2


def main(argv: list[str] | None = None) -> int:
  args = _parser().parse_args(argv)
  logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
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
  return _usage_error(f"unknown command {args.command!r}")


if __name__ == "__main__":
  sys.exit(main())

"""Where each credit method puts its gradient: the kept tokens against the oracle's fatal step.

Reads the training-step records of a suite's runs (`explore/step-*.npz`, written by every run at its eval
steps and its last: the step's rollouts, their loss weights, per-token credit and, on tasks with an exact
oracle, `signal/fatal` (1 at the token where a still-solvable prefix becomes unsolvable) and
`signal/oracle_value` (1 while the prefix can still be completed correctly)). Per run, pooled over its
records, and then per experiment as the mean over seeds with the suite's cluster-bootstrap interval (bases,
then seeds: `tables.Design`):
  * kept: the share of valid tokens with loss weight > 0;
  * kept at fatal: the share of fatal tokens with weight > 0 (a mask that ignores the fatal token cannot
    push its choice down); enrichment = kept at fatal / kept (1: no better than a random mask);
  * failing rollouts (outcome advantage < 0): kept share before the fatal step (prefix still solvable) and
    after it;
  * credit on fatal: in failing rollouts with a fatal token, the fatal token's share of the rollout's
    |credit × weight| (its share under uniform credit is 1 / length, given as "uniform");
  * position: the mean relative position (0 first token, 1 last) of the kept tokens, and the kept share of
    each response's last 3 tokens.

    PYTHONPATH=. python benchmarks/credit_placement.py suite-credit --out runs --results benchmarks/results

Writes `<results>/credit-placement-<suite>.md` (the command, the date and the load are in its header).
"""

from __future__ import annotations

import argparse
import datetime
import os
import pathlib
import shlex
import sys

import numpy as np

import tcred.experiments  # noqa: F401  (registers the experiments and suites)
from tcred.evaluation import tables
from tcred.evaluation.stats import format_interval
from tcred.experiments.registry import get_suite, suite_names
from tcred.training.tracking import write_atomic

STATS = ("kept", "kept_fatal", "enrichment", "kept_alive", "kept_dead", "credit_fatal", "uniform_fatal",
         "relpos", "kept_last3")


def run_stats(run_dir: pathlib.Path) -> dict[str, float] | None:
  """The placement statistics of one run, pooled over its records; None without records. A statistic the
  records cannot give (no oracle signals, no failing rollout) is nan."""
  files = sorted((run_dir / "explore").glob("step-*.npz"))
  if not files:
    return None
  acc = {k: [0.0, 0.0] for k in ("kept", "kept_fatal", "kept_alive", "kept_dead", "kept_last3")}
  credit_fatal, uniform_fatal, relpos = [], [], []
  for f in files:
    with np.load(f, allow_pickle=False) as d:
      mask, weight, credit, adv = d["mask"], d["weight"], d["credit"], d["outcome_advantage"]
      fatal = d["signal/fatal"] if "signal/fatal" in d.files else None
      alive = d["signal/oracle_value"] if "signal/oracle_value" in d.files else None
      valid_group = d["group_valid"]
    for b in range(mask.shape[0]):
      if not valid_group[b]:
        continue
      for g in range(mask.shape[1]):
        v = mask[b, g]
        n = int(v.sum())
        if n == 0:
          continue
        kept = weight[b, g][v] > 0
        acc["kept"][0] += kept.sum()
        acc["kept"][1] += n
        acc["kept_last3"][0] += kept[-3:].sum()
        acc["kept_last3"][1] += min(3, n)
        if n > 1:
          relpos.extend(np.nonzero(kept)[0] / (n - 1))
        if fatal is None:
          continue
        fz = fatal[b, g][v] > 0
        acc["kept_fatal"][0] += kept[fz].sum()
        acc["kept_fatal"][1] += fz.sum()
        if adv[b, g] < 0:
          live = alive[b, g][v] > 0
          acc["kept_alive"][0] += kept[live].sum()
          acc["kept_alive"][1] += live.sum()
          acc["kept_dead"][0] += kept[~live].sum()
          acc["kept_dead"][1] += (~live).sum()
          mass = np.abs(credit[b, g][v] * weight[b, g][v])
          if fz.any() and mass.sum() > 0:
            credit_fatal.append(float(mass[fz].sum() / mass.sum()))
            uniform_fatal.append(float(fz.sum() / n))
  out = {k: (num / den if den else float("nan")) for k, (num, den) in acc.items()}
  out["enrichment"] = out["kept_fatal"] / out["kept"] if out["kept"] else float("nan")
  out["credit_fatal"] = float(np.mean(credit_fatal)) if credit_fatal else float("nan")
  out["uniform_fatal"] = float(np.mean(uniform_fatal)) if uniform_fatal else float("nan")
  out["relpos"] = float(np.mean(relpos)) if relpos else float("nan")
  return out


def main(argv: list[str] | None = None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("suite", help=f"a registered suite: {', '.join(suite_names())}")
  parser.add_argument("--out", default="runs", help="the runs root (as `tcred table --out`)")
  parser.add_argument("--results", default="benchmarks/results", help="where the report is written")
  args = parser.parse_args(argv)
  try:
    suite = get_suite(args.suite)
  except ValueError as e:
    print(f"credit_placement: error: {e}", file=sys.stderr)
    return 2
  root = suite.runs_root(args.out)
  load_before = os.getloadavg()
  design = tables.Design.of(suite)
  rows = []
  for name in suite.experiments:
    per_seed = {}
    for seed in range(suite.seeds):
      stats_ = run_stats(pathlib.Path(tables.run_dir(str(root), name, seed)))
      if stats_ is not None:
        per_seed[seed] = stats_
    if per_seed:
      rows.append((name, per_seed))
  if not rows:
    print(f"credit_placement: error: no run of suite {suite.name} under {root} has records (explore/step-*.npz)",
          file=sys.stderr)
    return 2

  def cell(per_seed, key, digits=2):
    seeds = [s for s in sorted(per_seed) if np.isfinite(per_seed[s][key])]
    if not seeds:
      return "—"
    return format_interval(design.mean([per_seed[s][key] for s in seeds], seeds), digits)

  command = "python benchmarks/credit_placement.py " + " ".join(shlex.quote(a) for a in (argv or sys.argv[1:]))
  lines = [f"# Where the credit goes: {suite.name}", "",
           f"- Command: `PYTHONPATH=. {command}`",
           f"- Machine: {tables.machine_description()}",
           f"- Date: {datetime.datetime.now(datetime.timezone.utc).strftime('%Y-%m-%d %H:%M UTC')}; load "
           f"{load_before[0]:.2f} (reading files only)",
           f"- Runs: `{root}`, the training-step records of every run (each eval step and the last); cells are the "
           f"mean over seeds [95% cluster bootstrap over {design.bases} bases, then seeds].",
           "- kept: loss weight > 0. fatal: the token where the prefix stops being completable (the task's exact "
           "oracle). enrichment = kept at fatal / kept (1: a random mask). Failing rollouts: outcome advantage < 0; "
           "before / after: kept share while the prefix is still solvable / after the fatal step. credit on fatal: "
           "the fatal token's share of a failing rollout's |credit × weight| (uniform: its share under equal "
           "credit, 1 / length). position: mean relative position of the kept tokens (0 first, 1 last); last 3: "
           "kept share of each response's last 3 tokens.", "",
           "| task | method | seeds | kept | kept at fatal | enrichment | failing: kept before fatal | failing: kept "
           "after | credit on fatal | uniform | position | last 3 |",
           "|---|---|---:|" + "---:|" * 9]
  for name, per_seed in rows:
    cfg = suite.config(name)
    lines.append(f"| {cfg.task} | {cfg.method} | {len(per_seed)} | " + " | ".join(
        cell(per_seed, k) for k in ("kept", "kept_fatal", "enrichment", "kept_alive", "kept_dead", "credit_fatal",
                                    "uniform_fatal", "relpos", "kept_last3")) + " |")
  results = pathlib.Path(args.results)
  results.mkdir(parents=True, exist_ok=True)
  path = results / f"credit-placement-{suite.name}.md"
  write_atomic(path, "\n".join(lines) + "\n")
  print("\n".join(lines))
  print(f"wrote {path}", file=sys.stderr)
  return 0


if __name__ == "__main__":
  sys.exit(main())

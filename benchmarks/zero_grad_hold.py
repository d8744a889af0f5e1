"""Does holding the optimizer on zero-gradient steps help? Paired comparison of two sets of runs.

`rl.hold_on_zero_grad` (issue 24) skips AdamW's update when a step's gradient is exactly zero (every group's
rewards equal), so the moments' decay cannot move the weights on a step with no signal. This script compares
runs of one experiment made without and with it, seed by seed (each seed: the same base policy and prompt
stream in both arms), on tuning seeds that no reported table uses:

  for s in 1001 ... 1012; do for hold in false true; do
    tcred run lock-chain-k12-grpo --seed $s --steps 160 --out runs-hold-$hold --set rl.hold_on_zero_grad=$hold \\
      --set sft.seed=1 --set rl.prompts_per_step=4 --set rl.eval_every=20 --set rl.eval_prompts=32
  done; done
  python benchmarks/zero_grad_hold.py --without runs-hold-false --with runs-hold-true \\
      --experiment lock-chain-k12-grpo --out hold.md

Per seed: the final pass@1 (the run's summary, `final_pass1`), the mean of its evaluation curve (`eval/pass1`
at every evaluation: the area per step) and whether it collapsed (final pass@1 below half its best evaluation).
Paired statistics over the seeds: the mean difference (with − without) with a 95% bootstrap interval
(`scipy.stats.bootstrap`), Wilcoxon's signed-rank p (`scipy.stats.wilcoxon`), and for collapses an exact
binomial test on the discordant seeds (McNemar's exact test, `scipy.stats.binomtest`).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
from scipy import stats


def load(root: Path, experiment: str, seed: int) -> dict:
  """One run's final pass@1, evaluation curve and collapse flag."""
  run = root / experiment / f"seed-{seed}"
  rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if line.strip()]
  curve = [r["eval/pass1"] for r in rows if "eval/pass1" in r]
  final = json.loads((run / "summary.json").read_text())["final_pass1"]
  return {"final": final, "area": float(np.mean(curve)), "best": max(curve), "collapsed": final < 0.5 * max(curve),
          "held": int(sum(r.get("optim/held", 0) for r in rows))}


def paired(diff: np.ndarray) -> tuple[float, float, float, float]:
  """Mean difference, its 95% bootstrap interval and Wilcoxon's signed-rank p."""
  ci = stats.bootstrap((diff,), np.mean, confidence_level=0.95, n_resamples=10_000, method="percentile",
                       random_state=np.random.default_rng(0)).confidence_interval
  p = stats.wilcoxon(diff).pvalue if np.any(diff != 0) else 1.0
  return float(diff.mean()), float(ci.low), float(ci.high), float(p)


def report(without: Path, with_: Path, experiment: str, seeds: list[int]) -> str:
  a = {s: load(without, experiment, s) for s in seeds}
  b = {s: load(with_, experiment, s) for s in seeds}
  lines = [f"# Zero-gradient hold on {experiment}: {len(seeds)} tuning seeds, paired", "",
           f"Made by `python benchmarks/zero_grad_hold.py --without {without.name} --with {with_.name} --experiment "
           f"{experiment} --seeds {seeds[0]}-{seeds[-1]}` over the runs of its docstring's commands (run directories "
           "named by their last part). Collapsed: final pass@1 below half the run's best evaluation.", "",
           "| seed | final pass@1 without / with | curve mean without / with | collapsed without / with | "
           "steps held |", "|---:|---|---|---|---:|"]
  for s in seeds:
    lines.append(f"| {s} | {a[s]['final']:.3f} / {b[s]['final']:.3f} | {a[s]['area']:.3f} / {b[s]['area']:.3f} | "
                 f"{'yes' if a[s]['collapsed'] else 'no'} / {'yes' if b[s]['collapsed'] else 'no'} | "
                 f"{b[s]['held']} |")
  lines += ["", "| with − without | mean | 95% bootstrap CI | Wilcoxon p |", "|---|---:|---|---:|"]
  for key, name in (("final", "final pass@1"), ("area", "curve mean (area per step)")):
    diff = np.array([b[s][key] - a[s][key] for s in seeds])
    mean, lo, hi, p = paired(diff)
    lines.append(f"| {name} | {mean:+.3f} | [{lo:+.3f}, {hi:+.3f}] | {p:.3f} ({int(np.sum(diff < 0))} of "
                 f"{len(seeds)} seeds lower with the hold) |")
  only_without = sum(a[s]["collapsed"] and not b[s]["collapsed"] for s in seeds)
  only_with = sum(b[s]["collapsed"] and not a[s]["collapsed"] for s in seeds)
  discordant = only_without + only_with
  p = stats.binomtest(only_without, discordant, 0.5).pvalue if discordant else 1.0
  lines += ["", f"Collapses: {sum(a[s]['collapsed'] for s in seeds)} of {len(seeds)} without the hold, "
                f"{sum(b[s]['collapsed'] for s in seeds)} with it; discordant seeds {only_without} (without only) and "
                f"{only_with} (with only), McNemar exact p = {p:.3f}.", ""]
  return "\n".join(lines)


def _seeds(text: str) -> list[int]:
  try:
    if "-" in text:
      lo, hi = (int(x) for x in text.split("-"))
      seeds = list(range(lo, hi + 1))
    else:
      seeds = [int(x) for x in text.split(",")]
  except ValueError:
    seeds = []
  if len(seeds) < 2:
    raise argparse.ArgumentTypeError(f"expected FIRST-LAST or a comma-separated list of at least 2 seeds, got {text!r}")
  return seeds


def main(argv: list[str] | None = None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--without", type=Path, required=True, help="runs made with rl.hold_on_zero_grad=false")
  parser.add_argument("--with", dest="with_", type=Path, required=True, help="runs made with it true")
  parser.add_argument("--experiment", default="lock-chain-k12-grpo")
  parser.add_argument("--seeds", type=_seeds, default="1001-1012", help="FIRST-LAST, or a comma-separated list")
  parser.add_argument("--out", type=Path, help="write the report here (default: print it)")
  args = parser.parse_args(argv)
  seeds = args.seeds
  missing = [str(root / args.experiment / f"seed-{s}") for root in (args.without, args.with_) for s in seeds
             if not (root / args.experiment / f"seed-{s}" / "summary.json").exists()]
  if missing:
    print(f"error: no finished run at {', '.join(missing)}", file=sys.stderr)
    return 2
  text = report(args.without, args.with_, args.experiment, seeds)
  if args.out:
    args.out.write_text(text)
  print(text)
  return 0


if __name__ == "__main__":
  sys.exit(main())

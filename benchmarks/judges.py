"""Step judges on held-out rollouts: ProcessBench F1 of the first wrong step against the oracle (DESIGN §4.6).

For each task, the cached SFT base policy of the task's default experiment samples R rollouts of the first N
held-out prompts (never a trained judge's training prompt). The oracle's first error of a rollout is its first
step after which no correct answer is reachable (`Task.prefix_value` = 0), "no error" when a rollout never
loses reachability. Each judge scores the same rollouts; a step is wrong where its score is below 0.5 (an mc
score Q_k = 0 is wrong), and `tcred.evaluation.judges.processbench` gives the accuracy on erroneous rollouts
(first error found exactly), on error-free ones, and their harmonic mean F1, with 95% cluster-bootstrap
intervals over prompts.

Judges: `mc` (K continuations per step of the policy itself, no training), and the trained kinds (`prm`,
`generative` when registered) trained on the SAME number of Monte-Carlo step labels (`judge.labels`) from
the same base policy. Also reported: the replica agreement of the Monte-Carlo labels (the same labels computed
twice with independent continuations, `tcred.judges.mc.replica_agreement`), the noise floor no judge trained
on them can beat, and each judge's cost (training labels, tokens, seconds; scoring tokens and seconds).

Usage:
  nice -n 19 python benchmarks/judges.py [--quick] [--tasks countdown graph-path long-addition]
      [--judges mc prm generative] [--labels 1024] [--out benchmarks/results/judges.md]
The full mode reads (or builds, ~6 min each) the cached base policies of the tasks ($TCRED_CACHE); --quick uses
a tiny policy (5 SFT steps) on countdown and a few labels: a smoke test of the script, not a measurement.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import jax
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

from tcred.evaluation import judges as ej  # noqa: E402
from tcred.judges import judge_names  # noqa: E402
from tcred.judges.labels import LABEL_RULES, LabelRule  # noqa: E402
from tcred.judges.mc import replica_agreement  # noqa: E402
from tcred.training.judges import trainable_judges  # noqa: E402
from tcred.training import judges as tj  # noqa: E402

QUICK_POLICY = ["model.hidden_size=32", "model.intermediate_size=64", "model.num_hidden_layers=1", "sft.steps=5",
                "sft.batch_size=8", "rl.final_eval_prompts=8", "rl.eval_prompts=4"]


def _trained_settings(args) -> list[str]:
  """Data and model settings shared by every trained kind (equal labels, equal Monte-Carlo data)."""
  return [f"judge.labels={args.labels}", f"judge.continuations={args.data_continuations}",
          f"judge.exclude_prompts={max(args.prompts, 256)}"]


PRM_SETTINGS = {"full": ["judge.steps=300", "judge.batch_size=32"],
                "quick": ["judge.steps=4", "judge.batch_size=8", "judge.checkpoint_every=2"]}
PRM_INITS = {"full": [("prm (from the policy)", ["judge.init=policy"]),
                      ("prm (scratch, 64 × 2)", ["judge.init=scratch", "judge.hidden_size=64", "judge.layers=2"])],
             "quick": [("prm", ["judge.init=policy"])]}


def run_task(task_name: str, args, policy: list[str], lines: list[str]) -> None:
  base = ej.setup("oracle", task_name, policy)
  task = base.task
  t0 = time.time()
  ctx = ej.policy_context(base.cfg, task, seed=args.seed, progress=args.progress)
  data = ej.eval_rollouts(task, ctx, prompts=args.prompts, rollouts=args.rollouts, seed=args.seed)
  sample_s = time.time() - t0
  n = data.truth.size
  lines += [f"## {task_name}", "",
            f"{args.prompts} held-out prompts × {args.rollouts} rollouts of the base policy "
            f"(pass@1 {data.rewards.mean():.3f}): {int((data.truth >= 0).sum())} erroneous, "
            f"{int((data.truth < 0).sum())} error-free by the oracle; sampled in {sample_s:.0f} s "
            f"(base policy load included).", "",
            "| judge | training labels | F1 [95% CI] | acc. erroneous [95% CI] | acc. error-free [95% CI] | "
            "training cost: tokens, s | scoring: tokens / rollout, s |",
            "|---|---|---|---|---|---|---|"]

  def row(label: str, result: dict, training: str, labels: str) -> None:
    lines.append(f"| {label} | {labels} | {ej.format_metric(result, 'f1')} | {ej.format_metric(result, 'acc_error')} | "
                 f"{ej.format_metric(result, 'acc_correct')} | {training} | {result['score_tokens'] / n:.0f}, "
                 f"{result['score_seconds']:.1f} |")
    print(lines[-1], file=sys.stderr, flush=True)

  oracle = ej.evaluate_judge(ej.setup("oracle", task_name, policy).judge, task, ctx, data, bootstrap=args.bootstrap,
                             seed=args.seed)
  row("oracle (the target itself)", oracle, "none", "-")
  for kind in args.judges:
    if kind == "mc":
      for k in args.mc_continuations:
        judge = ej.setup("mc", task_name, policy + [f"judge.continuations={k}"]).judge.prepare(task, ctx)
        scored = ej.score(judge, task, ctx, data)
        for label, below in ((f"mc (K = {k})", ej.WRONG_BELOW), (f"mc (K = {k}), wrong where Q_k = 0", 1e-9)):
          result = ej.evaluate_judge(judge, task, ctx, data, bootstrap=args.bootstrap, seed=args.seed,
                                     wrong_below=below, scored=scored)
          row(label, result, "none (samples the policy at scoring time)", "-")
      continue
    if kind not in judge_names() or kind not in trainable_judges():
      lines.append(f"| {kind} | {args.labels} | not registered in this build | | | | |")
      continue
    mode = "quick" if args.quick else "full"
    variants = PRM_INITS[mode] if kind == "prm" else [(kind, [])]
    for label, extra in variants:
      sets = policy + _trained_settings(args) + (PRM_SETTINGS[mode] if kind == "prm" else []) + extra
      judge = ej.setup(kind, task_name, sets).judge
      try:
        trained = tj.train_judge(judge, task, ctx)
        info = trained.info
        result = ej.evaluate_judge(trained.judge, task, ctx, data, bootstrap=args.bootstrap, seed=args.seed)
      except Exception as e:  # noqa: BLE001 - one judge's failure is reported in its row, the others still run
        message = f"{type(e).__name__}: {e}".replace("|", "/").replace("\n", " ")[:200]
        lines.append(f"| {label} | {args.labels} | FAILED: {message} | | | | |")
        print(lines[-1], file=sys.stderr, flush=True)
        continue
      cost = (f"data {info['data_tokens']:,} + train {info.get('train_tokens', 0):,}; "
              f"{info['data_seconds']:.0f} + {info['train_seconds']:.0f}"
              + (" (cached)" if trained.reused else ""))
      row(label, result, cost, f"{info['labels']} ({info['good_fraction']:.2f} good)")
  lines.append("")
  rules = [LabelRule(rule=r) for r in LABEL_RULES]
  lines += [f"MC replica agreement on these rollouts (two independent replicas of K continuations per step; "
            "labels: fraction of steps labelled alike; first error: fraction of rollouts whose first bad step "
            "agrees):", "", "| K | rule | labels | first error | steps | rollouts |", "|---|---|---|---|---|---|"]
  for k in sorted({args.data_continuations, *args.mc_continuations}):
    agree = replica_agreement(ctx.graphdef, ctx.params, task, data.problems, data.texts, continuations=k,
                              key=jax.random.fold_in(ctx.key, 0xA6EE), temperature=ctx.temperature, top_p=ctx.top_p,
                              rules=rules, rewards=data.rewards, response_ids=data.ids)
    for rule, a in agree.items():
      lines.append(f"| {k} | {rule} | {a.labels:.3f} | {a.first_error:.3f} | {a.steps} | {a.responses} |")
  lines.append("")


def main(argv: list[str] | None = None) -> int:
  argv = sys.argv[1:] if argv is None else list(argv)
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  p.add_argument("--quick", action="store_true", help="tiny policy, countdown, few labels (smoke test)")
  p.add_argument("--tasks", nargs="+", default=None, help="default: countdown graph-path long-addition")
  p.add_argument("--judges", nargs="+", default=["mc", "prm", "generative"],
                 help="judges besides the oracle (default: mc prm generative; an unregistered kind gets an empty row)")
  p.add_argument("--labels", type=int, default=None, help="training labels of every trained judge (default 1024)")
  p.add_argument("--data-continuations", type=int, default=8, help="K of the trained judges' MC labels (default 8)")
  p.add_argument("--mc-continuations", type=int, nargs="+", default=None, help="K of the mc judge rows (default 4 8)")
  p.add_argument("--prompts", type=int, default=None, help="held-out prompts (default 64)")
  p.add_argument("--rollouts", type=int, default=4, help="rollouts per prompt (default 4)")
  p.add_argument("--bootstrap", type=int, default=1000, help="bootstrap replicates (default 1000)")
  p.add_argument("--seed", type=int, default=0)
  p.add_argument("--progress", action="store_true")
  p.add_argument("--out", default="benchmarks/results/judges.md")
  args = p.parse_args(argv)
  quick = args.quick
  args.tasks = args.tasks or (["countdown"] if quick else ["countdown", "graph-path", "long-addition"])
  args.labels = args.labels or (24 if quick else 1024)
  args.prompts = args.prompts or (8 if quick else 64)
  args.mc_continuations = args.mc_continuations or ([2] if quick else [4, 8])
  if quick:
    args.data_continuations, args.rollouts, args.bootstrap = 2, 2, 50
  policy = list(QUICK_POLICY) if quick else []
  t0 = time.time()
  lines = [*common.header("Step judges: ProcessBench F1 of the first wrong step against the oracle", quick,
                          argv, __file__),
           f"Every trained judge learns from {args.labels} Monte-Carlo step labels (abs-q: Q_k > 0) of its task's "
           f"base policy, K = {args.data_continuations} continuations per step; a step is wrong where a judge "
           "scores it below 0.5. `tcred.evaluation.judges` and `benchmarks/judges.py` document the metrics.", ""]
  for task in args.tasks:
    run_task(task, args, policy, lines)
    common.write(Path(args.out), lines + ["(partial: the run goes on)"])  # a later failure keeps what was measured
  lines += [f"- total wall time {time.time() - t0:.0f} s", common.load_line()]
  common.write(Path(args.out), lines)
  print("\n".join(lines))
  return 0


if __name__ == "__main__":
  common.run_main(main)

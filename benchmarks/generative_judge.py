"""Verdict accuracy of the generative step judge after SFT and after GRPO (issue 14, DESIGN §4.6).

On a task's default base policy (the SFT policy of `<task>-grpo`, from the base-policy cache):

  1. training data: `tcred.training.judges.labelled_rollouts` (what `tcred judge train` uses): rollouts of
     training prompts (never a held-out prompt), Monte-Carlo values Q_0 … Q_K from `--continuations`
     continuations after each step (`tcred.judges.mc.step_values`), labels `mc_labels(q, rule)`, exactly
     `--labels` step labels;
  2. held-out data: rollouts of the first `--heldout-prompts` held-out prompts, labelled the same way, plus
     each step's oracle label (the task's teacher verdict: valid step and answer still reachable);
  3. the judge trained by `tcred.training.generative_judge.train` (SFT on teacher analyses + label verdicts,
     then GRPO on verdict correctness), scored after SFT (`weights-sft`) and at the end (`weights`);
  4. verdict accuracy (s_k > 0.5 counts as "good") on the held-out steps against their MC labels and their
     oracle labels, with the majority-class base rate and the balanced accuracy.

  nice -n 19 python benchmarks/generative_judge.py --task countdown --labels 1024 --out benchmarks/results/generative-judge-countdown.json

(The `tcred judge train|eval` CLI and benchmarks/judges.py carry the ProcessBench F1 comparison with `prm`;
this script is the generative judge's own before/after-GRPO measurement.)
"""

from __future__ import annotations

import argparse
import json
import pathlib
import sys
import tempfile
import time

import jax
import numpy as np

from tcred.experiments.registry import get_experiment
from tcred.judges import JudgeContext, LabelRule, make_judge, mc_labels
from tcred.judges.mc import step_values
from tcred.judges.trained import LabelledRollouts, TrainJob, rollout_ids
from tcred.sampling.rollout import sample_and_score
from tcred.tasks.registry import make_task_from_config
from tcred.tasks.step_judge import step_spans
from tcred.training import generative_judge
from tcred.training.data import eval_problems
from tcred.training.judges import labelled_rollouts, prepare_trained
from tcred.training.sft import base_policy

def held_out_labelled(graphdef, params, task, problems, *, rollouts: int, continuations: int, rule: LabelRule, key,
                      temperature: float) -> LabelledRollouts:
  """Rollouts of (held-out) `problems` with MC labels on every step."""
  t0 = time.time()
  groups = sample_and_score(graphdef, params, task, problems, key, group_size=rollouts, temperature=temperature)
  ids_all = rollout_ids(groups.rollouts.tokens, groups.rollouts.mask)
  values = step_values(graphdef, params, task, problems, groups.texts, continuations=continuations,
                       key=jax.random.fold_in(key, 1), temperature=temperature, rewards=groups.rewards,
                       response_ids=ids_all)
  probs, resps, ids, qs, labs = [], [], [], [], []
  for b, problem in enumerate(problems):
    for g, text in enumerate(groups.texts[b]):
      k = len(step_spans(task, text))
      if k == 0:
        continue
      q = values.q[b, g, :k + 1]
      probs.append(problem)
      resps.append(text)
      ids.append(ids_all[b][g])
      qs.append(q)
      labs.append(mc_labels(q, rule))
  width = max(len(x) for x in labs)
  q = np.full((len(labs), width + 1), np.nan)
  out = np.zeros((len(labs), width), bool)
  valid = np.zeros((len(labs), width), bool)
  for n, (qq, ll) in enumerate(zip(qs, labs)):
    q[n, :len(qq)] = qq
    out[n, :len(ll)] = ll
    valid[n, :len(ll)] = True
  return LabelledRollouts(probs, resps, ids, q, out, valid, tokens=int(values.tokens + groups.generated_tokens()),
                          seconds=time.time() - t0)


def accuracy(pred: np.ndarray, truth: np.ndarray) -> dict[str, float]:
  rate = float(truth.mean())
  bal = np.mean([np.mean(pred[truth == c] == c) for c in (True, False) if np.any(truth == c)])
  return {"accuracy": float(np.mean(pred == truth)), "base_rate": max(rate, 1 - rate), "good_frac": rate,
          "balanced_accuracy": float(bal), "n": int(truth.size)}


def main(argv=None) -> int:
  ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  ap.add_argument("--task", default="countdown")
  ap.add_argument("--labels", type=int, default=1024)
  ap.add_argument("--continuations", type=int, default=8)
  ap.add_argument("--rollouts", type=int, default=4, help="rollouts per held-out prompt")
  ap.add_argument("--heldout-prompts", type=int, default=96)
  ap.add_argument("--rule", default="abs-q")
  ap.add_argument("--set", action="append", default=[], help="judge setting key=value (int/float/str)")
  ap.add_argument("--work", default=None, help="the judge's directory (default: a temporary one)")
  ap.add_argument("--out", default=None, help="write the results as JSON here")
  args = ap.parse_args(argv)
  t_start = time.time()
  settings = {}
  for item in args.set:
    k, v = item.split("=", 1)
    for cast in (int, float, str):
      try:
        settings[k] = cast(v)
        break
      except ValueError:
        continue
  judge = make_judge("generative", labels=args.labels, rule=args.rule, continuations=args.continuations, **settings)
  cfg = get_experiment(f"{args.task}-grpo")
  task = make_task_from_config(cfg.task, cfg.task_config)
  graphdef, params, _ = base_policy(cfg.model, task, cfg.task_config, cfg.sft, eval_prompts=cfg.rl.held_out_prompts,
                                    progress=False)
  held = eval_problems(task, judge.exclude_prompts)  # the judge's training data never holds one of these
  rule = judge.label_rule()
  key = jax.random.key(judge.data_seed)
  directory = pathlib.Path(args.work or tempfile.mkdtemp(prefix="gen-judge-"))
  directory.mkdir(parents=True, exist_ok=True)
  ctx = JudgeContext(graphdef, params, key, cfg.rl.temperature, cache_dir=directory, task_config=cfg.task_config,
                     model_config=cfg.model, prepare_trained=prepare_trained)
  t0 = time.time()
  data = labelled_rollouts(judge, task, ctx)  # the trained judges' shared data (`tcred judge train` builds it too)
  got = int(data.label_valid.sum())
  test = held_out_labelled(graphdef, params, task, held[:args.heldout_prompts], rollouts=args.rollouts,
                           continuations=args.continuations, rule=rule, key=jax.random.fold_in(key, 7),
                           temperature=cfg.rl.temperature)
  data_s = time.time() - t0
  oracle = np.concatenate([[task.teacher_analysis(p, r[:s], r[s:e]).good for s, e in step_spans(task, r)]
                           for p, r in zip(test.problems, test.responses)])
  mc = test.labels[test.label_valid]
  rows = []
  t0 = time.time()
  cost = generative_judge.train(TrainJob(judge, task, ctx, data, directory / "judge", lambda s, m: rows.append((s, m)),
                                         False))
  train_s = time.time() - t0
  results = {"task": args.task, "judge": judge.settings(), "labels": got, "train_good_frac":
             float(data.labels[data.label_valid].mean()), "data_s": data_s, "train_s": train_s,
             "train_tokens": cost["tokens"], "heldout_rollouts": len(test.responses)}
  for which in ("weights-sft", "weights"):
    loaded = generative_judge.load(judge, task, directory / "judge", ctx, which=which)
    scores = loaded.score_groups(task, test.problems, [[r] for r in test.responses], ctx)
    s = np.concatenate([scores.scores[n, 0, 1:1 + len(step_spans(task, r))] for n, r in enumerate(test.responses)])
    pred = s > 0.5
    stage = "sft" if which == "weights-sft" else "grpo"
    results[stage] = {"vs_mc": accuracy(pred, mc), "vs_oracle": accuracy(pred, oracle),
                      "score_s": scores.seconds, "score_tokens": scores.tokens}
  grpo_rows = [m for _, m in rows if "judge/grpo_reward" in m]
  if grpo_rows:
    results["grpo_reward_first_last"] = [grpo_rows[0]["judge/grpo_reward"], grpo_rows[-1]["judge/grpo_reward"]]
  results["wall_s"] = time.time() - t_start
  text = json.dumps(results, indent=1)
  print(text)
  if args.out:
    pathlib.Path(args.out).write_text(text)
  return 0


if __name__ == "__main__":
  sys.exit(main())

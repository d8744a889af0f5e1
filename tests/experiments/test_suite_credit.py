"""suite-credit (issue 24): the design the credit suite promises, read from its registration, and the suite
end to end at 2 methods x 2 seeds x 2 steps."""

import json

import pytest

from tcred import cli
from tcred.experiments.registry import Suite, get_experiment, get_suite
from tcred.tasks.registry import task_entry


def test_suite_credit_holds_grpo_both_kinds_of_control_and_long_horizon_tasks():
  suite = get_suite("suite-credit")
  assert suite.seeds >= 5 and suite.bases >= 3 and suite.paired and suite.oracle == "verifier-process"
  by_task = {}
  for name in suite.experiments:
    cfg = get_experiment(name)
    by_task.setdefault(cfg.task, set()).add(cfg.method)
  assert len(by_task) >= 3
  long = [t for t in by_task if t.startswith(("lock-chain-", "long-addition-d"))]
  assert len(long) >= 2
  for task, methods in by_task.items():
    assert task_entry(task).task_cls.has_oracle
    assert {"grpo", "verifier-process", "random-top20", "shuffled-verifier-process"} <= methods, task
    assert methods & {"entropy-top20", "surprisal-top20"}, task  # at least one signal method beside the controls
  assert {"combined-top20", "entropy-top20", "surprisal-top20", "mi-peaks", "rsi-s"} <= by_task["countdown"]
  assert suite.config(suite.experiments[0]).rl.keep_every == 40  # checkpoints for the studies over training


TINY = ("model.hidden_size=32", "model.intermediate_size=64", "model.num_hidden_layers=1", "sft.steps=5",
        "sft.batch_size=8", "rl.steps=2", "rl.prompts_per_step=2", "rl.group_size=2", "rl.final_eval_prompts=4",
        "rl.final_eval_samples=2", "rl.eval_prompts=2", "rl.eval_samples=2", "rl.eval_every=1",
        "rl.checkpoint_every=2")


@pytest.mark.slow
def test_suite_credit_end_to_end_on_tiny_runs(tmp_path, monkeypatch):
  """GRPO and the policy-value positive control (the oracle row) on lock-chain-k2, 2 seeds over 2 bases,
  2 RL steps each, through `tcred table`: a paired section with the credit score and the resolution."""
  from tcred.experiments import registry

  experiments = ("lock-chain-k2-grpo", "lock-chain-k2-policy-value")
  suite = Suite(name="suite-credit-tiny", description="tiny", seeds=2, bases=2, oracle="policy-value",
                experiments=experiments, overrides=TINY)
  monkeypatch.setitem(registry._SUITES, suite.name, suite)
  out, results = tmp_path / "runs", tmp_path / "results"
  assert cli.main(["table", suite.name, "--out", str(out), "--results", str(results)]) == 0
  md = (results / f"{suite.name}.md").read_text()
  assert "### lock-chain-k2: paired against `lock-chain-k2-grpo`" in md and "**Resolution**" in md
  row = next(line for line in md.splitlines() if line.startswith("| policy-value |"))
  assert "(oracle" in row
  summary = json.loads((out / suite.name / "lock-chain-k2-policy-value" / "seed-1" / "summary.json").read_text())
  assert summary["steps"] == 2

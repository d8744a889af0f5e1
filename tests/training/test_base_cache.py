"""The base-policy cache never leaks held-out problems into SFT, whatever run built it (issue 17), in any
form: held out by problem key, not prompt text (issue 23).

SFT's train step is replaced by a no-op that records nothing but lets the loop run: what is
checked is which problems (keys) each cached base policy was trained on.
"""

import json

import pytest

from tcred.models.config import model_preset
from tcred.tasks.registry import make_task
from tcred.training import sft
from tcred.training.config import SFTConfig
from tcred.training.data import eval_problems

# 60 SFT steps of 64 problems: enough that the stream of (3-number) countdown problems holds some of the
# held-out problems 65..256 (the issue counted 113 of those 192 prompts in the first 200 steps).
SFT = SFTConfig(steps=60, batch_size=64)
MODEL = model_preset("tiny", num_hidden_layers=1, hidden_size=16, intermediate_size=32)


@pytest.fixture
def trained_on(monkeypatch):
  """{cache directory: the set of problem keys its SFT drew}, filled as base policies are built."""
  seen, current = {}, {}
  real = sft.training_problems

  def recording(task, n, **kw):
    problems = real(task, n, **kw)
    seen.setdefault(current["dir"], set()).update(task.problem_key(p) for p in problems)
    return problems

  real_load = sft._load_or_train

  def load(graphdef, params, directory, *args, **kw):
    current["dir"] = directory
    return real_load(graphdef, params, directory, *args, **kw)

  monkeypatch.setattr(sft, "training_problems", recording)
  monkeypatch.setattr(sft, "_load_or_train", load)
  monkeypatch.setattr(sft, "sft_train_step", lambda state, *a, **k: (state, {"sft/loss": 0.0}))
  return seen


def test_held_out_prompts_never_reach_sft_across_settings(trained_on):
  task = make_task("countdown", demo_correct_prob=0.7)
  # A run with 64 held-out prompts builds its base policy first; a run with 256 comes later.
  _, _, small = sft.base_policy(MODEL, task, task.config, SFT, eval_prompts=64, progress=False)
  _, _, large = sft.base_policy(MODEL, task, task.config, SFT, eval_prompts=256, progress=False)
  held_out_large = {task.problem_key(p) for p in eval_problems(task, 256)}
  held_out_small = {task.problem_key(p) for p in eval_problems(task, 64)}
  assert held_out_small < held_out_large and len(held_out_large) == 256  # prefixes of one sequence of distinct keys
  assert trained_on[small] & held_out_large, "the test needs an SFT stream that meets the larger held-out set"
  assert not trained_on[small] & held_out_small
  assert not trained_on[large] & held_out_large  # the larger run got its own base policy
  assert small != large
  # The record beside each base policy says what it excluded.
  record = json.loads((large / sft.HELD_OUT_FILE).read_text())
  assert record["held_out_prompts"] == 256 and set(record["held_out_keys"]) == held_out_large
  info = json.loads((large / "info.json").read_text())
  assert {k: info[k] for k in record} == record  # info.json repeats it


def test_reuse_checks_the_recorded_held_out_prompts(trained_on):
  task = make_task("countdown", demo_correct_prob=0.7)
  few = SFTConfig(steps=2, batch_size=8)
  _, _, directory = sft.base_policy(MODEL, task, task.config, few, eval_prompts=16, progress=False)
  trained_on.clear()
  _, _, again = sft.base_policy(MODEL, task, task.config, few, eval_prompts=16, progress=False)
  assert again == directory and not trained_on  # reused, not retrained
  record = json.loads((directory / sft.HELD_OUT_FILE).read_text())
  assert record == sft.held_out_record([task.problem_key(p) for p in eval_problems(task, 16)])
  (directory / sft.HELD_OUT_FILE).write_text(json.dumps({**record, "held_out_keys_sha256": "0"}))
  with pytest.raises(sft.BasePolicyError, match="held-out problem keys"):
    sft.base_policy(MODEL, task, task.config, few, eval_prompts=16, progress=False)


def test_vocabulary_smaller_than_the_task_alphabet_is_refused():
  task = make_task("countdown")
  with pytest.raises(ValueError, match=r"model.vocab_size=50 .*>= 99"):
    sft.base_policy(model_preset("tiny", vocab_size=50), task, task.config, SFTConfig(steps=1), eval_prompts=4)


def test_sft_ending_non_finite_caches_nothing(monkeypatch):
  """Before, a non-finite SFT result was returned (and info.json written) though the checkpoint refused
  it, and RL ran on it; now it raises and nothing marks the base policy as built."""
  import jax
  import jax.numpy as jnp

  def nan_step(state, *a, **k):
    return state._replace(params=jax.tree.map(lambda x: jnp.full_like(x, jnp.nan), state.params)), \
        {"sft/loss": jnp.float32(jnp.nan)}

  monkeypatch.setattr(sft, "sft_train_step", nan_step)
  task = make_task("countdown")
  few = SFTConfig(steps=2, batch_size=8)
  with pytest.raises(sft.BasePolicyError, match="non-finite parameters"):
    sft.base_policy(MODEL, task, task.config, few, eval_prompts=8, progress=False)
  directory = sft.base_policy_dir(MODEL, task.name, task.config, few, held_out=8)
  assert not (directory / "info.json").exists()


def test_a_run_without_a_terminal_prints_sft_progress_lines(tmp_path, monkeypatch, capsys):
  """Issue 22: SFT of a base policy took 22 silent minutes when stderr was not a terminal; now a line
  when it starts and one per ~5% of its steps, as the RL loop prints (the train step is a no-op here)."""
  from tcred import cli
  from tcred.training import rl

  class Stop(Exception):
    pass

  def stop(*a, **k):
    raise Stop
  monkeypatch.setenv("TCRED_CACHE", str(tmp_path / "cache"))
  monkeypatch.setattr(sft, "sft_train_step", lambda state, *a, **k: (state, {"sft/loss": 0.5}))
  monkeypatch.setattr(rl, "_base_eval", stop)  # after the base policy: stop there
  with pytest.raises(Stop):
    cli.main(["run", "countdown-grpo", "--out", str(tmp_path / "runs"), "--steps", "1", "--set", "sft.steps=40",
              "--set", "sft.batch_size=4", "--set", "model.num_hidden_layers=1"])
  lines = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("tcred: ")]
  assert lines[0].startswith("tcred: training the countdown base policy: 40 SFT steps"), lines
  assert [ln.split(",")[0] for ln in lines[1:]] == [f"tcred: sft countdown: step {s}/40" for s in range(2, 41, 2)]
  assert "loss 0.500" in lines[-1]


def test_fields_added_later_leave_cache_keys_and_run_hashes_alone():
  """`HASH_NEUTRAL_DEFAULT` fields (long addition's trap_prob, rl.hold_on_zero_grad) at their defaults change
  neither a base policy's cache key nor a run's config hash: a config.json written before they existed
  hashes as it did; away from their defaults they are hashed like any field."""
  import dataclasses

  from tcred import experiments
  from tcred.training.config import config_hash, normalised_config, run_config_hash
  cfg = experiments.get_experiment("long-addition-d8-grpo")
  resolved = cfg.to_dict()
  written_before = json.loads(json.dumps(resolved))
  del written_before["task_config"]["trap_prob"], written_before["rl"]["hold_on_zero_grad"]
  assert run_config_hash(normalised_config(written_before)) == run_config_hash(resolved)
  trapped = cfg.with_overrides(["task_config.trap_prob=0.6"])
  assert run_config_hash(trapped.to_dict()) != run_config_hash(resolved)
  assert run_config_hash(cfg.with_overrides(["rl.hold_on_zero_grad=true"]).to_dict()) != run_config_hash(resolved)
  key = lambda c: sft.base_policy_dir(c.model, c.task, c.task_config, c.sft, held_out=256).name
  fields = {k: v for k, v in dataclasses.asdict(cfg.task_config).items() if k != "trap_prob"}
  assert key(cfg).split("-")[-3] == config_hash(cfg.model, cfg.task, fields, cfg.sft) and key(cfg) != key(trapped)

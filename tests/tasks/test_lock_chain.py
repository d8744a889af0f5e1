"""Tests of the lock-chain task and of the difficulty levels (issue 24): format, verifier, oracle at every
prefix, generator determinism, demonstrations, teacher, knob validation, level registration."""

import dataclasses

import numpy as np
import pytest

from tcred.tasks import registry, step_judge
from tcred.tasks.lock_chain import (CODEBOOK, DECOY_SHIFT, LEVELS, TRAP_LOCKS, LockChain, LockChainConfig,
                                    LockChainData, LockChainK8Config, checksums)

TASK = LockChain(LockChainConfig(decisions=3, filler=4))
PROBLEM = TASK.make_problem("KQB", (3, 7, 1))  # checksums 3, (3+7)%10 = 0, (0+1)%10 = 1
SOLUTION = "K3=3abcd,Q7=0abcd,B1=1abcd#1"


def test_problem_format():
  assert PROBLEM.prompt == "K3Q7B1:"
  assert PROBLEM.solution == SOLUTION and PROBLEM.answer == "1"
  assert PROBLEM.data == LockChainData("KQB", (3, 7, 1))
  assert checksums([3, 7, 1]) == [3, 0, 1] and checksums([9, 9, 9, 9]) == [9, 8, 7, 6]
  assert len(SOLUTION) + 1 == TASK.max_response_len and len(PROBLEM.prompt) == TASK.max_prompt_len
  assert [SOLUTION[i] for i in TASK.decision_offsets(PROBLEM)] == ["3", "7", "1"]
  assert LockChain(LockChainConfig(decisions=1, filler=0)).make_problem("Z", (0,)).solution == "Z0=0#0"


def _value_by_hand(prefix: str) -> float:
  """The oracle by hand: every key so far right and every forced character consistent, i.e. equal to
  the solution's character at that offset (the format is fixed-length)."""
  return float(len(prefix) <= len(SOLUTION) and all(c == SOLUTION[i] for i, c in enumerate(prefix)))


@pytest.mark.parametrize("response", [
    SOLUTION,
    "K3=3abcd,Q5=8abcd,B1=9abcd#9",  # wrong second key (checksums follow it: consistent, still fatal)
    "K3=3abcd,Q7=0abcd,B1=1abcd#2",  # wrong answer
    "K3=3abcd,Q7=1abcd,B1=2abcd#2",  # wrong checksum after right keys
    "K3=3abce,Q7=0abcd,B1=1abcd#1",  # a filler slip
    "Q7=7abcd,K3=0abcd,B1=1abcd#1",  # locks out of order
])
def test_oracle_at_every_prefix(response):
  values = [TASK.prefix_value(PROBLEM, response[:t]) for t in range(len(response) + 1)]
  assert values == [_value_by_hand(response[:t]) for t in range(len(response) + 1)]
  assert TASK.reward(PROBLEM, response) == float(response == SOLUTION)
  if response != SOLUTION:  # the value drops to 0 at the first wrong character and stays there
    first = next(i for i, (a, b) in enumerate(zip(response, SOLUTION)) if a != b)
    assert values[first] == 1.0 and not any(values[first + 1:])


def test_wrong_key_is_fatal_where_written():
  """The decisive characters: a wrong key makes the value 0 at the key, whatever follows."""
  for offset in TASK.decision_offsets(PROBLEM):
    wrong = SOLUTION[:offset] + str((int(SOLUTION[offset]) + 1) % 10)
    assert TASK.prefix_value(PROBLEM, SOLUTION[:offset]) == 1.0
    assert TASK.prefix_value(PROBLEM, wrong) == 0.0


@pytest.mark.parametrize("response", [
    SOLUTION + ",", SOLUTION[:-1], SOLUTION[:-2], "K3=3abcd,Q7=0abcd#0", "K3=3abcd,Q7=0abcd,B1=1abc#1",
    "K3=3abcd,Q7=0abcd,B1=1abcde#1", "K3=03abcd,Q7=0abcd,B1=1abcd#1", "", "#1", "1", "\ufffd"])
def test_reward_rejects(response):
  assert TASK.reward(PROBLEM, response) == 0.0


def test_step_ends_one_decision_per_step():
  ends = TASK.step_ends(SOLUTION)
  assert ends == [8, 17, 26, 28]
  starts = [0, *ends[:-1]]
  for (start, end), offset in zip(zip(starts, ends), TASK.decision_offsets(PROBLEM)):
    assert start < offset < end
  assert TASK.step_ends("K3=3ab") == [6]


def test_generator_is_deterministic_and_in_range():
  task = registry.make_task("lock-chain-k8")
  a = [task.sample(np.random.default_rng(7)) for _ in range(2)]
  b = [task.sample(np.random.default_rng(7)) for _ in range(2)]
  assert a == b
  rng = np.random.default_rng(1)
  problems = [task.sample(rng) for _ in range(200)]
  assert len({p.prompt for p in problems}) == 200
  for p in problems:
    locks, keys = p.data
    assert len(locks) == len(set(locks)) == 8 and locks.isupper() and all(0 <= k <= 9 for k in keys)
    assert len(p.prompt) == task.max_prompt_len and len(p.solution) + 1 == task.max_response_len
    assert task.reward(p, p.solution) == 1.0
  assert {k for p in problems for k in p.data.keys} == set(range(10))


def test_codebook_mode_fixes_each_locks_key_and_leaves_it_out_of_the_prompt():
  assert sorted(CODEBOOK) == [chr(c) for c in range(65, 91)]
  counts = np.bincount(list(CODEBOOK.values()), minlength=10)
  assert counts.min() >= 2 and counts.max() <= 3  # every digit is some lock's key, none dominates
  task = LockChain(LockChainConfig(decisions=3, filler=4, codebook=True))
  keys = tuple(CODEBOOK[c] for c in "KQB")
  p = task.make_problem("KQB", keys)
  assert p.prompt == "KQB:" and len(p.prompt) == task.max_prompt_len
  assert p.solution == LockChain(LockChainConfig(decisions=3, filler=4)).make_problem("KQB", keys).solution
  wrong = ((keys[0] + 1) % 10, *keys[1:])
  with pytest.raises(ValueError, match="codebook mode fixes each lock's key"):
    task.make_problem("KQB", wrong)
  # The same locks as the mode without a codebook draws from the same stream; keys from the codebook.
  plain = LockChain(LockChainConfig(decisions=8, codebook=False))
  coded = LockChain(LockChainConfig(decisions=8, codebook=True))
  for seed in range(20):
    a, b = plain.sample(np.random.default_rng(seed)), coded.sample(np.random.default_rng(seed))
    assert a.data.locks == b.data.locks and b.data.keys == tuple(CODEBOOK[c] for c in b.data.locks)
    assert b.prompt == b.data.locks + ":" and coded.reward(b, b.solution) == 1.0
  with pytest.raises(ValueError, match="codebook must be true or false"):
    LockChainConfig(codebook="yes")


def test_problem_key_is_the_sorted_lock_table():
  assert TASK.problem_key(PROBLEM) == "B1K3Q7"
  assert TASK.problem_key(TASK.make_problem("QBK", (7, 1, 3))) == "B1K3Q7"
  assert TASK.problem_key(TASK.make_problem("KQB", (3, 7, 2))) != "B1K3Q7"


def test_demonstrations_are_noisy_at_the_keys_only():
  task = LockChain(LockChainConfig(decisions=4, filler=3, demo_correct_prob=0.4))
  rng = np.random.default_rng(0)
  n, correct, key_errors = 3000, 0, 0
  for _ in range(n):
    p = task.sample(rng)
    demo = task.demonstration(p, rng)
    offsets = task.decision_offsets(p)
    written = [int(demo[i]) for i in offsets]
    # Everything but the keys is what the written keys force: the demonstration is consistent with itself.
    assert demo == task.make_problem(p.data.locks, written).solution
    key_errors += sum(w != k for w, k in zip(written, p.data.keys))
    correct += task.reward(p, demo)
  assert abs(correct / n - 0.4) < 0.03
  assert abs(key_errors / (4 * n) - (1 - 0.4 ** 0.25)) < 0.02


def test_trap_locks_write_their_decoy_key_at_trap_prob():
  assert TRAP_LOCKS == "ADGJMPSVY"
  task = LockChain(LockChainConfig(decisions=8, filler=2, demo_correct_prob=0.5, codebook=True, trap_prob=0.7))
  rng = np.random.default_rng(3)
  decoy = other = traps = plain = plain_wrong = 0
  for _ in range(3000):
    p = task.sample(rng)
    demo = task.demonstration(p, rng)
    written = [int(demo[i]) for i in task.decision_offsets(p)]
    for lock, key, w in zip(p.data.locks, p.data.keys, written):
      if lock in TRAP_LOCKS:
        traps += 1
        decoy += w == (key + DECOY_SHIFT) % 10
        other += w not in (key, (key + DECOY_SHIFT) % 10)
      else:
        plain += 1
        plain_wrong += w != key
  e = 1 - 0.5 ** (1 / 8)
  # decoy: trap_prob, plus the uniform noise's share (1 - trap_prob) * e / 9 that lands on it
  assert abs(decoy / traps - (0.7 + 0.3 * e / 9)) < 0.02
  assert abs(other / traps - 0.3 * e * 8 / 9) < 0.01 and abs(plain_wrong / plain - e) < 0.01
  # trap_prob 0 draws the demonstrations of the task before traps existed: one uniform draw per key, and a
  # replacement digit on an error (the same random stream as that algorithm, written out here by hand)
  plain_task = LockChain(LockChainConfig(decisions=4, codebook=True, demo_correct_prob=0.3))
  r1, r2 = np.random.default_rng(5), np.random.default_rng(5)
  for _ in range(50):
    p = plain_task.sample(r1)
    plain_task.sample(r2)
    written = []
    for key in p.data.keys:
      if r2.random() < 1 - 0.3 ** (1 / 4):
        key = int(r2.choice([d for d in range(10) if d != key]))
      written.append(key)
    formatted = LockChain(LockChainConfig(decisions=4)).make_problem(p.data.locks, written).solution
    assert plain_task.demonstration(p, r1) == formatted
  with pytest.raises(ValueError, match="trap_prob must be"):
    LockChainConfig(trap_prob=1.5)


def test_teacher_analysis_matches_the_oracle():
  assert TASK.teacher_analysis(PROBLEM, "", "K3=3abcd") == ("lock K key 3 sum 3;ok", True)
  assert TASK.teacher_analysis(PROBLEM, "K3=3abcd", ",Q5=8abcd") == ("lock Q key 7 sum 0;wrong", False)
  assert TASK.teacher_analysis(PROBLEM, SOLUTION[:-2], "#1") == ("answer 1;right", True)
  assert TASK.teacher_analysis(PROBLEM, "K4=4abcd", ",Q7=1abcd") == ("earlier step wrong", False)
  task = registry.make_task("lock-chain-k4")
  rng = np.random.default_rng(2)
  for _ in range(40):
    p = task.sample(rng)
    demo = task.demonstration(p, rng)
    for start, end in step_judge.step_spans(task, demo):
      verdict = task.teacher_analysis(p, demo[:start], demo[start:end]).good
      assert verdict == bool(task.prefix_value(p, demo[:end]))


@pytest.mark.parametrize("field, bad, allowed", [("decisions", 0, "[1, 12]"), ("decisions", 13, "[1, 12]"),
                                                 ("filler", -1, "[0, 26]"), ("filler", 27, "[0, 26]"),
                                                 ("demo_correct_prob", 1.5, "[0.0, 1.0]"), ("decisions", 2.0, "")])
def test_knob_validation(field, bad, allowed):
  with pytest.raises(ValueError, match=f"{field} must be .*{allowed.replace('[', '.').replace(']', '.')}"):
    LockChainConfig(**{field: bad})
  with pytest.raises(ValueError, match=field):
    registry.make_task("lock-chain-k8", **{field: bad})
  with pytest.raises(dataclasses.FrozenInstanceError):
    LockChainK8Config().decisions = 3


def test_levels_register_like_any_task():
  levels = registry.difficulty_levels()
  assert levels["lock-chain"] == tuple(LEVELS) == ("k2", "k4", "k8", "k10", "k12")
  assert levels["long-addition"] == ("d8", "d12", "d16", "d20")
  for level, k in (("k2", 2), ("k4", 4), ("k8", 8), ("k10", 10), ("k12", 12)):
    task = registry.make_task(f"lock-chain-{level}")
    assert task.name == f"lock-chain-{level}" and task.config.decisions == k
    assert registry.make_task(f"lock-chain-{level}", filler=2).config == LEVELS[level][0](filler=2)
  for d in (8, 12, 16, 20):
    task = registry.make_task(f"long-addition-d{d}")
    assert task.config.min_digits == task.config.max_digits == d
    p = task.sample(np.random.default_rng(d))
    assert len(str(p.data.a)) == len(str(p.data.b)) == d and task.reward(p, p.solution) == 1.0
  with pytest.raises(ValueError,
                     match=r"unknown difficulty level 'k9' of 'lock-chain' \(allowed levels: k2, k4, k8, k10, k12\)"):
    registry.make_task("lock-chain-k9")
  with pytest.raises(ValueError, match="allowed levels: d8, d12, d16, d20"):
    registry.make_task("long-addition-d9")
  with pytest.raises(ValueError, match="already registered"):
    registry.register_levels("lock-chain", LEVELS)


def test_long_addition_draws_uniform_20_digit_operands():
  """Above 18 digits, 10**digits overflows int64: operands are drawn in two parts, still uniform."""
  task = registry.make_task("long-addition-d20")
  rng = np.random.default_rng(0)
  operands = [x for _ in range(500) for x in task.sample(rng).data]
  assert all(10**19 <= x < 10**20 for x in operands)
  leading = np.bincount([int(str(x)[0]) for x in operands], minlength=10)[1:]
  last = np.bincount([x % 10 for x in operands], minlength=10)
  assert leading.min() > 60 and last.min() > 60  # 1000 draws over 9 or 10 values: about 110 or 100 each


def test_level_experiments_are_registered():
  from tcred import experiments  # pylint: disable=import-outside-toplevel
  from tcred.experiments.defaults import CREDIT_TASKS  # pylint: disable=import-outside-toplevel

  assert set(CREDIT_TASKS) == {f"{f}-{lv}" for f, levels in registry.difficulty_levels().items() for lv in levels}
  for task in CREDIT_TASKS:
    cfg = experiments.get_experiment(f"{task}-grpo")
    assert cfg.task == task and cfg.method == "grpo"
    assert cfg.task_config == registry.task_config_class(task)()
    assert registry.make_task_from_config(task, cfg.task_config).name == task
  with pytest.raises(ValueError, match="unknown difficulty level 'k9'"):
    experiments.get_experiment("lock-chain-k9-grpo")


@pytest.mark.slow  # end-to-end CLI run; the task itself is covered by the unit tests above
def test_cli_runs_a_level(tmp_path, monkeypatch):
  import json  # pylint: disable=import-outside-toplevel

  from tcred import cli  # pylint: disable=import-outside-toplevel

  monkeypatch.setenv("TCRED_CACHE", str(tmp_path / "cache"))
  tiny = ["model.hidden_size=32", "model.intermediate_size=64", "model.num_hidden_layers=1", "sft.steps=3",
          "sft.batch_size=8", "rl.prompts_per_step=2", "rl.group_size=2", "rl.final_eval_prompts=4",
          "rl.final_eval_samples=2", "rl.eval_prompts=2", "rl.eval_samples=2", "task_config.filler=3"]
  assert cli.main(["run", "lock-chain-k2-grpo", "--steps", "2", "--out", str(tmp_path / "runs"), "--no-progress",
                   *[a for s in tiny for a in ("--set", s)]]) == 0
  run = tmp_path / "runs" / "lock-chain-k2-grpo" / "seed-0"
  summary = json.loads((run / "summary.json").read_text())
  assert summary["steps"] == 2 and 0.0 <= summary["base_pass1"] <= 1.0
  assert json.loads((run / "config.json").read_text())["task_config"] == {"decisions": 2, "filler": 3,
                                                                          "demo_correct_prob": 0.3}

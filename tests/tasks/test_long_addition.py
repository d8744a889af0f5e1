"""Tests of the long-addition task: format, verifier, oracle, generator and demonstrations."""

import dataclasses
import re

import numpy as np
import pytest

from tcred.tasks import tokenizer as tok
from tcred.tasks.long_addition import (LongAddition, LongAdditionConfig, LongAdditionData,
                                       column_digits)

TASK = LongAddition()
PROBLEM = TASK.make_problem(4738, 2594)  # 4738 + 2594 = 7332.
SOLUTION = "8+4=12,3+9+1=13,7+5+1=13,4+2+1=7#7332"
_STEP = re.compile(r"(\d)\+(\d)(\+1)?=(\d+)")


def _parse(response):
  """[(a, b, carry, s)] and the answer of a well-formed response; asserts the format."""
  reasoning, cue, answer = response.partition("#")
  assert cue == "#", response
  steps = [_STEP.fullmatch(s) for s in reasoning.split(",")]
  assert all(steps), response
  return [(int(m[1]), int(m[2]), int(bool(m[3])), int(m[4])) for m in steps], answer


def test_problem_format():
  assert PROBLEM.prompt == "4738+2594:"
  assert PROBLEM.answer == "7332"
  assert PROBLEM.solution == SOLUTION
  assert PROBLEM.data == LongAdditionData(4738, 2594)


@pytest.mark.parametrize(
    "a, b, solution",
    [
        (4738, 2594, SOLUTION),
        (95, 7, "5+7=12,9+0+1=10#102"),  # Shorter second operand: 0-padded; final carry.
        (7, 95, "7+5=12,0+9+1=10#102"),
        (1, 1, "1+1=2#2"),
        (999, 1, "9+1=10,9+0+1=10,9+0+1=10#1000"),
        (500, 500, "0+0=0,0+0=0,5+5=10#1000"),
        (123, 456, "3+6=9,2+5=7,1+4=5#579"),
    ],
)
def test_solutions_by_hand(a, b, solution):
  problem = TASK.make_problem(a, b)
  assert problem.solution == solution
  assert problem.answer == str(a + b)
  assert TASK.reward(problem, solution) == 1.0


@pytest.mark.parametrize(
    "response",
    [
        "8+4=12,3+9=12,7+5+1=13,4+2+1=7#7232",  # Dropped carry (self-consistent afterwards).
        "8+4=12,3+9+1=13,7+5+1=13,4+2+1=7#7333",  # Wrong answer.
        "8+4=12,3+9+1=13,7+5+1=13,4+2+1=7#07332",
        "8+4=12,3+9+1=13,7+5+1=13,4+2+1=7",  # No cue.
        "8+4=12,3+9+1=13,7+5+1=13,4+2+1=7#",
        "8+4+0=12,3+9+1=13,7+5+1=13,4+2+1=7#7332",  # Explicit zero carry is not the format.
        "4+8=12,9+3+1=13,5+7+1=13,2+4+1=7#7332",  # Operands swapped.
        "8+4=12,3+9+1=13,7+5+1=13,4+2+1=07#7332",  # Leading zero.
        "8+4=12,3+9+1=13,7+5+1=13#332",  # Missing column.
        "8+4=12,3+9+1=13,7+5+1=13,4+2+1=7,0+0=0#7332",  # Extra column.
        "4+2+1=7,7+5+1=13,3+9+1=13,8+4=12#7332",  # Wrong column order.
        "8+4=12,,3+9+1=13,7+5+1=13,4+2+1=7#7332",
        "#7332",
        "7332",
        "",
        "\ufffd",
    ],
)
def test_reward_rejects(response):
  assert TASK.reward(PROBLEM, response) == 0.0


def test_reward_is_one_only_for_the_solution():
  """Every single-character substitution, deletion or insertion of the solution is wrong."""
  alphabet = "0123456789+=,#"
  edits = set()
  for i in range(len(SOLUTION) + 1):
    for c in alphabet:
      edits.add(SOLUTION[:i] + c + SOLUTION[i:])
      if i < len(SOLUTION):
        edits.add(SOLUTION[:i] + c + SOLUTION[i + 1:])
    edits.add(SOLUTION[:i] + SOLUTION[i + 1:])
  edits.discard(SOLUTION)
  assert len(edits) > 500
  assert all(TASK.reward(PROBLEM, e) == 0.0 for e in edits)


@pytest.mark.parametrize(
    "prefix, value",
    [
        ("", 1.0),
        ("8", 1.0),
        ("8+4=1", 1.0),
        ("8+4=12,", 1.0),
        ("8+4=12,3+9", 1.0),
        ("8+4=12,3+9=", 0.0),  # Dropped carry: fatal at the "=".
        ("8+4=12,3+9=12", 0.0),  # ... and stays 0.
        ("8+4=13", 0.0),  # Slipped sum.
        ("8+4=1,", 0.0),
        ("4", 0.0),  # Misread operand.
        ("8+4=12,3+9+1=13,7+5+1=13,4+2+1=7", 1.0),
        ("8+4=12,3+9+1=13,7+5+1=13,4+2+1=7,", 0.0),  # A fifth column.
        ("8+4=12,3+9+1=13,7+5+1=13,4+2+1=7#", 1.0),
        ("8+4=12,3+9+1=13,7+5+1=13,4+2+1=7#73", 1.0),
        ("8+4=12,3+9+1=13,7+5+1=13,4+2+1=7#7332", 1.0),
        ("8+4=12,3+9+1=13,7+5+1=13,4+2+1=7#7333", 0.0),
        ("8+4=12,3+9+1=13,7+5+1=13,4+2+1=7#73321", 0.0),
        ("#", 0.0),
    ],
)
def test_prefix_value(prefix, value):
  assert TASK.prefix_value(PROBLEM, prefix) == value


def test_oracle_is_one_until_the_first_wrong_character():
  rng = np.random.default_rng(0)
  for _ in range(50):
    problem = TASK.sample(rng)
    demo = TASK.demonstration(problem, rng)
    first_wrong = next((i for i, (x, y) in enumerate(zip(demo, problem.solution)) if x != y),
                       min(len(demo), len(problem.solution)))
    values = [TASK.prefix_value(problem, demo[:i]) for i in range(len(demo) + 1)]
    if demo == problem.solution:
      assert values == [1.0] * len(values)
    else:
      assert values == [1.0] * (first_wrong + 1) + [0.0] * (len(demo) - first_wrong)
      assert TASK.reward(problem, demo) == 0.0


def test_step_ends():
  assert TASK.step_ends(SOLUTION) == [6, 15, 24, 32, 37]
  assert [SOLUTION[s:e] for s, e in zip([0, 6, 15, 24, 32], [6, 15, 24, 32, 37])] == [
      "8+4=12", ",3+9+1=13", ",7+5+1=13", ",4+2+1=7", "#7332"]
  assert TASK.step_ends("8+4=12,3+9") == [6, 10]  # Truncated.
  assert TASK.step_ends("1+1=2#2") == [5, 7]
  assert TASK.step_ends("") == []


def test_column_digits():
  assert column_digits(95, 7) == [(5, 7), (9, 0)]
  assert column_digits(7, 95) == [(7, 5), (0, 9)]
  assert column_digits(1000, 1) == [(0, 1), (0, 0), (0, 0), (1, 0)]


def test_make_problem_rejects_bad_operands():
  for a, b in [(0, 5), (-3, 5), (2.5, 1), (True, 3), ("12", 3)]:
    with pytest.raises(ValueError, match="positive integers"):
      TASK.make_problem(a, b)


def test_sampling_is_deterministic():
  a = [TASK.sample(np.random.default_rng(7)) for _ in range(3)]
  b = [TASK.sample(np.random.default_rng(7)) for _ in range(3)]
  assert a == b
  assert TASK.sample(np.random.default_rng(7)) != TASK.sample(np.random.default_rng(8))
  rng_a, rng_b = np.random.default_rng(1), np.random.default_rng(1)
  assert [TASK.demonstration(PROBLEM, rng_a) for _ in range(20)] == [
      TASK.demonstration(PROBLEM, rng_b) for _ in range(20)]


@pytest.mark.parametrize(
    "config",
    [LongAdditionConfig(), LongAdditionConfig(min_digits=1, max_digits=1),
     LongAdditionConfig(min_digits=2, max_digits=9)],
    ids=["default", "one-digit", "wide"],
)
def test_sampled_problems(config):
  task = LongAddition(config)
  rng = np.random.default_rng(0)
  lengths = set()
  for _ in range(200):
    problem = task.sample(rng)
    a, b = problem.data
    for x in (a, b):
      assert config.min_digits <= len(str(x)) <= config.max_digits
      lengths.add(len(str(x)))
    assert problem.prompt == f"{a}+{b}:" and problem.answer == str(a + b)
    assert len(problem.prompt) <= task.max_prompt_len
    assert len(problem.solution) + 1 <= task.max_response_len
    tok.encode(problem.prompt + problem.solution)
    # The solution against an independent column-by-column reference.
    steps, answer = _parse(problem.solution)
    assert answer == str(a + b)
    carry = 0
    assert len(steps) == max(len(str(a)), len(str(b)))
    for k, (x, y, c, s) in enumerate(steps):
      assert (x, y) == (a // 10**k % 10, b // 10**k % 10)
      assert c == carry and s == x + y + c
      carry = int(s >= 10)
  assert lengths == set(range(config.min_digits, config.max_digits + 1))


def test_length_bounds_are_tight():
  task = LongAddition(LongAdditionConfig(min_digits=4, max_digits=4))
  assert task.max_prompt_len == len("9999+9999:")
  # The longest response: every column carries and writes a two-digit sum, a 5-digit answer.
  longest = "9+9=18,9+9+1=19,9+9+1=19,9+9+1=19#19998"
  assert task.make_problem(9999, 9999).solution == longest
  assert task.max_response_len >= len(longest) + 1
  assert task.max_response_len == 8 * 4 + 3 + 1 + 5 + 1


@pytest.mark.parametrize("prob", [0.0, 0.5, 1.0])
def test_demonstrations(prob):
  task = LongAddition(LongAdditionConfig(min_digits=2, max_digits=5, demo_correct_prob=prob))
  rng = np.random.default_rng(0)
  rewards, kinds, multiple = [], set(), 0
  for _ in range(400):
    problem = task.sample(rng)
    a, b = problem.data
    demo = task.demonstration(problem, rng)
    assert len(demo) + 1 <= task.max_response_len
    tok.encode(demo)
    steps, answer = _parse(demo)
    expected = [(a // 10**k % 10, b // 10**k % 10) for k in range(len(steps))]
    assert len(steps) == max(len(str(a)), len(str(b)))
    # Self-consistent apart from one mistake: the carries follow the written sums, the answer
    # is read off the steps.
    carry, wrong_columns = 0, []
    for k, (x, y, c, s) in enumerate(steps):
      assert 0 <= s <= 19
      if (x, y) != expected[k] or c != carry or s != x + y + c:
        wrong_columns.append(k)
      carry = int(s >= 10)
    assert answer == str(steps[-1][3]) + "".join(str(s % 10) for *_, s in reversed(steps[:-1]))
    reward = task.reward(problem, demo)
    rewards.append(reward)
    if reward == 0.0:
      # The first mistake is one of: a misread operand (operands wrong, sum consistent), a slipped
      # sum (operands right, sum wrong), or a wrong carry (everything consistent, carry flipped).
      first = next(i for i, (x, y) in enumerate(zip(demo, problem.solution)) if x != y)
      k = demo[:first].count(",")
      x, y, c, s = steps[k]
      true_carry = int(k > 0 and steps[k - 1][3] >= 10)  # Columns before k are correct.
      if (x, y) != expected[k]:
        kinds.add("operand")
        assert sum(u != v for u, v in zip((x, y), expected[k])) == 1 and s == x + y + c
      elif s != x + y + c:
        kinds.add("sum")
        assert abs(s - (x + y + c)) in (1, 10)
      else:
        kinds.add("carry")
        assert c != true_carry
      assert wrong_columns[0] == k
      multiple += len(wrong_columns) > 1
    else:
      assert wrong_columns == []
  assert abs(np.mean(rewards) - prob) <= 0.07
  if prob < 1.0:
    assert kinds == {"operand", "sum", "carry"}
    assert multiple > 0  # Columns err independently.


@pytest.mark.parametrize(
    "overrides, field",
    [
        ({"min_digits": 0}, "min_digits"),
        ({"min_digits": 21, "max_digits": 21}, "min_digits"),
        ({"min_digits": 3.0}, "min_digits"),
        ({"min_digits": 4, "max_digits": 3}, "max_digits"),
        ({"max_digits": 21}, "max_digits"),
        ({"demo_correct_prob": -0.1}, "demo_correct_prob"),
        ({"demo_correct_prob": True}, "demo_correct_prob"),
        ({"trap_prob": 1.5}, "trap_prob"),
        ({"trap_prob": -0.2}, "trap_prob"),
    ],
)
def test_bad_config_values_name_the_field(overrides, field):
  with pytest.raises(ValueError, match=field):
    LongAdditionConfig(**overrides)


@pytest.mark.parametrize("a, b, trapped", [
    (73, 37, "3+7=10,7+3=10#100"),          # 3+7 = 10: the tens column drops its carry (right: 7+3+1=11#110)
    (455, 555, "5+5=10,5+5=10,4+5=9#900"),  # twice in a row: each round 10 drops the next carry
    (19, 91, "9+1=10,1+9=10#100"),
])
def test_carry_trap_drops_the_carry_after_a_round_ten(a, b, trapped):
  task = LongAddition(LongAdditionConfig(demo_correct_prob=1.0, trap_prob=1.0))
  problem = task.make_problem(a, b)
  assert task.demonstration(problem, np.random.default_rng(0)) == trapped
  assert task.reward(problem, trapped) == 0.0  # the trap is a mistake; the solution is unchanged
  assert problem.solution == LongAddition().make_problem(a, b).solution


def test_carry_trap_leaves_other_problems_and_zero_draws_alone():
  problem = TASK.make_problem(4738, 2594)  # no column sums to exactly 10
  task = LongAddition(LongAdditionConfig(demo_correct_prob=1.0, trap_prob=1.0))
  assert task.demonstration(problem, np.random.default_rng(0)) == SOLUTION
  # trap_prob = 0 draws nothing more from the generator: the demonstrations of configs built before the field
  # existed are reproduced draw for draw (their SFT base policies stay valid).
  plain, trapped0 = LongAddition(), LongAddition(LongAdditionConfig(trap_prob=0.0))
  for seed in range(50):
    p = plain.make_problem(73 + seed, 37)
    assert plain.demonstration(p, np.random.default_rng(seed)) == trapped0.demonstration(p, np.random.default_rng(seed))


def test_carry_trap_rate_and_its_cache_key():
  from tcred.training.config import config_hash
  task = LongAddition(LongAdditionConfig(min_digits=8, max_digits=8, demo_correct_prob=1.0, trap_prob=0.6))
  rng = np.random.default_rng(0)
  sites = dropped = 0
  for i in range(600):
    problem = task.sample(rng)
    demo = task.demonstration(problem, np.random.default_rng(i))
    right, written = problem.solution.split("#")[0].split(","), demo.split("#")[0].split(",")
    for k in range(1, len(right)):
      if right[k - 1].endswith("=10") and written[:k] == right[:k]:  # a trap site reached without a slip
        sites += 1
        dropped += "+1" not in written[k]
  assert sites > 300 and abs(dropped / sites - 0.6) < 0.06
  # Left out of the hash at its default (the cache key of every base policy built before it is unchanged),
  # hashed like any field away from it.
  fields = {k: v for k, v in dataclasses.asdict(LongAdditionConfig()).items() if k != "trap_prob"}
  assert config_hash(LongAdditionConfig()) == config_hash(fields)
  assert config_hash(LongAdditionConfig(trap_prob=0.6)) != config_hash(LongAdditionConfig())


def test_config_is_frozen_and_keyword_only():
  with pytest.raises(TypeError):
    LongAdditionConfig(3)  # pylint: disable=too-many-function-args
  with pytest.raises(dataclasses.FrozenInstanceError):
    LongAdditionConfig().max_digits = 9


def test_experiments_cover_every_method_of_the_other_tasks():
  from tcred import experiments  # pylint: disable=import-outside-toplevel

  names = experiments.experiment_names()
  methods = {experiments.get_experiment(n).method for n in names if experiments.get_experiment(n).task == "countdown"}
  assert {"grpo", "dapo", "entropy-top20", "mi-weight", "dro-r3"} <= methods
  for method in methods:
    cfg = experiments.get_experiment(experiments.experiment_for("long-addition", method))
    assert cfg.task == "long-addition" and isinstance(cfg.task_config, LongAdditionConfig)
    assert cfg.credit == experiments.get_experiment(experiments.experiment_for("countdown", method)).credit
  assert "long-addition-grpo" in experiments.get_suite("suite-full").experiments
  assert not any(n.startswith("long-addition") for n in experiments.get_suite("suite-quick").experiments)


def test_default_experiment_demonstrations_fit_the_sft_batch():
  from tcred import experiments  # pylint: disable=import-outside-toplevel
  from tcred.tasks.registry import make_task_from_config  # pylint: disable=import-outside-toplevel
  from tcred.training.data import encode_demonstrations  # pylint: disable=import-outside-toplevel

  cfg = experiments.get_experiment("long-addition-grpo")
  task = make_task_from_config("long-addition", cfg.task_config)
  rng = np.random.default_rng(0)
  problems = [task.sample(rng) for _ in range(64)]
  demos = [task.demonstration(p, rng) for p in problems]
  tokens, valid, loss_mask = encode_demonstrations(task, problems, demos)
  assert tokens.shape == (64, 1 + task.max_prompt_len + task.max_response_len)
  assert (loss_mask <= valid).all()
  assert loss_mask.sum() == sum(len(d) + 1 for d in demos)  # Demonstration and EOS.


@pytest.mark.slow  # end-to-end CLI run; the task itself is covered by the unit tests above
def test_cli_lists_and_runs_long_addition(capsys, tmp_path, monkeypatch):
  from tcred import cli  # pylint: disable=import-outside-toplevel

  assert cli.main(["list"]) == 0
  out = capsys.readouterr().out
  for name in ("long-addition-grpo", "long-addition-dapo", "long-addition-entropy-top20"):
    assert name in out
  monkeypatch.setenv("TCRED_CACHE", str(tmp_path / "cache"))
  tiny = ["--set", "model.hidden_size=32", "--set", "model.intermediate_size=64",
          "--set", "model.num_hidden_layers=1", "--set", "sft.steps=3", "--set", "sft.batch_size=8",
          "--set", "rl.prompts_per_step=2", "--set", "rl.group_size=2", "--set", "rl.final_eval_prompts=4",
          "--set", "rl.final_eval_samples=2", "--set", "rl.eval_prompts=2", "--set", "rl.eval_samples=2",
          "--set", "task_config.max_digits=3"]
  assert cli.main(["run", "long-addition-grpo", "--steps", "1", "--out", str(tmp_path / "runs"),
                   "--no-progress", *tiny]) == 0
  run = tmp_path / "runs" / "long-addition-grpo" / "seed-0"
  import json  # pylint: disable=import-outside-toplevel

  summary = json.loads((run / "summary.json").read_text())
  assert summary["steps"] == 1 and 0.0 <= summary["base_pass1"] <= 1.0
  assert json.loads((run / "config.json").read_text())["task_config"]["max_digits"] == 3

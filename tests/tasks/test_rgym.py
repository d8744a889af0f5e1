"""The reasoning-gym task: answer extraction, the dataset's own scores, config errors, the held-out split."""

import numpy as np
import pytest

from tcred.tasks import registry
from tcred.tasks.rgym import ReasoningGym, ReasoningGymConfig, extract_answer

TASK = ReasoningGym(ReasoningGymConfig(dataset="basic_arithmetic", size=50, seed=3))


@pytest.mark.parametrize("response, answer", [
    ("3 + 4 = 7\n<answer>7</answer>", "7"),
    ("<answer> 7 </answer> trailing", "7"),
    ("<answer>1</answer> no, <answer>2</answer>", "2"),  # the last cue
    ("<answer>2", "2"),  # no closing tag: to the end
    ("<answer></answer>", ""),
    ("the answer is 7", None),
])
def test_extract_answer_rule(response, answer):
  assert extract_answer(response) == answer


def test_reward_is_the_datasets_own_score():
  problem = TASK.sample(np.random.default_rng(0))
  entry = TASK.dataset[problem.data]
  gold = str(entry["answer"])
  assert TASK.reward(problem, f"thinking\n<answer>{gold}</answer>") == 1.0
  assert TASK.reward(problem, problem.solution) == 1.0
  # Partial credit passes through: basic_arithmetic scores a parseable-looking near miss 0.8 here.
  assert TASK.reward(problem, f"<answer>{gold}x</answer>") == TASK.dataset.score_answer(gold + "x", entry) == 0.8
  assert TASK.reward(problem, "<answer>cat</answer>") == 0.0
  assert TASK.reward(problem, gold) == 0.0  # no cue: no answer
  assert entry["question"] in problem.prompt and "<answer>" in problem.prompt


def test_step_ends_are_lines_then_the_answer():
  response = "a\nbb\n<answer>7</answer>"
  assert TASK.step_ends(response) == [1, 4, 5, len(response)]


def test_unknown_dataset_and_bad_config_name_the_problem():
  with pytest.raises(ValueError, match=r"unknown reasoning-gym dataset 'no_such_set'.*basic_arithmetic"):
    registry.make_task("reasoning-gym", dataset="no_such_set")
  with pytest.raises(ValueError, match="refused dataset_config.*bogus"):
    registry.make_task("reasoning-gym", dataset_config='{"bogus": 1}')
  with pytest.raises(ValueError, match="dataset_config must be a JSON object"):
    ReasoningGymConfig(dataset_config="[1]")
  with pytest.raises(ValueError, match="checkpoint must be a Hugging Face checkpoint directory"):
    ReasoningGymConfig(checkpoint="/no/such/dir")
  with pytest.raises(ValueError, match="set task_config.checkpoint"):
    TASK.tokenizer  # noqa: B018


def test_held_out_split_is_fixed_and_refuses_a_small_dataset():
  first = TASK.held_out_problems(10)
  again = ReasoningGym(ReasoningGymConfig(dataset="basic_arithmetic", size=50, seed=3)).held_out_problems(12)
  assert [p.prompt for p in again[:10]] == [p.prompt for p in first] and len({p.prompt for p in again}) == 12
  distinct = len({TASK.problem_key(p) for p in TASK._problems})
  with pytest.raises(ValueError, match=f"has {distinct} distinct problems.*needs at least {distinct + 1}"):
    TASK.held_out_problems(distinct)


def test_problem_key_is_the_entry_identity_else_the_normalised_question():
  entry = TASK.dataset[0]
  assert TASK.problem_key(TASK._problems[0]) == "basic_arithmetic#q:" + entry["question"].casefold().rstrip(".")
  # Hand-made entries: the same question re-spaced at two indices is one problem; ARC entries of one puzzle
  # (augmented copies, other questions) share their task_id.
  task = ReasoningGym(ReasoningGymConfig(dataset="basic_arithmetic", size=50, seed=3))
  meta = {"source_dataset": "basic_arithmetic"}
  task.dataset = [{"question": "Calculate 2 + 3.", "answer": "5", "metadata": {**meta, "source_index": 0}},
                  {"question": "calculate  2 + 3", "answer": "5", "metadata": {**meta, "source_index": 1}},
                  {"question": "grid A", "answer": "x", "metadata": {"source_dataset": "arc_agi", "task_id": "007bbfb7"}},
                  {"question": "grid A rotated", "answer": "y", "metadata": {"source_dataset": "arc_agi", "task_id": "007bbfb7"}},
                  {"question": "grid B", "answer": "z", "metadata": {"source_dataset": "arc_agi", "task_id": "00d62c1b"}}]
  keys = [task.problem_key(task._problem(i)) for i in range(5)]
  assert keys[0] == keys[1] == "basic_arithmetic#q:calculate 2 + 3"
  assert keys[2] == keys[3] == "arc_agi#task:007bbfb7" != keys[4]

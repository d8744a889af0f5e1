"""Tests of the task registry and of the task contract, over every registered task."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from tcred.tasks import registry
from tcred.tasks.base import Task


def test_builtin_tasks_are_registered():
  assert {"countdown", "graph-path", "jsonl", "long-addition"} <= set(registry.task_names())
  assert list(registry.task_names()) == sorted(registry.task_names())


def test_make_task_applies_overrides():
  task = registry.make_task("countdown", num_numbers=4, demo_correct_prob=0.2)
  assert task.config.num_numbers == 4 and task.config.demo_correct_prob == 0.2


def test_unknown_names_and_fields_list_the_allowed_ones():
  with pytest.raises(ValueError, match="allowed: countdown, graph-path"):
    registry.make_task("sudoku")
  with pytest.raises(ValueError, match="allowed: num_nodes, extra_edges"):
    registry.make_task("graph-path", num_numbers=3)
  with pytest.raises(ValueError, match="num_nodes"):
    registry.make_task("graph-path", num_nodes=2)


def test_register_task_refuses_duplicates_and_mismatched_names():
  entry = registry.task_entry("countdown")
  with pytest.raises(ValueError, match="already registered"):
    registry.register_task("countdown", entry.config_cls, entry.task_cls)
  with pytest.raises(ValueError, match="differs"):
    registry.register_task("countdown-2", entry.config_cls, entry.task_cls)


@pytest.mark.parametrize("name", registry.task_names())
def test_task_contract(name):
  task = registry.make_task(name)
  assert isinstance(task, Task) and task.name == name
  rng = np.random.default_rng(0)
  for _ in range(30):
    problem = task.sample(rng)
    assert task.reward(problem, problem.solution) == 1.0
    assert problem.solution.endswith(task.answer_cue + problem.answer)
    if task.has_oracle:
      assert task.prefix_value(problem, "") == 1.0
      assert task.prefix_value(problem, problem.solution) == 1.0
    else:
      with pytest.raises(NotImplementedError, match="oracle"):
        task.prefix_value(problem, "")
    ends = task.step_ends(problem.solution)
    assert ends == sorted(set(ends)) and ends[0] > 0 and ends[-1] == len(problem.solution)
    assert ends[-2] == problem.solution.index(task.answer_cue)  # The answer is the last step.
    demo = task.demonstration(problem, rng)
    assert task.reward(problem, demo) in (0.0, 1.0)
    if task.checkpoint is None and name != "reasoning-gym":  # reasoning-gym's tokenizer is a checkpoint's
      ids, _ = task.tokenizer.encode_prompts([problem.prompt], task.prompt_width)
      assert task.tokenizer.decode(ids[0]) == problem.prompt
      assert len(task.tokenizer.encode(demo)) + 1 <= task.max_response_len


_SAMPLE_SCRIPT = """
import json, sys
import numpy as np
from tcred.tasks import registry
out = {}
for name in registry.task_names():
  task, rng = registry.make_task(name), np.random.default_rng(3)
  problems = [task.sample(rng) for _ in range(10)]
  out[name] = [[p.prompt, p.solution, task.demonstration(p, rng)] for p in problems]
json.dump(out, sys.stdout)
"""


def test_sampling_does_not_depend_on_the_hash_seed():
  outputs = []
  for seed in ("1", "2"):
    env = dict(os.environ, PYTHONHASHSEED=seed)
    result = subprocess.run(
        [sys.executable, "-c", _SAMPLE_SCRIPT],
        env=env,
        capture_output=True,
        text=True,
        check=True,
        cwd=os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
    )
    outputs.append(json.loads(result.stdout))
  assert outputs[0] == outputs[1]

"""The README's "Add a task" walk-through: its code block, run as written, gives a working task and experiment."""

import pathlib
import re

import numpy as np

from tcred.experiments import registry as experiments
from tcred.tasks import registry
from tcred.training.data import encode_demonstrations

README = pathlib.Path(__file__).resolve().parents[2] / "README.md"


def test_readme_task_walkthrough():
  section = README.read_text().split("## Add a task", 1)[1].split("\n## ", 1)[0]
  code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
  assert len(code.splitlines()) == 61 and "**1 new file, 61 lines" in section  # the count the README states
  namespace = {}
  try:
    exec(compile(code, "reverse.py", "exec"), namespace)  # noqa: S102  (the README's own code)
    task = registry.make_task("reverse", length=5)
    rng = np.random.default_rng(0)
    problem = next(p for p in iter(lambda: task.sample(rng), None) if p.answer[0] != p.answer[1])
    assert task.reward(problem, problem.solution) == 1.0 and task.reward(problem, problem.answer) == 0.0
    assert task.problem_key(problem) == problem.prompt[:-1]  # the word
    assert task.step_ends(problem.solution) == [1, 3, 5, 7, 9, 15]  # "e,d,c,b,a#edcba": 5 letters, the answer
    assert task.prefix_value(problem, problem.solution[:4]) == 1.0
    assert task.prefix_value(problem, "x") == 0.0
    demos = [task.demonstration(problem, rng) for _ in range(200)]
    assert 0.7 < np.mean([task.reward(problem, d) for d in demos]) < 0.9  # 80% correct (the first two letters differ)
    tokens, valid, loss = encode_demonstrations(task, [problem], [problem.solution])
    assert tokens.shape == (1, task.prompt_width + task.max_response_len) and valid.all() and loss.sum() == 16
    assert experiments.get_experiment("reverse-grpo").task == "reverse"
  finally:
    registry._TASKS.pop("reverse", None)
    experiments._EXPERIMENTS.pop("reverse-grpo", None)
    experiments._FAMILIES.pop("reverse-grpo", None)

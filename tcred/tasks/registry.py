"""The task registry: task names -> (config dataclass, task class).

`make_task(name, **overrides)` is the one way the rest of tcred (experiments,
CLI) builds a task, so validation reads the registry and cannot drift from it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any, NamedTuple

from tcred.tasks import base
from tcred.tasks.countdown import Countdown, CountdownConfig
from tcred.tasks.graph_path import GraphPath, GraphPathConfig
from tcred.tasks import lock_chain, long_addition
from tcred.tasks.jsonl import Jsonl, JsonlConfig
from tcred.tasks.long_addition import LongAddition, LongAdditionConfig
from tcred.tasks.rgym import ReasoningGym, ReasoningGymConfig


class TaskEntry(NamedTuple):
  """A registered task: its frozen config dataclass and its `Task` class."""

  config_cls: type
  task_cls: type[base.Task]


_TASKS: dict[str, TaskEntry] = {}
_LEVELS: dict[str, tuple[str, ...]] = {}  # task family -> its difficulty levels, in order


def register_task(name: str, config_cls: type, task_cls: type[base.Task]) -> None:
  """Registers a task built as `task_cls(config_cls(**overrides))`.

  Raises:
    ValueError: if `name` is taken, differs from `task_cls.name`, `config_cls`
      is not a dataclass, or `task_cls` leaves an abstract method of `Task`
      undefined (`problem_key` above all: the message says what to add).
  """
  if name in _TASKS:
    raise ValueError(f"task {name!r} is already registered; registered: {task_names()}")
  if name != task_cls.name:
    raise ValueError(
        f"task name {name!r} differs from {task_cls.__name__}.name {task_cls.name!r}"
    )
  if not dataclasses.is_dataclass(config_cls):
    raise ValueError(f"config_cls of task {name!r} must be a dataclass, got {config_cls!r}")
  missing = sorted(getattr(task_cls, "__abstractmethods__", ()))
  if "problem_key" in missing:
    raise ValueError(
        f"task {name!r} ({task_cls.__name__}) defines no problem_key: add a method `def problem_key(self, problem: "
        "Problem) -> str` returning the problem's canonical key, equal for the same problem written differently "
        "(e.g. countdown: the sorted numbers and the target). Held-out problems are kept out of SFT, RL and judge "
        "data by this key (README, \"Add a task\")")
  if missing:
    raise ValueError(f"task {name!r} ({task_cls.__name__}) leaves abstract methods of Task undefined: "
                     f"{', '.join(missing)}")
  _TASKS[name] = TaskEntry(config_cls, task_cls)


def register_levels(family: str, levels: Mapping[str, tuple[type, type[base.Task]]]) -> None:
  """Registers the difficulty levels of a task family (issue 24), each a named task config registered as
  the task `<family>-<level>` (its config class's defaults are the level's settings).

  Args:
    family: the family's name, e.g. "lock-chain".
    levels: level -> (config dataclass, task class named `<family>-<level>`), in increasing difficulty.
  """
  if family in _LEVELS:
    raise ValueError(f"the levels of task family {family!r} are already registered: {_LEVELS[family]}")
  for level, (config_cls, task_cls) in levels.items():
    register_task(f"{family}-{level}", config_cls, task_cls)
  _LEVELS[family] = tuple(levels)


def difficulty_levels() -> dict[str, tuple[str, ...]]:
  """{task family: its difficulty levels}; the task of a level is named `<family>-<level>`."""
  return dict(_LEVELS)


def level_hint(name: str) -> str:
  """For a task or experiment name of a levelled family with an unknown level (`lock-chain-k9`,
  `lock-chain-k9-grpo`), the clause naming the allowed levels; else "". Read by the unknown-task and
  unknown-experiment errors."""
  for family, levels in _LEVELS.items():
    if name.startswith(f"{family}-"):
      level = name[len(family) + 1:].split("-")[0]
      if level not in levels:
        return f"unknown difficulty level {level!r} of {family!r} (allowed levels: {', '.join(levels)}); "
  return ""


def task_names() -> tuple[str, ...]:
  """The registered task names, sorted."""
  return tuple(sorted(_TASKS))


def task_entry(name: str) -> TaskEntry:
  """The registry entry of `name`; ValueError listing the allowed names if unknown."""
  if name not in _TASKS:
    raise ValueError(f"unknown task {name!r}; {level_hint(name)}allowed: {', '.join(task_names())}")
  return _TASKS[name]


def make_task(name: str, **overrides: Any) -> base.Task:
  """Builds task `name` from its default config with `overrides` applied.

  Raises:
    ValueError: for an unknown task name or config field (the message lists the
      allowed ones), or a bad field value (raised by the config).
  """
  entry = task_entry(name)
  fields = [f.name for f in dataclasses.fields(entry.config_cls)]
  unknown = sorted(set(overrides) - set(fields))
  if unknown:
    raise ValueError(
        f"unknown config fields {unknown} for task {name!r}; allowed: {', '.join(fields)}"
    )
  return entry.task_cls(entry.config_cls(**overrides))


register_task(Countdown.name, CountdownConfig, Countdown)
register_task(GraphPath.name, GraphPathConfig, GraphPath)
register_task(LongAddition.name, LongAdditionConfig, LongAddition)
register_task(Jsonl.name, JsonlConfig, Jsonl)
register_task(ReasoningGym.name, ReasoningGymConfig, ReasoningGym)
register_levels(LongAddition.name, long_addition.LEVELS)
register_levels(lock_chain.LockChain.name, lock_chain.LEVELS)


def task_config_class(name: str) -> type:
  """The frozen config dataclass of task `name`."""
  return task_entry(name).config_cls


def make_task_from_config(name: str, config: Any) -> base.Task:
  """Builds task `name` from an instance of its config class."""
  entry = task_entry(name)
  if not isinstance(config, entry.config_cls):
    raise ValueError(f"task {name!r} expects a {entry.config_cls.__name__}, got {type(config).__name__}")
  return entry.task_cls(config)

"""The tasks: the embedded benchmark suite, question files and reasoning-gym, their registry and
tokenizers (DESIGN §5)."""

from tcred.tasks import text, tokenizer
from tcred.tasks.base import Problem, Task
from tcred.tasks.countdown import Countdown, CountdownConfig
from tcred.tasks.graph_path import GraphPath, GraphPathConfig
from tcred.tasks.jsonl import Jsonl, JsonlConfig
from tcred.tasks.lock_chain import LockChain, LockChainConfig
from tcred.tasks.long_addition import LongAddition, LongAdditionConfig
from tcred.tasks.rgym import ReasoningGym, ReasoningGymConfig
from tcred.tasks.registry import difficulty_levels, make_task, register_levels, register_task, task_entry, task_names

__all__ = [
    "Countdown",
    "CountdownConfig",
    "GraphPath",
    "GraphPathConfig",
    "Jsonl",
    "JsonlConfig",
    "LockChain",
    "LockChainConfig",
    "LongAddition",
    "LongAdditionConfig",
    "Problem",
    "ReasoningGym",
    "ReasoningGymConfig",
    "Task",
    "difficulty_levels",
    "make_task",
    "register_levels",
    "register_task",
    "task_entry",
    "task_names",
    "text",
    "tokenizer",
]

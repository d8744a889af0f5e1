"""Question/answer files for real models, answers checked with `math-verify`.

A JSONL file holds one JSON object per line with the string keys ``question``
and ``answer`` and, optionally, ``solution`` (a worked solution without the
final answer). Blank lines are skipped. The prompt is
``prompt_template.format(question=...)`` (default: the question as it is, so the
user turn is exactly the question); a response is
``<reasoning><cue><answer>`` with the cue ``answer_cue`` (``answer_format="cue"``,
the answer is the text after the cue's **last** occurrence) or
``<reasoning>\\boxed{<answer>}`` (``answer_format="boxed"``, the answer is the
content of the last ``\\boxed{...}``; the answer cue is then ``\\boxed{`` and
`Problem.answer` the text after it, the closing brace included).

The answer format is stated to the model (`instruction`, default `answer_instruction`:
"... the final answer after "#", for example: #42" or "... in \\boxed{}"), in
the turn `instruction_turn` names: ``"system"`` (default: a system message of the
chat template, so the user turn stays the question; an HF tokenizer without a chat
template puts it and a blank line before the prompt; the char tokenizer, whose
policies learn the format from demonstrations, leaves it out), ``"user"`` (after
the question in the prompt, a blank line between) or ``"none"``.

Reward: a response cut off before EOS (it reached `max_response_len`) scores 0
whatever it holds (`tcred.sampling.rollout.score`). Otherwise the extracted
answer and the reference answer are both parsed as LaTeX
math (``$...$``) by `math_verify.parse` and compared with `math_verify.verify`
(sympy equivalence: ``\\frac{1}{2}``, ``1/2`` and ``0.5`` agree, ``x=3`` and
``3`` agree). A reference answer that math-verify cannot parse (free text) is
compared as stripped text. A malformed response (no cue, unbalanced braces,
unparseable text) has reward 0; the verifier never raises.

Steps are the lines of the reasoning plus the answer. This task has no oracle
prefix value (`prefix_value` raises; estimate values by Monte-Carlo continuations), and
demonstrations exist only for items with a ``solution``: the solution, the cue
and the answer, noiseless.

Tokenizer (`Task.tokenizer`): the tokenizer of ``checkpoint`` (a Hugging Face
checkpoint directory; the `jsonl-*` experiments start their policy from it,
without SFT), else ``tokenizer``: ``"char"`` (tcred's character tokenizer, where
lengths are characters; every text of the file must then be in its vocabulary;
the default) or the path of a local Hugging Face tokenizer directory
(`tcred.tasks.text.HFTokenizer`: chat template, every EOS id), where lengths are
that tokenizer's tokens. Step ends are character offsets in every case.

Held-out split (`held_out_problems`): the file's distinct questions (by
`problem_key`, the normalised question: a repeated question with other capitals,
spacing or end punctuation counts once) in a fixed random order (seed
`SPLIT_SEED`); the first n are held out for evaluation, and no line whose
question has a held-out key is trained on. A file needs at least n + 1 distinct
questions (the run's held-out prompts plus one to train on); a smaller one is
refused, naming both.

`tcred/tasks/data/sample.jsonl` (the default `path`) is a 20-item arithmetic
and algebra sample shipped with the package.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import pathlib
import string
import threading
from typing import Any, NamedTuple

import numpy as np

from tcred.tasks import base
from tcred.tasks import text
from tcred.tasks import tokenizer as char_tok

SAMPLE_PATH = str(pathlib.Path(__file__).resolve().parent / "data" / "sample.jsonl")
"""The sample file shipped with the package."""

_REQUIRED_KEYS = ("question", "answer")
_OPTIONAL_KEYS = ("solution",)
_ANSWER_FORMATS = ("cue", "boxed")
INSTRUCTION_TURNS = ("system", "user", "none")
_BOXED = "\\boxed{"
_DEFAULT_MAX_RESPONSE_LEN = 256  # Without solutions there is nothing to measure.
SPLIT_SEED = 0x5B17  # The order of a file's held-out split (one for every run and file).


def answer_instruction(answer_format: str, answer_cue: str) -> str:
  """The default statement of the answer format (the `instruction` of a `JsonlConfig` that sets none)."""
  if answer_format == "boxed":
    return "Solve the problem step by step. End your response with the final answer in \\boxed{}, for example: " \
           "\\boxed{42}"
  return (f'Solve the problem step by step. End your response with the final answer after "{answer_cue}", for '
          f"example: {answer_cue}42")


class JsonlItem(NamedTuple):
  """One line of a question/answer file (`line` counts from 1)."""

  line: int
  question: str
  answer: str
  solution: str | None


class JsonlData(NamedTuple):
  """`Problem.data` of jsonl: the file line, the raw reference answer, its solution (or None), the question."""

  line: int
  gold: str
  solution: str | None
  question: str


def _file_error(path: str, line: int, what: str) -> ValueError:
  keys = ", ".join(f'"{k}"' for k in _REQUIRED_KEYS)
  return ValueError(
      f"{path}, line {line}: {what}; each line must be a JSON object with string keys {keys} "
      f'and optionally "solution"')


@functools.lru_cache(maxsize=16)
def _load_items_cached(path: str, mtime_ns: int, size: int) -> tuple[JsonlItem, ...]:
  del mtime_ns, size  # Cache keys only: an edited file is read again.
  items = []
  with open(path, "rb") as f:  # bytes, so that a line that is not UTF-8 is named with its number
    for number, raw in enumerate(f, start=1):
      try:
        text = raw.decode("utf-8")
      except UnicodeDecodeError as e:
        raise _file_error(path, number, f"not UTF-8 text (byte {raw[e.start]:#04x} at column {e.start + 1})") from None
      if not text.strip():
        continue
      try:
        obj = json.loads(text)
      except json.JSONDecodeError as e:
        raise _file_error(path, number, f"invalid JSON ({e.msg})") from None
      if not isinstance(obj, dict):
        raise _file_error(path, number, f"expected a JSON object, got {type(obj).__name__}")
      missing = [k for k in _REQUIRED_KEYS if k not in obj]
      if missing:
        raise _file_error(path, number, f"missing key(s) {missing}")
      for key in (*_REQUIRED_KEYS, *_OPTIONAL_KEYS):
        if key in obj and not isinstance(obj[key], str):
          raise _file_error(path, number, f'"{key}" must be a string, got {type(obj[key]).__name__}')
      if not obj["answer"].strip():
        raise _file_error(path, number, '"answer" is empty')
      items.append(JsonlItem(number, obj["question"], obj["answer"].strip(), obj.get("solution")))
  if not items:
    raise ValueError(f"{path}: no items; each line must be a JSON object with string keys "
                     f'"question", "answer" and optionally "solution"')
  return tuple(items)


def load_items(path: str) -> tuple[JsonlItem, ...]:
  """The items of a question/answer file (cached until the file changes).

  Raises:
    ValueError: for a missing file, or a line that is not a JSON object with
      string ``question`` and ``answer`` (the message names file and line).
  """
  if not os.path.isfile(path):
    raise ValueError(f"jsonl path {path!r} is not a file")
  stat = os.stat(path)
  return _load_items_cached(os.path.abspath(path), stat.st_mtime_ns, stat.st_size)


@dataclasses.dataclass(frozen=True, kw_only=True)
class JsonlConfig:
  """A question/answer file and how to prompt and check it.

  Attributes:
    path: the JSONL file (validated on construction: exists, every line well formed).
    prompt_template: a `str.format` template whose only field is ``{question}`` (default: the question).
    answer_format: ``"cue"`` (the answer follows the last `answer_cue`) or
      ``"boxed"`` (the answer is in the last ``\\boxed{...}``).
    answer_cue: the cue of ``"cue"`` format, a non-empty string.
    instruction: the text that states the answer format to the model; None: `answer_instruction`
      of the format and cue.
    instruction_turn: where the instruction goes: ``"system"``, ``"user"`` or ``"none"`` (see the
      module docstring).
    tokenizer: ``"char"`` or the path of a local HF tokenizer directory (ignored when
      `checkpoint` is set).
    checkpoint: None, or a Hugging Face checkpoint directory (`config.json`, safetensors,
      tokenizer files): the task's tokenizer, and the policy the `jsonl-*` experiments start from.
    max_response_len: the generation budget in tokens, EOS included, in
      [1, 1_000_000]; None: the longest demonstration + 1 if every item has a
      solution, else 256.
  """

  path: str = SAMPLE_PATH
  prompt_template: str = "{question}"
  answer_format: str = "cue"
  answer_cue: str = "#"
  instruction: str | None = None
  instruction_turn: str = "system"
  tokenizer: str = "char"
  max_response_len: int | None = None
  checkpoint: str | None = None

  def __post_init__(self):
    if not isinstance(self.path, str) or not self.path:
      raise ValueError(f"path must be the path of a JSONL file, got {self.path!r}")
    fields = [f for _, f, _, _ in string.Formatter().parse(self.prompt_template) if f is not None] \
        if isinstance(self.prompt_template, str) else None
    if fields is None or fields.count("question") != 1 or set(fields) != {"question"}:
      raise ValueError("prompt_template must be a str.format template with exactly one field "
                       f"'{{question}}' and no other, got {self.prompt_template!r}")
    if self.answer_format not in _ANSWER_FORMATS:
      raise ValueError(f"answer_format must be one of {', '.join(_ANSWER_FORMATS)}, got {self.answer_format!r}")
    if not isinstance(self.answer_cue, str) or not self.answer_cue:
      raise ValueError(f"answer_cue must be a non-empty string, got {self.answer_cue!r}")
    if self.instruction is not None and (not isinstance(self.instruction, str) or not self.instruction.strip()):
      raise ValueError(f"instruction must be None (the default statement of the answer format) or a non-empty "
                       f"string, got {self.instruction!r}; instruction_turn=none states nothing")
    if self.instruction_turn not in INSTRUCTION_TURNS:
      raise ValueError(f"instruction_turn must be one of {', '.join(INSTRUCTION_TURNS)}, got "
                       f"{self.instruction_turn!r}")
    if self.tokenizer != "char" and not (isinstance(self.tokenizer, str) and os.path.isdir(self.tokenizer)):
      raise ValueError(f"tokenizer must be 'char' or the path of a local HF tokenizer directory, "
                       f"got {self.tokenizer!r}")
    if self.max_response_len is not None:
      base.check_range("max_response_len", self.max_response_len, 1, 1_000_000, integer=True)
    if self.checkpoint is not None and not (isinstance(self.checkpoint, str) and os.path.isdir(self.checkpoint)):
      raise ValueError(f"checkpoint must be None or a Hugging Face checkpoint directory, got {self.checkpoint!r} "
                       "(no such directory)")
    items = load_items(self.path)
    if self.tokenizer == "char" and self.checkpoint is None:
      for item in items:
        for key, text in (("question", self.user_turn(item.question)),
                          ("answer", item.answer), ("solution", item.solution or "")):
          bad = sorted({c for c in text if c not in char_tok.CHARS})
          if bad:
            raise ValueError(f"{self.path}, line {item.line}: {key} holds characters {bad} outside the "
                             "char tokenizer's vocabulary (printable ASCII and newline); use tokenizer=<HF dir>")

  @property
  def instruction_text(self) -> str:
    """The statement of the answer format (`instruction`, else the default of the format and cue)."""
    if self.instruction is not None:
      return self.instruction
    return answer_instruction(self.answer_format, self.answer_cue)

  def user_turn(self, question: str) -> str:
    """The prompt of `question` (`Problem.prompt`): the template, plus the instruction if it goes in the user turn."""
    prompt = self.prompt_template.format(question=question)
    return f"{prompt}\n\n{self.instruction_text}" if self.instruction_turn == "user" else prompt

  @property
  def system_turn(self) -> str | None:
    """The system turn of every prompt of an HF tokenizer (None: none)."""
    return self.instruction_text if self.instruction_turn == "system" else None


def _last_boxed(text: str) -> str | None:
  """Content of the last ``\\boxed{...}`` with balanced braces, or None."""
  start = text.rfind(_BOXED)
  if start < 0:
    return None
  depth, i = 1, start + len(_BOXED)
  for j in range(i, len(text)):
    depth += {"{": 1, "}": -1}.get(text[j], 0)
    if depth == 0:
      return text[i:j]
  return None


def _parse_kwargs() -> dict[str, Any]:
  # math-verify's timeouts use SIGALRM, which only the main thread may set.
  if threading.current_thread() is threading.main_thread():
    return {}
  return {"parsing_timeout": None}


def _verify_kwargs() -> dict[str, Any]:
  if threading.current_thread() is threading.main_thread():
    return {}
  return {"timeout_seconds": None}


def _as_math(text: str) -> str:
  return "$" + text.strip().strip("$").strip() + "$"


@functools.lru_cache(maxsize=4096)
def _parse_gold(gold: str) -> tuple:
  import math_verify  # Here: importing sympy is slow, and only the verifier needs it.

  return tuple(math_verify.parse(_as_math(gold), **_parse_kwargs()))


def answers_match(gold: str, predicted: str) -> bool:
  """Whether `predicted` equals the reference `gold` by math-verify (see the module docstring).

  Never raises: any parse or comparison error counts as a mismatch.
  """
  try:
    import math_verify

    predicted = predicted.strip()
    if not predicted:
      return False
    gold_parsed = _parse_gold(gold)
    if not gold_parsed:  # Free-text reference: compare text.
      return predicted.strip("$ ") == gold.strip("$ ")
    pred_parsed = math_verify.parse(_as_math(predicted), **_parse_kwargs())
    return bool(pred_parsed) and bool(math_verify.verify(list(gold_parsed), pred_parsed, **_verify_kwargs()))
  except Exception:  # pylint: disable=broad-except  # A verifier scores; it never crashes a run.
    return False


class Jsonl(base.Task):
  """A question/answer file (see the module docstring)."""

  name = "jsonl"
  answer_cue = "#"  # The default config's; instances take theirs from the config.
  has_oracle = False

  def __init__(self, config: JsonlConfig = JsonlConfig()):
    self.config = config
    self.items = load_items(config.path)
    self.answer_cue = _BOXED if config.answer_format == "boxed" else config.answer_cue

  @property
  def checkpoint(self) -> str | None:
    """The Hugging Face checkpoint the experiments start from (None: SFT from demonstrations)."""
    return self.config.checkpoint

  @functools.cached_property
  def tokenizer(self) -> text.TaskTokenizer:
    """The checkpoint's tokenizer, else the configured one (see the module docstring)."""
    directory = self.config.checkpoint or (None if self.config.tokenizer == "char" else self.config.tokenizer)
    return text.CHAR if directory is None else text.hf_tokenizer(directory, system=self.config.system_turn)

  def num_tokens(self, value: str) -> int:
    """Length of `value` in tokens of the task's tokenizer (no special tokens)."""
    return len(self.tokenizer.encode(value))

  @functools.cached_property
  def prompt_width(self) -> int:
    return max(len(self.tokenizer.prompt_ids(p.prompt)) for p in self.problems())

  def held_out_problems(self, n: int) -> list[base.Problem]:
    """The first `n` problems of the file's fixed split (see the module docstring).

    Raises:
      ValueError: if the file has fewer than n + 1 distinct questions (by `problem_key`).
    """
    distinct = list({self.problem_key(p): p for p in reversed(self.problems())}.values())[::-1]  # first occurrence
    if len(distinct) < n + 1:
      raise ValueError(f"{self.config.path} has {len(distinct)} distinct questions, too few to hold out {n} "
                       "evaluation prompts and train on the rest (questions differing only in case, spacing or end "
                       f"punctuation count once): it needs at least {n + 1} (or ask for fewer "
                       f"held-out prompts: rl.final_eval_prompts and rl.eval_prompts <= {max(len(distinct) - 1, 0)})")
    order = np.random.default_rng(SPLIT_SEED).permutation(len(distinct))
    return [distinct[i] for i in order[:n]]

  def problem_key(self, problem: base.Problem) -> str:
    """The normalised question (`tcred.tasks.base.normalise_question`: casefolded, whitespace runs one
    space, sentence punctuation and double quotes stripped at the ends): two lines asking ``What is 2+2?``
    and ``what is  2+2`` are one question, held out together and counted once."""
    return base.normalise_question(problem.data.question)

  def _problem(self, item: JsonlItem) -> base.Problem:
    gold = item.answer
    answer = gold + "}" if self.config.answer_format == "boxed" else gold
    return base.Problem(
        prompt=self.config.user_turn(item.question),
        answer=answer,
        solution=(item.solution or "") + self.answer_cue + answer,
        data=JsonlData(item.line, gold, item.solution, item.question),
    )

  def problems(self) -> list[base.Problem]:
    """Every item of the file as a problem, in file order."""
    return [self._problem(item) for item in self.items]

  @functools.cached_property
  def max_prompt_len(self) -> int:
    return max(self.num_tokens(p.prompt) for p in self.problems())

  @functools.cached_property
  def max_response_len(self) -> int:
    if self.config.max_response_len is not None:
      return self.config.max_response_len
    if all(item.solution is not None for item in self.items):
      return max(self.num_tokens(p.solution) for p in self.problems()) + 1
    return _DEFAULT_MAX_RESPONSE_LEN

  def sample(self, rng: np.random.Generator) -> base.Problem:
    """A uniformly drawn item of the file."""
    return self._problem(self.items[int(rng.integers(len(self.items)))])

  def extract_answer(self, response: str) -> str | None:
    """The answer text of `response` (after the last cue / in the last box), or None."""
    if self.config.answer_format == "boxed":
      return _last_boxed(response)
    _, cue, answer = response.rpartition(self.answer_cue)
    return answer if cue else None

  def reward(self, problem: base.Problem, response: str) -> float:
    try:
      predicted = self.extract_answer(response)
    except Exception:  # pylint: disable=broad-except
      return 0.0
    return float(predicted is not None and answers_match(problem.data.gold, predicted))

  def step_ends(self, response: str) -> list[int]:
    """Ends of the reasoning's lines (a line ends before its newline) and of the answer.

    The answer step starts at the last cue; without a cue the last, partial
    line ends at len(response). Character offsets.
    """
    return base.line_step_ends(response, cue=self.answer_cue)

  def prefix_value(self, problem: base.Problem, prefix: str) -> float:
    raise NotImplementedError(
        "task 'jsonl' has no oracle prefix value (whether a prefix can still reach a correct answer "
        "is unknown for free-form questions); estimate it by Monte-Carlo continuations instead (tcred has no "
        "judge for this task yet)")

  def demonstration(self, problem: base.Problem, rng: np.random.Generator) -> str:
    """The item's solution, cue and answer (noiseless).

    Raises:
      ValueError: if the item has no ``solution`` (then SFT cannot build a base policy).
    """
    del rng
    if problem.data.solution is None:
      raise ValueError(
          f'task \'jsonl\' has no demonstration for {self.config.path}, line {problem.data.line}: '
          'the item has no "solution"; add solutions to the file to build an SFT base policy')
    return problem.solution

"""Tests of the jsonl task: file validation, math-verify answers, steps, demonstrations, tokenizers."""

import dataclasses
import json
import pathlib

import numpy as np
import pytest

from tcred.tasks import registry
from tcred.tasks import tokenizer as tok
from tcred.tasks.jsonl import SAMPLE_PATH, Jsonl, JsonlConfig, JsonlData, answers_match, load_items

TASK = Jsonl()
PROBLEMS = TASK.problems()  # The sample file, in order.


def _write(path, lines):
  path.write_text("".join(line + "\n" for line in lines))
  return str(path)


def _problem(task, answer):
  return next(p for p in task.problems() if p.data.gold == answer)


def test_sample_file_is_shipped_and_well_formed():
  assert pathlib.Path(SAMPLE_PATH).is_file()
  assert pathlib.Path(SAMPLE_PATH).parent.name == "data"
  items = load_items(SAMPLE_PATH)
  assert len(items) == 20
  assert all(item.solution for item in items)
  answers = {item.answer for item in items}
  assert {"\\frac{3}{4}", "0.5", "x=3", "2\\sqrt{2}"} <= answers


def test_problem_format():
  first = PROBLEMS[0]
  assert first.prompt == "What is 1/2 + 1/4?"  # the question as it is: no stray newline in the user turn
  assert first.answer == "\\frac{3}{4}"
  assert first.solution == "1/2 = 2/4, and 2/4 + 1/4 = 3/4.#\\frac{3}{4}"
  assert first.data == JsonlData(1, "\\frac{3}{4}", "1/2 = 2/4, and 2/4 + 1/4 = 3/4.", "What is 1/2 + 1/4?")


def test_every_sample_solution_is_correct():
  for problem in PROBLEMS:
    assert TASK.reward(problem, problem.solution) == 1.0
    assert TASK.reward(problem, TASK.answer_cue + problem.answer) == 1.0


@pytest.mark.parametrize(
    "gold, response",
    [
        ("\\frac{3}{4}", "#0.75"),
        ("\\frac{3}{4}", "so it is #3/4"),
        ("\\frac{3}{4}", "# \\dfrac{3}{4} "),
        ("\\frac{3}{4}", "#$\\frac{3}{4}$"),
        ("\\frac{3}{4}", "#\\frac{6}{8}"),
        ("\\frac{3}{4}", "#1 # 3/4"),  # The last cue counts.
        ("0.5", "#\\frac{1}{2}"),
        ("0.5", "#1/2"),
        ("x=3", "#x=3"),
        ("x=3", "#x = 3"),
        ("x=3", "#3"),
        ("x=3", "#3.0"),
        ("x^2+2x+1", "#1 + 2x + x^2"),
        ("2\\sqrt{2}", "#\\sqrt{8}"),
        ("16", "#16"),
    ],
)
def test_equivalent_answers_are_accepted(gold, response):
  assert TASK.reward(_problem(TASK, gold), response) == 1.0


@pytest.mark.parametrize(
    "gold, response",
    [
        ("\\frac{3}{4}", "#0.7"),
        ("\\frac{3}{4}", "#4/3"),
        ("\\frac{3}{4}", "#3/4 # 1"),  # The last cue counts.
        ("0.5", "#0.05"),
        ("x=3", "#x=4"),
        ("x=3", "#y=3"),
        ("x=3", "#x=3, y=2"),
        ("x^2+2x+1", "#x^2+2x"),
        ("2\\sqrt{2}", "#2"),
        ("16", "#61"),
    ],
)
def test_wrong_answers_are_rejected(gold, response):
  assert TASK.reward(_problem(TASK, gold), response) == 0.0


@pytest.mark.parametrize(
    "response",
    ["", "#", "# ", "3/4", "no cue at all 3/4", "#\\frac{", "#}}{{", "#\\frac{3}{4", "#$$", "#\ufffd\ufffd",
     "#" + "(" * 200, "#" + "9" * 400, "#\\boxed{", "#x=", "\x00#\x00"],
)
def test_malformed_responses_score_zero_without_raising(response):
  for problem in PROBLEMS[:3]:
    assert TASK.reward(problem, response) == 0.0


def test_answers_match_never_raises():
  assert answers_match("\\frac{1}{2}", "0.5")
  assert not answers_match("\\frac{1}{2}", "\\frac{1}{")
  assert answers_match("\\frac{1}{", "\\frac{1}{")  # An unparseable reference compares as text.
  assert not answers_match("\\frac{1}{", "\\frac{1}{2}")
  assert answers_match("blue", "blue")  # Free-text references compare as text.
  assert not answers_match("blue", "red")
  assert not answers_match("1", "")


def test_boxed_format():
  task = Jsonl(JsonlConfig(answer_format="boxed"))
  assert task.answer_cue == "\\boxed{"
  problem = _problem(task, "\\frac{3}{4}")
  assert problem.answer == "\\frac{3}{4}}" and problem.solution.endswith("\\boxed{\\frac{3}{4}}")
  assert task.reward(problem, problem.solution) == 1.0
  assert task.reward(problem, "so \\boxed{0.75}.") == 1.0
  assert task.reward(problem, "\\boxed{1} no, \\boxed{3/4}") == 1.0  # The last box counts.
  assert task.reward(problem, "\\boxed{\\frac{3}{4}") == 0.0  # Unbalanced.
  assert task.reward(problem, "\\boxed{}") == 0.0
  assert task.reward(problem, "#3/4") == 0.0
  assert task.extract_answer("a \\boxed{\\frac{1}{2}} b") == "\\frac{1}{2}"
  assert task.step_ends("a\nb\\boxed{1}") == [1, 3, 12]


def test_custom_cue_and_template(tmp_path):
  path = _write(tmp_path / "qa.jsonl", [json.dumps({"question": "2+2?", "answer": "4"})])
  task = Jsonl(JsonlConfig(path=path, prompt_template="Q: {question}\nA: ", answer_cue="####"))
  problem = task.sample(np.random.default_rng(0))
  assert problem.prompt == "Q: 2+2?\nA: " and problem.solution == "####4"
  assert task.reward(problem, "2 plus 2\n#### 4") == 1.0
  assert task.reward(problem, "2 plus 2\n### 4") == 0.0


def test_step_ends():
  assert TASK.step_ends("a = 1\nb = 2\n#3") == [5, 11, 12, 14]
  assert TASK.step_ends("one line#3") == [8, 10]
  assert TASK.step_ends("no cue\nyet") == [6, 10]  # Truncated.
  assert TASK.step_ends("") == []
  for problem in PROBLEMS:
    ends = TASK.step_ends(problem.solution)
    assert ends[-1] == len(problem.solution)
    assert ends[-2] == problem.solution.rindex("#")


def test_demonstrations_are_the_solutions():
  rng = np.random.default_rng(0)
  for problem in PROBLEMS:
    demo = TASK.demonstration(problem, rng)
    assert demo == problem.data.solution + "#" + problem.answer
    assert TASK.reward(problem, demo) == 1.0
    assert len(tok.encode(demo)) + 1 <= TASK.max_response_len


def test_no_solution_means_no_demonstration(tmp_path):
  path = _write(tmp_path / "qa.jsonl", [json.dumps({"question": "1+1?", "answer": "2"}),
                                        json.dumps({"question": "2+2?", "answer": "4", "solution": "2+2=4"})])
  task = Jsonl(JsonlConfig(path=path))
  first, second = task.problems()
  assert first.solution == "#2" and task.reward(first, first.solution) == 1.0
  with pytest.raises(ValueError, match=r"qa.jsonl, line 1: the item has no \"solution\""):
    task.demonstration(first, np.random.default_rng(0))
  assert task.demonstration(second, np.random.default_rng(0)) == "2+2=4#4"
  assert task.max_response_len == 256  # Not every item has a solution to measure.


def test_no_oracle():
  assert not TASK.has_oracle
  assert registry.make_task("countdown").has_oracle
  with pytest.raises(NotImplementedError, match="no oracle prefix value"):
    TASK.prefix_value(PROBLEMS[0], "")


def test_sampling_is_deterministic_and_covers_the_file():
  draws = [TASK.sample(np.random.default_rng(5)) for _ in range(2)]
  assert draws[0] == draws[1]
  rng = np.random.default_rng(0)
  lines = {TASK.sample(rng).data.line for _ in range(400)}
  assert lines == set(range(1, 21))


def test_lengths():
  assert TASK.max_prompt_len == max(len(p.prompt) for p in PROBLEMS)
  assert TASK.max_response_len == max(len(p.solution) for p in PROBLEMS) + 1
  assert Jsonl(JsonlConfig(max_response_len=64)).max_response_len == 64


def test_hf_tokenizer_directory(tmp_path):
  """A local HF tokenizer directory (here tcred's char tokenizer saved to disk) loads offline."""
  directory = tmp_path / "tok"
  tok.build_tokenizer().save_pretrained(directory)
  task = Jsonl(JsonlConfig(tokenizer=str(directory)))
  hf = task.tokenizer.hf()
  for problem in PROBLEMS[:5]:
    ids = hf(problem.prompt + problem.solution, add_special_tokens=False)["input_ids"]
    np.testing.assert_array_equal(ids, tok.encode(problem.prompt + problem.solution))
    assert hf.decode(ids) == problem.prompt + problem.solution
  assert task.max_prompt_len == TASK.max_prompt_len  # One token per character.
  assert task.max_response_len == TASK.max_response_len


def test_char_tokenizer_round_trip():
  hf = TASK.tokenizer.hf()
  for problem in PROBLEMS:
    text = problem.prompt + problem.solution
    assert tok.decode(tok.encode(text)) == text
    assert hf.decode(hf(text, add_special_tokens=False)["input_ids"]) == text


@pytest.mark.parametrize(
    "lines, match",
    [
        (['{"question": "q", "answer": "1"}', '{"question": "q"}'], r"line 2: missing key\(s\) \['answer'\]"),
        (['{"question": "q", "answer": "1"}', "", "not json"], "line 3: invalid JSON"),
        (['["q", "1"]'], "line 1: expected a JSON object"),
        (['{"question": "q", "answer": 1}'], 'line 1: "answer" must be a string'),
        (['{"question": "q", "answer": "1", "solution": 3}'], 'line 1: "solution" must be a string'),
        (['{"question": "q", "answer": "  "}'], 'line 1: "answer" is empty'),
        ([], "no items"),
    ],
)
def test_bad_files_name_the_file_line_and_keys(tmp_path, lines, match):
  path = _write(tmp_path / "bad.jsonl", lines)
  with pytest.raises(ValueError, match=match) as info:
    JsonlConfig(path=path)
  assert "bad.jsonl" in str(info.value)
  assert '"question"' in str(info.value) and '"answer"' in str(info.value)


def test_a_file_that_is_not_utf8_names_the_file_and_line(tmp_path):
  path = tmp_path / "latin1.jsonl"
  path.write_bytes(b'{"question": "q", "answer": "1"}\n{"question": "caf\xe9", "answer": "1"}\n')
  with pytest.raises(ValueError, match=r"latin1.jsonl, line 2: not UTF-8 text \(byte 0xe9 at column 18\)"):
    JsonlConfig(path=str(path))


def test_no_oracle_message_names_no_missing_judge():
  with pytest.raises(NotImplementedError) as info:
    TASK.prefix_value(PROBLEMS[0], "")
  assert "'mc'" not in str(info.value)


def test_non_ascii_text_needs_an_hf_tokenizer(tmp_path):
  path = _write(tmp_path / "u.jsonl", [json.dumps({"question": "q", "answer": "1"}),
                                       json.dumps({"question": "caf\u00e9?", "answer": "1"})])
  with pytest.raises(ValueError, match=r"u.jsonl, line 2: question holds characters \['\u00e9'\] outside"):
    JsonlConfig(path=path)


def test_non_ascii_file_works_with_an_hf_tokenizer(tmp_path):
  path = _write(tmp_path / "u.jsonl", [json.dumps({"question": "café?", "answer": "1"})])
  directory = tmp_path / "tok"
  tok.build_tokenizer().save_pretrained(directory)
  JsonlConfig(path=path, tokenizer=str(directory))  # No vocabulary check for HF tokenizers.


@pytest.mark.parametrize(
    "overrides, field",
    [
        ({"path": "/no/such/file.jsonl"}, "/no/such/file.jsonl"),
        ({"path": ""}, "path"),
        ({"prompt_template": "no field"}, "prompt_template"),
        ({"prompt_template": "{question} {other}"}, "prompt_template"),
        ({"prompt_template": "{question} {question}"}, "prompt_template"),
        ({"prompt_template": "{}"}, "prompt_template"),
        ({"answer_format": "latex"}, "answer_format must be one of cue, boxed"),
        ({"answer_cue": ""}, "answer_cue"),
        ({"tokenizer": "/no/such/dir"}, "tokenizer must be 'char' or"),
        ({"max_response_len": 0}, "max_response_len"),
        ({"max_response_len": 2.5}, "max_response_len"),
        ({"instruction": ""}, "instruction must be None"),
        ({"instruction_turn": "assistant"}, "instruction_turn must be one of system, user, none"),
    ],
)
def test_bad_config_values_name_the_field(overrides, field):
  with pytest.raises(ValueError, match=field):
    JsonlConfig(**overrides)


def test_config_is_frozen_and_keyword_only():
  with pytest.raises(TypeError):
    JsonlConfig(SAMPLE_PATH)  # pylint: disable=too-many-function-args
  with pytest.raises(dataclasses.FrozenInstanceError):
    JsonlConfig().answer_cue = "@"


def test_math_verify_is_installed():
  import math_verify  # pylint: disable=import-outside-toplevel

  assert callable(math_verify.parse) and callable(math_verify.verify)


def test_held_out_split_is_fixed_and_refuses_a_small_file(tmp_path):
  """A question file is split with a fixed seed; a file too small for the held-out prompts names both counts."""
  first = TASK.held_out_problems(5)
  assert [p.prompt for p in Jsonl(JsonlConfig()).held_out_problems(8)[:5]] == [p.prompt for p in first]
  assert len({p.prompt for p in first}) == 5 and first != PROBLEMS[:5]  # shuffled, not the file's head
  with pytest.raises(ValueError, match="has 20 distinct questions, too few to hold out 20.*at least 21"):
    TASK.held_out_problems(20)
  assert len(TASK.held_out_problems(19)) == 19


def test_empty_question_file_is_refused(tmp_path):
  path = tmp_path / "empty.jsonl"
  path.write_text("\n")
  with pytest.raises(ValueError, match="empty.jsonl: no items"):
    JsonlConfig(path=str(path))


def test_hf_prompts_are_the_chat_rendered_question_with_the_answer_format_stated(tmp_path):
  """The user turn is the question exactly; the answer format (cue or box) is stated in the system turn by
  default, in the user turn or nowhere as configured."""
  from tcred.testing.tiny_hf import bpe_tokenizer

  directory = tmp_path / "tok"
  hf = bpe_tokenizer(["What is 1/2 + 1/4? #3/4 \\boxed{x}"] * 20)
  hf.save_pretrained(directory)
  question = load_items(SAMPLE_PATH)[0].question

  def rendered(config, *messages):
    task = Jsonl(config)
    problem = _problem(task, "\\frac{3}{4}")
    got = task.tokenizer.prompt_ids(problem.prompt).tolist()
    want = hf.apply_chat_template(list(messages), tokenize=True, add_generation_prompt=True)
    return got, list(want["input_ids"] if hasattr(want, "keys") else want), problem

  got, want, problem = rendered(JsonlConfig(tokenizer=str(directory)),
                                {"role": "system", "content": JsonlConfig().instruction_text},
                                {"role": "user", "content": question})
  assert got == want and problem.prompt == question
  assert '"#"' in JsonlConfig().instruction_text and "\\boxed{}" in JsonlConfig(answer_format="boxed").instruction_text
  got, want, _ = rendered(JsonlConfig(tokenizer=str(directory), instruction_turn="none"),
                          {"role": "user", "content": question})
  assert got == want
  got, want, problem = rendered(JsonlConfig(tokenizer=str(directory), instruction_turn="user", instruction="Use #."),
                                {"role": "user", "content": question + "\n\nUse #."})
  assert got == want and problem.prompt == question + "\n\nUse #."

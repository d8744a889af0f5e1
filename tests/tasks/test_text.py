"""Task tokenizers (issue 12 §4, issue 15): the char tokenizer behind the interface, HF tokenizers, layering."""

import ast
import json
import pathlib

import numpy as np
import pytest

from tcred.tasks import registry, text
from tcred.tasks import tokenizer as char
from tcred.testing.tiny_hf import bpe_tokenizer

ROOT = pathlib.Path(__file__).resolve().parents[2] / "tcred"
TEXTS = ["Calculate 3 + 4.\nso 3 + 4 = 7\n<answer>7</answer>", "What is 12 * 5?\n<answer>60</answer>",
         "Think step by step, then answer.", "héllo wörld ✓"] * 20


def test_nothing_outside_tasks_imports_the_char_tokenizer():
  offenders = []
  for path in ROOT.rglob("*.py"):
    if path.is_relative_to(ROOT / "tasks"):
      continue
    for node in ast.walk(ast.parse(path.read_text())):
      if isinstance(node, ast.ImportFrom) and node.module == "tcred.tasks" and any(
          a.name == "tokenizer" for a in node.names):
        offenders.append(str(path))
      if isinstance(node, (ast.Import, ast.ImportFrom)) and "tcred.tasks.tokenizer" in (
          [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]):
        offenders.append(str(path))
  assert offenders == []


def test_char_tokenizer_behind_the_interface_is_the_char_module():
  tk = registry.make_task("countdown").tokenizer
  assert tk is text.CHAR
  assert (tk.pad_id, tk.bos_id, tk.eos_ids, tk.stop_ids) == (char.PAD_ID, char.BOS_ID, (char.EOS_ID,), char.EOS_ID)
  assert tk.vocab_size == char.NUM_REAL_TOKENS
  prompts = ["1 2 3>6\n", "x", ""]
  for got, want in zip(tk.encode_prompts(prompts, 12), char.encode_batch_left_padded(prompts, 12, bos=True)):
    np.testing.assert_array_equal(got, want)
  ids, spans = tk.encode_with_offsets("ab,c")
  np.testing.assert_array_equal(ids, char.encode("ab,c"))
  np.testing.assert_array_equal(spans, [[0, 1], [1, 2], [2, 3], [3, 4]])
  response = np.concatenate([char.encode("3+5=8,8*7=56#56"), [char.EOS_ID, char.PAD_ID]])
  decoded, starts = tk.decode_with_offsets(response)
  assert decoded == "3+5=8,8*7=56#56" and starts[:15].tolist() == list(range(15)) and starts[15:].tolist() == [15, 15]
  np.testing.assert_array_equal(tk.step_positions(response[:15], [5, 12]), [5, 12])  # offset = position
  np.testing.assert_array_equal(tk.step_token_ends(response[:15], [5, 12, 15]), [5, 12, 15])  # the last one too
  assert tk.cue_id("#") == int(char.encode("#")[0])
  np.testing.assert_array_equal(tk.answer_ids("#56"), [*char.encode("#56"), char.EOS_ID])


@pytest.fixture(scope="module")
def hf_dir(tmp_path_factory):
  directory = tmp_path_factory.mktemp("bpe")
  bpe_tokenizer(TEXTS).save_pretrained(directory)
  (directory / "generation_config.json").write_text(json.dumps({"eos_token_id": [2, 0]}))
  return directory


def test_hf_tokenizer_ids_eos_and_chat_template(hf_dir):
  tk = text.HFTokenizer(str(hf_dir))
  # ChatML specials are trained first: <|endoftext|> 0, <|im_start|> 1, <|im_end|> 2.
  assert tk.eos_ids == (2, 0) and tk.stop_ids == (2, 0) and tk.eos_id == 2 and tk.pad_id == 0 and tk.bos_id is None
  assert tk.vocab_size == len(tk.hf())
  ids = tk.prompt_ids("What is 12 * 5?")
  assert tk.hf().decode(ids.tolist()) == "<|im_start|>user\nWhat is 12 * 5?<|im_end|>\n<|im_start|>assistant\n"
  plain = text.HFTokenizer(str(hf_dir), chat_template=False)
  np.testing.assert_array_equal(plain.prompt_ids("What is"), plain.encode("What is"))  # no BOS token


def test_hf_offsets_decode_and_step_positions(hf_dir):
  tk = text.HFTokenizer(str(hf_dir))
  s = "so 3 + 4 = 7\n<answer>7</answer>"
  ids, spans = tk.encode_with_offsets(s)
  assert tk.decode(ids) == s
  decoded, starts = tk.decode_with_offsets(np.concatenate([ids, [2, 0, 0]]))  # EOS, then padding
  assert decoded == s
  np.testing.assert_array_equal(starts[:len(ids)], spans[:, 0])  # byte-level BPE: prefixes decode exactly
  assert (starts[len(ids):] == len(s)).all()
  newline = s.index("\n")
  pos = tk.step_positions(ids, [newline])
  assert len(pos) == 1 and spans[pos[0], 0] >= newline and spans[pos[0] - 1, 0] < newline
  # Step ends in tokens (judge credit): the same positions, plus the response's end (all its tokens).
  ends = tk.step_token_ends(ids, [newline, len(s)])
  np.testing.assert_array_equal(ends, [pos[0], len(ids)])
  assert tk.decode(ids[:ends[0]]).startswith(s[:newline]) and tk.decode(ids[ends[0]:]) == s[len(tk.decode(ids[:ends[0]])):]
  # decode stops at either EOS id and drops PAD
  assert tk.decode([*tk.encode("ab"), 0, *tk.encode("cd")]) == "ab"


def test_tokenizer_without_eos_is_refused(tmp_path):
  bpe_tokenizer(TEXTS, eos=False).save_pretrained(tmp_path)
  with pytest.raises(text.TokenizerError, match="no EOS token"):
    text.HFTokenizer(str(tmp_path))
  with pytest.raises(text.TokenizerError, match="does not exist"):
    text.HFTokenizer(str(tmp_path / "missing"))

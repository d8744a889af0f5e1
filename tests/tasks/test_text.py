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


DIGITS = "What is 1234 + 5678? 6912. So 12 34 567 8901 2345 = 99"


@pytest.fixture(scope="module")
def qwen2_dir(tmp_path_factory):
  """A tokenizer directory as Qwen2 checkpoints have it: `tokenizer_class: Qwen2Tokenizer` over a tokenizer.json
  whose byte-level pre-tokenizer keeps digit groups (transformers 5's Qwen2Tokenizer splits every digit)."""
  from tcred.testing.tiny_hf import name_qwen2_tokenizer

  directory = tmp_path_factory.mktemp("qwen2-tok")
  bpe_tokenizer([DIGITS] * 40 + TEXTS, vocab_size=320).save_pretrained(directory)
  name_qwen2_tokenizer(directory)
  return directory


def test_ids_are_those_of_the_checkpoints_own_tokenizer_json(qwen2_dir):
  import tokenizers

  own = tokenizers.Tokenizer.from_file(str(qwen2_dir / "tokenizer.json"))
  tk = text.HFTokenizer(str(qwen2_dir))
  question = "What is 1234 + 5678?"
  want = own.encode(question, add_special_tokens=False).ids
  assert any(sum(c.isdigit() for c in own.id_to_token(i)) > 1 for i in want)  # the file keeps digit groups
  np.testing.assert_array_equal(tk.encode(question), want)
  for probe in text.PROBE_TEXTS:
    np.testing.assert_array_equal(tk.encode(probe), own.encode(probe, add_special_tokens=False).ids)
  # The chat-rendered prompt too, and the special tokens and template of tokenizer_config.json are kept.
  rendered = f"<|im_start|>user\n{question}<|im_end|>\n<|im_start|>assistant\n"
  np.testing.assert_array_equal(tk.prompt_ids(question), own.encode(rendered, add_special_tokens=False).ids)
  assert tk.eos_id == own.token_to_id("<|im_end|>") and tk.pad_id == own.token_to_id("<|endoftext|>")


def test_a_tokenizer_that_transformers_rewrites_is_refused_naming_both_id_sequences(qwen2_dir, monkeypatch):
  import transformers
  from tokenizers import pre_tokenizers

  # What transformers 5's Qwen2Tokenizer does to the file: a pre-tokenizer that splits every digit.
  rewritten = transformers.PreTrainedTokenizerFast.from_pretrained(str(qwen2_dir))
  rewritten.backend_tokenizer.pre_tokenizer = pre_tokenizers.Sequence([
      pre_tokenizers.Digits(individual_digits=True), pre_tokenizers.ByteLevel(add_prefix_space=False)])
  monkeypatch.setattr(transformers.PreTrainedTokenizerFast, "from_pretrained", lambda *a, **k: rewritten)
  with pytest.raises(text.TokenizerError, match=r"transformers encodes .* as \[.*\] but .*tokenizer.json' itself "
                     r"gives \[.*\]"):
    text.HFTokenizer(str(qwen2_dir))


def test_a_directory_without_a_usable_tokenizer_is_refused_naming_the_files(tmp_path):
  weights_only = tmp_path / "weights-only"
  weights_only.mkdir()
  for name in ("config.json", "generation_config.json", "model.safetensors"):
    (weights_only / name).write_text("{}")
  with pytest.raises(text.TokenizerError) as info:
    text.HFTokenizer(str(weights_only))
  message = str(info.value)
  assert "found config.json, generation_config.json, model.safetensors" in message
  assert "needed: tokenizer.json" in message and "tokenizer_config.json" in message

  import tokenizers

  empty = tmp_path / "empty-vocabulary"
  empty.mkdir()
  tokenizers.Tokenizer(tokenizers.models.BPE()).save(str(empty / "tokenizer.json"))
  with pytest.raises(text.TokenizerError, match="empty vocabulary .*found tokenizer.json; needed"):
    text.HFTokenizer(str(empty))


def test_a_system_turn_precedes_the_user_turn(hf_dir):
  tk = text.hf_tokenizer(str(hf_dir), system="Answer after #.")
  assert tk.hf().decode(tk.prompt_ids("What is 12 * 5?").tolist()) == (
      "<|im_start|>system\nAnswer after #.<|im_end|>\n<|im_start|>user\nWhat is 12 * 5?<|im_end|>\n"
      "<|im_start|>assistant\n")
  assert text.hf_tokenizer(str(hf_dir)).system is None  # the same loaded files, without it
  plain = text.HFTokenizer(str(hf_dir), chat_template=False, system="Answer after #.")
  assert plain.hf().decode(plain.prompt_ids("What is 12 * 5?").tolist()) == "Answer after #.\n\nWhat is 12 * 5?"

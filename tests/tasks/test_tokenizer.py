"""Tests of the character tokenizer: the NumPy path against the HF tokenizer."""

import numpy as np
import pytest
import transformers

from tcred.tasks import tokenizer as tok

TEXTS = [
    "3*5=15,15+7=22#22",
    "ab cb|a>c:",
    " leading and trailing ",
    "line\nbreak\n",
    "",
    "~!\"'\\",
]


@pytest.fixture(scope="module")
def hf():
  return tok.build_tokenizer()


def test_vocabulary_layout(hf):
  assert (tok.PAD_ID, tok.BOS_ID, tok.EOS_ID) == (0, 1, 2)
  assert tok.VOCAB_SIZE == 128 and tok.NUM_REAL_TOKENS == 99
  assert len(tok.CHARS) == 96 and tok.CHARS[0] == " " and tok.CHARS[-1] == "\n"
  np.testing.assert_array_equal(tok.encode(tok.CHARS), np.arange(3, 99))
  assert len(hf) == tok.VOCAB_SIZE
  assert (hf.pad_token_id, hf.bos_token_id, hf.eos_token_id) == (0, 1, 2)


@pytest.mark.parametrize("text", TEXTS + [tok.CHARS])
def test_encode_decode_round_trip_and_agree_with_hf(hf, text):
  ids = tok.encode(text)
  assert ids.dtype == np.int32 and ids.shape == (len(text),)
  assert tok.decode(ids) == text
  assert hf(text, add_special_tokens=False)["input_ids"] == ids.tolist()
  assert hf(text)["input_ids"] == [tok.BOS_ID, *ids.tolist()]
  assert hf.decode(ids, skip_special_tokens=True) == text


@pytest.mark.parametrize("text", ["caf\u00e9", "tab\there", "\x00"])
def test_encode_rejects_characters_outside_the_vocabulary(text):
  with pytest.raises(ValueError, match="not in the vocabulary"):
    tok.encode(text)


def test_decode_stops_at_eos_skips_pad_and_bos_and_marks_unused_ids():
  ab = tok.encode("ab").tolist()
  assert tok.decode([tok.PAD_ID, tok.PAD_ID, tok.BOS_ID, *ab, tok.EOS_ID, *ab]) == "ab"
  assert tok.decode([*ab, 100, *ab]) == "ab\ufffdab"
  assert tok.decode(np.zeros(0, np.int32)) == ""
  for bad in ([-1], [tok.VOCAB_SIZE]):
    with pytest.raises(ValueError, match="token ids"):
      tok.decode(bad)


@pytest.mark.parametrize("bos", [True, False])
def test_left_padded_batch(hf, bos):
  length = 24
  ids, mask = tok.encode_batch_left_padded(TEXTS, length, bos=bos)
  assert ids.shape == mask.shape == (len(TEXTS), length)
  assert ids.dtype == np.int32 and mask.dtype == bool
  for row, row_mask, text in zip(ids, mask, TEXTS):
    n = len(text) + bos
    assert row_mask.tolist() == [False] * (length - n) + [True] * n
    assert (row[~row_mask] == tok.PAD_ID).all()
    assert row[row_mask].tolist() == ([tok.BOS_ID] if bos else []) + tok.encode(text).tolist()
    assert tok.decode(row) == text
  reference = hf(TEXTS, padding="max_length", max_length=length, add_special_tokens=bos)
  np.testing.assert_array_equal(ids, reference["input_ids"])
  np.testing.assert_array_equal(mask, np.asarray(reference["attention_mask"], bool))
  assert hf.batch_decode(ids, skip_special_tokens=True) == TEXTS


def test_left_padded_batch_rejects_long_text():
  with pytest.raises(ValueError, match="'abcd'"):
    tok.encode_batch_left_padded(["ab", "abcd"], 4, bos=True)
  ids, _ = tok.encode_batch_left_padded(["abcd"], 4, bos=False)
  assert tok.decode(ids[0]) == "abcd"


def test_save_and_load_round_trip(hf, tmp_path):
  hf.save_pretrained(tmp_path)
  loaded = transformers.AutoTokenizer.from_pretrained(tmp_path)
  assert isinstance(loaded, transformers.PreTrainedTokenizerFast)
  assert len(loaded) == tok.VOCAB_SIZE and loaded.padding_side == "left"
  for text in TEXTS:
    assert loaded(text)["input_ids"] == hf(text)["input_ids"]
    assert loaded.decode(loaded(text)["input_ids"], skip_special_tokens=True) == text
  batch = loaded(TEXTS, padding="max_length", max_length=24)
  np.testing.assert_array_equal(batch["input_ids"], tok.encode_batch_left_padded(TEXTS, 24)[0])

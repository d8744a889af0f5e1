"""The character-level tokenizer shared by every task of the benchmark suite.

One token per character, so character offsets in a response are token offsets
(DESIGN §5). Vocabulary (ids):

  0 ``<pad>``, 1 ``<bos>``, 2 ``<eos>``,
  3 .. 97   the printable ASCII characters chr(32) .. chr(126), in order,
  98        ``"\\n"``,
  99 .. 127 ``<unused99>`` .. ``<unused127>`` (never produced by `encode`; they
            pad the vocabulary to `VOCAB_SIZE` for the model's embedding).

Two implementations that agree (tested):
  * `build_tokenizer()`: a real `transformers.PreTrainedTokenizerFast` (a
    `tokenizers` WordLevel model whose pre-tokenizer isolates every character),
    for saving next to checkpoints and for users of the HF ecosystem. Calling it
    on text prepends BOS; its padding side is left.
  * `encode`, `decode`, `encode_batch_left_padded`: table lookups in NumPy for
    the hot loops (rollout decoding, batching prompts).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import tokenizers
from tokenizers import decoders, models, pre_tokenizers, processors

if TYPE_CHECKING:
  import transformers

PAD_ID = 0
BOS_ID = 1
EOS_ID = 2
PAD_TOKEN = "<pad>"
BOS_TOKEN = "<bos>"
EOS_TOKEN = "<eos>"

CHARS = "".join(chr(c) for c in range(32, 127)) + "\n"
"""The characters of the vocabulary; CHARS[i] has id i + 3."""

NUM_REAL_TOKENS = 3 + len(CHARS)  # 99: ids >= this are unused padding ids.
VOCAB_SIZE = 128

_FIRST_CHAR_ID = 3
_UNUSED_TOKENS = tuple(f"<unused{i}>" for i in range(NUM_REAL_TOKENS, VOCAB_SIZE))

# ASCII code -> token id (-1: not in the vocabulary). Shape [128].
_CODE_TO_ID = np.full(128, -1, dtype=np.int32)
_CODE_TO_ID[[ord(c) for c in CHARS]] = np.arange(
    _FIRST_CHAR_ID, _FIRST_CHAR_ID + len(CHARS), dtype=np.int32
)
# Token id -> text. Special ids decode to "" (they are skipped), unused ids to
# U+FFFD so that each of them still occupies one character. Shape [V].
_ID_TO_TEXT = np.array(
    ["", "", ""] + list(CHARS) + ["\ufffd"] * len(_UNUSED_TOKENS), dtype=object
)

assert NUM_REAL_TOKENS <= VOCAB_SIZE and len(_ID_TO_TEXT) == VOCAB_SIZE


def _vocab() -> dict[str, int]:
  tokens = [PAD_TOKEN, BOS_TOKEN, EOS_TOKEN, *CHARS, *_UNUSED_TOKENS]
  return {token: i for i, token in enumerate(tokens)}


def build_tokenizer() -> transformers.PreTrainedTokenizerFast:
  """Builds the HF fast tokenizer of the vocabulary above.

  `tok(text)` gives ``[BOS_ID, *encode(text)]``; `tok(text, add_special_tokens=False)`
  gives `encode(text)`; `tok(texts, padding="max_length", max_length=L)` gives
  `encode_batch_left_padded(texts, L)`. `tok.decode(ids, skip_special_tokens=True)`
  inverts `encode`. `len(tok) == VOCAB_SIZE`.
  """
  import transformers  # Here: a slow import that the NumPy hot path does not need.

  backend = tokenizers.Tokenizer(models.WordLevel(vocab=_vocab(), unk_token=None))
  # Every character, "\n" and " " included, is its own pre-token.
  backend.pre_tokenizer = pre_tokenizers.Split(
      tokenizers.Regex(r"[\s\S]"), behavior="isolated"
  )
  backend.decoder = decoders.Fuse()  # Concatenate, no spaces between tokens.
  backend.post_processor = processors.TemplateProcessing(
      single=f"{BOS_TOKEN} $A", special_tokens=[(BOS_TOKEN, BOS_ID)]
  )
  return transformers.PreTrainedTokenizerFast(
      tokenizer_object=backend,
      pad_token=PAD_TOKEN,
      bos_token=BOS_TOKEN,
      eos_token=EOS_TOKEN,
      additional_special_tokens=list(_UNUSED_TOKENS),
      padding_side="left",
      clean_up_tokenization_spaces=False,
  )


def encode(text: str) -> np.ndarray:
  """Token ids of `text`, one per character, without BOS/EOS.

  Args:
    text: characters from `CHARS`.

  Returns:
    int32 array [len(text)].

  Raises:
    ValueError: if `text` holds a character outside the vocabulary.
  """
  try:
    ids = _CODE_TO_ID[np.frombuffer(text.encode("ascii"), dtype=np.uint8)]
  except UnicodeEncodeError:
    ids = None
  if ids is None or (ids < 0).any():
    bad = next(c for c in text if c not in CHARS)
    raise ValueError(f"character {bad!r} of {text!r} is not in the vocabulary")
  return ids


def decode(ids: Sequence[int] | np.ndarray) -> str:
  """Text of `ids`: stops at the first EOS, skips PAD and BOS.

  Ids of the unused range decode to U+FFFD (one character each), so a verifier
  rejects them and they keep their place in the text. PAD or BOS ids inside a
  response would shift later character offsets; a sampler emits neither
  before EOS unless the policy samples them.

  Args:
    ids: int array [T] with values in [0, VOCAB_SIZE).

  Raises:
    ValueError: for ids outside [0, VOCAB_SIZE).
  """
  ids = np.asarray(ids, dtype=np.int64).reshape(-1)
  if ids.size and (ids.min() < 0 or ids.max() >= VOCAB_SIZE):
    raise ValueError(f"token ids must be in [0, {VOCAB_SIZE}), got {ids.tolist()}")
  eos = np.flatnonzero(ids == EOS_ID)
  if eos.size:
    ids = ids[: eos[0]]
  return "".join(_ID_TO_TEXT[ids].tolist())


def encode_batch_left_padded(
    texts: Sequence[str], length: int, bos: bool = True
) -> tuple[np.ndarray, np.ndarray]:
  """Encodes texts into one left-padded batch.

  Row n is ``[PAD] * (length - len(texts[n]) - bos) + [BOS] * bos + encode(texts[n])``.

  Args:
    texts: N strings.
    length: L, the row length.
    bos: whether to put BOS in front of each text.

  Returns:
    ids: int32 [N, L].
    mask: bool [N, L], True on BOS and text tokens, False on padding.

  Raises:
    ValueError: if a text (plus BOS) is longer than `length`, or holds a
      character outside the vocabulary.
  """
  ids = np.full((len(texts), length), PAD_ID, dtype=np.int32)
  mask = np.zeros((len(texts), length), dtype=bool)
  for n, text in enumerate(texts):
    row = encode(text)
    if bos:
      row = np.concatenate([np.array([BOS_ID], dtype=np.int32), row])
    if len(row) > length:
      raise ValueError(
          f"text {text!r} needs {len(row)} tokens (BOS included: {bos}) but "
          f"length is {length}"
      )
    if len(row):
      ids[n, length - len(row) :] = row
      mask[n, length - len(row) :] = True
  return ids, mask

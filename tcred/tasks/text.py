"""The tokenizer a task brings: text <-> token ids, with character offsets (DESIGN §5).

Everything outside `tcred.tasks` that turns text into ids or back (prompts,
demonstrations, reference answers, decoded responses, the answer cue's id, the
tree sampler's step-boundary forks) goes through `Task.tokenizer`, a
`TaskTokenizer`:

  * `CharTokenizer` (`CHAR`): tcred's character tokenizer
    (`tcred.tasks.tokenizer`), the default of the embedded tasks. One token per
    character, so a character offset is a token position.
  * `HFTokenizer`: a Hugging Face tokenizer of a local checkpoint directory (no
    hub access), giving exactly the ids of the directory's own `tokenizer.json`
    (checked on a probe text at every load). Prompts are rendered with the
    tokenizer's chat template when it has one (an optional system message, one
    user message, generation prompt added), else BOS (if the tokenizer has one)
    + the prompt's tokens. Every EOS id the directory names
    (`generation_config.json` and the tokenizer's own EOS) ends a response. A
    directory without a vocabulary file, an empty vocabulary or no EOS is
    refused (`TokenizerError`), naming the files found and the files needed.

Offsets: `encode_with_offsets(text)` gives each token's `[start, end)` character
span in `text`; `decode_with_offsets(ids)` the decoded text and the character
offset where each token's text starts. `step_positions(ids, ends)` maps the
character offsets where a task's steps end to the token positions where the next
steps start, which is where tree rollouts fork.
"""

from __future__ import annotations

import abc
import copy
import json
import pathlib
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from tcred.tasks import tokenizer as char


class TaskTokenizer(abc.ABC):
  """Text <-> ids for one task (see the module docstring).

  Attributes:
    name: ``"char"`` or the tokenizer directory.
    vocab_size: ids the tokenizer can produce are in [0, vocab_size); a
      policy's embedding must have at least this many rows.
    pad_id: the id filling unused positions (never trained on).
    bos_id: the id put before a prompt, or None (the tokenizer has none).
    eos_ids: every id that ends a response (the first is written after
      demonstrations and reference answers).
  """

  name: str
  vocab_size: int
  pad_id: int
  bos_id: int | None
  eos_ids: tuple[int, ...]

  @property
  def eos_id(self) -> int:
    """The EOS id written after demonstrations and reference answers (`eos_ids[0]`)."""
    return self.eos_ids[0]

  @property
  def stop_ids(self) -> int | tuple[int, ...]:
    """What the sampler stops at: the one EOS id, or the tuple of them (`sample_groups(eos_id=...)`)."""
    return self.eos_ids[0] if len(self.eos_ids) == 1 else self.eos_ids

  @abc.abstractmethod
  def encode(self, text: str) -> np.ndarray:
    """int32 ids `[n]` of `text`, without BOS/EOS."""

  @abc.abstractmethod
  def encode_with_offsets(self, text: str) -> tuple[np.ndarray, np.ndarray]:
    """`(ids [n], spans [n, 2])`: `encode(text)` and each token's `[start, end)` character span in `text`."""

  @abc.abstractmethod
  def decode(self, ids: Sequence[int] | np.ndarray) -> str:
    """Text of `ids`: stops at the first EOS id, skips PAD and BOS."""

  @abc.abstractmethod
  def decode_with_offsets(self, ids: Sequence[int] | np.ndarray) -> tuple[str, np.ndarray]:
    """`(decode(ids), starts [n])`: the character offset in the text where each token's text starts
    (tokens at or after the first EOS start at len(text))."""

  @abc.abstractmethod
  def prompt_ids(self, prompt: str) -> np.ndarray:
    """int32 ids the policy reads before its response: BOS + prompt, or the chat template's rendering."""

  @abc.abstractmethod
  def hf(self) -> Any:
    """The `transformers` tokenizer (its token ids go into exported configs)."""

  generation_config: dict[str, Any] | None = None
  """The tokenizer directory's `generation_config.json` (None: none); `tcred export` keeps its fields."""

  source_files: tuple[pathlib.Path, ...] | None = None
  """The tokenizer's files on disk, which `tcred export` copies unchanged (None: written by `hf().save_pretrained`)."""

  def step_token_ends(self, ids: np.ndarray, ends: Sequence[int]) -> np.ndarray:
    """`[K]` int64 exclusive token ends of the steps whose character ends are `ends` (`Task.step_ends`).

    Args:
      ids: the response's ids `[L]` (EOS excluded).
      ends: exclusive character offsets of step ends in `decode(ids)`, ascending.

    Returns:
      For each end, the number of tokens whose text starts before it (a token straddling the boundary is
      its step's last token), so step k holds tokens `[ends_{k−1}, ends_k)`; at most L.
    """
    _, starts = self.decode_with_offsets(ids)
    return np.searchsorted(starts, np.asarray(list(ends), np.int64), side="left").astype(np.int64)

  def step_positions(self, ids: np.ndarray, ends: Sequence[int]) -> np.ndarray:
    """Token positions where the steps after the character offsets `ends` start.

    Args:
      ids: the response's ids `[L]` (EOS excluded).
      ends: exclusive character offsets of step ends in `decode(ids)`, 0 < end < len(text).

    Returns:
      int positions in [0, L): for each end, the first token whose text starts at or after it
      (a token straddling the boundary is its step's last token).
    """
    pos = self.step_token_ends(ids, ends)
    return pos[pos < len(ids)]

  def cue_id(self, cue: str) -> int:
    """The first token id of the answer cue (what `credit.extras.cue_index` looks for in a response)."""
    ids = self.encode(cue)
    if not len(ids):
      raise ValueError(f"answer cue {cue!r} encodes to no token")
    return int(ids[0])

  def answer_ids(self, text: str) -> np.ndarray:
    """`encode(text) + [EOS]`: a reference answer or demonstration as the policy should end it."""
    return np.concatenate([self.encode(text), np.array([self.eos_id], np.int32)]).astype(np.int32)

  def left_pad(self, rows: Sequence[np.ndarray], length: int, *, what: str = "text") -> tuple[np.ndarray, np.ndarray]:
    """`(ids [N, length], valid [N, length])`: each row right-aligned after PAD; ValueError if one is too long."""
    ids = np.full((len(rows), length), self.pad_id, dtype=np.int32)
    valid = np.zeros((len(rows), length), dtype=bool)
    for n, row in enumerate(rows):
      if len(row) > length:
        raise ValueError(f"{what} {n} needs {len(row)} tokens but the budget is {length}")
      if len(row):
        ids[n, length - len(row):] = row
        valid[n, length - len(row):] = True
    return ids, valid

  def encode_prompts(self, prompts: Sequence[str], length: int) -> tuple[np.ndarray, np.ndarray]:
    """Left-padded `[N, length]` `prompt_ids` of each prompt and their validity."""
    return self.left_pad([self.prompt_ids(p) for p in prompts], length, what="prompt")

  def encode_bos_texts(self, texts: Sequence[str], length: int) -> tuple[np.ndarray, np.ndarray]:
    """Left-padded `[N, length]` BOS (if any) + `encode(text)` rows and their validity (reference solutions)."""
    bos = [] if self.bos_id is None else [self.bos_id]
    return self.left_pad([np.concatenate([np.asarray(bos, np.int32), self.encode(t)]) for t in texts], length)


class CharTokenizer(TaskTokenizer):
  """tcred's character tokenizer (`tcred.tasks.tokenizer`): one token per character."""

  name = "char"
  vocab_size = char.NUM_REAL_TOKENS
  pad_id = char.PAD_ID
  bos_id = char.BOS_ID
  eos_ids = (char.EOS_ID,)

  def encode(self, text: str) -> np.ndarray:
    return char.encode(text)

  def encode_with_offsets(self, text: str) -> tuple[np.ndarray, np.ndarray]:
    ids = char.encode(text)
    starts = np.arange(len(ids), dtype=np.int64)
    return ids, np.stack([starts, starts + 1], axis=-1)

  def decode(self, ids) -> str:
    return char.decode(ids)

  def decode_with_offsets(self, ids) -> tuple[str, np.ndarray]:
    text = char.decode(ids)
    return text, np.minimum(np.arange(len(np.asarray(ids).reshape(-1)), dtype=np.int64), len(text))

  def step_token_ends(self, ids: np.ndarray, ends: Sequence[int]) -> np.ndarray:
    """A character offset is a token position (PAD/BOS inside a response are not corrected for)."""
    return np.asarray(list(ends), np.int64)

  def step_positions(self, ids: np.ndarray, ends: Sequence[int]) -> np.ndarray:
    """A character offset is a token position (PAD/BOS inside a response are not corrected for)."""
    return np.asarray(list(ends), np.int64)

  def prompt_ids(self, prompt: str) -> np.ndarray:
    return np.concatenate([np.array([char.BOS_ID], np.int32), char.encode(prompt)])

  def encode_prompts(self, prompts: Sequence[str], length: int) -> tuple[np.ndarray, np.ndarray]:
    return char.encode_batch_left_padded(prompts, length, bos=True)

  def encode_bos_texts(self, texts: Sequence[str], length: int) -> tuple[np.ndarray, np.ndarray]:
    return char.encode_batch_left_padded(texts, length, bos=True)

  def hf(self) -> Any:
    return char.build_tokenizer()

  def check_text(self, text: str, where: str) -> None:
    """ValueError naming `where` if `text` holds a character outside the vocabulary."""
    bad = sorted({c for c in text if c not in char.CHARS})
    if bad:
      raise ValueError(f"{where} holds characters {bad} outside the char tokenizer's vocabulary "
                       "(printable ASCII and newline)")


CHAR = CharTokenizer()
"""The character tokenizer of the embedded tasks (one shared instance)."""


class TokenizerError(ValueError):
  """A tokenizer directory tcred cannot use (the message names the directory and the problem)."""


TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "added_tokens.json",
                   "vocab.json", "merges.txt", "vocab.txt", "tokenizer.model", "spiece.model",
                   "chat_template.jinja", "chat_template.json")
"""Files of a Hugging Face tokenizer directory (`HFTokenizer.files`: those present; copied unchanged on export)."""
VOCABULARY_FILES = ("tokenizer.json", "vocab.json", "vocab.txt", "tokenizer.model", "spiece.model")
"""Files that hold a vocabulary: a tokenizer directory needs at least one."""
PROBE_TEXTS = ("What is 1234 + 56,789?\n  12.5% of 2026 = 253.25; x^2 = 49 -> x = 7.", "Ünïcode ✓ 東京 ½")
"""What `HFTokenizer` encodes both through transformers and through `tokenizer.json` itself: digit groups,
spaces, newlines, punctuation and non-ASCII text, where a rewritten pre-tokenizer shows (a text the file
cannot encode, e.g. non-ASCII in a vocabulary without an unknown token, is skipped)."""


def _listing(path: pathlib.Path) -> str:
  names = sorted(p.name for p in path.iterdir()) if path.is_dir() else []
  return ", ".join(names) if names else "nothing"


class HFTokenizer(TaskTokenizer):
  """A Hugging Face tokenizer from a local directory (see the module docstring).

  The ids are those of the directory's own `tokenizer.json` when it has one: it is
  loaded as it is (`transformers.PreTrainedTokenizerFast`, which also reads the
  special tokens and chat template of `tokenizer_config.json`), never through the
  class that `tokenizer_config.json` names. transformers 5's `AutoTokenizer`
  rebuilds a Qwen2 `tokenizer.json` as its own `Qwen2Tokenizer`, whose
  pre-tokenizer splits digits one by one where the file keeps digit groups: a
  model would train on other ids than its tokenizer produces. Every load checks
  this on `PROBE_TEXTS` against the `tokenizers` library reading the file, and
  refuses a disagreement naming both id sequences. Without `tokenizer.json`
  (vocabulary files of a slow tokenizer only) `AutoTokenizer` reads the directory.

  Args:
    directory: holds the tokenizer files (`tokenizer.json`, `tokenizer_config.json`, ...) and
      optionally `generation_config.json` (more EOS ids) and `config.json` (the model's vocabulary).
    chat_template: render prompts with the tokenizer's chat template if it has one.
    system: the system turn of every prompt (None: none). With a chat template it is a
      ``system`` message before the user's; without one its text and a blank line precede the prompt.

  Raises:
    TokenizerError: a missing directory, no vocabulary file (the message lists the files found and
      those needed), a tokenizer transformers cannot read, an empty vocabulary, no EOS token, or ids
      that differ from `tokenizer.json`'s.
  """

  def __init__(self, directory: str, *, chat_template: bool = True, system: str | None = None):
    import transformers  # Here: a slow import that the embedded tasks do not need.

    path = pathlib.Path(directory)
    if not path.is_dir():
      raise TokenizerError(f"tokenizer directory {directory!r} does not exist")
    self.directory = path
    self.files = tuple(f for f in TOKENIZER_FILES if (path / f).is_file())
    self.source_files = tuple(path / f for f in self.files)
    needed = ("tokenizer.json (or vocab.json + merges.txt, vocab.txt, tokenizer.model) and tokenizer_config.json "
              "naming eos_token, as `tokenizer.save_pretrained(DIR)` writes them")
    if not any(f in self.files for f in VOCABULARY_FILES):
      raise TokenizerError(f"{directory!r} holds no tokenizer: found {_listing(path)}; needed: {needed}")
    try:
      if "tokenizer.json" in self.files:
        self._tok = transformers.PreTrainedTokenizerFast.from_pretrained(str(path), local_files_only=True)
      else:
        self._tok = transformers.AutoTokenizer.from_pretrained(str(path), local_files_only=True)
    except Exception as e:  # noqa: BLE001  (transformers raises many kinds; the message says which)
      raise TokenizerError(f"no usable Hugging Face tokenizer in {directory!r} (found {_listing(path)}; needed: "
                           f"{needed}): {type(e).__name__}: {e}") from None
    self.name = str(directory)
    tok = self._tok
    if len(tok) == 0:
      raise TokenizerError(f"the tokenizer in {directory!r} has an empty vocabulary (found {_listing(path)}; "
                           f"needed: {needed})")
    if "tokenizer.json" in self.files:
      self._check_against_file(path / "tokenizer.json")
    eos = [tok.eos_token_id] if tok.eos_token_id is not None else []
    self.generation_config = self._read_json(path / "generation_config.json")
    if self.generation_config is not None:
      value = self.generation_config.get("eos_token_id")
      eos += value if isinstance(value, list) else [] if value is None else [value]
    self.eos_ids = tuple(dict.fromkeys(int(i) for i in eos))
    if not self.eos_ids:
      raise TokenizerError(f"the tokenizer in {directory!r} has no EOS token (eos_token is unset and "
                           "generation_config.json names no eos_token_id): a response could never end; set "
                           "eos_token in tokenizer_config.json")
    self.bos_id = tok.bos_token_id
    self.pad_id = int(tok.pad_token_id if tok.pad_token_id is not None else self.eos_ids[0])
    self.vocab_size = len(tok)
    self.use_chat_template = bool(chat_template and getattr(tok, "chat_template", None))
    self.system = system
    self._special = np.array(sorted({self.pad_id, *([] if self.bos_id is None else [self.bos_id])}), np.int64)

  @staticmethod
  def _read_json(path: pathlib.Path) -> dict[str, Any] | None:
    if not path.is_file():
      return None
    try:
      value = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
      raise TokenizerError(f"{str(path)!r} is not readable JSON: {type(e).__name__}: {e}") from None
    if not isinstance(value, dict):
      raise TokenizerError(f"{str(path)!r} must hold a JSON object, got {type(value).__name__}")
    return value

  def _check_against_file(self, file: pathlib.Path) -> None:
    """TokenizerError unless `encode` of each of `PROBE_TEXTS` equals the ids of `file` read by `tokenizers`."""
    import tokenizers

    try:
      backend = tokenizers.Tokenizer.from_file(str(file))
    except Exception as e:  # noqa: BLE001  (the Rust library raises a plain Exception)
      raise TokenizerError(f"{str(file)!r} is not a readable tokenizer file: {type(e).__name__}: {e}") from None
    for probe in PROBE_TEXTS:
      try:
        own = list(backend.encode(probe, add_special_tokens=False).ids)
      except Exception:  # noqa: BLE001  (a text outside the vocabulary: nothing to compare)
        continue
      loaded = self.encode(probe).tolist()
      if loaded != own:
        raise TokenizerError(f"transformers encodes {probe!r} as {loaded} but {str(file)!r} itself gives {own}; "
                             "tcred trains on the checkpoint's own ids and refuses a tokenizer that transformers "
                             "rewrites")

  def with_system(self, system: str | None) -> "HFTokenizer":
    """This tokenizer with `system` as the system turn of every prompt (shares the loaded files)."""
    if system == self.system:
      return self
    other = copy.copy(self)
    other.system = system
    return other

  def encode(self, text: str) -> np.ndarray:
    return np.asarray(self._tok(text, add_special_tokens=False)["input_ids"], np.int32)

  def encode_with_offsets(self, text: str) -> tuple[np.ndarray, np.ndarray]:
    enc = self._tok(text, add_special_tokens=False, return_offsets_mapping=True)
    return (np.asarray(enc["input_ids"], np.int32),
            np.asarray(enc["offset_mapping"], np.int64).reshape(-1, 2))

  def _kept(self, ids) -> np.ndarray:
    """`ids` up to the first EOS, without PAD and BOS."""
    ids = np.asarray(ids, np.int64).reshape(-1)
    stop = np.flatnonzero(np.isin(ids, self.eos_ids))
    ids = ids[:stop[0]] if stop.size else ids
    return ids

  def decode(self, ids) -> str:
    ids = self._kept(ids)
    return self._tok.decode(ids[~np.isin(ids, self._special)].tolist(), skip_special_tokens=False,
                            clean_up_tokenization_spaces=False)

  def decode_with_offsets(self, ids) -> tuple[str, np.ndarray]:
    """Offsets from decoding growing prefixes (exact for byte-level BPE, whose decode is a concatenation)."""
    all_ids = np.asarray(ids, np.int64).reshape(-1)
    kept = self._kept(all_ids)
    text = self.decode(kept)
    starts = np.full(len(all_ids), len(text), np.int64)
    for k in range(len(kept)):
      starts[k] = len(self.decode(kept[:k])) if k else 0
    return text, np.minimum(starts, len(text))

  def prompt_ids(self, prompt: str) -> np.ndarray:
    if self.use_chat_template:
      system = [] if self.system is None else [{"role": "system", "content": self.system}]
      out = self._tok.apply_chat_template([*system, {"role": "user", "content": prompt}], tokenize=True,
                                          add_generation_prompt=True)
      ids = out["input_ids"] if isinstance(out, Mapping) or hasattr(out, "keys") else out  # v5: a BatchEncoding
      return np.asarray(ids, np.int32).reshape(-1)
    bos = [] if self.bos_id is None else [self.bos_id]
    text = prompt if self.system is None else f"{self.system}\n\n{prompt}"
    return np.concatenate([np.asarray(bos, np.int32), self.encode(text)])

  def hf(self) -> Any:
    return self._tok


_HF_CACHE: dict[tuple[str, bool, int], HFTokenizer] = {}


def hf_tokenizer(directory: str, *, chat_template: bool = True, system: str | None = None) -> HFTokenizer:
  """`HFTokenizer(directory, system=system)`, loaded once per process and directory state (the newest
  modification time of its tokenizer files)."""
  path = pathlib.Path(directory)
  stamp = max((f.stat().st_mtime_ns for f in path.iterdir() if f.is_file()), default=0) if path.is_dir() else -1
  key = (str(path.resolve()) if path.exists() else str(path), chat_template, stamp)
  if key not in _HF_CACHE:
    _HF_CACHE[key] = HFTokenizer(directory, chat_template=chat_template)
  return _HF_CACHE[key].with_system(system)

"""The study's only contact with the tokenizer (one place to re-point when tasks own their tokenizer)."""

from __future__ import annotations

from tcred.tasks import tokenizer as tok

PAD_ID = tok.PAD_ID
EOS_ID = tok.EOS_ID


def decode(ids) -> str:
  """Text of token ids (the task's verifier and oracle read text)."""
  return tok.decode(ids)


def answer_cue_id(answer_cue: str) -> int:
  """The token id of the task's answer cue (its first token)."""
  return int(tok.encode(answer_cue)[0])


def token_label(token_id: int) -> str:
  """One token as a plot label: its text, "⏎" for EOS, "·" for a token without text."""
  return tok.decode([int(token_id)]) or ("⏎" if int(token_id) == EOS_ID else "·")

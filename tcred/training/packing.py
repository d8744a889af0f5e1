"""Packed tree rows: every distinct token of a prompt's forest once, in one row.

A tree batch keeps the leaf view `[B, G, T]` (one row per complete rollout, the
shared prefix copied into each) for credit methods and the loss, and adds a
packed row per prompt for the model: the prompt, then each leaf's own tokens
(those it generated after its fork point), with a tree attention mask — a
token attends to the prompt and to the tokens on its own root-to-leaf path.
The train step runs the model once over the packed rows and gathers each
leaf-view token's log-prob from its packed position; the gather's backward
sums the leaves' gradients into the shared token, so the update equals
training every leaf sequence separately (PPO clipping included) while each
token goes through the model once (DESIGN §4.5).
"""

from __future__ import annotations

from typing import NamedTuple, Sequence

import numpy as np

from tcred.sampling.tree import TreeArrays


class PackedRows(NamedTuple):
  """B packed rows of length P + R (prompt region, then R response slots).

  Attributes:
    tokens: `[B, P + R]` int32 (prompt left-padded as in the leaf view; response
      slots hold each distinct token once; padding after).
    valid: `[B, P + R]` bool.
    positions: `[B, P + R]` int32 RoPE positions (prompt tokens counted, then
      the token's position in its response).
    attention: `[B, P + R, P + R]` bool, query may attend key.
    pred: `[B, R]` int32 row position whose hidden state predicts response slot r
      (the prompt's last position for first tokens); 0 on padding.
    index: `[B, G, T]` int32 response slot of each leaf-view token; 0 on padding.
  """

  tokens: np.ndarray
  valid: np.ndarray
  positions: np.ndarray
  attention: np.ndarray
  pred: np.ndarray
  index: np.ndarray


def packed_width(arrays: Sequence[TreeArrays], multiple: int = 64) -> int:
  """R: the longest prompt's distinct-token count, rounded up to `multiple` (few shapes, few compiles)."""
  longest = max(a.num_packed for a in arrays)
  return max(multiple, -(-longest // multiple) * multiple)


def pack_trees(prompt: np.ndarray, prompt_valid: np.ndarray, tokens: np.ndarray,
               arrays: Sequence[TreeArrays], *, width: int | None = None) -> PackedRows:
  """Packs B forests (host side).

  Args:
    prompt: `[B, P]` int32 left-padded prompts; prompt_valid: `[B, P]` bool.
    tokens: `[B, G, T]` int32 leaf-view responses.
    arrays: B `TreeArrays` (their `packed_index` says where each token goes).
    width: R; defaults to `packed_width(arrays)`.
  """
  b, p = prompt.shape
  _, g, t = tokens.shape
  r_n = packed_width(arrays) if width is None else width
  if any(a.num_packed > r_n for a in arrays):
    raise ValueError(f"width {r_n} < the longest packed forest {max(a.num_packed for a in arrays)}")
  total = p + r_n
  out_tokens = np.zeros((b, total), np.int32)
  valid = np.zeros((b, total), bool)
  positions = np.zeros((b, total), np.int32)
  attention = np.zeros((b, total, total), bool)
  pred = np.zeros((b, r_n), np.int32)
  index = np.zeros((b, g, t), np.int32)
  causal = np.tril(np.ones((p, p), bool))
  for i, a in enumerate(arrays):
    pv = prompt_valid[i].astype(bool)
    n_prompt = int(pv.sum())
    out_tokens[i, :p] = prompt[i]
    valid[i, :p] = pv
    positions[i, :p] = np.maximum(np.cumsum(pv) - 1, 0)
    attention[i, :p, :p] = causal
    attention[i, np.arange(p, total), np.arange(p, total)] = True  # padding slots see themselves
    real = a.packed_index >= 0  # [G, T]
    index[i] = np.where(real, a.packed_index, 0)
    for row in range(g):
      slots = a.packed_index[row]
      n = int(real[row].sum())
      if n == 0:
        continue
      path = p + slots[:n]  # row positions of the row's tokens, in response order
      for pos in range(n):
        q = path[pos]
        if valid[i, q]:
          continue  # already written by the row that generated it
        out_tokens[i, q] = tokens[i, row, pos]
        valid[i, q] = True
        positions[i, q] = n_prompt + pos
        attention[i, q, :p] = True
        attention[i, q, path[:pos + 1]] = True
        pred[i, q - p] = p - 1 if pos == 0 else path[pos - 1]
  return PackedRows(out_tokens, valid, positions, attention, pred, index)

"""A tiny random Hugging Face Qwen3 checkpoint with a locally trained BPE tokenizer (tests, benchmarks).

`write_tiny_qwen3(directory, texts)` trains a byte-level BPE tokenizer on `texts`
with `tokenizers` (special tokens ``<|endoftext|>`` (PAD), ``<|im_start|>``,
``<|im_end|>`` (EOS), a ChatML chat template), creates a randomly initialised
`transformers.Qwen3ForCausalLM` of the given size and saves both with
`save_pretrained`, as a user's checkpoint directory would look. Needs torch.

`write_tiny_qwen2(directory, texts)` is the same as a Qwen2 checkpoint: q/k/v
biases, ``tokenizer_class: Qwen2Tokenizer`` in `tokenizer_config.json` (as Qwen's
checkpoints name it) over a `tokenizer.json` whose byte-level pre-tokenizer keeps
digit groups, and sampling settings in `generation_config.json`.
`write_tiny_qwen2_without_torch` writes the same kind of directory from a random
tcred decoder through `tcred.models.hf.save_pretrained` (fast; no torch).
"""

from __future__ import annotations

import json
import pathlib
from collections.abc import Iterable

import jax
import numpy as np
from flax import nnx

from tcred import experiments
from tcred.models.config import ModelConfig
from tcred.models.decoder import Decoder
from tcred.models.hf import load_pretrained, save_pretrained
from tcred.training.checkpoint import Checkpointer
from tcred.training.pretrained import resolve_model
from tcred.training.restore import new_train_state, rl_optimizer
from tcred.training.rl import STARTED

CHAT_TEMPLATE = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
                 "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
SPECIAL = ("<|endoftext|>", "<|im_start|>", "<|im_end|>")


def bpe_tokenizer(texts: Iterable[str], *, vocab_size: int = 384, chat_template: bool = True, eos: bool = True):
  """A byte-level BPE `PreTrainedTokenizerFast` trained on `texts` (see the module docstring)."""
  import tokenizers
  import transformers
  from tokenizers import decoders, models, pre_tokenizers, trainers

  backend = tokenizers.Tokenizer(models.BPE())
  backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
  backend.decoder = decoders.ByteLevel()
  trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=list(SPECIAL),
                                initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
  backend.train_from_iterator(list(texts), trainer=trainer)
  kwargs = dict(pad_token="<|endoftext|>")
  if eos:
    kwargs["eos_token"] = "<|im_end|>"
  tok = transformers.PreTrainedTokenizerFast(tokenizer_object=backend, **kwargs)
  if chat_template:
    tok.chat_template = CHAT_TEMPLATE
  return tok


def write_tiny_qwen3(directory: str | pathlib.Path, texts: Iterable[str], *, hidden_size: int = 32,
                     layers: int = 1, heads: int = 4, kv_heads: int = 2, head_dim: int = 8,
                     intermediate_size: int = 64, vocab_size: int = 384, seed: int = 0, tokenizer=None,
                     generation_eos: bool = True) -> pathlib.Path:
  """Writes a random Qwen3 checkpoint and its BPE tokenizer to `directory` (see the module docstring).

  `generation_eos`: name both ``<|im_end|>`` and ``<|endoftext|>`` as EOS in generation_config.json,
  as Qwen's chat checkpoints do.
  """
  import torch
  import transformers

  directory = pathlib.Path(directory)
  tok = tokenizer if tokenizer is not None else bpe_tokenizer(texts, vocab_size=vocab_size)
  torch.manual_seed(seed)
  config = transformers.Qwen3Config(
      vocab_size=len(tok), hidden_size=hidden_size, intermediate_size=intermediate_size, num_hidden_layers=layers,
      num_attention_heads=heads, num_key_value_heads=kv_heads, head_dim=head_dim, max_position_embeddings=1024,
      tie_word_embeddings=True, rope_theta=10000.0, pad_token_id=tok.pad_token_id,
      eos_token_id=tok.eos_token_id, bos_token_id=None)
  model = transformers.Qwen3ForCausalLM(config).eval()
  with torch.no_grad():  # norms away from 1 so that they matter
    for name, p in model.named_parameters():
      if "norm" in name:
        p.uniform_(0.5, 1.5)
  eos = [i for i in (tok.eos_token_id, tok.pad_token_id) if i is not None] if generation_eos else (
      [tok.eos_token_id] if tok.eos_token_id is not None else [])
  model.generation_config = transformers.GenerationConfig(eos_token_id=eos, pad_token_id=tok.pad_token_id,
                                                          do_sample=False)
  model.save_pretrained(directory)
  tok.save_pretrained(directory)
  return directory


QWEN2_GENERATION = {"do_sample": True, "temperature": 0.7, "top_p": 0.8, "top_k": 20, "repetition_penalty": 1.05}
"""The sampling settings `write_tiny_qwen2` puts in generation_config.json (those of Qwen2.5's instruct models)."""


def write_tiny_qwen2(directory: str | pathlib.Path, texts: Iterable[str], *, hidden_size: int = 32,
                     layers: int = 1, heads: int = 4, kv_heads: int = 2, intermediate_size: int = 64,
                     vocab_size: int = 384, seed: int = 0) -> pathlib.Path:
  """Writes a random Qwen2 checkpoint and its BPE tokenizer to `directory` (see the module docstring)."""
  import torch
  import transformers

  directory = pathlib.Path(directory)
  tok = bpe_tokenizer(texts, vocab_size=vocab_size)
  torch.manual_seed(seed)
  config = transformers.Qwen2Config(
      vocab_size=len(tok), hidden_size=hidden_size, intermediate_size=intermediate_size, num_hidden_layers=layers,
      num_attention_heads=heads, num_key_value_heads=kv_heads, max_position_embeddings=1024,
      tie_word_embeddings=False, rope_theta=10000.0, pad_token_id=tok.pad_token_id,
      eos_token_id=tok.eos_token_id, bos_token_id=None)
  model = transformers.Qwen2ForCausalLM(config).eval()
  model.generation_config = transformers.GenerationConfig(
      eos_token_id=[tok.eos_token_id, tok.pad_token_id], pad_token_id=tok.pad_token_id, **QWEN2_GENERATION)
  model.save_pretrained(directory)
  tok.save_pretrained(directory)
  name_qwen2_tokenizer(directory)
  return directory


def name_qwen2_tokenizer(directory: str | pathlib.Path) -> None:
  """Sets ``tokenizer_class: Qwen2Tokenizer`` in the directory's `tokenizer_config.json`, as Qwen's checkpoints do."""
  path = pathlib.Path(directory) / "tokenizer_config.json"
  path.write_text(json.dumps({**json.loads(path.read_text()), "tokenizer_class": "Qwen2Tokenizer"}, indent=2))


def write_tiny_qwen2_without_torch(directory: str | pathlib.Path, texts: Iterable[str], *, vocab_size: int = 320,
                                   seed: int = 0) -> pathlib.Path:
  """A Qwen2 checkpoint like `write_tiny_qwen2`'s (1 layer, width 32), written by tcred (no torch)."""
  directory = pathlib.Path(directory)
  tok = bpe_tokenizer(texts, vocab_size=vocab_size)
  config = ModelConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                       num_attention_heads=4, num_key_value_heads=2, attention_bias=True,
                       max_position_embeddings=1024)
  rng = np.random.default_rng(seed)  # NumPy draws: no JAX initialisers to compile
  abstract = nnx.split(nnx.eval_shape(lambda: Decoder(config, rngs=nnx.Rngs(0))))[1]
  params = jax.tree.map(lambda x: rng.normal(1.0 if x.ndim == 1 else 0.0, 0.1, x.shape).astype(np.float32), abstract)
  save_pretrained(directory, params, config, tokenizer=tok)
  name_qwen2_tokenizer(directory)
  (directory / "generation_config.json").write_text(json.dumps(
      {"eos_token_id": [tok.eos_token_id, tok.pad_token_id], "pad_token_id": tok.pad_token_id, **QWEN2_GENERATION,
       "transformers_version": "5.0.0"}, indent=2))
  return directory


def fake_checkpoint_run(out: str | pathlib.Path, checkpoint: str, *, name: str = "jsonl-grpo", step: int = 1,
                        overrides: Iterable[str] = (), weights: bool = True) -> pathlib.Path:
  """A run directory as `tcred run NAME --set task_config.checkpoint=CHECKPOINT` leaves it at `step`
  (config.json, the `started` marker and, with `weights`, a checkpoint of the checkpoint's own weights; no
  training): what `tcred export` reads, in seconds instead of a run's minutes. Returns `out/NAME/seed-0`."""
  cfg = resolve_model(experiments.get_experiment(name).with_overrides(
      [f"task_config.checkpoint={checkpoint}", *overrides]))
  run = pathlib.Path(out) / name / "seed-0"
  run.mkdir(parents=True)
  (run / "config.json").write_text(json.dumps({**cfg.to_dict(), "seed": 0}, indent=1))
  (run / STARTED).write_text("{}\n")
  if not weights:
    return run
  _, params = load_pretrained(checkpoint)
  ckpt = Checkpointer(run / "checkpoints")
  try:
    ckpt.save(step, new_train_state(params, rl_optimizer(cfg.rl)), {"samples": 0, "tokens_generated": 0,
                                                                     "wall_s": 0.0, "nonfinite_in_row": 0})
  finally:
    ckpt.close()
  return run

"""One decoder layer of `bench-27m`, forward + backward, ours against PyTorch's.

A profiling aid for the train-step target of DESIGN §6 (not one of `run_all.py`'s
targets): where does our decoder lose time against `transformers`' `LlamaDecoderLayer`
(SDPA attention) at the train step's shape, 16 sequences × 287 tokens? Times the whole
layer, its attention block, its MLP and, for ours, the attention core (scores, causal
softmax, values: no projections), each as the gradient of a sum, interleaved.

Usage:
  python benchmarks/layer_profile.py [--repeats 5] [--out FILE]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

from tcred.models import decoder as dec  # noqa: E402
from tcred.models.config import model_preset  # noqa: E402

B, T = 16, 287


def ours(config) -> dict:
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.standard_normal((B, T, config.hidden_size), np.float32))
  valid = jnp.ones((B, T), bool)
  pos = dec.positions_from_mask(valid)
  mask = valid[:, None, :] & (jnp.arange(T)[None, None, :] <= jnp.arange(T)[:, None])
  blocks = dec.query_block_count(T)  # as Decoder.__call__ picks
  layer = dec.DecoderLayer(config, rngs=nnx.Rngs(0))
  graphdef, params = nnx.split(layer)

  def grad(f):
    g = jax.jit(jax.grad(lambda p, x: jnp.sum(f(nnx.merge(graphdef, p), x)), argnums=(0, 1)))
    return lambda: g(params, x)

  h, kh, e = config.num_attention_heads, config.num_key_value_heads, config.dim_per_head
  q = jnp.asarray(rng.standard_normal((B, T, kh, h // kh, e), np.float32))
  kv = jnp.asarray(rng.standard_normal((B, kh, T, e), np.float32))
  attend = dec._block_attention(spans=((0, T),), keys=(None,), key_dim=3, scale=e ** -0.5)  # pylint: disable=protected-access
  core = jax.jit(jax.grad(lambda q, k, v: jnp.sum(attend(q, k, v, mask)), argnums=(0, 1, 2)))
  return {"ours: layer": grad(lambda m, x: m(x, pos, mask, query_blocks=blocks)[0]),
          "ours: attention block": grad(lambda m, x: m.self_attn(m.input_layernorm(x), pos, mask,
                                                                  query_blocks=blocks)[0]),
          "ours: MLP": grad(lambda m, x: m.mlp(x)),
          "ours: attention core, one query block": lambda: core(q, kv, kv)}


def torch_fns(config) -> dict:
  import torch
  from transformers import LlamaConfig
  from transformers.models.llama.modeling_llama import LlamaDecoderLayer, LlamaRotaryEmbedding
  torch.set_num_threads(2)
  cfg = LlamaConfig(vocab_size=config.vocab_size, hidden_size=config.hidden_size,
                    intermediate_size=config.intermediate_size, num_hidden_layers=1,
                    num_attention_heads=config.num_attention_heads,
                    num_key_value_heads=config.num_key_value_heads, max_position_embeddings=4096)
  cfg._attn_implementation = "sdpa"
  layer = LlamaDecoderLayer(cfg, 0)
  x = torch.randn(B, T, config.hidden_size, requires_grad=True)
  pos = torch.arange(T)[None].expand(B, -1)
  pe = LlamaRotaryEmbedding(cfg)(x, pos)

  def backward(out):
    (out[0] if isinstance(out, tuple) else out).sum().backward()

  return {"torch: layer": lambda: backward(layer(x, attention_mask=None, position_ids=pos, position_embeddings=pe)),
          "torch: attention block": lambda: backward(layer.self_attn(layer.input_layernorm(x), attention_mask=None,
                                                                     position_embeddings=pe)),
          "torch: MLP": lambda: backward(layer.mlp(x))}


def main(argv: list[str] | None = None) -> int:
  argv = list(sys.argv[1:] if argv is None else argv)
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--repeats", type=int, default=5)
  parser.add_argument("--out", type=Path)
  args = parser.parse_args(argv)
  config = model_preset("bench-27m")
  fns = ours(config)
  if common.have_torch():
    fns.update(torch_fns(config))
  times = common.side_by_side(fns, args.repeats)
  lines = common.header("One decoder layer, forward + backward", False, argv, __file__)
  lines += [f"`bench-27m` layer, {B} × {T} tokens, float32, gradient of a sum; interleaved, median of "
            f"{args.repeats}.", "", "| part | ms median (min–max) |", "|---|---:|"]
  lines += [f"| {name} | {common.spread([t * 1e3 for t in ts])} |" for name, ts in times.items()]
  if not common.have_torch():
    lines += ["", f"- torch: {common.TORCH_MISSING}"]
  lines += ["", common.load_line()]
  print("\n".join(lines), flush=True)
  common.write(args.out, lines)
  return 0


if __name__ == "__main__":
  common.run_main(main)

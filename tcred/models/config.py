"""Decoder configuration. Field names mirror Hugging Face's `LlamaConfig` /
`Qwen2Config` / `Qwen3Config` so that HF configs and checkpoints map onto it one to
one (`tcred.models.hf` reads and writes them)."""

from __future__ import annotations

import dataclasses
from typing import Any

from tcred.validation import require_finite

ROPE_TYPES = ("default", "linear", "llama3")
"""RoPE frequency rules the decoder implements (`tcred.models.decoder.rope_inv_freq`)."""


@dataclasses.dataclass(frozen=True, kw_only=True)
class ModelConfig:
  """A Llama/Qwen2/Qwen3-family decoder: RMSNorm, RoPE, SwiGLU, grouped-query attention.

  Attributes beyond the HF names they mirror:
    attention_bias: biases on the q/k/v projections (Qwen2); never on o_proj.
    qk_norm: Qwen3's RMSNorm of every query and key head (over E, weights `[E]`),
      applied before RoPE.
    rope_type: how the RoPE inverse frequencies `θ^(−2i/E)` are rescaled for long
      contexts (HF `rope_parameters["rope_type"]`): ``"default"`` (not at all),
      ``"linear"`` (divided by `rope_factor`, i.e. positions / factor) or
      ``"llama3"`` (Llama 3.1: low frequencies divided by `rope_factor`, high ones
      kept, a smooth ramp between, set by `rope_low_freq_factor`,
      `rope_high_freq_factor` and `rope_original_max_position_embeddings`).
  """

  vocab_size: int
  hidden_size: int
  intermediate_size: int
  num_hidden_layers: int
  num_attention_heads: int
  num_key_value_heads: int
  head_dim: int | None = None
  rope_theta: float = 10000.0
  rms_norm_eps: float = 1e-6
  tie_word_embeddings: bool = False
  attention_bias: bool = False  # Qwen2 uses biases on q/k/v projections.
  max_position_embeddings: int = 2048
  initializer_range: float = 0.02
  qk_norm: bool = False
  rope_type: str = "default"
  rope_factor: float = 1.0
  rope_low_freq_factor: float = 1.0
  rope_high_freq_factor: float = 4.0
  rope_original_max_position_embeddings: int = 8192

  def __post_init__(self):
    require_finite(self, "model")
    for name in ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers",
                 "num_attention_heads", "num_key_value_heads", "max_position_embeddings"):
      value = getattr(self, name)
      if not isinstance(value, int) or value <= 0:
        raise ValueError(f"model.{name} must be a positive integer, got {value!r}")
    if self.head_dim is not None and (isinstance(self.head_dim, bool) or not isinstance(self.head_dim, int)
                                      or self.head_dim <= 0):
      raise ValueError(f"model.head_dim must be None or a positive integer, got {self.head_dim!r}")
    if self.num_attention_heads % self.num_key_value_heads:
      raise ValueError(
          "model.num_attention_heads must be a multiple of model.num_key_value_heads, got "
          f"{self.num_attention_heads} and {self.num_key_value_heads}")
    if self.head_dim is None and self.hidden_size % self.num_attention_heads:
      raise ValueError(
          f"model.hidden_size ({self.hidden_size}) must be divisible by "
          f"model.num_attention_heads ({self.num_attention_heads}) unless model.head_dim is given")
    if self.dim_per_head % 2:  # RoPE rotates pairs of dimensions: an odd head width cannot be split in two
      h = self.num_attention_heads
      if self.head_dim is not None:
        raise ValueError(f"model.head_dim must be even (RoPE rotates pairs of dimensions), got {self.head_dim}")
      below, above = (self.hidden_size // (2 * h)) * 2 * h, (self.hidden_size // (2 * h) + 1) * 2 * h
      allowed = ", ".join(str(v) for v in (below, above) if v > 0)
      raise ValueError(f"model.hidden_size={self.hidden_size} gives a head width of {self.hidden_size} / {h} "
                       f"heads = {self.dim_per_head}, odd; RoPE needs an even one: set model.hidden_size to a "
                       f"multiple of 2 x model.num_attention_heads = {2 * h} (e.g. {allowed}), or an even "
                       "model.head_dim")
    for name in ("rms_norm_eps", "rope_theta", "rope_factor", "rope_original_max_position_embeddings"):
      if getattr(self, name) <= 0:
        raise ValueError(f"model.{name} must be > 0, got {getattr(self, name)!r}")
    if self.initializer_range < 0:
      raise ValueError(f"model.initializer_range must be >= 0, got {self.initializer_range!r}")
    if self.rope_type not in ROPE_TYPES:
      raise ValueError(f"model.rope_type must be one of {ROPE_TYPES}, got {self.rope_type!r}")
    if not 0 < self.rope_low_freq_factor < self.rope_high_freq_factor:
      raise ValueError("model.rope_low_freq_factor and model.rope_high_freq_factor must satisfy "
                       f"0 < low < high, got {self.rope_low_freq_factor!r} and {self.rope_high_freq_factor!r}")

  @property
  def dim_per_head(self) -> int:
    return self.head_dim or self.hidden_size // self.num_attention_heads

  def num_params(self, *, embeddings: bool = True) -> int:
    """Parameter count; `embeddings=False` leaves out the embedding and the head."""
    d, f, h, k = self.hidden_size, self.intermediate_size, self.num_attention_heads, self.num_key_value_heads
    dh = self.dim_per_head
    attn = d * h * dh + 2 * d * k * dh + h * dh * d + (h * dh + 2 * k * dh if self.attention_bias else 0)
    attn += 2 * dh if self.qk_norm else 0
    layer = attn + 3 * d * f + 2 * d
    total = self.num_hidden_layers * layer + d
    if embeddings:
      total += self.vocab_size * d * (1 if self.tie_word_embeddings else 2)
    return total

  def replace(self, **overrides: Any) -> "ModelConfig":
    return dataclasses.replace(self, **overrides)


PRESETS: dict[str, ModelConfig] = {
    # Unit tests.
    "tiny": ModelConfig(vocab_size=128, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256),
    # The policy of the embedded task suite (trains from scratch on 2 CPU cores).
    "char-small": ModelConfig(vocab_size=128, hidden_size=128, intermediate_size=384,
                              num_hidden_layers=3, num_attention_heads=4, num_key_value_heads=2,
                              max_position_embeddings=256),
    # The shared benchmark policy of DESIGN §6 (about 27M parameters).
    "bench-27m": ModelConfig(vocab_size=8192, hidden_size=512, intermediate_size=1536,
                             num_hidden_layers=6, num_attention_heads=8, num_key_value_heads=4,
                             max_position_embeddings=4096),
}


def model_preset(name: str, **overrides: Any) -> ModelConfig:
  """A named preset with optional field overrides."""
  if name not in PRESETS:
    raise ValueError(f"unknown model preset {name!r}; allowed: {sorted(PRESETS)}")
  return PRESETS[name].replace(**overrides)

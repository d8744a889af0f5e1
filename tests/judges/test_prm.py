import numpy as np
import pytest
from flax import nnx

from tcred.judges.prm import PRM, PRMTrainConfig, StepExamples, prm_probabilities, train_prm
from tcred.models.config import ModelConfig

TINY = ModelConfig(vocab_size=16, hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                   num_key_value_heads=1, max_position_embeddings=64)


def _toy(n, seed):
  # A step is good iff its last token is even: learnable from the token at the read position alone.
  rng = np.random.default_rng(seed)
  tokens = rng.integers(1, 16, size=(n, 12))
  valid = np.ones((n, 12), bool)
  valid[:, 10:] = False
  step_pos = np.tile([3, 6, 9], (n, 1))
  labels = np.take_along_axis(tokens, step_pos, axis=1) % 2 == 0
  label_valid = np.ones((n, 3), bool)
  label_valid[: n // 4, 2] = False
  return StepExamples(tokens, valid, step_pos, labels, label_valid)


def test_the_prm_learns_a_step_rule_and_scores_held_out_steps():
  model = PRM(TINY, rngs=nnx.Rngs(0))
  history = train_prm(model, _toy(256, 0), PRMTrainConfig(steps=150, batch_size=64, learning_rate=3e-3))
  assert history[-10:, 0].mean() < 0.5 * history[:10, 0].mean()
  test = _toy(128, 1)
  p = prm_probabilities(model, test.tokens, test.valid, test.step_pos)
  assert p.shape == (128, 3) and np.all((p >= 0) & (p <= 1))
  accuracy = np.mean((p > 0.5)[test.label_valid] == test.labels[test.label_valid])
  assert accuracy > 0.9, accuracy  # chance: about 0.5


@pytest.mark.parametrize("kw, message", [(dict(steps=0), "judge.steps must be a positive integer"),
                                         (dict(learning_rate=float("nan")), "judge.learning_rate must be")])
def test_bad_training_settings_name_the_field(kw, message):
  with pytest.raises(ValueError, match=message):
    PRMTrainConfig(**kw)

"""Closed sets of options (loss aggregation, advantage mode, tree fork rule) are checked in one
place each, with one "unknown X; allowed: ..." message wherever the value comes in."""

from __future__ import annotations

import chex
import jax.numpy as jnp
import pytest

from tcred.credit import make_credit
from tcred.credit.advantages import AdvantageMode, group_advantages
from tcred.experiments import get_experiment
from tcred.losses.pg import Aggregation, LossConfig, aggregate, ppo_clip_surrogate
from tcred.sampling.tree import ForkRule
from tcred.training.config import TreeConfig

AGG = "allowed: token-mean, seq-mean-token-mean, seq-mean-token-sum-norm$"
MODE = "allowed: grpo, dr-grpo$"
FORK = "allowed: step, entropy, neg-logp$"


@pytest.mark.parametrize("make,message", [
    (lambda: LossConfig(aggregation="sum"), f"^unknown loss.aggregation 'sum'; {AGG}"),
    (lambda: aggregate(jnp.ones(3), jnp.ones(3), mode="sum"), f"^unknown aggregation 'sum'; {AGG}"),
    (lambda: get_experiment("countdown-grpo").with_overrides(["loss.aggregation=sum"]),
     f"unknown loss.aggregation 'sum'; {AGG}"),
    (lambda: make_credit("outcome", mode="ppo"), f"^unknown credit.mode 'ppo'; {MODE}"),
    (lambda: make_credit("entropy-mask", mode="ppo"), f"^unknown credit.mode 'ppo'; {MODE}"),
    (lambda: group_advantages(jnp.ones(4), mode="ppo"), f"^unknown mode 'ppo'; {MODE}"),
    (lambda: TreeConfig(fork_at="middle"), f"^unknown tree.fork_at 'middle'; {FORK}"),
])
def test_one_message_per_kind(make, message):
  with pytest.raises(ValueError, match=message):
    make()


def test_members_are_the_config_strings():
  assert Aggregation.parse("token-mean", field="x") is Aggregation.TOKEN_MEAN == "token-mean"
  assert AdvantageMode.values() == ("grpo", "dr-grpo")
  assert ForkRule.values() == ("step", "entropy", "neg-logp")


def test_shapes_are_checked_at_the_loss_entry():
  # chex names both shapes; before, aggregate raised its own ValueError and ppo_clip_surrogate broadcast.
  with pytest.raises(AssertionError, match=r"\(2, 3\).*\(2, 4\)"):
    aggregate(jnp.ones((2, 3)), jnp.ones((2, 4)), mode="token-mean")
  with pytest.raises(AssertionError):
    ppo_clip_surrogate(jnp.zeros((2, 3)), jnp.zeros((2, 3)), jnp.ones((2, 1)), clip_low=0.2, clip_high=0.2)
  chex.assert_trees_all_close(aggregate(jnp.ones((2, 3)), jnp.ones((2, 3)), mode="token-mean"), 1.0)

"""The one jitted RL train step and the SFT step.

Data flow (DESIGN §1): full sequences -> decoder hidden states -> fused
log-probs + entropy of the response tokens -> credit method (static) ->
per-token advantages and weights -> PPO-clip loss -> optax update.

Shapes: B prompts, G rollouts per prompt, P prompt tokens (left-padded),
T response tokens, D width.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from tcred.credit.base import CreditInputs, CreditMethod
from tcred.credit.signal_methods import signal_arrays
from tcred.losses.pg import LossConfig, aggregate, kl_k3, ppo_clip_surrogate
from tcred.models.decoder import positions_from_mask
from tcred.models.forward import response_logprobs
from tcred.models.logprobs import token_logprobs_and_entropy
from tcred.parallel.mesh import Layout
from tcred.signals.agreement import agreement_metrics, step_signal_names
from tcred.signals.registry import get_signal
from tcred.training.packing import PackedRows


class TrainState(NamedTuple):
  """Parameters, optimizer state and the number of updates applied."""

  params: nnx.State
  opt_state: optax.OptState
  step: jax.Array


class Batch(NamedTuple):
  """One RL batch.

  Attributes:
    prompt: `[B, P]` int32 left-padded prompts (BOS first).
    prompt_valid: `[B, P]` bool.
    response: `[B, G, T]` int32 sampled responses.
    mask: `[B, G, T]` bool response mask (EOS included).
    old_logp: `[B, G, T]` log-probs under the sampling policy.
    rewards: `[B, G]` float32 outcome rewards.
    group_valid: `[B]` bool, False for filler groups that must not train.
    extras: signals the credit method needs (`CreditMethod.needs_extras`, and the
      tree arrays for methods with `needs_tree`).
    packed: for tree rollouts, the packed rows (`tcred.training.packing`): the
      model then sees each distinct token once and the leaf view is gathered
      from it; None for independent chains.
  """

  prompt: jax.Array
  prompt_valid: jax.Array
  response: jax.Array
  mask: jax.Array
  old_logp: jax.Array
  rewards: jax.Array
  group_valid: jax.Array
  extras: dict[str, jax.Array]
  packed: PackedRows | None = None


def packed_logprobs(graphdef: nnx.GraphDef, params: nnx.State, packed: PackedRows, *, temperature: float,
                    chunk_size: int):
  """Log-probs and entropy `[B, G, T]` of the leaf view, from one pass over the packed rows.

  Each distinct token is scored once (`[B, R]`); the leaf view gathers from it,
  so a shared token's gradient is the sum over the leaves through it.
  """
  model = nnx.merge(graphdef, params)
  b, g, t = packed.index.shape
  p = packed.tokens.shape[1] - packed.pred.shape[1]
  hidden, _ = model(packed.tokens, packed.positions, packed.valid,
                    attention_mask=packed.attention)  # [B, P+R, D]
  h = jnp.take_along_axis(hidden, packed.pred[..., None], axis=1)  # [B, R, D]
  logp, ent = token_logprobs_and_entropy(h, model.unembedding(), packed.tokens[:, p:],
                                         temperature=temperature, chunk_size=chunk_size)  # [B, R]
  gather = lambda x: jnp.take_along_axis(x, packed.index.reshape(b, g * t), axis=1).reshape(b, g, t)
  return gather(logp), gather(ent)


def batch_logprobs(graphdef: nnx.GraphDef, params: nnx.State, batch: Batch, *, temperature: float,
                   chunk_size: int):
  """`[B, G, T]` log-probs and entropy of the batch's responses (packed rows if present)."""
  if batch.packed is not None:
    return packed_logprobs(graphdef, params, batch.packed, temperature=temperature, chunk_size=chunk_size)
  return response_logprobs(graphdef, params, batch.prompt, batch.prompt_valid, batch.response, batch.mask,
                           temperature=temperature, chunk_size=chunk_size)


def _masked_mean(x, mask):
  return jnp.sum(jnp.where(mask, x, 0.0)) / jnp.maximum(jnp.sum(mask), 1)


def _all_finite(tree) -> jax.Array:
  """Scalar bool: every inexact leaf of `tree` is finite."""
  leaves = [jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(tree) if jnp.issubdtype(jnp.result_type(x), jnp.inexact)]
  return jnp.all(jnp.stack(leaves)) if leaves else jnp.bool_(True)


def _new_if(ok, new, old):
  """`new` where the scalar `ok` holds, else `old`, leaf by leaf."""
  return jax.tree.map(lambda n, o: jnp.where(ok, n, o), new, old)


def _agreement(inputs: CreditInputs, out) -> dict[str, jax.Array]:
  """Agreement of the step's signals and the credit's concentration (`tcred.signals.agreement`): every pair
  of the registered signals computable from `inputs` (the step's entropy and log-probs, and the extras the
  credit method asked for), on the valid tokens of real groups; credit magnitudes `w_t · |A_t|`."""
  arrays = signal_arrays(inputs)
  valid = arrays["mask"]
  scores = {n: get_signal(n)(arrays) for n in step_signal_names(tuple(inputs.extras))}
  credit_mag = jnp.where(valid, out.weights * jnp.abs(out.advantages), 0.0)
  return agreement_metrics(scores, valid, credit_mag)


@functools.partial(jax.jit, static_argnames=("graphdef", "tx", "credit", "loss_config", "temperature",
                                              "chunk_size", "layout", "agreement", "hold_on_zero_grad"),
                   donate_argnums=(0,))
def rl_train_step(state: TrainState, batch: Batch, ref_params: nnx.State | None, *,
                  graphdef: nnx.GraphDef, tx: optax.GradientTransformation, credit: CreditMethod,
                  loss_config: LossConfig, temperature: float, chunk_size: int = 1024,
                  layout: Layout | None = None, agreement: bool = True, hold_on_zero_grad: bool = False):
  """One policy-gradient update.

  Args:
    state: the train state (donated).
    batch: the rollouts with their rewards.
    ref_params: the reference policy for the KL penalty (used only if
      `loss_config.kl_coef > 0`; may be None otherwise).
    graphdef, tx, credit, loss_config, temperature, chunk_size: static.
    layout: on a device mesh (`tcred.parallel.mesh`), the placement the new state keeps;
      the inputs arrive placed (`Layout.place_state` / `place_batch`) and the math stays
      global (a batch-pooled quantile pools over the whole batch). None: one device.
    agreement: also return the `agreement/*` metrics (`tcred.signals.agreement`: top-20% Jaccard and
      Spearman of every pair of the step's signals, the credit's Gini and effective-token ratio),
      computed from stop-gradient'ed arrays, so the update is the same either way (static).
    hold_on_zero_grad: a gradient of exactly zero leaves the parameters and optimizer state unchanged
      (`RLConfig.hold_on_zero_grad`; reported as `optim/held` = 1) instead of applying Adam's momentum (static).

  Returns:
    `(state, metrics)`. A non-finite loss, gradient, updated parameter or optimizer state
    leaves the parameters and optimizer state unchanged and reports `skipped = 1`.
  """
  mask = batch.mask

  def loss_fn(params):
    logp, ent = batch_logprobs(graphdef, params, batch, temperature=temperature, chunk_size=chunk_size)
    inputs = CreditInputs(
        rewards=batch.rewards, mask=mask, group_valid=batch.group_valid,
        entropy=jax.lax.stop_gradient(ent), logp=jax.lax.stop_gradient(logp),
        old_logp=batch.old_logp, extras=batch.extras)
    out = credit(inputs)
    surrogate, clipped = ppo_clip_surrogate(logp, batch.old_logp, out.advantages,
                                            clip_low=loss_config.clip_low, clip_high=loss_config.clip_high,
                                            dual_clip=loss_config.dual_clip)
    pg_loss = -aggregate(surrogate, out.weights, mode=loss_config.aggregation, normaliser=out.normaliser,
                         sum_norm_divisor=loss_config.sum_norm_divisor)
    loss = pg_loss
    metrics = {"loss/pg": pg_loss}
    if loss_config.kl_coef > 0:
      ref_logp, _ = batch_logprobs(graphdef, ref_params, batch, temperature=temperature,
                                   chunk_size=chunk_size)
      kl = aggregate(kl_k3(logp, jax.lax.stop_gradient(ref_logp)), mask.astype(jnp.float32),
                     mode=loss_config.aggregation, sum_norm_divisor=loss_config.sum_norm_divisor)
      loss = loss + loss_config.kl_coef * kl
      metrics["loss/kl"] = kl
    kept = out.weights > 0
    metrics.update({
        "loss/total": loss,
        "policy/entropy": _masked_mean(ent, mask),
        "policy/clip_frac": _masked_mean(clipped.astype(jnp.float32), kept),
        "policy/approx_kl_old": _masked_mean(batch.old_logp - logp, mask),
        "credit/kept_token_frac": jnp.sum(kept) / jnp.maximum(jnp.sum(mask), 1),
        "credit/abs_advantage": _masked_mean(jnp.abs(out.advantages), kept),
    })
    metrics.update({f"credit/{k}": v for k, v in out.metrics.items()})
    if agreement:
      metrics.update(_agreement(inputs, out))
    return loss, metrics

  (loss, metrics), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
  grad_norm = optax.tree.norm(grads)
  updates, opt_state = tx.update(grads, state.opt_state, state.params)
  params = optax.apply_updates(state.params, updates)
  # A finite gradient can still give a non-finite state (a huge learning rate, an overflowing
  # optimizer moment): the updated parameters and optimizer state are checked too.
  ok = jnp.isfinite(loss) & jnp.isfinite(grad_norm) & _all_finite(params) & _all_finite(opt_state)
  apply = ok & (grad_norm > 0) if hold_on_zero_grad else ok
  new_state = TrainState(params=_new_if(apply, params, state.params),
                         opt_state=_new_if(apply, opt_state, state.opt_state),
                         step=state.step + apply.astype(state.step.dtype))
  if layout is not None:
    new_state = layout.constrain_state(new_state)
  metrics["optim/grad_norm"] = grad_norm
  metrics["optim/skipped"] = (~ok).astype(jnp.float32)
  if hold_on_zero_grad:
    metrics["optim/held"] = (ok & ~apply).astype(jnp.float32)
  return new_state, metrics


@functools.partial(jax.jit, static_argnames=("graphdef", "tx"), donate_argnums=(0,))
def sft_train_step(state: TrainState, tokens: jax.Array, valid: jax.Array, loss_mask: jax.Array, *,
                   graphdef: nnx.GraphDef, tx: optax.GradientTransformation):
  """One supervised step: mean next-token cross-entropy over `loss_mask`.

  Args:
    tokens: `[B, L]` int32 left-padded sequences (prompt + response + EOS).
    valid: `[B, L]` bool, False on padding.
    loss_mask: `[B, L]` bool, True on the tokens to predict (response and EOS).
  """

  def loss_fn(params):
    model = nnx.merge(graphdef, params)
    hidden, _ = model(tokens[:, :-1], positions_from_mask(valid[:, :-1]), valid[:, :-1])
    logp, _ = token_logprobs_and_entropy(hidden, model.unembedding(), tokens[:, 1:], temperature=1.0)
    m = loss_mask[:, 1:]
    return -_masked_mean(logp, m)

  loss, grads = jax.value_and_grad(loss_fn)(state.params)
  updates, opt_state = tx.update(grads, state.opt_state, state.params)
  params = optax.apply_updates(state.params, updates)
  return TrainState(params, opt_state, state.step + 1), {"sft/loss": loss}

"""Token signals of the policy itself, beyond entropy and surprisal (issue 25 item 3).

- `delta-logp`: the signed log-probability change of the sampled token between a reference policy and
  the current one (arXiv 2603.22117), reading the extra "ref_policy_logp" (`tcred.credit.extras`).
- `gmts-hidden`, `gmts-unembed`: the gradient norm of the sampled token's log-probability with respect
  to the last hidden state or the unembedding (GMTS), reading the extras "grad_norm_hidden" /
  "grad_norm_unembed" computed by `tcred.models.logprobs.token_grad_norms` (closed form, chunked over V).

Shapes: G rollouts, T response tokens.
"""

from __future__ import annotations

import chex
import jax.numpy as jnp

from tcred.signals.registry import TokenSignal, register_signal


def logp_change(logp, ref_policy_logp, mask):
  """Δlog p of one group (arXiv 2603.22117): `[G, T] x 2 -> [G, T]` float32.

    Δ_t = log π_θ(o_t | x, o<t) − log π_ref(o_t | x, o<t)

  Signed, as the paper: positive where the current policy made the sampled token more likely than the
  reference did (the paper's base → RLVR direction; it finds Δlog p marks reasoning-critical tokens
  better than magnitude-based metrics such as KL or entropy). In training, π_θ is the train step's
  current policy and π_ref the run's base policy; 0 on padding.
  """
  chex.assert_rank([logp, ref_policy_logp, mask], 2)
  chex.assert_equal_shape([logp, ref_policy_logp, mask])
  delta = jnp.asarray(logp, jnp.float32) - jnp.asarray(ref_policy_logp, jnp.float32)
  return jnp.where(mask, delta, 0.0)


def gradient_magnitude(grad_norm, mask):
  """GMTS score of one group (Gradient Magnitude-based Token Selection, OpenReview JGvOicAo3g; no arXiv
  id found): `[G, T] x 2 -> [G, T]` float32.

    g_t = ‖∂ log π(o_t | x, o<t) / ∂θ_last‖,  θ_last the last hidden state h_t or the unembedding U

  `grad_norm` comes from `token_grad_norms` (‖U[:, y] − U p‖/τ for h_t, ‖h_t‖·‖e_y − p‖/τ for U),
  never materialising per-token full gradients or `[T, V]` logits. 0 on padding.
  """
  chex.assert_rank([grad_norm, mask], 2)
  chex.assert_equal_shape([grad_norm, mask])
  return jnp.where(mask, jnp.asarray(grad_norm, jnp.float32), 0.0)


def _unembed_magnitude(grad_norm_unembed, mask):
  return gradient_magnitude(grad_norm_unembed, mask)


_unembed_magnitude.__doc__ = gradient_magnitude.__doc__


register_signal(TokenSignal(name="delta-logp", description="log π(o_t) − log π_ref(o_t): the sampled token's "
                                                           "log-prob change from the reference policy",
                            fn=logp_change, inputs=("logp", "ref_policy_logp", "mask")))
register_signal(TokenSignal(name="gmts-hidden", description="‖∂ log p(o_t) / ∂h_t‖: gradient norm at the last "
                                                            "hidden state (GMTS)",
                            fn=gradient_magnitude, inputs=("grad_norm_hidden", "mask")))
register_signal(TokenSignal(name="gmts-unembed", description="‖∂ log p(o_t) / ∂U‖: gradient norm at the "
                                                             "unembedding (GMTS)",
                            fn=_unembed_magnitude, inputs=("grad_norm_unembed", "mask")))

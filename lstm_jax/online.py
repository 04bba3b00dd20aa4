"""Learning at every time step: real-time recurrent learning for the 1997 LSTM.

Hochreiter & Schmidhuber's (1997) nets changed their weights while a
sequence was running: with the truncated gradient (error flows back in time
only through the cell state), the derivative of a cell's state with respect
to the weights of its own gates and cell input obeys a forward recursion, so
the gradient of the error at step ``t`` is available at step ``t``. This
module computes those recursions ("traces") and applies plain gradient
descent after every step, for one layer of LSTM cells (blocks, no forget gate
or a learned one, with or without output gates, any squashing functions) and
a sigmoid readout on squared error (``Task.output_units="sigmoid"``).

With ``u_t = [x_t, h_{t-1}, 1]`` (the fan-in of every gate; the ``1`` only
with biases), cell ``j`` in block ``b(j)`` and ``F`` = ``f`` or 1::

    c_t     = F_t c_{t-1} + i_t g_t,   h_t = o_t hact(c_t),   y_t = sigmoid(h_t W + x_t W_in + b)
    e^g_t   = F_t e^g_{t-1} + i_t gact'(z^g_t) u_t          (d c_j / d w_g[:, j])
    e^i_t   = F_t e^i_{t-1} + g_t sigmoid'(z^i_t) u_t       (d c_j / d w_i[:, b(j)])
    e^f_t   = F_t e^f_{t-1} + c_{t-1} sigmoid'(z^f_t) u_t   (d c_j / d w_f[:, b(j)])
    E_t     = 1/2 ||y_t - target_t||^2 m_t                  (m_t: the task's mask)
    dy      = (y_t - target_t) y_t (1 - y_t) m_t,   dh = dy W^T  (no error through h_{t-1})
    dc_j    = dh_j o_j hact'(c_j),   do_b = sum_{j in b} dh_j hact(c_j) sigmoid'(z^o_b)
    dE/dw_g[:, j] = dc_j e^g_j,   dE/dw_i[:, b] = sum_{j in b} dc_j e^i_j   (likewise f),
    dE/dw_o[:, b] = do_b u_t,     dE/dW = h_t dy,   dE/dW_in = x_t dy,   dE/db = dy
    every weight -= learning_rate * dE/dweight          (after step t, before step t + 1)

The traces are carried across updates, as in real-time recurrent learning;
while a sequence carries no error (mask 0) the weights do not change, so on
a task whose error comes only at the last step this equals one gradient step
on the sequence's truncated gradient (tested).
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp

from lstm_jax import gates as G
from lstm_jax import training
from lstm_jax.devices import Placement
from lstm_jax.models import SequenceModel

Array = jax.Array
Params = dict[str, Any]


def unsupported(model: SequenceModel, task: Any) -> str | None:
  """Why per-step learning does not cover ``model`` on ``task``, or ``None``."""
  cell = model.cell
  if cell.kind != "lstm":
    return f"cell kind {cell.kind!r} (per-step learning is written for LSTM cells)"
  v = cell.variant
  for name in ("peepholes", "gate_recurrence", "layer_norm"):
    if getattr(v, name):
      return f"{name}=True"
  if not v.input_gate:
    return "input_gate=False"
  if v.forget_gate == "coupled":
    return "forget_gate='coupled'"
  if not v.truncated_gradient:
    return ("truncated_gradient=False (the traces are the 1997 truncated gradient; set "
            "model.truncated_gradient=True)")
  if cell.proj_size:
    return f"proj_size={cell.proj_size}"
  if model.block != "plain":
    return f"block={model.block!r} (per-step learning is written for plain stacks)"
  if model.num_layers != 1:
    return f"num_layers={model.num_layers} (one layer of memory cells)"
  if model.regularization.active:
    return ("dropout, recurrent dropout or zoneout (per-step learning has no "
            "regularisation; set every model rate to 0.0)")
  if getattr(task, "output_units", "task") != "sigmoid":
    return "output units of the task's own loss (set task_params.output_units='sigmoid')"
  return None


def _derivative(fn: Callable[[Array], Array]) -> Callable[[Array], Array]:
  """The derivative of an elementwise function, elementwise (a forward-mode JVP)."""
  return lambda z: jax.jvp(fn, (z,), (jnp.ones_like(z),))[1]


def _columns(variant: Any, hidden: int) -> dict[str, slice]:
  out, start = {}, 0
  for name, width in zip(variant.blocks, variant.widths(hidden)):
    out[name] = slice(start, start + width)
    start += width
  return out


def learn_sequence(model: SequenceModel, params: Params, inputs: Array, targets: Array,
                   mask: Array, length: Array, learning_rate: float
                   ) -> tuple[Params, Array, Array, Array]:
  """One sequence of per-step learning (module docstring).

  Args:
    model: a one-layer LSTM :class:`SequenceModel` (:func:`unsupported` is None).
    params: its parameters (``{"rnn": [layer], "readout": ...}``).
    inputs: ``[T, I]``; targets ``[T, O]`` (dense, in [0, 1]); mask ``[T]``;
      length: the sequence's real length (steps from it on change nothing).
    learning_rate: plain gradient descent step.

  Returns:
    ``(params, outputs [T, O], loss, grad_norm)``: the parameters after the
    sequence, the raw outputs (before the sigmoid) as they were produced
    during learning, the sequence's error ``sum_t E_t`` and the norm of the
    sum of its per-step gradients.
  """
  cell, v = model.cell, model.cell.variant
  hidden, s = cell.hidden_size, v.block_size
  cols = _columns(v, hidden)
  gact, hact = G.ACTIVATIONS[v.input_activation], G.ACTIVATIONS[v.output_activation]
  d_gact, d_hact = _derivative(gact), _derivative(hact)
  has_bias = "b" in params["rnn"][0]
  n_in = inputs.shape[-1]
  fan_in = n_in + hidden + int(has_bias)
  forget = v.forget_gate == "learned"
  per_block = lambda a: a.reshape(hidden // s, s).sum(-1)   # [H] -> [H / s]
  per_cell = lambda a: jnp.repeat(a, s, axis=-1)           # [H / s] -> [H]
  dtype = params["rnn"][0]["w_x"].dtype
  zeros = lambda: jnp.zeros((fan_in, hidden), dtype)

  def step(carry, xs):
    p, h_prev, c_prev, traces, total = carry
    x, target, m, t = xs
    layer, ro = p["rnn"][0], p["readout"]
    valid = (t < length).astype(jnp.float32)
    u = jnp.concatenate([x, h_prev] + ([jnp.ones((1,), x.dtype)] if has_bias else []))
    z = x @ layer["w_x"] + h_prev @ layer["w_h"] + (layer["b"] if has_bias else 0.0)
    zi = z[cols["i"]]
    i_k = G.sigmoid(zi)
    zf = z[cols["f"]] if forget else None
    f = per_cell(G.sigmoid(zf)) if forget else jnp.ones((hidden,), z.dtype)
    zg = z[cols["g"]]
    g = gact(zg)
    zo = z[cols["o"]] if v.output_gate else None
    o_k = G.sigmoid(zo) if v.output_gate else None
    o = per_cell(o_k) if v.output_gate else jnp.ones((hidden,), z.dtype)
    i = per_cell(i_k)
    c = f * c_prev + i * g
    hc = hact(c)
    h = o * hc
    e_g = f * traces["g"] + u[:, None] * (i * d_gact(zg))[None, :]
    e_i = f * traces["i"] + u[:, None] * (g * per_cell(i_k * (1 - i_k)))[None, :]
    new_traces = {"g": e_g, "i": e_i}
    if forget:
      f_k = G.sigmoid(zf)
      new_traces["f"] = f * traces["f"] + u[:, None] * (c_prev * per_cell(f_k * (1 - f_k)))[None, :]
    y_pre = h @ ro["w"] + ro["b"]
    if "w_in" in ro:
      y_pre = y_pre + x @ ro["w_in"]
    y = G.sigmoid(y_pre)
    err = (y - target) * m * valid
    loss = 0.5 * jnp.sum(jnp.square(err))
    dy = err * y * (1 - y)
    dh = ro["w"] @ dy
    dc = dh * o * d_hact(c)
    blocks = {"g": e_g * dc[None, :], "i": jax.vmap(per_block)(e_i * dc[None, :])}
    if forget:
      blocks["f"] = jax.vmap(per_block)(new_traces["f"] * dc[None, :])
    if v.output_gate:
      blocks["o"] = u[:, None] * (per_block(dh * hc) * o_k * (1 - o_k))[None, :]
    grad_z = jnp.concatenate([blocks[name] for name in v.blocks], axis=-1)   # [F, Gw]
    grads = {"rnn": [{"w_x": grad_z[:n_in], "w_h": grad_z[n_in:n_in + hidden]}],
             "readout": {"w": jnp.outer(h, dy), "b": dy}}
    if has_bias:
      grads["rnn"][0]["b"] = grad_z[n_in + hidden]
    if "w_in" in ro:
      grads["readout"]["w_in"] = jnp.outer(x, dy)
    p = jax.tree_util.tree_map(lambda w, d: w - learning_rate * d, p, grads)
    keep = lambda new, old: valid * new + (1 - valid) * old
    traces = jax.tree_util.tree_map(keep, new_traces, traces)
    total = jax.tree_util.tree_map(jnp.add, total, grads)
    return (p, keep(h, h_prev), keep(c, c_prev), traces, total), (y_pre, loss)

  traces = {"g": zeros(), "i": zeros()}
  if forget:
    traces["f"] = zeros()
  total = jax.tree_util.tree_map(jnp.zeros_like, params)
  state = (params, jnp.zeros((hidden,), dtype), jnp.zeros((hidden,), dtype), traces, total)
  steps = jnp.arange(inputs.shape[0])
  (params, _, _, _, total), (outputs, losses) = jax.lax.scan(
      step, state, (inputs, targets, mask, steps))
  grad_norm = jnp.sqrt(sum(jnp.sum(jnp.square(g)) for g in jax.tree_util.tree_leaves(total)))
  return params, outputs, jnp.sum(losses), grad_norm


def make_online_chunk(model: SequenceModel, task: Any, learning_rate: float, num_steps: int,
                      placement: Placement | None = None, *,
                      skip_nonfinite: bool = False) -> Any:
  """The per-step counterpart of :func:`lstm_jax.training.make_train_chunk`:
  ``num_steps`` sequences (batch 1) per seed, the weights changed after
  every time step (:func:`learn_sequence`). Same signature and results
  (:func:`lstm_jax.training.chunk_program`); ``metrics["loss"]`` is the
  sequence's error and the optimizer state is carried unchanged (plain
  gradient descent has none). With ``skip_nonfinite`` a sequence whose error,
  gradients or parameters were not finite leaves the parameters as they were
  before it."""
  placement = Placement.build() if placement is None else placement

  def step(state: training.TrainState, data_key: Array):
    batch = task.sample(jax.random.fold_in(data_key, state.step), 1)
    params, outputs, loss, grad_norm = learn_sequence(
        model, state.params, batch.inputs[0], task.dense_targets(batch)[0], batch.mask[0],
        batch.lengths[0], learning_rate)
    finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm) & training.all_finite(params)
    if skip_nonfinite:
      params = jax.tree_util.tree_map(lambda n, o: jnp.where(finite, n, o), params,
                                      state.params)
    metrics = {"loss": loss, "grad_norm": grad_norm, "finite": finite}
    per_seq = task.per_sequence(outputs[None], batch)
    return training.TrainState(state.step + 1, params, state.opt_state), metrics, per_seq

  return training.chunk_program(step, task, 1, num_steps, placement)


__all__ = ["learn_sequence", "make_online_chunk", "unsupported"]

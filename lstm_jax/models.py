"""Sequence models for experiments: a stack of recurrent layers and a linear readout.

``y_t = h^{(L)}_t W_out + b_out`` where ``h^{(L)}`` is the output of the top
layer of a :func:`lstm_jax.sequence.stacked_rnn` stack, for every step ``t``;
with input-to-output connections (the 1997 nets) ``y_t = h^{(L)}_t W_out +
x_t W_in + b_out``. Tasks decide which steps carry loss and how outputs are
read (``lstm_jax.tasks``).

With ``block="residual"`` the layers are pre-norm residual blocks, the form
in which minGRU/minLSTM (Feng et al. 2024) and xLSTM (Beck et al. 2024)
stack their cells::

    u_0 = x_t W_e + b_e                                    (embedding, width H)
    v_k = u_{k-1} + RNN_k(LN(u_{k-1}))                     k = 1..L
    u_k = v_k + GELU(LN(v_k) W_1 + b_1) W_2 + b_2          (MLP, width 2H)
    y_t = LN(u_L) W_out + b_out
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp

from lstm_jax import checks
from lstm_jax import gates as G
from lstm_jax import init as initializers
from lstm_jax.cells import Cell, make_cell
from lstm_jax.sequence import (IMPLS, Regularization, Remat, fold_rows, init_stack,
                               remat_policy, resolve_impl, run_layers, sequence_keys)

Array = jax.Array
Params = dict[str, Any]

BLOCKS: tuple[str, ...] = ("plain", "residual")
"""How the layers are stacked: ``"plain"`` (each layer reads the one below)
or ``"residual"`` (pre-norm residual blocks with an MLP; module docstring)."""

MLP_RATIO = 2
"""Width of a residual block's MLP, in multiples of ``H``."""


@dataclasses.dataclass(frozen=True)
class SequenceModel:
  """A hashable model description (a static argument of jitted code); it
  checks its options when built.

  Attributes:
    cell: the recurrent cell of every layer.
    num_layers: stack depth (>= 1).
    output_size: readout width ``O``.
    remat: memory policy of the backward pass (:data:`lstm_jax.sequence.Remat`),
      kept in its normalised form (:func:`lstm_jax.sequence.remat_policy`).
    truncate: truncated BPTT: the gradient through the recurrent state is cut
      every ``truncate`` steps (0: full backpropagation through time).
    impl: how the layers are computed (:data:`lstm_jax.sequence.IMPLS`);
      ``"fused"`` is refused here when the cell, ``remat``, ``truncate`` or
      a regulariser inside the recurrence rules it out (``"parallel"``
      likewise; ``"auto"`` then runs the plain scan).
    input_to_output: direct connections from the input to the readout
      (``+ x_t W_in``), as in several 1997 experiments: the cells are then
      free to hold what the current input does not tell.
    readout_init: initialiser of ``W_out`` (and ``W_in``), a name from
      :data:`lstm_jax.init.KERNEL_INITS` (``"uniform"`` uses the cell's
      ``init_scale``).
    regularization: dropout, variational recurrent dropout and zoneout at
      training (:class:`lstm_jax.sequence.Regularization`; all off by
      default), kept checked (rates in ``[0, 1)``, each applicable to the
      cell).
    block: ``"plain"`` or ``"residual"`` (:data:`BLOCKS`; module docstring).
  """
  cell: Cell
  num_layers: int
  output_size: int
  remat: Remat = "none"
  truncate: int = 0
  impl: str = "auto"
  input_to_output: bool = False
  readout_init: str = "lecun_normal"
  regularization: Regularization = Regularization()
  block: str = "plain"

  def __post_init__(self):
    if not isinstance(self.cell, Cell):
      checks.fail("cell", self.cell, "expected an lstm_jax.Cell (lstm_jax.make_cell)")
    checks.integer("num_layers", self.num_layers, 1)
    checks.integer("output_size", self.output_size, 1)
    object.__setattr__(self, "remat", remat_policy(self.remat))
    checks.integer("truncate", self.truncate, 0, meaning="0: no truncation")
    if not isinstance(self.regularization, Regularization):
      checks.fail("regularization", self.regularization,
                  "expected an lstm_jax.Regularization")
    object.__setattr__(self, "regularization", self.regularization.check(self.cell))
    resolve_impl(self.cell, checks.choice("impl", self.impl, IMPLS), self.remat, self.truncate,
                 noise=self.regularization.in_recurrence)
    checks.boolean("input_to_output", self.input_to_output)
    checks.choice("readout_init", self.readout_init, initializers.KERNEL_INITS)
    checks.choice("block", self.block, BLOCKS)
    if self.block == "residual" and self.input_to_output:
      checks.fail("input_to_output", True, "block='residual' reads the input through its "
                  "embedding; allowed: False")

  def init(self, key: Array, input_size: int) -> Params:
    """Params ``{"rnn": [layer, ...], "readout": {"w": [R, O], "b": [O]}}``, and
    ``readout["w_in"]: [I, O]`` with input-to-output connections. With
    ``block="residual"`` also ``"blocks"``: ``embed {"w": [I, H], "b": [H]}``,
    per layer ``norm``, ``mlp_norm`` (``{"scale", "bias"}`` of ``[H]``) and
    ``mlp {"w1": [H, 2H], "b1", "w2": [2H, H], "b2"}``, and ``final_norm``;
    every layer's cell then reads ``H`` features."""
    k_rnn, k_out = jax.random.split(key)
    kernel = lambda k, fan_in, width=self.output_size: initializers.gate_kernel(
        self.readout_init, k, fan_in, width, 1, scale=self.cell.init_scale)
    readout = {"w": kernel(k_out, self.cell.output_size),
               "b": jnp.zeros((self.output_size,), jnp.float32)}
    if self.input_to_output:
      readout["w_in"] = kernel(jax.random.fold_in(k_out, 1), input_size)
    if self.block == "plain":
      return {"rnn": init_stack(self.cell, k_rnn, input_size, self.num_layers),
              "readout": readout}
    h = self.cell.output_size
    k_rnn, k_emb, k_mlp = jax.random.split(k_rnn, 3)
    zeros = lambda n: jnp.zeros((n,), jnp.float32)
    norm = lambda: {"scale": jnp.ones((h,), jnp.float32), "bias": zeros(h)}
    mlps = [{"w1": kernel(jax.random.fold_in(k, 0), h, MLP_RATIO * h), "b1": zeros(MLP_RATIO * h),
             "w2": kernel(jax.random.fold_in(k, 1), MLP_RATIO * h, h), "b2": zeros(h)}
            for k in jax.random.split(k_mlp, self.num_layers)]
    blocks = {"embed": {"w": kernel(k_emb, input_size, h), "b": zeros(h)},
              "norm": [norm() for _ in range(self.num_layers)],
              "mlp_norm": [norm() for _ in range(self.num_layers)],
              "mlp": mlps, "final_norm": norm()}
    return {"rnn": init_stack(self.cell, k_rnn, h, self.num_layers), "readout": readout,
            "blocks": blocks}

  def apply(self, params: Params, inputs: Array, lengths: Array | None = None,
            key: Array | None = None, *, train: bool = False) -> Array:
    """Outputs ``[B, T, O]`` for inputs ``[B, T, I]`` and lengths ``[B]``.

    With ``train=True`` and a regulariser on, the dropout masks and zoneout
    draws of sequence ``b`` come from ``fold_in(key, b)`` (``key``: one PRNG
    key), or from ``key[b]`` when ``key`` holds ``[B]`` per-sequence keys
    (so a batch split over devices draws what the whole batch would). With
    ``train=False`` (evaluation) or every rate 0, ``key`` is not used and the
    result is deterministic: dropout is the identity and zoneout its
    expectation ``z s_{t-1} + (1 - z) s~_t``; with every rate 0 the program
    is the one of a model without regularisation.

    ``y_t = h_t W_out + b_out`` with ``h_t`` the top layer's output. Jit-able
    and vmap-able; parameter shapes are checked at trace time. The readout
    runs inside the top layer's scan, so only ``[T, B, O]`` outputs are
    stored (with ``remat="sqrt"``, memory is ``O(sqrt(T))`` plus inputs and
    outputs). Outputs at padded steps are the readout bias (the recurrent
    output there is zero); tasks mask them out.
    """
    readout = params["readout"]
    size = inputs.shape[-1] if self.block == "plain" else self.cell.output_size
    for k, layer in enumerate(params["rnn"]):
      try:
        self.cell.check_params(layer, size)
      except ValueError as err:
        raise ValueError(f"params['rnn'][{k}]: {err}") from None
      size = self.cell.output_size
    reg = self.regularization
    keys = None
    if checks.boolean("train", train) and reg.active:
      if key is None:
        raise ValueError("key=None is not allowed with train=True and regularization on; "
                         "expected a PRNG key (or one per sequence)")
      keys = sequence_keys(key, inputs.shape[0])
    dtypes = [inputs.dtype, *(x.dtype for x in jax.tree_util.tree_leaves(params["rnn"]))]
    impl = resolve_impl(self.cell, self.impl, self.remat, self.truncate, dtypes,
                        noise=reg.in_recurrence)
    if self.block == "residual":
      return self._residual(params, inputs, lengths, impl, keys)
    ys, _ = run_layers(self.cell, params["rnn"], jnp.swapaxes(inputs, 0, 1), None, lengths,
                       remat=self.remat, truncate=self.truncate, impl=impl,
                       emit=lambda y: y @ readout["w"] + readout["b"],
                       regularization=reg if reg.active else None, keys=keys)
    ys = jnp.swapaxes(ys, 0, 1)
    if self.input_to_output:  # one matmul over all steps; padded inputs are zero
      ys = ys + inputs.astype(ys.dtype) @ readout["w_in"]
    return ys

  def _residual(self, params: Params, inputs: Array, lengths: Array | None, impl: str,
                keys: Array | None) -> Array:
    """The pre-norm residual stack of the module docstring: ``[B, T, O]``."""
    blocks, reg = params["blocks"], self.regularization
    norm = lambda p, z: G.layer_norm(z, p["scale"], p["bias"])
    u = jnp.swapaxes(inputs, 0, 1) @ blocks["embed"]["w"] + blocks["embed"]["b"]
    for k, layer in enumerate(params["rnn"]):
      y, _ = run_layers(self.cell, [layer], norm(blocks["norm"][k], u), None, lengths,
                        remat=self.remat, truncate=self.truncate, impl=impl,
                        regularization=reg if reg.active else None,
                        keys=None if keys is None else fold_rows(keys, k))
      u = u + y.astype(u.dtype)
      mlp = blocks["mlp"][k]
      z = jax.nn.gelu(norm(blocks["mlp_norm"][k], u) @ mlp["w1"] + mlp["b1"])
      u = u + z @ mlp["w2"] + mlp["b2"]
    ys = norm(blocks["final_norm"], u) @ params["readout"]["w"] + params["readout"]["b"]
    return jnp.swapaxes(ys, 0, 1)


def make_model(cell: str, hidden_size: int, output_size: int, *, num_layers: int = 1,
               proj_size: int = 0, remat: Remat = "none", truncate: int = 0,
               impl: str = "auto", input_to_output: bool = False,
               readout_init: str = "lecun_normal",
               regularization: Regularization = Regularization(), block: str = "plain",
               **cell_options: Any) -> SequenceModel:
  """Build a :class:`SequenceModel` from a cell name (see :func:`lstm_jax.make_cell`)."""
  return SequenceModel(make_cell(cell, hidden_size, proj_size=proj_size, **cell_options),
                       num_layers, output_size, remat, truncate, impl, input_to_output,
                       readout_init, regularization, block)

"""One time step of an LSTM (any variant), a GRU, an Elman RNN, a minGRU, a minLSTM,
an sLSTM or an mLSTM.

Every LSTM variant is a static option of the single step function
:func:`lstm_step`; :data:`VARIANTS` names the classic ones. A :class:`Cell` is a
frozen, hashable description (kind, size, variant, initialisers) that can be
passed to ``jax.jit`` as a static argument; its methods only call the pure
functions of this module.

Parameter layout of an LSTM (``I`` input size, ``H`` cell size, ``R`` the
recurrent size: ``H``, or ``P`` with a projection; ``G`` the number of gate
blocks the variant uses, in the order i, f, g, o with absent gates skipped --
e.g. ``G = 4`` for ``vanilla``, ``3`` for ``nig``/``nfg``/``nog``/``cifg``)::

    w_x      [I, G*H]   input kernel               x @ w_x
    w_h      [R, G*H]   recurrent kernel           h_prev @ w_h
    b        [G*H]      bias (absent with use_bias=False)
    w_peep   [3, H]     peephole weights for i, f, o        (peepholes)
    w_gates  [3H, 3H]   previous [i, f, o] -> [i, f, o]     (gate_recurrence)
    ln_x     [G*H]      layer-norm gain on x @ w_x          (layer_norm)
    ln_h     [G*H]      layer-norm gain on h_prev @ w_h     (layer_norm)
    ln_c     [H]        layer-norm gain on c before tanh    (layer_norm)
    ln_c_bias[H]        layer-norm offset on c              (layer_norm)
    w_proj   [H, P]     output projection (LSTMP)           (proj_size > 0)

With memory-cell blocks (``block_size = s > 1``) the ``G*H`` columns become
``H`` for the candidate block and ``H / s`` for each gate block.

The carry is :class:`LSTMState` ``(h [B, R], c [B, H], gates [B, 3H] or None)``.

A GRU has ``w_x [I, 3H]``, ``w_h [H, 3H]``, ``b [3H]``, ``b_hn [H]``; an Elman
RNN ``w_x [I, H]``, ``w_h [H, H]``, ``b [H]``. minGRU and minLSTM
(:mod:`lstm_jax.mincells`) have no recurrent kernel: ``w_x [I, G*H]`` and
``b [G*H]`` with ``G = 2`` (z, h~) or ``3`` (f, i, h~). Their carry, like a
GRU's or an Elman RNN's, is ``h [B, H]``. sLSTM and mLSTM (:mod:`lstm_jax.xlstm`,
``NH`` heads of ``d = H / NH``): an sLSTM has ``w_x [I, 4H]``, ``w_h [NH, d, 4d]``
(block-diagonal recurrence), ``b [4H]`` (i, f, z, o) and the carry
:class:`~lstm_jax.xlstm.SLSTMState` ``(h, c, n, m)``, each ``[B, H]``; an
mLSTM has ``w_x [I, 4H]`` (q, k, v, o), ``w_if [I, 2NH]`` (i, f), ``b [4H]``,
``b_if [2NH]`` and the carry :class:`~lstm_jax.xlstm.MLSTMState` ``(c [B, NH, d,
d], n [B, NH, d], m [B, NH])``.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Literal, NamedTuple

import jax
import jax.numpy as jnp

from lstm_jax import checks
from lstm_jax import gates as G
from lstm_jax import init as initializers
from lstm_jax import mincells
from lstm_jax import xlstm

Array = jax.Array
Params = dict[str, Any]


class LSTMState(NamedTuple):
  """Carry of an LSTM.

  Attributes:
    h: ``[..., R]`` previous output (``R = proj_size`` for LSTMP, else ``H``).
    c: ``[..., H]`` memory-cell state.
    gates: ``[..., 3H]`` previous step's ``[i, f, o]`` activations, only for
      full gate recurrence (FGR); ``None`` otherwise.
  """
  h: Array
  c: Array
  gates: Array | None = None


class LSTMGates(NamedTuple):
  """All intermediate values of one LSTM step, each ``[..., H]`` (``h``: ``[..., R]``).

  Gates a variant does not have hold their constant value (ones, or ``1 - i``
  for CIFG's forget gate), so analysis code can treat every variant alike.
  """
  i: Array
  f: Array
  g: Array
  o: Array
  c: Array
  h: Array


@dataclasses.dataclass(frozen=True)
class LSTMVariant:
  """Static options of the LSTM step; the defaults are the vanilla LSTM with
  forget gate (Gers, Schmidhuber & Cummins 2000), no peepholes.

  Attributes:
    input_gate: ``False`` fixes ``i = 1`` (Greff et al. 2017, NIG).
    forget_gate: ``"learned"``; ``"none"`` fixes ``f = 1`` (the 1997 cell,
      Greff's NFG); ``"coupled"`` sets ``f = 1 - i`` (CIFG).
    output_gate: ``False`` fixes ``o = 1`` (NOG).
    input_activation: ``"tanh"`` or ``"identity"`` for the candidate (NIAF), or
      the 1997 ``"hs1997_input"`` (``4 sigmoid - 2``); any of
      :data:`lstm_jax.gates.ACTIVATIONS`.
    output_activation: ``"tanh"`` or ``"identity"`` on ``c`` (NOAF), or the
      1997 ``"hs1997_output"`` (``2 sigmoid - 1``).
    peepholes: diagonal peephole connections from the cell to the gates
      (Gers & Schmidhuber 2000): i, f see ``c_prev``, o sees the new ``c``.
    gate_recurrence: full gate recurrence (FGR): each of i, f, o also gets
      ``[i, f, o]_{t-1} @ w_gates``; needs all three gates learned.
    layer_norm: layer-normalised pre-activations and cell (Ba et al. 2016,
      eq. 20-22): ``z = LN(h W_h) + LN(x W_x) + b``, ``h = o * tanh(LN(c))``.
    block_size: memory-cell blocks (Hochreiter & Schmidhuber 1997, Sec. 4):
      ``s`` contiguous cells share one input, forget and output gate, so the
      gate blocks have ``H / s`` columns and the candidate block ``H``. 1:
      every cell has its own gates. Not combined with peepholes, gate
      recurrence or layer norm.
    truncated_gradient: the 1997 truncated gradient: the recurrent input
      ``h_prev`` of every gate and of the candidate is a constant when
      differentiating (``z = x W_x + stop_gradient(h_prev) W_h + b``; with
      peepholes, ``i`` and ``f`` see ``stop_gradient(c_prev)``), so error flows
      back in time only through the cell state ``c_prev -> c``. ``W_h``'s
      gradient still uses ``h_prev`` as its input.
  """
  input_gate: bool = True
  forget_gate: Literal["learned", "none", "coupled"] = "learned"
  output_gate: bool = True
  input_activation: Literal["tanh", "identity"] = "tanh"
  output_activation: Literal["tanh", "identity"] = "tanh"
  peepholes: bool = False
  gate_recurrence: bool = False
  layer_norm: bool = False
  block_size: int = 1
  truncated_gradient: bool = False

  def __post_init__(self):
    checks.choice("forget_gate", self.forget_gate, ("learned", "none", "coupled"))
    for field in ("input_activation", "output_activation"):
      checks.choice(field, getattr(self, field), tuple(G.ACTIVATIONS))
    if self.forget_gate == "coupled" and not self.input_gate:
      raise ValueError("forget_gate='coupled' (f = 1 - i) needs input_gate=True")
    if self.gate_recurrence and not (self.input_gate and self.output_gate
                                     and self.forget_gate == "learned"):
      raise ValueError("gate_recurrence=True (FGR) needs input_gate=True, "
                       "forget_gate='learned' and output_gate=True")
    checks.integer("block_size", self.block_size, 1, meaning="1: a gate per cell")
    checks.boolean("truncated_gradient", self.truncated_gradient)
    if self.block_size > 1:
      clash = [name for name in ("peepholes", "gate_recurrence", "layer_norm")
               if getattr(self, name)]
      if clash:
        raise ValueError(f"block_size={self.block_size} (gates shared by blocks of cells) "
                         f"cannot be combined with {', '.join(f'{n}=True' for n in clash)}; "
                         "allowed: block_size=1")

  @property
  def blocks(self) -> tuple[str, ...]:
    """Gate blocks present in the fused kernels, in order (subset of i, f, g, o)."""
    present = {"i": self.input_gate, "f": self.forget_gate == "learned",
               "g": True, "o": self.output_gate}
    return tuple(name for name in G.GATE_ORDER if present[name])

  def widths(self, hidden_size: int) -> tuple[int, ...]:
    """Columns of each block of :attr:`blocks` for ``H = hidden_size``: ``H``
    for the candidate ``g``, ``H / block_size`` for each gate."""
    gates = hidden_size // self.block_size
    return tuple(hidden_size if name == "g" else gates for name in self.blocks)


_PEEP = LSTMVariant(peepholes=True)

VARIANTS: dict[str, LSTMVariant] = {
    # Gers, Schmidhuber & Cummins 2000: the LSTM with forget gate, as in torch/flax.
    "vanilla": LSTMVariant(),
    # Hochreiter & Schmidhuber 1997: no forget gate.
    "lstm1997": LSTMVariant(forget_gate="none"),
    # Gers & Schmidhuber 2000: peephole connections (Greff et al.'s "V").
    "peephole": _PEEP,
    # Greff et al. 2017, each one change to their vanilla (peephole) LSTM.
    "nig": dataclasses.replace(_PEEP, input_gate=False),
    "nfg": dataclasses.replace(_PEEP, forget_gate="none"),
    "nog": dataclasses.replace(_PEEP, output_gate=False),
    "niaf": dataclasses.replace(_PEEP, input_activation="identity"),
    "noaf": dataclasses.replace(_PEEP, output_activation="identity"),
    "np": LSTMVariant(),
    "cifg": dataclasses.replace(_PEEP, forget_gate="coupled"),
    "fgr": dataclasses.replace(_PEEP, gate_recurrence=True),
    # Ba, Kiros & Hinton 2016.
    "layernorm": LSTMVariant(layer_norm=True),
    # Sak, Senior & Beaufays 2014: vanilla cell + output projection (needs proj_size).
    "lstmp": LSTMVariant(),
}
"""Named LSTM variants. Any other combination: pass an :class:`LSTMVariant`."""

MIN_CELLS: tuple[str, ...] = mincells.KINDS
"""Cells whose step is linear in the state (minGRU, minLSTM): they also run as
a parallel prefix scan (``impl="parallel"``, :mod:`lstm_jax.mincells`)."""

XLSTM_CELLS: tuple[str, ...] = xlstm.KINDS
"""The xLSTM cells (Beck et al. 2024): sLSTM and mLSTM (:mod:`lstm_jax.xlstm`),
with heads (``num_heads``) and a choice of forget gate (``forget_fn``)."""

PARALLEL_CELLS: tuple[str, ...] = MIN_CELLS + ("mlstm",)
"""Cells with a parallel form over the whole sequence (``impl="parallel"``):
minGRU and minLSTM (prefix scan), mLSTM (chunkwise)."""

BASELINES: tuple[str, ...] = ("gru", "elman") + MIN_CELLS + XLSTM_CELLS
"""The cells that are not LSTM variants (LSTM-only options are refused for them)."""

CELL_NAMES: tuple[str, ...] = tuple(VARIANTS) + BASELINES
"""Every name :func:`make_cell` accepts."""


# ----------------------------------------------------------------------------
# Pure step functions.


def lstm_gates(params: Params, carry: LSTMState, x: Array,
               variant: LSTMVariant = LSTMVariant()) -> LSTMGates:
  """Every intermediate value of one LSTM step.

  Equations (blocks absent from the variant take the constants noted)::

      z        = x W_x + h_prev W_h + b                  (fused, order i f g o)
      z        = LN(x W_x) + LN(h_prev W_h) + b          (layer_norm)
      z_{ifo} += [i, f, o]_prev W_gates                  (gate_recurrence)
      i = sigmoid(z_i + p_i * c_prev)                    (NIG: i = 1)
      f = sigmoid(z_f + p_f * c_prev)                    (none: f = 1; coupled: 1 - i)
      g = tanh(z_g)                                      (NIAF: g = z_g)
      c = f * c_prev + i * g
      o = sigmoid(z_o + p_o * c)                         (NOG: o = 1)
      h = o * tanh(c)          (layer_norm: tanh(LN(c)); NOAF: h = o * c)
      h = h W_proj                                       (proj_size > 0)

  With ``block_size = s > 1`` the gate blocks of ``z`` have ``H / s``
  columns and cell ``j`` uses gate ``j // s``. With ``truncated_gradient``
  ``h_prev`` (and, for peepholes, ``c_prev`` in ``i`` and ``f``) enters
  ``z`` through ``stop_gradient``: the gradient flows back in time only along
  ``c = f * c_prev + i * g``.

  Args:
    params: LSTM parameters (module docstring).
    carry: :class:`LSTMState` with ``h [B, R]``, ``c [B, H]``.
    x: ``[B, I]`` input.
    variant: static options.

  Returns:
    :class:`LSTMGates`; ``c`` and ``h`` are cast to the carry's dtypes.
  """
  z = lstm_preactivations(params, carry, x, variant)
  return lstm_gates_from_preactivations(params, carry, z, variant)


def lstm_preactivations(params: Params, carry: LSTMState, x: Array,
                        variant: LSTMVariant = LSTMVariant()) -> Array:
  """The fused gate pre-activations ``z`` of one LSTM step (first half of
  :func:`lstm_gates`)::

      z        = x W_x + h_prev W_h + b                  (blocks of the variant, in
                                                          the order i f g o)
      z        = LN(x W_x) + LN(h_prev W_h) + b          (layer_norm)
      z_{ifo} += [i, f, o]_prev W_gates                  (gate_recurrence)

  Args:
    params: LSTM parameters (module docstring).
    carry: :class:`LSTMState` with ``h [B, R]`` (and ``gates [B, 3H]`` for FGR).
    x: ``[B, I]`` input.
    variant: static options.

  Returns:
    ``z``: ``[B, G*H]``.
  """
  h_prev = jax.lax.stop_gradient(carry.h) if variant.truncated_gradient else carry.h
  if variant.layer_norm:
    zx = x @ params["w_x"]
    zh = h_prev @ params["w_h"]
    zeros = jnp.zeros_like(params["ln_x"])
    z = G.layer_norm(zx, params["ln_x"], zeros) + G.layer_norm(zh, params["ln_h"], zeros)
    if "b" in params:
      z = z + params["b"]
  else:
    z = G.fused_preactivations(x, h_prev, params["w_x"], params["w_h"], params.get("b"))
  if variant.gate_recurrence:  # all four blocks are present; g gets no term
    prev = carry.gates.astype(z.dtype)
    if variant.truncated_gradient:
      prev = jax.lax.stop_gradient(prev)
    r_i, r_f, r_o = G.split_gates(prev @ params["w_gates"], 3)
    z = z + jnp.concatenate([r_i, r_f, jnp.zeros_like(r_i), r_o], axis=-1)
  return z


def lstm_gates_from_preactivations(params: Params, carry: LSTMState, z: Array,
                                   variant: LSTMVariant = LSTMVariant()) -> LSTMGates:
  """The rest of :func:`lstm_gates` given ``z`` (from :func:`lstm_preactivations`).

  Elementwise apart from the projection, so it also applies to stacked steps:
  ``z [..., G*H]`` with ``carry.c [..., H]`` give gates ``[..., H]``.

  Args:
    params: LSTM parameters.
    carry: :class:`LSTMState` with ``h`` and ``c``.
    z: ``[B, G*H]`` pre-activations.
    variant: static options.

  Returns:
    :class:`LSTMGates`; ``c`` and ``h`` are cast to the carry's dtypes.
  """
  h_prev, c_prev = carry.h, carry.c
  blocks = variant.blocks
  widths = variant.widths(c_prev.shape[-1])
  peep = params.get("w_peep") if variant.peepholes else None
  if peep is None:
    # No peepholes: every gate depends on z alone, so all G blocks go through
    # their activations in one pass (G.activate_blocks), the same functions
    # as G.input_gate / forget_gate / candidate / output_gate.
    kinds = tuple(variant.input_activation if b == "g" else "sigmoid" for b in blocks)
    acts = dict(zip(blocks, G.split_gates(G.activate_blocks(z, kinds, widths), widths)))
    if variant.block_size > 1:  # one gate per block of cells: give each cell its gate
      acts = {b: a if b == "g" else jnp.repeat(a, variant.block_size, axis=-1)
              for b, a in acts.items()}
  parts = dict(zip(blocks, G.split_gates(z, widths)))
  p_i, p_f, p_o = (None, None, None) if peep is None else (peep[0], peep[1], peep[2])
  gate = lambda name, fn, c_seen, p: acts[name] if peep is None else fn(parts[name], c_seen, p)
  one = jnp.ones_like(parts["g"])
  c_seen = jax.lax.stop_gradient(c_prev) if variant.truncated_gradient else c_prev

  i = gate("i", G.input_gate, c_seen, p_i) if variant.input_gate else one
  if variant.forget_gate == "learned":
    f = gate("f", G.forget_gate, c_seen, p_f)
  elif variant.forget_gate == "coupled":
    f = 1.0 - i
  else:
    f = one
  g = (acts["g"] if peep is None
       else G.candidate(parts["g"], G.ACTIVATIONS[variant.input_activation]))
  c = G.cell_update(f, i, g, c_prev)
  o = gate("o", G.output_gate, c, p_o) if variant.output_gate else one
  c_out = G.layer_norm(c, params["ln_c"], params["ln_c_bias"]) if variant.layer_norm else c
  h = G.hidden_output(o, c_out, G.ACTIVATIONS[variant.output_activation])
  if "w_proj" in params:
    h = h @ params["w_proj"]
  return LSTMGates(i=i, f=f, g=g, o=o, c=c.astype(c_prev.dtype), h=h.astype(h_prev.dtype))


def lstm_step(params: Params, carry: LSTMState, x: Array,
              variant: LSTMVariant = LSTMVariant()) -> tuple[LSTMState, Array]:
  """One LSTM step ``(params, carry, x) -> (carry, h)``; equations in :func:`lstm_gates`.

  Args:
    params: LSTM parameters (module docstring).
    carry: :class:`LSTMState` (``h [B, R]``, ``c [B, H]``, ``gates [B, 3H]`` for FGR).
    x: ``[B, I]`` input.
    variant: static options.

  Returns:
    ``(new_carry, h)`` with ``h: [B, R]``.
  """
  v = lstm_gates(params, carry, x, variant)
  gates = None
  if variant.gate_recurrence:
    gates = jnp.concatenate([v.i, v.f, v.o], axis=-1).astype(carry.gates.dtype)
  return LSTMState(h=v.h, c=v.c, gates=gates), v.h


def gru_step(params: Params, carry: Array, x: Array,
             recurrent_input: Array | None = None) -> tuple[Array, Array]:
  """One GRU step (Cho et al. 2014), reset applied after the recurrent matmul.

  Gate order r, z, n (as ``torch.nn.GRU`` and ``flax.linen.GRUCell``)::

      r  = sigmoid(x W_xr + h_prev W_hr + b_r)
      u  = sigmoid(x W_xz + h_prev W_hz + b_z)
      n  = tanh(x W_xn + b_n + r * (h_prev W_hn + b_hn))
      h  = (1 - u) * n + u * h_prev

  (Cho et al. apply ``r`` to ``h_prev`` before the matmul; the form above is
  the one cuDNN, PyTorch and Flax use.)

  Args:
    params: ``w_x [I, 3H]``, ``w_h [H, 3H]``, ``b [3H]``, ``b_hn [H]``.
    carry: ``[B, H]`` previous hidden state.
    x: ``[B, I]`` input.
    recurrent_input: ``[B, H]``, what enters the recurrent matmul in place of
      ``h_prev`` (``h_prev W_h`` becomes ``recurrent_input W_h``; the update
      still mixes in ``h_prev``), e.g. ``h_prev`` times a recurrent-dropout
      mask; ``None``: ``h_prev``.

  Returns:
    ``(h, h)``, each ``[B, H]``.
  """
  zx = x @ params["w_x"]
  if "b" in params:
    zx = zx + params["b"]
  zh = (carry if recurrent_input is None else recurrent_input) @ params["w_h"]
  xr, xz, xn = G.split_gates(zx, 3)
  hr, hz, hn = G.split_gates(zh, 3)
  if "b_hn" in params:
    hn = hn + params["b_hn"]
  r = G.sigmoid(xr + hr)
  u = G.sigmoid(xz + hz)
  n = jnp.tanh(xn + r * hn)
  h = ((1.0 - u) * n + u * carry).astype(carry.dtype)
  return h, h


def elman_step(params: Params, carry: Array, x: Array) -> tuple[Array, Array]:
  """One Elman (simple tanh RNN) step: ``h = tanh(x W_x + h_prev W_h + b)``.

  Args:
    params: ``w_x [I, H]``, ``w_h [H, H]``, ``b [H]``.
    carry: ``[B, H]`` previous hidden state.
    x: ``[B, I]`` input.

  Returns:
    ``(h, h)``, each ``[B, H]``.
  """
  h = jnp.tanh(G.fused_preactivations(x, carry, params["w_x"], params["w_h"],
                                      params.get("b"))).astype(carry.dtype)
  return h, h


# ----------------------------------------------------------------------------
# Static cell description.


INIT_OPTIONS: tuple[str, ...] = ("kernel_init", "recurrent_init", "bias_init", "forget_bias",
                                 "chrono_t_max", "init_scale", "use_bias", "num_heads",
                                 "forget_fn")
"""The :class:`Cell` fields that say how its parameters are initialised (and
whether it has biases), and the heads and forget gate of an sLSTM or mLSTM:
the one list the Flax wrappers, the interop functions and the experiment
config pass through."""

VARIANT_OPTIONS: tuple[str, ...] = tuple(f.name for f in dataclasses.fields(LSTMVariant))
"""The :class:`LSTMVariant` fields :func:`make_cell` (and the experiment
config's ``model`` section) may set on top of a named variant."""


@dataclasses.dataclass(frozen=True)
class Cell:
  """A hashable description of a recurrent cell; pass it to ``jit`` as static.

  Build one with :func:`make_cell`. Methods are thin: ``init`` returns a params
  pytree, ``initial_state`` a zero carry, ``step`` calls :func:`lstm_step`,
  :func:`gru_step`, :func:`elman_step`, :func:`lstm_jax.mincells.mingru_step`,
  :func:`~lstm_jax.mincells.minlstm_step`, :func:`lstm_jax.xlstm.slstm_step` or
  :func:`~lstm_jax.xlstm.mlstm_step`.

  Attributes:
    kind: ``"lstm"``, ``"gru"``, ``"elman"``, ``"mingru"``, ``"minlstm"``,
      ``"slstm"`` or ``"mlstm"``.
    hidden_size: ``H``.
    variant: LSTM options (ignored by the other kinds).
    proj_size: ``P`` for an output projection (LSTMP); 0 for none.
    name: the name it was made from (for display).
    kernel_init, recurrent_init: names from :data:`lstm_jax.init.KERNEL_INITS`,
      or initialisers ``(key, shape, dtype) -> array`` (e.g. Flax's), called
      once per gate block ``[fan_in, H]`` (minGRU and minLSTM have no
      recurrent kernel).
    bias_init: LSTM bias scheme from :data:`lstm_jax.init.BIAS_INITS`, or an
      initialiser called once per gate block ``[H]`` (every bias of a GRU,
      Elman RNN, minGRU or minLSTM too; the named schemes leave those zero).
      An sLSTM takes ``forget`` and ``chrono`` as an LSTM does; an mLSTM
      applies them to its per-head gate biases ``b_if`` (``b`` stays zero).
    forget_bias: forget-gate bias for the ``forget`` and ``hs1997`` schemes.
    chrono_t_max: ``T_max`` for the ``chrono`` scheme.
    init_scale: half-width for the ``uniform`` kernel initialiser.
    use_bias: whether the cell has biases.
    gate_bias_steps: ``(input, output)`` steps of the ``hs1997`` staircase:
      gate unit block ``k`` gets ``b_i = -(k+1) * input`` and ``b_o = -(k+1) *
      output`` (e.g. ``(3.0, 0.0)``: input-gate biases -3, -6 and zero
      output-gate biases).
    num_heads: heads ``NH`` of an sLSTM (block-diagonal recurrence) or an
      mLSTM (one matrix memory each); ``hidden_size`` must be a multiple.
    forget_fn: forget gate of an sLSTM or mLSTM, ``"sigmoid"`` or ``"exp"``
      (:data:`lstm_jax.xlstm.FORGET_FNS`).
  """
  kind: Literal["lstm", "gru", "elman", "mingru", "minlstm", "slstm", "mlstm"]
  hidden_size: int
  variant: LSTMVariant = LSTMVariant()
  proj_size: int = 0
  name: str = "vanilla"
  kernel_init: str | initializers.KernelInit = "lecun_normal"
  recurrent_init: str | initializers.KernelInit = "orthogonal"
  bias_init: str | initializers.KernelInit = "forget"
  forget_bias: float = 1.0
  chrono_t_max: float | None = None
  init_scale: float = 0.1
  use_bias: bool = True
  gate_bias_steps: tuple[float, float] = (1.0, 1.0)
  num_heads: int = 1
  forget_fn: str = "sigmoid"

  def __post_init__(self):
    if self.kind not in ("lstm",) + BASELINES:
      raise ValueError(f"kind={self.kind!r}; allowed: lstm, {', '.join(BASELINES)}")
    checks.integer("hidden_size", self.hidden_size, 1)
    checks.integer("proj_size", self.proj_size, 0)
    if self.proj_size and self.kind != "lstm":
      raise ValueError(f"proj_size={self.proj_size} is only available for LSTM cells, "
                       f"not {self.kind!r}")
    if self.proj_size >= self.hidden_size and self.proj_size:
      raise ValueError(f"proj_size={self.proj_size} must be smaller than "
                       f"hidden_size={self.hidden_size} (as in torch.nn.LSTM)")
    for field, names in (("kernel_init", initializers.KERNEL_INITS),
                         ("recurrent_init", initializers.KERNEL_INITS),
                         ("bias_init", initializers.BIAS_INITS)):
      value = getattr(self, field)
      if not (callable(value) or (isinstance(value, str) and value in names)):
        checks.fail(field, value, "allowed: " + ", ".join(map(repr, names))
                    + ", or an initialiser (key, shape, dtype) -> array")
    if self.bias_init == "chrono":
      if self.kind not in ("lstm",) + XLSTM_CELLS:
        raise ValueError("bias_init='chrono' is defined for LSTM, sLSTM and mLSTM cells only")
      if self.chrono_t_max is None or not self.chrono_t_max > 2:
        raise ValueError(f"chrono_t_max={self.chrono_t_max!r}: bias_init='chrono' needs the "
                         "longest expected dependency T_max > 2")
    if self.kind == "lstm" and self.hidden_size % self.variant.block_size:
      raise ValueError(f"hidden_size={self.hidden_size} is not a multiple of block_size="
                       f"{self.variant.block_size}; allowed: a whole number of blocks of "
                       "memory cells")
    if self.bias_init == "hs1997" and self.kind in XLSTM_CELLS:
      checks.fail("bias_init", self.bias_init, f"cell kind {self.kind!r} has no memory blocks; "
                  "allowed: 'forget', 'chrono' or an initialiser")
    checks.integer("num_heads", self.num_heads, 1)
    if self.kind in XLSTM_CELLS:
      if self.hidden_size % self.num_heads:
        checks.fail("num_heads", self.num_heads, f"hidden_size={self.hidden_size} must be a "
                    "multiple of it")
      checks.choice("forget_fn", self.forget_fn, xlstm.FORGET_FNS)
    else:
      if self.num_heads != 1:
        checks.fail("num_heads", self.num_heads, f"cell kind {self.kind!r} has no heads; "
                    "allowed: 1 (heads are for 'slstm' and 'mlstm')")
      if self.forget_fn != "sigmoid":
        checks.fail("forget_fn", self.forget_fn, f"cell kind {self.kind!r} has a sigmoid "
                    "forget gate; allowed: 'sigmoid' ('exp' is for 'slstm' and 'mlstm')")
    checks.number("forget_bias", self.forget_bias, -float("inf"))
    checks.number("init_scale", self.init_scale, 0.0, strict=True)
    checks.boolean("use_bias", self.use_bias)
    steps = self.gate_bias_steps
    if (not isinstance(steps, (tuple, list)) or len(steps) != 2
        or not all(isinstance(v, (int, float)) and not isinstance(v, bool) and v >= 0
                   for v in steps)):
      checks.fail("gate_bias_steps", steps, "expected (input_step, output_step), two numbers "
                  ">= 0")
    object.__setattr__(self, "gate_bias_steps", tuple(float(v) for v in steps))

  def init_options(self) -> dict[str, Any]:
    """``{name: value}`` of the :data:`INIT_OPTIONS` of this cell."""
    return {name: getattr(self, name) for name in INIT_OPTIONS}

  # -- sizes -----------------------------------------------------------------
  @property
  def output_size(self) -> int:
    """Size of ``h`` (``proj_size`` if set, else ``hidden_size``)."""
    return self.proj_size or self.hidden_size

  @property
  def num_blocks(self) -> int:
    """Number of gate blocks in the fused kernels."""
    if self.kind == "lstm":
      return len(self.variant.blocks)
    if self.kind in MIN_CELLS:
      return mincells.NUM_BLOCKS[self.kind]
    if self.kind in XLSTM_CELLS:
      return 4
    return 3 if self.kind == "gru" else 1

  @property
  def linear(self) -> bool:
    """Whether the step is linear in the state (:data:`MIN_CELLS`), so that
    the sequence can run as a parallel prefix scan."""
    return self.kind in MIN_CELLS

  @property
  def has_parallel(self) -> bool:
    """Whether the layer has a parallel form over the sequence
    (:data:`PARALLEL_CELLS`: minGRU, minLSTM, mLSTM)."""
    return self.kind in PARALLEL_CELLS

  # -- parameters ------------------------------------------------------------
  def init(self, key: Array, input_size: int, dtype: jnp.dtype = jnp.float32) -> Params:
    """Initial parameters for inputs of size ``input_size`` (layout: module docstring)."""
    checks.integer("input_size", input_size, 1)
    h, r, nb = self.hidden_size, self.output_size, self.num_blocks
    k_x, k_h, k_b, k_p = jax.random.split(key, 4)
    kw = dict(scale=self.init_scale, dtype=dtype)
    blocked = self.kind == "lstm" and self.variant.block_size > 1
    kernel = (functools.partial(_blocked_kernel, variant=self.variant) if blocked
              else initializers.gate_kernel)
    params: Params = {"w_x": kernel(self.kernel_init, k_x, input_size, h, nb, **kw)}
    if self.kind in XLSTM_CELLS:
      return self._init_xlstm(params, input_size, k_h, k_b, dtype)
    if not self.linear:
      params["w_h"] = kernel(self.recurrent_init, k_h, r, h, nb, **kw)
    if self.kind == "lstm":
      if self.use_bias:
        # One bias per gate unit: H of them, or one per block of cells.
        k_b, k_g = jax.random.split(k_b) if blocked else (k_b, k_b)
        gates = h // self.variant.block_size
        full = initializers.lstm_bias(self.bias_init, k_b, gates,
                                      forget_bias=self.forget_bias, t_max=self.chrono_t_max,
                                      input_step=self.gate_bias_steps[0],
                                      output_step=self.gate_bias_steps[1], dtype=dtype)
        by_name = dict(zip(G.GATE_ORDER, G.split_gates(full, 4)))
        if blocked:  # the candidate has one bias per cell
          by_name["g"] = (initializers.bias_blocks(self.bias_init, k_g, h, 1, dtype=dtype)
                          if callable(self.bias_init) else jnp.zeros((h,), dtype))
        params["b"] = jnp.concatenate([by_name[n] for n in self.variant.blocks])
      if self.variant.peepholes:
        params["w_peep"] = jnp.zeros((3, h), dtype)
      if self.variant.gate_recurrence:
        params["w_gates"] = jnp.zeros((3 * h, 3 * h), dtype)
      if self.variant.layer_norm:
        params["ln_x"] = jnp.ones((nb * h,), dtype)
        params["ln_h"] = jnp.ones((nb * h,), dtype)
        params["ln_c"] = jnp.ones((h,), dtype)
        params["ln_c_bias"] = jnp.zeros((h,), dtype)
      if self.proj_size:
        params["w_proj"] = initializers.gate_kernel(self.kernel_init, k_p, h, r, 1, **kw)
    elif self.use_bias:
      if callable(self.bias_init):
        k_b, k_hn = jax.random.split(k_b)
        params["b"] = initializers.bias_blocks(self.bias_init, k_b, h, nb, dtype=dtype)
        if self.kind == "gru":
          params["b_hn"] = initializers.bias_blocks(self.bias_init, k_hn, h, 1, dtype=dtype)
      else:
        params["b"] = jnp.zeros((nb * h,), dtype)
        if self.kind == "gru":
          params["b_hn"] = jnp.zeros((h,), dtype)
    return params

  def _init_xlstm(self, params: Params, input_size: int, k_h: Array, k_b: Array,
                  dtype: jnp.dtype) -> Params:
    """The rest of an sLSTM's or mLSTM's parameters (layout: module docstring)."""
    h, nh = self.hidden_size, self.num_heads
    d = h // nh
    kw = dict(scale=self.init_scale, dtype=dtype)
    bias = lambda key, n: initializers.lstm_bias(self.bias_init, key, n,
                                                 forget_bias=self.forget_bias,
                                                 t_max=self.chrono_t_max, dtype=dtype)
    k_b, k_b2 = jax.random.split(k_b)
    if self.kind == "slstm":
      params["w_h"] = jnp.stack([
          initializers.gate_kernel(self.recurrent_init, k, d, d, 4, **kw)
          for k in jax.random.split(k_h, nh)])
      if self.use_bias:
        params["b"] = bias(k_b, h)
      return params
    params["w_if"] = initializers.gate_kernel(self.kernel_init, k_h, input_size, nh, 2, **kw)
    if self.use_bias:
      params["b"] = (initializers.bias_blocks(self.bias_init, k_b, h, 4, dtype=dtype)
                     if callable(self.bias_init) else jnp.zeros((4 * h,), dtype))
      # lstm_bias' blocks are i, f, g, o; the mLSTM's gate biases are i, f.
      params["b_if"] = (initializers.bias_blocks(self.bias_init, k_b2, nh, 2, dtype=dtype)
                        if callable(self.bias_init) else bias(k_b2, nh)[:2 * nh])
    return params

  def param_shapes(self, input_size: int) -> dict[str, tuple[int, ...]]:
    """Expected shape of every parameter for inputs of size ``input_size``."""
    return dict(_param_shapes(self, input_size))

  def check_params(self, params: Params, input_size: int | None = None) -> int:
    """Validate ``params`` against this cell; return the input size they expect.

    Raises:
      TypeError: ``params`` is not a mapping.
      ValueError: a missing or unexpected entry, or a wrong shape (naming the
        entry, the shape given and the shape expected).
    """
    if not hasattr(params, "keys") or "w_x" not in params:
      raise TypeError(f"params: expected a dict with at least 'w_x' for a {self.kind} cell, "
                      f"got {type(params).__name__}")
    if len(getattr(params["w_x"], "shape", ())) != 2:
      raise ValueError(f"params['w_x']: expected rank 2 [input_size, "
                       f"{self.num_blocks}*{self.hidden_size}], got shape "
                       f"{getattr(params['w_x'], 'shape', None)}")
    in_size = int(params["w_x"].shape[0])
    if input_size is not None and input_size != in_size:
      raise ValueError(f"xs: feature size {input_size} does not match params['w_x'] "
                       f"which expects input size {in_size}")
    expected = self.param_shapes(in_size)
    for k in params:
      if k not in expected:
        hint = " (the cell was made with use_bias=False)" if k in ("b", "b_hn", "b_if") else ""
        raise ValueError(f"params[{k!r}] is not a parameter of {self.describe()}{hint}; "
                         f"expected entries: {', '.join(sorted(expected))}")
    for k, shape in expected.items():
      if k not in params:
        hint = " (make the cell with use_bias=False for a cell without biases)" \
            if k in ("b", "b_hn", "b_if") else ""
        raise ValueError(f"params[{k!r}] is missing for {self.describe()}{hint}")
      got = tuple(getattr(params[k], "shape", ()))
      if got != shape:
        raise ValueError(f"params[{k!r}]: expected shape {shape} for {self.describe()} "
                         f"with input size {in_size}, got {got}")
    return in_size

  def describe(self) -> str:
    """Short human-readable description, e.g. ``lstm 'cifg' H=64``."""
    extra = f" P={self.proj_size}" if self.proj_size else ""
    if self.kind in XLSTM_CELLS and self.num_heads > 1:
      extra += f" heads={self.num_heads}"
    return f"{self.kind} {self.name!r} H={self.hidden_size}{extra}"

  # -- state and step --------------------------------------------------------
  def initial_state(self, batch_shape: int | tuple[int, ...] = (),
                    dtype: jnp.dtype = jnp.float32) -> Any:
    """Zero carry: :class:`LSTMState` for an LSTM, :class:`~lstm_jax.xlstm.SLSTMState`
    / :class:`~lstm_jax.xlstm.MLSTMState` for an sLSTM / mLSTM (an empty
    memory), ``h [*batch, H]`` otherwise."""
    if isinstance(batch_shape, int):
      batch_shape = (batch_shape,)
    batch_shape = tuple(batch_shape)
    zeros = lambda n: jnp.zeros(batch_shape + (n,), dtype)
    if self.kind == "slstm":
      return xlstm.SLSTMState(*(zeros(self.hidden_size) for _ in range(4)))
    if self.kind == "mlstm":
      nh, d = self.num_heads, self.hidden_size // self.num_heads
      return xlstm.MLSTMState(c=jnp.zeros(batch_shape + (nh, d, d), dtype),
                              n=jnp.zeros(batch_shape + (nh, d), dtype),
                              m=jnp.zeros(batch_shape + (nh,), dtype))
    if self.kind != "lstm":
      return zeros(self.hidden_size)
    gates = zeros(3 * self.hidden_size) if self.variant.gate_recurrence else None
    return LSTMState(h=zeros(self.output_size), c=zeros(self.hidden_size), gates=gates)

  def step(self, params: Params, carry: Any, x: Array) -> tuple[Any, Array]:
    """One step ``(params, carry, x [B, I]) -> (carry, y [B, output_size])``."""
    if self.kind == "lstm":
      return lstm_step(params, carry, x, self.variant)
    if self.kind == "gru":
      return gru_step(params, carry, x)
    if self.linear:
      return mincells.STEPS[self.kind](params, carry, x)
    if self.kind == "slstm":
      return xlstm.slstm_step(params, carry, x, self.forget_fn)
    if self.kind == "mlstm":
      return xlstm.mlstm_step(params, carry, x, self.num_heads, self.forget_fn)
    return elman_step(params, carry, x)


def _blocked_kernel(name: str | initializers.KernelInit, key: Array, fan_in: int,
                    hidden_size: int, num_blocks: int, *, variant: LSTMVariant,
                    scale: float, dtype: jnp.dtype) -> Array:
  """A fused kernel ``[fan_in, sum(widths)]`` for memory-cell blocks: each gate
  block ``[fan_in, H / block_size]`` and the candidate ``[fan_in, H]`` drawn
  on their own keys."""
  keys = jax.random.split(key, num_blocks)
  return jnp.concatenate([
      initializers.gate_kernel(name, k, fan_in, width, 1, scale=scale, dtype=dtype)
      for k, width in zip(keys, variant.widths(hidden_size))], axis=-1)


@functools.lru_cache(maxsize=256)
def _param_shapes(cell: Cell, input_size: int) -> tuple[tuple[str, tuple[int, ...]], ...]:
  shapes = jax.eval_shape(lambda: cell.init(jax.random.key(0), input_size))
  return tuple((k, tuple(v.shape)) for k, v in shapes.items())


def require_lstm(name: str | LSTMVariant) -> None:
  """Raise ValueError if ``name`` is a baseline (:data:`BASELINES`: GRU, Elman,
  minGRU, minLSTM) rather than an LSTM variant; used by the LSTM-only Flax
  wrappers."""
  if isinstance(name, str) and name in BASELINES:
    raise ValueError(f"cell={name!r} is not an LSTM variant; use RecurrentCell "
                     f"for {', '.join(map(repr, BASELINES))}")


def make_cell(name: str | LSTMVariant = "vanilla", hidden_size: int = 128, *,
              proj_size: int = 0, **options: Any) -> Cell:
  """Build a :class:`Cell` from a variant name (or an :class:`LSTMVariant`).

  Args:
    name: one of :data:`CELL_NAMES` (LSTM variants, ``"gru"``, ``"elman"``,
      ``"mingru"``, ``"minlstm"``, ``"slstm"``, ``"mlstm"``), or an :class:`LSTMVariant` for a custom
      combination of options.
    hidden_size: ``H``.
    proj_size: LSTMP projection size ``P < H``; required for ``"lstmp"``.
    **options: other :class:`Cell` fields (``kernel_init``, ``recurrent_init``,
      ``bias_init``, ``forget_bias``, ``chrono_t_max``, ``init_scale``,
      ``use_bias``, ``gate_bias_steps``, ``num_heads``, ``forget_fn``), or fields of :class:`LSTMVariant`
      (:data:`VARIANT_OPTIONS`) that change the named variant, e.g.
      ``block_size=2`` or ``output_gate=False`` (LSTM cells only).

  Returns:
    The cell description.

  Raises:
    ValueError: unknown name or option, or incompatible options.
  """
  allowed = ({f.name for f in dataclasses.fields(Cell)} - {"kind", "variant", "name",
                                                           "hidden_size", "proj_size"}
             | set(VARIANT_OPTIONS))
  unknown = sorted(set(options) - allowed)
  if unknown:
    raise ValueError(f"unknown cell option(s) {unknown}; allowed: {', '.join(sorted(allowed))}")
  changes = {k: options.pop(k) for k in VARIANT_OPTIONS if k in options}
  if isinstance(name, LSTMVariant):
    return Cell("lstm", hidden_size, dataclasses.replace(name, **changes), proj_size, "custom",
                **options)
  checks.choice("cell", name, CELL_NAMES)
  if name == "lstmp" and not proj_size:
    raise ValueError("cell='lstmp' needs proj_size > 0 (and smaller than hidden_size)")
  if name in BASELINES:
    changed = {k: v for k, v in changes.items() if v != getattr(LSTMVariant(), k)}
    if changed:
      k, v = next(iter(changed.items()))
      what = "is not an LSTM variant" if name in XLSTM_CELLS else "has no memory cells"
      checks.fail(k, v, f"cell={name!r} {what}, only LSTM cells take it "
                  f"(allowed: {getattr(LSTMVariant(), k)!r})")
    return Cell(name, hidden_size, LSTMVariant(), proj_size, name, **options)
  return Cell("lstm", hidden_size, dataclasses.replace(VARIANTS[name], **changes), proj_size,
              name, **options)

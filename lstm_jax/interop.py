"""Parameters and carries from/to ``torch.nn.LSTM`` and ``flax.linen`` LSTM cells.

Every converter works on NumPy arrays (or anything ``np.asarray`` accepts);
this module imports neither torch nor flax. Kernels here are ``[in, out]``
(``x @ w_x``); torch stores ``[out, in]`` (``W x``), flax ``[in, out]``.

**torch.nn.LSTM** (``D`` = 2 if bidirectional else 1, ``H`` hidden size, ``P``
projection size, ``H_out = P or H``, ``I_k`` the input size of layer ``k``:
``input_size`` for ``k = 0``, ``D * H_out`` above; suffix ``_reverse`` for the
backward direction)::

    torch key                 torch shape    ours (layer k, "fwd"/"bwd")
    weight_ih_l{k}[_reverse]  [4H, I_k]      w_x    = weight_ih.T      [I_k, 4H]
    weight_hh_l{k}[_reverse]  [4H, H_out]    w_h    = weight_hh.T      [H_out, 4H]
    bias_ih_l{k}[_reverse]    [4H]           b      = bias_ih + bias_hh  [4H]
    bias_hh_l{k}[_reverse]    [4H]           (exported as bias_ih = b, bias_hh = 0)
    weight_hr_l{k}[_reverse]  [P, H]         w_proj = weight_hr.T     [H, P]

Both use the gate order i, f, g, o, so no block is permuted. Carries:
torch's ``(h, c)`` with ``h [num_layers*D, B, H_out]``, ``c [num_layers*D, B,
H]``, row ``k*D + d`` for layer ``k`` and direction ``d`` (0 forward, 1
backward); ours is a list of per-layer :class:`~lstm_jax.cells.LSTMState`
(``(fwd, bwd)`` pairs when bidirectional).

**flax.linen.LSTMCell / OptimizedLSTMCell** (same parameter tree for both),
and the pure dicts (``nnx.state(cell, nnx.Param).to_pure_dict()``) of
**flax.nnx.LSTMCell** (the same tree with ``if_`` for ``if``) and
**flax.nnx.OptimizedLSTMCell** (already fused)::

    flax params                              ours
    ii, if, ig, io: {kernel [I, H]}          w_x = concat(ii, if, ig, io)   [I, 4H]
    hi, hf, hg, ho: {kernel [H, H],          w_h = concat(hi, hf, hg, ho)   [H, 4H]
                     bias [H]}               b   = concat(biases)           [4H]
    dense_i: {kernel [I, 4H]}                w_x                            (nnx optimized)
    dense_h: {kernel [H, 4H], bias [4H]}     w_h, b                         (nnx optimized)

Flax's carry is ``(c, h)``; ours is ``LSTMState(h, c)``; :func:`carry_from_flax`
and :func:`carry_to_flax` turn one into the other (the Flax cells of
:mod:`lstm_jax.linen` and :mod:`lstm_jax.nnx` carry ``(c, h)``, and
``(c, h, gates)`` for full gate recurrence). Flax adds no
forget-gate bias offset at run time, and neither do we (``forget_bias`` of a
:class:`~lstm_jax.cells.Cell` only sets the initial bias), so converted
parameters give identical outputs.

Only the plain LSTM (``vanilla``, and ``lstmp`` for torch) maps onto these
libraries; exporting any other variant raises ``ValueError``.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any, Literal, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from lstm_jax import checks
from lstm_jax.cells import Cell, LSTMState, LSTMVariant, Params, make_cell
from lstm_jax.sequence import stacked_rnn

Array = jax.Array

__all__ = [
    "TorchLSTM", "carry_from_flax", "carry_to_flax", "from_flax_lstm", "from_torch_lstm",
    "from_torch_state", "to_flax_lstm", "to_torch_lstm", "to_torch_state",
]

_GATES = ("i", "f", "g", "o")
_TORCH_KEY = re.compile(r"^(weight_ih|weight_hh|bias_ih|bias_hh|weight_hr)_l(\d+)(_reverse)?$")


# ----------------------------------------------------------------------------
# Helpers.


def _shape(value: Any) -> tuple[int, ...]:
  return tuple(int(d) for d in np.shape(value))


def _check_exportable(cell: Any, target: str, allow_proj: bool) -> None:
  """Raise ``ValueError`` unless ``cell`` is a plain LSTM that ``target`` has."""
  if not isinstance(cell, Cell):
    raise TypeError(f"cell: expected an lstm_jax.Cell (see lstm_jax.make_cell), "
                    f"got {type(cell).__name__}")
  if cell.kind != "lstm":
    raise ValueError(f"cell kind {cell.kind!r} cannot be converted to {target}: only the "
                     "plain LSTM ('vanilla'" + (" or 'lstmp'" if allow_proj else "") + ") can")
  if cell.variant != LSTMVariant():
    changed = [f.name for f in dataclasses.fields(LSTMVariant)
               if getattr(cell.variant, f.name) != getattr(LSTMVariant(), f.name)]
    raise ValueError(f"LSTM variant {cell.name!r} cannot be converted to {target}: it differs "
                     f"from the plain LSTM in {', '.join(changed)}; only 'vanilla'"
                     + (" or 'lstmp'" if allow_proj else "") + " can")
  if cell.proj_size and not allow_proj:
    raise ValueError(f"LSTM variant {cell.name!r} with proj_size={cell.proj_size} cannot be "
                     f"converted to {target}, which has no output projection")


# ----------------------------------------------------------------------------
# torch.nn.LSTM carries.


def from_torch_state(state: tuple[Any, Any], num_layers: int,
                     bidirectional: bool = False) -> list[Any]:
  """Split a torch ``(h, c)`` carry into per-layer states for :func:`stacked_rnn`.

  Row ``k * D + d`` of ``h`` and ``c`` is layer ``k``, direction ``d``
  (0 forward, 1 backward), as in ``torch.nn.LSTM``.

  Args:
    state: ``(h, c)`` with ``h [num_layers*D, B, H_out]`` and
      ``c [num_layers*D, B, H]`` (or ``[num_layers*D, H_out]`` /
      ``[num_layers*D, H]`` for an unbatched run).
    num_layers: number of layers.
    bidirectional: whether each layer has two directions (``D = 2``).

  Returns:
    A list of ``num_layers`` :class:`LSTMState` (``h [B, H_out]``,
    ``c [B, H]``), or of ``(fwd, bwd)`` pairs when bidirectional.

  Example::

      h0 = np.zeros((2 * 2, 8, 16)); c0 = np.zeros((2 * 2, 8, 16))
      states = from_torch_state((h0, c0), num_layers=2, bidirectional=True)
      states[1][0].h.shape  # (8, 16): layer 1, forward
  """
  if not isinstance(state, (tuple, list)) or len(state) != 2:
    raise ValueError(f"state: expected a pair (h, c) as torch.nn.LSTM takes, "
                     f"got {type(state).__name__}")
  h, c = (x if isinstance(x, jax.Array) else jnp.asarray(x) for x in state)
  d = 2 if bidirectional else 1
  for name, a in (("h", h), ("c", c)):
    if a.ndim not in (2, 3) or a.shape[0] != num_layers * d:
      raise ValueError(f"state {name}: expected shape [num_layers*num_directions="
                       f"{num_layers * d}, (batch,) size], got {tuple(a.shape)}")
  if h.ndim != c.ndim or h.shape[1:-1] != c.shape[1:-1]:
    raise ValueError(f"state: h {tuple(h.shape)} and c {tuple(c.shape)} disagree in their "
                     "batch dimension")
  rows = [LSTMState(h=h[i], c=c[i]) for i in range(num_layers * d)]
  if not bidirectional:
    return rows
  return [(rows[2 * k], rows[2 * k + 1]) for k in range(num_layers)]


def to_torch_state(finals: Sequence[Any], bidirectional: bool = False) -> tuple[Array, Array]:
  """Stack per-layer final states of :func:`stacked_rnn` into torch's ``(h_n, c_n)``.

  Args:
    finals: one :class:`LSTMState` per layer (``h [B, H_out]``, ``c [B, H]``),
      or one ``(fwd, bwd)`` pair per layer when bidirectional.
    bidirectional: whether ``finals`` holds pairs.

  Returns:
    ``(h_n [num_layers*D, B, H_out], c_n [num_layers*D, B, H])``; row
    ``k * D + d`` is layer ``k``, direction ``d``.

  Example::

      outputs, finals = stacked_rnn(cell, layers, xs, bidirectional=True)
      h_n, c_n = to_torch_state(finals, bidirectional=True)
  """
  rows = [s for layer in finals for s in (layer if bidirectional else (layer,))]
  return jnp.stack([s.h for s in rows]), jnp.stack([s.c for s in rows])


# ----------------------------------------------------------------------------
# torch.nn.LSTM parameters.


@jax.tree_util.register_pytree_node_class
@dataclasses.dataclass(frozen=True, eq=False)
class TorchLSTM:
  """A ``torch.nn.LSTM`` (inference, no dropout) running on :func:`stacked_rnn`.

  Build it with :func:`from_torch_lstm` (from a torch state dict) or
  :meth:`from_params` (from our parameters). Calling it follows
  ``torch.nn.LSTM.forward``::

      outputs, (h_n, c_n) = model(xs, (h_0, c_0))

  It is a pytree (``params`` are the leaves), so it can be passed through
  ``jax.jit`` and ``jax.grad``.

  Attributes:
    cell: the ``vanilla`` (or ``lstmp``) :class:`Cell` of every layer.
    params: one params dict per layer (``{"fwd": p, "bwd": p}`` when
      bidirectional), ready for :func:`stacked_rnn`.
    input_size: ``I`` of the first layer.
    num_layers: number of stacked layers.
    bidirectional: two directions per layer.
    batch_first: inputs/outputs are ``[B, T, ...]`` (else ``[T, B, ...]``).
  """
  cell: Cell
  params: list[Params]
  input_size: int
  num_layers: int
  bidirectional: bool = False
  batch_first: bool = False

  # -- pytree ----------------------------------------------------------------
  def tree_flatten(self):
    return (self.params,), (self.cell, self.input_size, self.num_layers, self.bidirectional,
                            self.batch_first)

  @classmethod
  def tree_unflatten(cls, aux, children):
    return cls(aux[0], children[0], *aux[1:])

  # -- sizes -----------------------------------------------------------------
  @property
  def hidden_size(self) -> int:
    """``H``, the cell size."""
    return self.cell.hidden_size

  @property
  def proj_size(self) -> int:
    """``P`` (0 without projection)."""
    return self.cell.proj_size

  @property
  def bias(self) -> bool:
    """Whether the layers have biases (torch's ``bias``)."""
    return self.cell.use_bias

  @property
  def num_directions(self) -> int:
    """``D``: 2 if bidirectional else 1."""
    return 2 if self.bidirectional else 1

  @property
  def output_size(self) -> int:
    """``H_out = proj_size or hidden_size``."""
    return self.cell.output_size

  def torch_kwargs(self) -> dict[str, Any]:
    """Keyword arguments for ``torch.nn.LSTM(**kwargs)`` with this architecture."""
    return dict(input_size=self.input_size, hidden_size=self.hidden_size,
                num_layers=self.num_layers, bias=self.bias, batch_first=self.batch_first,
                bidirectional=self.bidirectional, proj_size=self.proj_size)

  # -- construction and export -----------------------------------------------
  @classmethod
  def from_params(cls, cell: Cell, params: Sequence[Params], *,
                  bidirectional: bool | None = None, batch_first: bool = False) -> TorchLSTM:
    """Wrap our stacked parameters as a torch-compatible LSTM.

    Args:
      cell: a ``vanilla`` or ``lstmp`` LSTM cell (any other variant raises).
      params: one params dict per layer, as from :func:`lstm_jax.init_stack`
        (``{"fwd": p, "bwd": p}`` per layer when bidirectional).
      bidirectional: ``None`` infers it from ``params``.
      batch_first: input layout of the returned model.

    Returns:
      The :class:`TorchLSTM`.

    Raises:
      ValueError: an unsupported variant, or params that do not fit ``cell``.

    Example::

      cell = make_cell("vanilla", 16)
      model = TorchLSTM.from_params(cell, init_stack(cell, key, 8, num_layers=2))
    """
    _check_exportable(cell, "torch.nn.LSTM", allow_proj=True)
    if isinstance(params, Mapping) or not isinstance(params, (list, tuple)) or not params:
      raise ValueError("params: expected a non-empty list with one params dict per layer "
                       f"(see lstm_jax.init_stack), got {type(params).__name__}")
    is_pair = [isinstance(p, Mapping) and set(p) == {"fwd", "bwd"} for p in params]
    if bidirectional is None:
      bidirectional = all(is_pair)
    for k, pair in enumerate(is_pair):
      if pair != bidirectional:
        raise ValueError(f"params[{k}]: expected "
                         + ("a {'fwd': ..., 'bwd': ...} pair" if bidirectional
                            else "one params dict (not a fwd/bwd pair)")
                         + f" for bidirectional={bidirectional}")
    d = 2 if bidirectional else 1
    input_size = None
    for k, layer in enumerate(params):
      for part in (("fwd", "bwd") if bidirectional else (None,)):
        p = layer if part is None else layer[part]
        where = f"params[{k}]" + (f"[{part!r}]" if part else "")
        want = input_size if k == 0 else d * cell.output_size
        try:
          got = cell.check_params(p, want)
        except (ValueError, TypeError) as err:
          raise ValueError(f"{where}: {err}") from None
        if k == 0:
          input_size = got
    return cls(cell, [dict(layer) for layer in params], int(input_size), len(params),
               bool(bidirectional), bool(batch_first))

  def state_dict(self) -> dict[str, np.ndarray]:
    """The ``torch.nn.LSTM`` state dict (NumPy arrays); see :func:`to_torch_lstm`."""
    out: dict[str, np.ndarray] = {}
    h4 = 4 * self.hidden_size
    for k, layer in enumerate(self.params):
      for suffix, part in ((("", "fwd"), ("_reverse", "bwd")) if self.bidirectional
                           else (("", None),)):
        p = layer if part is None else layer[part]
        w_x = np.asarray(p["w_x"])
        out[f"weight_ih_l{k}{suffix}"] = np.ascontiguousarray(w_x.T)
        out[f"weight_hh_l{k}{suffix}"] = np.ascontiguousarray(np.asarray(p["w_h"]).T)
        if self.bias:
          b = np.asarray(p["b"]) if "b" in p else np.zeros((h4,), w_x.dtype)
          out[f"bias_ih_l{k}{suffix}"] = np.array(b)
          out[f"bias_hh_l{k}{suffix}"] = np.zeros_like(b)
        if self.proj_size:
          out[f"weight_hr_l{k}{suffix}"] = np.ascontiguousarray(np.asarray(p["w_proj"]).T)
    return out

  # -- forward ---------------------------------------------------------------
  def __call__(self, xs: Any, initial_state: tuple[Any, Any] | None = None, *,
               lengths: Any = None) -> tuple[Array, tuple[Array, Array]]:
    """``torch.nn.LSTM.forward``: ``(outputs, (h_n, c_n))``.

    Shapes (``D`` directions, ``L`` layers, ``H_out = proj_size or hidden_size``)::

        xs        [B, T, I] if batch_first else [T, B, I];  [T, I] unbatched
        h_0, c_0  [L*D, B, H_out], [L*D, B, H]   ([L*D, H_out], [L*D, H] unbatched)
        outputs   [B, T, D*H_out] if batch_first else [T, B, D*H_out]; [T, D*H_out]
        h_n, c_n  like h_0, c_0 (never batch-first, as in torch)

    Args:
      xs: the input sequence.
      initial_state: ``(h_0, c_0)``, or ``None`` for zeros.
      lengths: extension: ``[B]`` valid lengths in ``[0, T]`` with the
        semantics of a ``PackedSequence`` (``pack_padded_sequence`` with
        ``enforce_sorted=False``, then ``pad_packed_sequence``): outputs at
        padded steps are zero, ``h_n``/``c_n`` are each sequence's state after
        its last real step, and the backward direction starts there. Unlike
        ``pad_packed_sequence`` the outputs keep all ``T`` steps.

    Returns:
      ``(outputs, (h_n, c_n))``.

    Example::

      model = from_torch_lstm({k: v.numpy() for k, v in lstm.state_dict().items()})
      out, (h_n, c_n) = model(x.numpy())          # == lstm(x), as arrays
    """
    xs = xs if isinstance(xs, jax.Array) else jnp.asarray(xs)
    if xs.ndim not in (2, 3):
      layout = "[batch, time, features]" if self.batch_first else "[time, batch, features]"
      raise ValueError(f"xs: expected rank 3 {layout} or rank 2 [time, features], "
                       f"got shape {tuple(xs.shape)}")
    if xs.shape[-1] != self.input_size:
      raise ValueError(f"xs: expected {self.input_size} input features (input_size), "
                       f"got shape {tuple(xs.shape)}")
    batched = xs.ndim == 3
    states = None
    if initial_state is not None:
      if not isinstance(initial_state, (tuple, list)) or len(initial_state) != 2:
        raise ValueError("initial_state: expected a pair (h_0, c_0), got "
                         f"{type(initial_state).__name__}")
      batch = (xs.shape[0] if self.batch_first else xs.shape[1],) if batched else ()
      rows = self.num_layers * self.num_directions
      for name, value, size in (("h_0", initial_state[0], self.output_size),
                                ("c_0", initial_state[1], self.hidden_size)):
        want = (rows,) + batch + (size,)
        if _shape(value) != want:
          raise ValueError(f"initial_state {name}: expected shape {want} "
                           f"([num_layers*num_directions, {'batch, ' if batched else ''}"
                           f"{'proj_size or hidden_size' if name == 'h_0' else 'hidden_size'}]"
                           f"), got {_shape(value)}")
      states = from_torch_state(tuple(initial_state), self.num_layers, self.bidirectional)
    outputs, finals = stacked_rnn(self.cell, self.params, xs, states, lengths=lengths,
                                  time_major=not self.batch_first,
                                  bidirectional=self.bidirectional)
    return outputs, to_torch_state(finals, self.bidirectional)


def from_torch_lstm(state_dict: Mapping[str, Any], batch_first: bool = False) -> TorchLSTM:
  """Convert a ``torch.nn.LSTM`` state dict into a callable :class:`TorchLSTM`.

  ``num_layers``, ``bidirectional``, ``hidden_size``, ``proj_size``,
  ``input_size`` and ``bias`` are read from the keys and shapes (key layout in
  the module docstring): ``hidden_size = weight_ih_l0.shape[0] // 4``,
  ``input_size = weight_ih_l0.shape[1]``, ``proj_size =
  weight_hr_l0.shape[0]`` if present, ``bias`` if any ``bias_*`` key is
  present, ``bidirectional`` if any ``*_reverse`` key is present. The two
  biases are summed: ``b = bias_ih + bias_hh``.

  Args:
    state_dict: ``{key: array}`` with NumPy (or array-like) values, e.g.
      ``{k: v.numpy() for k, v in lstm.state_dict().items()}``.
    batch_first: the ``batch_first`` the torch module was built with (not part
      of a state dict).

  Returns:
    A :class:`TorchLSTM`; ``model(xs, (h_0, c_0))`` matches ``lstm(xs, (h_0, c_0))``.

  Raises:
    ValueError: an unexpected or missing key, or a shape that does not fit the
      others (the message names the key, the shape given and the one expected).

  Example::

      lstm = torch.nn.LSTM(8, 16, num_layers=2, bidirectional=True)
      model = from_torch_lstm({k: v.numpy() for k, v in lstm.state_dict().items()})
      model.cell, len(model.params)   # (lstm 'vanilla' H=16, 2)
      out, (h_n, c_n) = model(np.zeros((5, 3, 8), np.float32))   # [T, B, 2*16]
  """
  if not isinstance(state_dict, Mapping):
    raise TypeError(f"state_dict: expected a mapping of torch.nn.LSTM parameters, "
                    f"got {type(state_dict).__name__}")
  parsed: dict[str, tuple[str, int, bool]] = {}
  for key in state_dict:
    m = _TORCH_KEY.match(key) if isinstance(key, str) else None
    if m is None:
      raise ValueError(f"state_dict[{key!r}] is not a torch.nn.LSTM parameter; expected keys "
                       "weight_ih_l{k}, weight_hh_l{k}, bias_ih_l{k}, bias_hh_l{k}, "
                       "weight_hr_l{k} (each optionally with _reverse)")
    parsed[key] = (m.group(1), int(m.group(2)), bool(m.group(3)))
  if not parsed:
    raise ValueError("state_dict is empty: expected torch.nn.LSTM parameters "
                     "(weight_ih_l0, weight_hh_l0, ...)")
  num_layers = max(layer for _, layer, _ in parsed.values()) + 1
  bidirectional = any(rev for _, _, rev in parsed.values())
  bias = any(kind.startswith("bias") for kind, _, _ in parsed.values())
  proj = any(kind == "weight_hr" for kind, _, _ in parsed.values())
  arrays = {k: np.asarray(v) for k, v in state_dict.items()}
  for k, a in arrays.items():
    if not np.issubdtype(a.dtype, np.floating):
      raise ValueError(f"state_dict[{k!r}]: expected a floating-point array, got dtype {a.dtype}")

  for key in ("weight_ih_l0", "weight_hh_l0") + (("weight_hr_l0",) if proj else ()):
    if key not in arrays:
      raise ValueError(f"state_dict[{key!r}] is missing (needed to read the layer sizes)")
  w_ih = _shape(arrays["weight_ih_l0"])
  if len(w_ih) != 2 or w_ih[0] % 4 or not w_ih[0]:
    raise ValueError(f"state_dict['weight_ih_l0']: expected shape [4*hidden_size, "
                     f"input_size] (first dimension a positive multiple of 4), got {w_ih}")
  hidden, input_size = w_ih[0] // 4, w_ih[1]
  proj_size = 0
  if proj:
    w_hr = _shape(arrays["weight_hr_l0"])
    if len(w_hr) != 2 or not 0 < w_hr[0] < hidden:
      raise ValueError(f"state_dict['weight_hr_l0']: expected shape [proj_size, "
                       f"hidden_size={hidden}] with 0 < proj_size < hidden_size, got {w_hr}")
    proj_size = w_hr[0]
  out_size = proj_size or hidden
  d = 2 if bidirectional else 1
  out_name = "proj_size" if proj else "hidden_size"

  expected: dict[str, tuple[tuple[int, ...], str]] = {}
  for k in range(num_layers):
    in_k = input_size if k == 0 else d * out_size
    in_desc = (f"input_size={input_size}" if k == 0 else
               f"num_directions*{out_name}={in_k}")
    for suffix in ("", "_reverse")[:d]:
      expected[f"weight_ih_l{k}{suffix}"] = ((4 * hidden, in_k),
                                             f"[4*hidden_size, {in_desc}]")
      expected[f"weight_hh_l{k}{suffix}"] = ((4 * hidden, out_size),
                                             f"[4*hidden_size, {out_name}]")
      if bias:
        for b in ("bias_ih", "bias_hh"):
          expected[f"{b}_l{k}{suffix}"] = ((4 * hidden,), "[4*hidden_size]")
      if proj:
        expected[f"weight_hr_l{k}{suffix}"] = ((proj_size, hidden), "[proj_size, hidden_size]")
  sizes = (f"hidden_size={hidden}, input_size={input_size}, num_layers={num_layers}, "
           f"bidirectional={bidirectional}, bias={bias}, proj_size={proj_size}")
  for key, (shape, desc) in expected.items():
    if key not in arrays:
      raise ValueError(f"state_dict[{key!r}] is missing: expected shape {shape} {desc} "
                       f"for an LSTM with {sizes}")
    if _shape(arrays[key]) != shape:
      raise ValueError(f"state_dict[{key!r}]: expected shape {shape} {desc} for an LSTM "
                       f"with {sizes}, got {_shape(arrays[key])}")

  cell = make_cell("lstmp" if proj else "vanilla", hidden, proj_size=proj_size,
                   use_bias=bias, forget_bias=0.0)
  layers: list[Params] = []
  for k in range(num_layers):
    parts = {}
    for suffix, part in (("", "fwd"), ("_reverse", "bwd"))[:d]:
      p: Params = {"w_x": jnp.asarray(arrays[f"weight_ih_l{k}{suffix}"].T),
                   "w_h": jnp.asarray(arrays[f"weight_hh_l{k}{suffix}"].T)}
      if bias:
        p["b"] = jnp.asarray(arrays[f"bias_ih_l{k}{suffix}"] + arrays[f"bias_hh_l{k}{suffix}"])
      if proj:
        p["w_proj"] = jnp.asarray(arrays[f"weight_hr_l{k}{suffix}"].T)
      parts[part] = p
    layers.append(parts if bidirectional else parts["fwd"])
  return TorchLSTM(cell, layers, input_size, num_layers, bidirectional, bool(batch_first))


def to_torch_lstm(params: Sequence[Params] | TorchLSTM, cell: Cell | None = None, *,
                  bidirectional: bool | None = None) -> dict[str, np.ndarray]:
  """Export stacked LSTM parameters as a ``torch.nn.LSTM`` state dict of NumPy arrays.

  Inverse of :func:`from_torch_lstm` up to the bias split: ``bias_ih = b``,
  ``bias_hh = 0`` (no bias keys when ``cell.use_bias`` is false; a params dict
  without ``b`` on a biased cell exports zeros). Key layout in the module
  docstring; keys come in torch's order. Build the torch module with
  ``TorchLSTM.from_params(cell, params).torch_kwargs()``.

  Args:
    params: one params dict per layer (``{"fwd": p, "bwd": p}`` when
      bidirectional), or a :class:`TorchLSTM` (then ``cell`` is not needed).
    cell: a ``vanilla`` or ``lstmp`` LSTM cell.
    bidirectional: ``None`` infers it from ``params``.

  Returns:
    ``{"weight_ih_l0": [4H, I], "weight_hh_l0": [4H, H_out], ...}``.

  Raises:
    ValueError: ``cell`` is another variant (GRU, peephole, layer norm, ...;
      the message names it), or params that do not fit it.

  Example::

      cell = make_cell("lstmp", 16, proj_size=8)
      params = init_stack(cell, jax.random.key(0), 4, num_layers=2)
      sd = to_torch_lstm(params, cell)
      lstm = torch.nn.LSTM(4, 16, num_layers=2, proj_size=8)
      lstm.load_state_dict({k: torch.from_numpy(v) for k, v in sd.items()})
  """
  if isinstance(params, TorchLSTM):
    if cell is not None and cell != params.cell:
      raise ValueError(f"cell: {cell.describe()} differs from the model's "
                       f"{params.cell.describe()}")
    if bidirectional is not None and bidirectional != params.bidirectional:
      raise ValueError(f"bidirectional={bidirectional} differs from the model's "
                       f"{params.bidirectional}")
    return params.state_dict()
  if cell is None:
    raise TypeError("to_torch_lstm: pass the cell the params belong to "
                    "(or a TorchLSTM as params)")
  return TorchLSTM.from_params(cell, params, bidirectional=bidirectional).state_dict()


# ----------------------------------------------------------------------------
# flax.linen / flax.nnx LSTM cells.


def carry_from_flax(carry: Any) -> LSTMState:
  """Flax LSTM carry ``(c, h)`` -> our ``LSTMState(h, c)``.

  Args:
    carry: ``(c [..., H], h [..., R])`` as Flax's LSTM cells and the cells of
      :mod:`lstm_jax.linen` / :mod:`lstm_jax.nnx` use, or
      ``(c, h, gates [..., 3H])`` for a gate-recurrent (FGR) cell of those
      modules. An :class:`LSTMState` is returned as it is.

  Returns:
    ``LSTMState(h, c)`` (``LSTMState(h, c, gates)`` for FGR).

  Raises:
    ValueError: ``carry`` is not a tuple (or list) of 2 or 3 entries.

  Example::

      carry = nn.LSTMCell(16).initialize_carry(key, (8, 4))   # (c, h)
      state = carry_from_flax(carry)                          # LSTMState(h, c)
  """
  if isinstance(carry, LSTMState):
    return carry
  if not isinstance(carry, (tuple, list)) or len(carry) not in (2, 3):
    size = f" of {len(carry)}" if isinstance(carry, (tuple, list)) else ""
    raise ValueError(f"carry: expected a flax LSTM carry (c, h), or (c, h, gates) for FGR, "
                     f"got {type(carry).__name__}{size}")
  c, h, *gates = carry
  return LSTMState(h=h, c=c, gates=gates[0] if gates else None)


def carry_to_flax(state: LSTMState) -> tuple[Any, ...]:
  """Our ``LSTMState(h, c)`` -> flax LSTM carry ``(c, h)``.

  Args:
    state: :class:`LSTMState` with ``h [..., R]`` and ``c [..., H]`` (and
      ``gates [..., 3H]`` for full gate recurrence).

  Returns:
    ``(c, h)``, or ``(c, h, gates)`` for a gate-recurrent (FGR) state (the
    carry of the FGR cells of :mod:`lstm_jax.linen` and :mod:`lstm_jax.nnx`;
    Flax itself has no such cell).

  Raises:
    ValueError: ``state`` is not an :class:`LSTMState`.

  Example::

      _, final = lstm_jax.rnn(cell, params, xs)
      (c, h) = carry_to_flax(final)
  """
  if not isinstance(state, LSTMState):
    raise ValueError(f"state: expected an lstm_jax.LSTMState, got {type(state).__name__}")
  if state.gates is not None:
    return state.c, state.h, state.gates
  return state.c, state.h


_FLAX_LAYOUTS = {"linen": "flax.linen.LSTMCell", "nnx": "flax.nnx.LSTMCell",
                 "nnx_optimized": "flax.nnx.OptimizedLSTMCell"}
"""``to_flax_lstm`` layouts and the Flax cell each is for."""


def _plain_flax(tree: Any) -> Any:
  """Nested mappings as dicts, ``nnx.Variable`` leaves (of an ``nnx.State``) as arrays."""
  if isinstance(tree, Mapping):
    return {k: _plain_flax(v) for k, v in tree.items()}
  return tree.get_value() if hasattr(tree, "get_value") else tree


def _unwrap_flax(flax_params: Any) -> dict[str, Any]:
  if not isinstance(flax_params, Mapping):
    raise TypeError(f"flax_params: expected a mapping of flax LSTM cell params, "
                    f"got {type(flax_params).__name__}")
  tree = _plain_flax(flax_params)
  for wrapper in ("params", "cell"):
    if set(tree) == {wrapper}:
      tree = tree[wrapper]
  return tree


def _check_leaves(tree: Mapping[str, Any], want: dict[str, tuple[str, ...]], what: str) -> None:
  """Entries of ``tree`` are exactly ``want`` (name -> leaf names); one-line errors."""
  for name in tree:
    if name not in want:
      raise ValueError(f"flax_params[{name!r}] is not a parameter of {what}; "
                       f"expected entries: {', '.join(want)}")
  for name, leaves in want.items():
    if name not in tree:
      raise ValueError(f"flax_params[{name!r}] is missing; expected entries: {', '.join(want)}")
    sub = tree[name]
    if not isinstance(sub, Mapping) or set(sub) != set(leaves):
      got = sorted(sub) if isinstance(sub, Mapping) else type(sub).__name__
      raise ValueError(f"flax_params[{name!r}]: expected entries {list(leaves)}, got {got}")


def _from_flax_fused(tree: Mapping[str, Any]) -> Params:
  """``flax.nnx.OptimizedLSTMCell``'s ``{dense_i, dense_h}`` -> ours."""
  _check_leaves(tree, {"dense_i": ("kernel",), "dense_h": ("kernel", "bias")},
                "flax.nnx.OptimizedLSTMCell")
  kh = _shape(tree["dense_h"]["kernel"])
  if len(kh) != 2 or kh[1] != 4 * kh[0] or not kh[0]:
    raise ValueError(f"flax_params['dense_h']['kernel']: expected shape [H, 4H], got {kh}")
  h = kh[0]
  kx, b = _shape(tree["dense_i"]["kernel"]), _shape(tree["dense_h"]["bias"])
  if len(kx) != 2 or kx[1] != 4 * h:
    raise ValueError(f"flax_params['dense_i']['kernel']: expected shape [input_size, {4 * h}] "
                     f"(4H with H={h}), got {kx}")
  if b != (4 * h,):
    raise ValueError(f"flax_params['dense_h']['bias']: expected shape {(4 * h,)}, got {b}")
  return {"w_x": jnp.asarray(tree["dense_i"]["kernel"]),
          "w_h": jnp.asarray(tree["dense_h"]["kernel"]),
          "b": jnp.asarray(tree["dense_h"]["bias"])}


def from_flax_lstm(flax_params: Mapping[str, Any]) -> Params:
  """Convert Flax LSTM cell params (linen or NNX) to ours.

  Layouts understood (module docstring): the tree shared by
  ``flax.linen.LSTMCell`` and ``OptimizedLSTMCell``::

      {"ii": {"kernel": [I, H]}, "if": ..., "ig": ..., "io": ...,
       "hi": {"kernel": [H, H], "bias": [H]}, "hf": ..., "hg": ..., "ho": ...}

  the same with ``"if_"`` for ``"if"`` (``flax.nnx.LSTMCell``), and
  ``{"dense_i": {"kernel": [I, 4H]}, "dense_h": {"kernel": [H, 4H], "bias": [4H]}}``
  (``flax.nnx.OptimizedLSTMCell``). A ``{"params": ...}`` variables dict and
  the ``{"cell": ...}`` level added by ``flax.linen.RNN`` are unwrapped; an
  ``nnx.State`` (``nnx.state(cell, nnx.Param)``) or its ``to_pure_dict()``
  is read as the NNX tree.

  Args:
    flax_params: the cell's params (NumPy or JAX arrays).

  Returns:
    ``{"w_x": [I, 4H], "w_h": [H, 4H], "b": [4H]}`` for a ``vanilla`` cell
    of size ``H`` (e.g. ``make_cell("vanilla", H, forget_bias=0.0)``).

  Raises:
    ValueError: a missing or unexpected entry or a shape that does not fit
      (the message names the entry).

  Example::

      variables = nn.RNN(nn.LSTMCell(16)).init(key, xs)
      params = from_flax_lstm(variables)                # unwraps params/cell
      ys, _ = lstm_jax.rnn(make_cell("vanilla", 16, forget_bias=0.0), params, xs)

      cell = nnx.OptimizedLSTMCell(4, 16, rngs=nnx.Rngs(0))
      params = from_flax_lstm(nnx.state(cell, nnx.Param))
  """
  tree = _unwrap_flax(flax_params)
  if "dense_i" in tree or "dense_h" in tree:
    return _from_flax_fused(tree)
  if "if_" in tree and "if" not in tree:  # flax.nnx.LSTMCell's name for the f gate
    tree = {("if" if k == "if_" else k): v for k, v in tree.items()}
  want = {f"i{g}": ("kernel",) for g in _GATES} | {f"h{g}": ("kernel", "bias") for g in _GATES}
  _check_leaves(tree, want, "flax.linen.LSTMCell")
  hi = _shape(tree["hi"]["kernel"])
  ii = _shape(tree["ii"]["kernel"])
  if len(hi) != 2 or hi[0] != hi[1] or not hi[0]:
    raise ValueError(f"flax_params['hi']['kernel']: expected shape [H, H], got {hi}")
  if len(ii) != 2:
    raise ValueError(f"flax_params['ii']['kernel']: expected shape [input_size, H], got {ii}")
  h, i = hi[0], ii[0]
  shapes = {"i": {"kernel": (i, h)}, "h": {"kernel": (h, h), "bias": (h,)}}
  for name, leaves in want.items():
    for leaf in leaves:
      exp, got = shapes[name[0]][leaf], _shape(tree[name][leaf])
      if got != exp:
        raise ValueError(f"flax_params[{name!r}][{leaf!r}]: expected shape {exp} "
                         f"(input_size={i}, features={h}), got {got}")
  cat = lambda prefix, leaf: jnp.concatenate([jnp.asarray(tree[prefix + g][leaf])
                                              for g in _GATES], axis=-1)
  return {"w_x": cat("i", "kernel"), "w_h": cat("h", "kernel"), "b": cat("h", "bias")}


def to_flax_lstm(params: Params, cell: Cell | None = None, *,
                 layout: Literal["linen", "nnx", "nnx_optimized"] = "linen"
                 ) -> dict[str, dict[str, Array]]:
  """Convert our LSTM params to the params of a Flax LSTM cell.

  Inverse of :func:`from_flax_lstm`. A params dict without ``b`` (a cell
  with ``use_bias=False``) exports zero biases, since flax's cells always have
  them.

  Args:
    params: ``{"w_x": [I, 4H], "w_h": [H, 4H], "b": [4H]}`` of a ``vanilla``
      cell.
    cell: optional; when given it must be a ``vanilla`` LSTM without
      projection (other variants raise ``ValueError`` naming the variant) and
      ``params`` are checked against it.
    layout: ``"linen"`` (``flax.linen.LSTMCell`` and ``OptimizedLSTMCell``:
      ``ii, ..., ho``), ``"nnx"`` (``flax.nnx.LSTMCell``: the same with
      ``if_``) or ``"nnx_optimized"`` (``flax.nnx.OptimizedLSTMCell``:
      ``dense_i``, ``dense_h``).

  Returns:
    The bare params tree. Linen: use ``{"params": tree}`` for ``apply``
    (inside ``flax.linen.RNN`` it sits under ``{"params": {"cell": tree}}``).
    NNX: a pure dict for ``nnx.replace_by_pure_dict(nnx.state(cell, nnx.Param),
    tree)`` and then ``nnx.update(cell, state)``.

  Raises:
    ValueError: an unsupported variant or parameter (``w_proj``, ``w_peep``,
      ...), inconsistent shapes (the message names the entry), or an unknown
      ``layout``.

  Example::

      tree = to_flax_lstm(cell.init(key, 4), cell)
      (c, h), y = nn.LSTMCell(cell.hidden_size).apply({"params": tree}, carry, x)
  """
  target = _FLAX_LAYOUTS[checks.choice("layout", layout, tuple(_FLAX_LAYOUTS))]
  if not isinstance(params, Mapping):
    raise TypeError(f"params: expected one LSTM layer's params dict, got {type(params).__name__}")
  if cell is not None:
    _check_exportable(cell, target, allow_proj=False)
    cell.check_params(params)
  for k in params:
    if k not in ("w_x", "w_h", "b"):
      raise ValueError(f"params[{k!r}] has no counterpart in {target}, which "
                       "only has w_x, w_h and b (a plain LSTM without projection)")
  for k in ("w_x", "w_h"):
    if k not in params:
      raise ValueError(f"params[{k!r}] is missing")
  w_x, w_h = jnp.asarray(params["w_x"]), jnp.asarray(params["w_h"])
  if w_h.ndim != 2 or w_h.shape[1] != 4 * w_h.shape[0]:
    raise ValueError(f"params['w_h']: expected shape [H, 4H], got {tuple(w_h.shape)}")
  h = w_h.shape[0]
  if w_x.ndim != 2 or w_x.shape[1] != 4 * h:
    raise ValueError(f"params['w_x']: expected shape [input_size, {4 * h}] (4H with H={h}), "
                     f"got {tuple(w_x.shape)}")
  b = jnp.asarray(params["b"]) if "b" in params else jnp.zeros((4 * h,), w_h.dtype)
  if b.shape != (4 * h,):
    raise ValueError(f"params['b']: expected shape {(4 * h,)}, got {tuple(b.shape)}")
  if layout == "nnx_optimized":
    return {"dense_i": {"kernel": w_x}, "dense_h": {"kernel": w_h, "bias": b}}
  split = lambda a: jnp.split(a, 4, axis=-1)
  f_name = "if_" if layout == "nnx" else "if"
  tree: dict[str, dict[str, Array]] = {}
  for g, kx in zip(_GATES, split(w_x)):
    tree[f_name if g == "f" else f"i{g}"] = {"kernel": kx}
  for g, kh, bh in zip(_GATES, split(w_h), split(b)):
    tree[f"h{g}"] = {"kernel": kh, "bias": bh}
  return tree

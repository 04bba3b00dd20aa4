"""Run a cell over a sequence with ``jax.lax.scan``: lengths, reverse, stacks,
bidirectional runs. How a layer is computed (the plain scan, the fused LSTM
layer, or the parallel prefix scan of a minGRU/minLSTM) is the ``impl``
option, decided in one place: :func:`resolve_impl`.

All public functions validate their arguments in Python (shapes, dtypes, and
the values of concrete ``lengths``) before anything is traced or compiled, then
call one jitted program whose static arguments are the hashable
:class:`~lstm_jax.cells.Cell` and the options; a second call with the same
shapes reuses the compiled program.

Shapes (``B`` batch, ``T`` time, ``I`` input size, ``R`` output size of the
cell, ``D`` = 2 for bidirectional runs else 1)::

    xs        [B, T, I]  (time_major=False, default)   or  [T, B, I]
              [T, I]     unbatched
    outputs   [B, T, D*R] (or [T, B, D*R]; [T, D*R] unbatched)
    lengths   [B] integers in [0, T]

Padding semantics with ``lengths``: steps ``t >= lengths[b]`` leave the state
of sequence ``b`` unchanged and output zeros, so the final state is the state
after the last real step -- computed inside the scan, without storing every
step's state. A reverse run processes each sequence from its own last real
step down to step 0 (the padded tail is skipped, not read first), so a
bidirectional run over a padded batch equals the runs over each sequence
alone.
"""

from __future__ import annotations

import functools
import math
from typing import Any, Callable, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from lstm_jax import checks
from lstm_jax import fused
from lstm_jax import mincells
from lstm_jax import xlstm
from lstm_jax.cells import PARALLEL_CELLS, Cell, Params, gru_step

Array = jax.Array
State = Any


# ----------------------------------------------------------------------------
# Validation (pure Python on shapes; runs before tracing).


def _check_xs(xs: Any, time_major: bool) -> tuple[int, int, int, bool]:
  """Return (batch, time, features, batched) for ``xs`` or raise."""
  shape = getattr(xs, "shape", None)
  if shape is None:
    raise TypeError(f"xs: expected an array, got {type(xs).__name__}")
  layout = "[time, batch, features]" if time_major else "[batch, time, features]"
  if len(shape) not in (2, 3):
    raise ValueError(f"xs: expected rank 3 {layout} or rank 2 [time, features], "
                     f"got shape {tuple(shape)}")
  if not jnp.issubdtype(xs.dtype, jnp.floating):
    raise TypeError(f"xs: expected a floating dtype (float32, bfloat16, ...), got {xs.dtype}")
  if len(shape) == 2:
    return 1, int(shape[0]), int(shape[1]), False
  b, t = (shape[1], shape[0]) if time_major else (shape[0], shape[1])
  return int(b), int(t), int(shape[2]), True


def _check_lengths(lengths: Any, batch: int, time: int, batched: bool) -> Array | None:
  if lengths is None:
    return None
  if not isinstance(lengths, (jax.Array, jax.core.Tracer)):
    lengths = jnp.asarray(lengths)
  shape = tuple(getattr(lengths, "shape", ()))
  want = (batch,) if batched else ()
  if shape != want and not (not batched and shape == (1,)):
    raise ValueError(f"lengths: expected shape {want} (one length per sequence), got {shape}")
  if not jnp.issubdtype(lengths.dtype, jnp.integer):
    raise TypeError(f"lengths: expected an integer dtype, got {lengths.dtype}")
  if not isinstance(lengths, jax.core.Tracer):
    values = np.asarray(lengths)
    bad = (values < 0) | (values > time)
    if bad.any():
      raise ValueError(f"lengths: every length must lie in [0, T={time}], got "
                       f"{values[bad].tolist()[:5]} at position(s) "
                       f"{np.flatnonzero(bad).tolist()[:5]}")
  return jnp.reshape(lengths, (batch,))


def _check_state(cell: Cell, state: Any, batch: int, batched: bool, name: str) -> Any:
  if state is None:
    return None
  expected = cell.initial_state((batch,) if batched else ())
  exp_leaves, exp_def = jax.tree_util.tree_flatten(expected)
  try:
    leaves = exp_def.flatten_up_to(state)
  except (ValueError, TypeError) as err:
    raise ValueError(f"{name}: expected a state structured like {exp_def} for "
                     f"{cell.describe()}, got {jax.tree_util.tree_structure(state)}") from err
  for leaf, exp in zip(leaves, exp_leaves):
    if tuple(getattr(leaf, "shape", ())) != exp.shape:
      raise ValueError(f"{name}: expected leaf shapes {[e.shape for e in exp_leaves]} for "
                       f"{cell.describe()} and batch {batch}, got "
                       f"{[tuple(getattr(l, 'shape', ())) for l in leaves]}")
  if not batched:
    state = jax.tree_util.tree_map(lambda a: a[None], state)
  return state


def _check_common(cell: Any, unroll: Any, time_major: Any, reverse: Any) -> None:
  if not isinstance(cell, Cell):
    raise TypeError(f"cell: expected an lstm_jax.Cell (see lstm_jax.make_cell), "
                    f"got {type(cell).__name__}")
  checks.integer("unroll", unroll, 1)
  checks.boolean("time_major", time_major)
  checks.boolean("reverse", reverse)


# ----------------------------------------------------------------------------
# The scan (time-major, batched, already validated).


def _masked(mask: Array, new: Any, old: Any) -> Any:
  """Where ``mask[b]`` keep ``new`` else ``old``, leafwise over a state pytree."""
  def pick(n, o):
    m = mask.reshape(mask.shape + (1,) * (n.ndim - mask.ndim))
    return jnp.where(m, n, o)
  return jax.tree_util.tree_map(pick, new, old)


Remat = bool | str | int
"""Memory policy of the backward pass: ``False`` or ``"none"`` (store every step's
intermediates), ``True`` or ``"step"`` (store only each step's carry and
recompute the step), ``"sqrt"`` (store one carry every ``ceil(sqrt(T))`` steps
and recompute the segment between: memory ``O(sqrt(T))``, about one extra
forward pass of compute), or an integer ``k > 1`` (the same with segments of
``k`` steps, also as a string of digits)."""


REMATS = ("none", "step", "sqrt")


def remat_policy(remat: Any) -> str | int:
  """The one normalised form of a :data:`Remat` value: ``"none"``, ``"step"``,
  ``"sqrt"`` or a segment length ``k > 1`` (an ``int``).

  ``False`` is ``"none"``, ``True`` is ``"step"``, a string of digits is its
  integer.

  Raises:
    ValueError: anything else (naming the value and what is allowed).
  """
  if isinstance(remat, (bool, np.bool_)):
    return "step" if remat else "none"
  if isinstance(remat, str) and remat.isdigit():
    remat = int(remat)
  if (isinstance(remat, str) and remat in REMATS) or (checks.is_int(remat) and remat > 1):
    return remat if isinstance(remat, str) else int(remat)
  checks.fail("remat", remat, "expected 'none' (or False), 'step' (or True: per-step "
              "recompute), 'sqrt' (O(sqrt(T)) memory) or a segment length > 1 such as 100")


def remat_chunk(remat: str | int, time: int) -> int:
  """Segment length for a normalised ``remat`` (:func:`remat_policy`) at
  ``time`` steps (0: no segmenting)."""
  if remat == "sqrt":
    return max(1, math.isqrt(max(time - 1, 0)) + 1)
  return remat if isinstance(remat, int) else 0


class Regularization(NamedTuple):
  """Regularisers of a stack's training run, each a rate in ``[0, 1)`` (0: off).

  Hashable (a static option of jitted code). At training each draws fresh
  randomness from a per-sequence key; at evaluation (no key) each is
  deterministic: dropout and recurrent dropout are the identity, zoneout is
  its expectation.

  Attributes:
    dropout_in: dropout on every layer's input ``x_t`` (``[T, B, I]``), a new
      mask per step: ``x_t * m_t / (1 - p)``, ``m_t ~ Bernoulli(1 - p)``.
    dropout_out: dropout on every layer's output ``y_t`` (the top layer's
      before the readout), a new mask per step.
    recurrent_dropout: variational recurrent dropout (Gal & Ghahramani 2016):
      ``h_{t-1}`` enters the recurrent matmul as ``h_{t-1} * m / (1 - p)``
      with one mask ``m ~ Bernoulli(1 - p)`` of ``[R]`` per sequence and
      layer, shared by all steps (the carried ``h`` itself is not masked; a
      GRU's update ``u * h_{t-1}`` reads it unmasked). LSTM, GRU and Elman
      cells (minGRU and minLSTM have no recurrent matmul).
    zoneout_c: zoneout of the LSTM cell state (Krueger et al. 2016):
      ``c_t = d * c_{t-1} + (1 - d) * c~_t`` with ``d ~ Bernoulli(z)`` per
      unit and step at training, ``c_t = z c_{t-1} + (1 - z) c~_t`` at
      evaluation (``c~_t`` the cell's own update).
    zoneout_h: the same for ``h`` (the carry of a GRU, Elman RNN, minGRU or
      minLSTM); the layer's output is the zoned-out ``h_t``.
  """
  dropout_in: float = 0.0
  dropout_out: float = 0.0
  recurrent_dropout: float = 0.0
  zoneout_c: float = 0.0
  zoneout_h: float = 0.0

  def check(self, cell: Cell | None = None) -> "Regularization":
    """The rates as floats, each checked to lie in ``[0, 1)`` (and, with
    ``cell``, to apply to it).

    Raises:
      ValueError: one line naming the field, e.g. ``zoneout_c=1.0 is not
        allowed; ...``.
    """
    rates = {}
    for name, value in self._asdict().items():
      ok = (isinstance(value, (int, float, np.integer, np.floating))
            and not isinstance(value, (bool, np.bool_)) and 0 <= value < 1)
      if not ok:
        checks.fail(name, value, "expected a rate in [0, 1) (0: off)")
      rates[name] = float(value)
    reg = Regularization(**rates)
    if cell is not None:
      if reg.recurrent_dropout and cell.kind not in ("lstm", "gru", "elman", "slstm"):
        checks.fail("recurrent_dropout", reg.recurrent_dropout,
                    f"cell kind {cell.kind!r} has no recurrent matmul; allowed: 0.0, or an "
                    "LSTM, GRU, Elman or sLSTM cell")
      if reg.zoneout_c and cell.kind != "lstm":
        checks.fail("zoneout_c", reg.zoneout_c, f"cell kind {cell.kind!r} has no cell state "
                    "c to zone out; allowed: 0.0" + ("" if cell.kind == "mlstm" else
                                                     " (zoneout_h acts on its state h)"))
      if reg.zoneout_h and cell.kind == "mlstm":
        checks.fail("zoneout_h", reg.zoneout_h, "cell kind 'mlstm' carries a matrix memory, "
                    "not h; allowed: 0.0")
    return reg

  @property
  def active(self) -> bool:
    """Whether any rate is non-zero."""
    return any(self)

  @property
  def in_recurrence(self) -> bool:
    """Whether a regulariser acts inside the recurrence (recurrent dropout,
    zoneout): the layer then runs on the plain scan."""
    return bool(self.recurrent_dropout or self.zoneout_c or self.zoneout_h)


class StateNoise(NamedTuple):
  """The regularisers inside one layer's recurrence (:func:`scan_layer`).

  Attributes:
    recurrent_dropout, zoneout_c, zoneout_h: as in :class:`Regularization`.
    keys: ``[B]`` per-sequence PRNG keys at training; ``None`` at evaluation.
  """
  recurrent_dropout: float = 0.0
  zoneout_c: float = 0.0
  zoneout_h: float = 0.0
  keys: Array | None = None


def fold_rows(keys: Array, data: int) -> Array:
  """``fold_in(keys[b], data)`` for every row ``b`` of ``[B]`` keys."""
  return jax.vmap(jax.random.fold_in, in_axes=(0, None))(keys, data)


def sequence_keys(key: Array, batch: int) -> Array:
  """``[B]`` per-sequence keys ``fold_in(key, b)`` from one key, so a
  sequence's randomness depends on its index in the batch, not on how the
  batch is split over devices; ``[B]`` keys are returned as they are.
  Raw ``uint32`` keys are wrapped (:func:`jax.random.wrap_key_data`)."""
  if not jnp.issubdtype(key.dtype, jax.dtypes.prng_key):
    key = jax.random.wrap_key_data(key)
  if key.shape == (batch,):
    return key
  if key.shape != ():
    raise ValueError(f"key: expected one PRNG key or {batch} (one per sequence), got shape "
                     f"{tuple(key.shape)}")
  return jax.vmap(lambda b: jax.random.fold_in(key, b))(jnp.arange(batch))


def dropout(xs: Array, rate: float, keys: Array) -> Array:
  """Inverted dropout of time-major ``xs [T, B, F]``: ``xs * m / (1 - rate)``
  with ``m ~ Bernoulli(1 - rate)`` per step and unit, row ``b`` drawn from
  ``keys[b]`` (``[B]`` keys)."""
  keep = 1.0 - rate
  mask = jax.vmap(lambda k: jax.random.bernoulli(k, keep, (xs.shape[0], xs.shape[2])))(keys)
  return jnp.where(jnp.swapaxes(mask, 0, 1), xs / jnp.asarray(keep, xs.dtype),
                   jnp.zeros((), xs.dtype))


def recurrent_mask(keys: Array, rate: float, size: int) -> Array:
  """The variational recurrent-dropout mask of a layer: ``[B, size]`` float32,
  ``m / (1 - rate)`` with ``m ~ Bernoulli(1 - rate)`` drawn from
  ``fold_in(keys[b], 2)``, the same at every step of sequence ``b``."""
  keep = 1.0 - rate
  draw = lambda k: jax.random.bernoulli(k, keep, (size,))
  return jax.vmap(draw)(fold_rows(keys, _RECURRENT)).astype(jnp.float32) / keep


# Purposes folded into a layer's per-sequence keys.
_DROP_IN, _DROP_OUT, _RECURRENT, _ZONEOUT, _BACKWARD = 0, 1, 2, 3, 4


def _noisy(cell: Cell, step: Callable[..., Any], noise: StateNoise
           ) -> Callable[[Params, Any, Array, Array], tuple[Any, Array]]:
  """``step(params, carry, x)`` with recurrent dropout and zoneout, as
  ``(params, carry, x, t) -> (carry, y)`` (``t`` the step's time index)."""
  lstm = cell.kind == "lstm"
  has_h = cell.kind in ("lstm", "slstm")  # the carry is a state tuple with an h field
  keys = noise.keys
  rec_mask = None
  if keys is not None and noise.recurrent_dropout:
    rec_mask = recurrent_mask(keys, noise.recurrent_dropout, cell.output_size)
  zone_keys = None if keys is None else fold_rows(keys, _ZONEOUT)

  def zone(rate, old, fresh, which, t):
    if not rate:
      return fresh
    if zone_keys is None:
      return (rate * old + (1.0 - rate) * fresh).astype(fresh.dtype)
    keys_t = fold_rows(fold_rows(zone_keys, t), which)
    d = jax.vmap(lambda k: jax.random.bernoulli(k, rate, old.shape[1:]))(keys_t)
    return jnp.where(d, old, fresh)

  def run(params, carry, x, t):
    if rec_mask is None:
      new, y = step(params, carry, x)
    elif has_h:
      new, y = step(params, carry._replace(h=carry.h * rec_mask.astype(carry.h.dtype)), x)
    elif cell.kind == "gru":
      new, y = gru_step(params, carry, x, carry * rec_mask.astype(carry.dtype))
    else:
      new, y = step(params, carry * rec_mask.astype(carry.dtype), x)
    if noise.zoneout_c or noise.zoneout_h:
      if lstm:
        c = zone(noise.zoneout_c, carry.c, new.c, 0, t)
        h = zone(noise.zoneout_h, carry.h, new.h, 1, t)
        new, y = new._replace(h=h, c=c), h
      elif has_h:
        h = zone(noise.zoneout_h, carry.h, new.h, 1, t)
        new, y = new._replace(h=h), h
      else:
        new = zone(noise.zoneout_h, carry, new, 1, t)
        y = new
    return new, y

  return run


IMPLS = ("auto", "fused", "scan", "parallel")
"""How a layer is computed and differentiated: ``"scan"`` is JAX's automatic
differentiation of the scanned step; ``"fused"`` is :mod:`lstm_jax.fused` (a
custom backward pass, LSTM cells only); ``"parallel"`` is the prefix scan of
:func:`lstm_jax.mincells.parallel_layer` (``jax.lax.associative_scan``,
``O(log T)`` depth; cells linear in their state: minGRU, minLSTM) or the
chunkwise form of :func:`lstm_jax.xlstm.mlstm_parallel` (mLSTM);
``"auto"`` uses ``"fused"`` wherever it applies (:func:`fused_reason`),
``"parallel"`` wherever it applies (:func:`parallel_reason`) and is faster
(:func:`parallel_pays`), and ``"scan"`` elsewhere."""

PARALLEL_CPU_MAX_WIDTH = 512
"""On CPU, ``"auto"`` runs a minGRU/minLSTM layer in parallel form only when
``B * H <= PARALLEL_CPU_MAX_WIDTH`` (:data:`PARALLEL_TIMINGS`): the prefix scan
reads and writes the whole ``[T, B, H]`` sequence about ``2 log2 T`` times,
which beats ``T`` dependent steps only while a step is too small to keep the
cores busy."""

PARALLEL_TIMINGS: tuple[tuple[str, int, int, int, float, float], ...] = (
    ("mingru", 100, 8, 32, 1.04, 0.50),
    ("mingru", 100, 16, 32, 1.41, 1.33),
    ("mingru", 100, 8, 128, 4.75, 5.41),
    ("mingru", 100, 32, 32, 1.45, 2.25),
    ("mingru", 100, 32, 128, 16.75, 23.84),
    ("mingru", 1000, 8, 32, 7.19, 5.09),
    ("mingru", 1000, 16, 32, 9.93, 8.87),
    ("mingru", 1000, 4, 128, 24.35, 20.87),
    ("mingru", 1000, 8, 128, 41.84, 79.32),
    ("mingru", 1000, 32, 32, 24.25, 83.62),
    ("mingru", 1000, 32, 128, 155.35, 296.34),
    ("minlstm", 100, 8, 32, 1.48, 0.86),
    ("minlstm", 1000, 8, 32, 14.43, 8.49),
    ("minlstm", 1000, 32, 128, 291.93, 382.07),
)
"""The measurement behind :data:`PARALLEL_CPU_MAX_WIDTH`: ``(kind, T, B, H,
scan ms, parallel ms)``, one jitted ``jax.grad`` of ``sum(outputs)`` with
respect to the params and the inputs (forward and backward) of
:func:`scan_layer`, float32, ``I = H``, best of 3 after compiling, on 2 CPU
cores (XLA CPU, jax 0.10). The parallel form wins at ``B * H <= 512`` (by 1.06
to 2.1x) and loses from ``B * H = 1024`` (by 1.14 to 3.4x), at ``T = 100`` and
``1000`` alike."""

PARALLEL_CPU_MAX_TIME = 3000
"""On CPU, ``"auto"`` also needs ``T <= PARALLEL_CPU_MAX_TIME`` for the
parallel minGRU/minLSTM form (:data:`PARALLEL_LONG_TIMINGS`): at ``B * H =
256`` it won at ``T = 1000`` and lost at ``T = 10,000`` and ``100,000``, as
its ``2 log2 T`` passes over the whole sequence outgrow the caches; the limit
lies between the measured lengths (``T`` in between was not measured)."""

PARALLEL_LONG_TIMINGS: tuple[tuple[str, int, int, int, float, float], ...] = (
    ("mingru", 1000, 8, 32, 8.39, 5.58),
    ("mingru", 10_000, 8, 32, 9.83, 13.1),
    ("mingru", 100_000, 8, 32, 10.1, 20.0),
    ("minlstm", 1000, 8, 32, 12.3, 7.06),
    ("minlstm", 10_000, 8, 32, 14.2, 15.4),
    ("minlstm", 100_000, 8, 32, 12.4, 22.4),
)
"""The measurement behind :data:`PARALLEL_CPU_MAX_TIME`: ``(kind, T, B, H, scan
us/step, parallel us/step)``, training (the gradient of ``mean(ys**2)`` with
respect to the params), ``I = H``, medians of 5 round-robin rounds on 2 CPU
cores: ``python -m experiments.benchmark --cells
--shapes=8x1000x32x32,8x10000x32x32,8x100000x32x32``."""

MLSTM_PARALLEL_MIN_HEAD = 16
"""On CPU, ``"auto"`` runs an mLSTM layer in chunkwise form when its head size
``d = H / num_heads`` is at least this (:data:`MLSTM_TIMINGS`): the step-by-step
scan updates ``[d, d]`` memories one step at a time, the chunkwise form
multiplies ``[64, 64]`` blocks, which pays once ``d`` is not tiny."""

MLSTM_TIMINGS: tuple[tuple[int, int, int, int, float, float], ...] = (
    (100, 8, 32, 4, 1.97, 5.08),
    (1000, 8, 32, 4, 26.55, 56.20),
    (100, 8, 64, 4, 6.26, 5.81),
    (1000, 8, 64, 4, 104.31, 71.29),
    (100, 32, 16, 1, 14.43, 5.99),
    (1000, 4, 16, 1, 11.71, 9.14),
    (100, 8, 32, 1, 14.54, 2.44),
    (100, 32, 128, 4, 107.24, 82.83),
    (1000, 32, 128, 4, 1149.96, 461.38),
    (1000, 8, 128, 1, 1885.92, 122.17),
)
"""The measurement behind :data:`MLSTM_PARALLEL_MIN_HEAD`: ``(T, B, H,
num_heads, scan ms, chunkwise ms)`` of one jitted ``jax.grad`` of
``sum(outputs)`` with respect to the params and the inputs of
:func:`scan_layer` (``I = H``, float32, best of 3 after compiling, 2 CPU
cores). Head size 8: the scan is 2.1-2.6x faster; 16 and up: the chunkwise
form, by 1.07x (d = 16, 64 at T = 100) to 15x (d = 128)."""


def parallel_pays(cell: Cell, batch: int, platform: str | None = None,
                  time: int | None = None) -> bool:
  """Whether the parallel form is the faster one for a layer of ``cell``.

  On CPU: for minGRU and minLSTM ``batch * H <= PARALLEL_CPU_MAX_WIDTH``
  (measured: :data:`PARALLEL_TIMINGS`) and ``time <= PARALLEL_CPU_MAX_TIME``
  (:data:`PARALLEL_LONG_TIMINGS`), for an mLSTM a head size of at least
  :data:`MLSTM_PARALLEL_MIN_HEAD` (:data:`MLSTM_TIMINGS`). On other platforms (GPU, TPU): always, as the
  scan there runs ``T`` dependent steps of tiny kernels against the prefix
  scan's ``2 log2 T`` passes (not measured by this library).

  Args:
    cell: the layer's cell (its ``hidden_size`` is ``H``).
    batch: the layer's batch size ``B``.
    platform: ``jax.default_backend()`` when ``None``.
    time: the sequence length ``T``, or ``None`` when not known (then only
      the width decides).
  """
  platform = jax.default_backend() if platform is None else platform
  if platform != "cpu":
    return True
  if cell.kind == "mlstm":
    return cell.hidden_size // cell.num_heads >= MLSTM_PARALLEL_MIN_HEAD
  short = time is None or time <= PARALLEL_CPU_MAX_TIME
  return short and batch * cell.hidden_size <= PARALLEL_CPU_MAX_WIDTH


def resolve_impl(cell: Cell, impl: str, remat: str | int = "none", truncate: int = 0,
                 dtypes: Sequence[Any] | None = None, batch: int | None = None, *,
                 noise: bool = False, time: int | None = None) -> str:
  """``"fused"``, ``"parallel"`` or ``"scan"``: how a layer of ``cell`` is computed.

  The one place that decides. ``"auto"`` is ``"parallel"`` for a cell linear
  in its state (minGRU, minLSTM) wherever :func:`parallel_reason` finds
  nothing against it and :func:`parallel_pays` says it is the faster form,
  ``"fused"`` for an LSTM wherever :func:`fused_reason` finds nothing against
  it, else ``"scan"``; ``"fused"`` and ``"parallel"`` raise where they do not
  apply; ``"scan"`` stays. For a linear cell whose ``batch`` is not known yet
  (``None``: a model being built or applied), ``"auto"`` stays ``"auto"``
  and :func:`scan_layer` resolves it with the layer's batch.

  Args:
    cell: the layer's cell.
    impl: one of :data:`IMPLS`.
    remat: the normalised memory policy (:func:`remat_policy`).
    truncate: truncated BPTT interval.
    dtypes: dtypes of the inputs, parameters and initial state, or ``None``
      where they are not known yet (when a model is built): then only the
      cell, ``remat`` and ``truncate`` are judged.
    batch: the batch size (for ``"auto"`` on a linear cell:
      :func:`parallel_pays`), or ``None`` when not known yet.
    noise: whether a regulariser acts inside the recurrence (recurrent
      dropout, zoneout: :attr:`Regularization.in_recurrence`); neither the
      fused layer nor the parallel form covers one, so ``"auto"`` is then
      ``"scan"``.
    time: the sequence length (for ``"auto"`` on a minGRU/minLSTM layer:
      :func:`parallel_pays`), or ``None`` when not known.

  Returns:
    ``"fused"``, ``"parallel"`` or ``"scan"``; ``"auto"`` only for a linear
    cell with ``batch=None``.

  Raises:
    ValueError: an unknown ``impl``, or ``impl="fused"`` / ``"parallel"``
      where that form does not apply.
  """
  checks.choice("impl", impl, IMPLS)
  if impl == "scan":
    return "scan"
  if impl == "parallel" or (impl == "auto" and cell.has_parallel):
    reason = parallel_reason(cell, remat, truncate, noise)
    if reason is None and impl == "auto" and batch is None:
      return "auto"
    if reason is None and (impl == "parallel" or parallel_pays(cell, batch, time=time)):
      return "parallel"
    if impl == "parallel":
      checks.fail("impl", impl, f"the parallel form does not cover {reason}; use "
                  "impl='auto' or impl='scan'")
    return "scan"
  reason = fused_reason(cell, dtypes, remat, truncate, noise)
  if reason is None:
    return "fused"
  if impl == "fused":
    other = "impl='parallel', impl='auto'" if cell.has_parallel else "impl='auto' to fall back " \
        "to the plain scan"
    checks.fail("impl", impl, f"the fused layer does not cover {reason}; use {other}, or "
                "impl='scan'")
  return "scan"


_NOISE_REASON = ("recurrent dropout or zoneout (they act inside the recurrence; the plain "
                 "scan runs them)")


def parallel_reason(cell: Cell, remat: str | int = "none", truncate: int = 0,
                    noise: bool = False) -> str | None:
  """Why the parallel form (:func:`lstm_jax.mincells.parallel_layer`) does not
  cover a layer, or ``None`` when it does.

  Args:
    cell: the layer's cell; only cells linear in their state (minGRU,
      minLSTM: :data:`lstm_jax.cells.MIN_CELLS`) have one.
    remat: the normalised memory policy (the parallel form has no per-step or
      segment recompute: only ``"none"``).
    truncate: truncated BPTT interval (only 0).
    noise: a regulariser inside the recurrence (:func:`resolve_impl`).
  """
  if not cell.has_parallel:
    return (f"cell kind {cell.kind!r} (its step is not linear in the state; only "
            f"{', '.join(map(repr, PARALLEL_CELLS))} have a parallel form)")
  if remat != "none":
    return f"remat={remat!r} (the parallel form stores every step; use remat='none')"
  if truncate:
    return f"truncate={truncate} (truncated BPTT runs on the plain scan)"
  if noise:
    return _NOISE_REASON
  return None


def fused_reason(cell: Cell, dtypes: Sequence[Any] | None = None, remat: str | int = "none",
                 truncate: int = 0, noise: bool = False) -> str | None:
  """Why :mod:`lstm_jax.fused` does not cover a layer, or ``None`` when it does.

  Args:
    cell: the layer's cell.
    dtypes: dtypes of its inputs, parameters and initial state (``None``: not
      judged).
    remat: the layer's normalised memory policy (the fused layer covers
      ``"none"``, ``"sqrt"`` and segment lengths, not per-step ``"step"``).
    truncate: truncated BPTT interval (the fused layer covers only 0).
    noise: a regulariser inside the recurrence (:func:`resolve_impl`).
  """
  if remat == "step":
    return ("remat='step' (the fused layer recomputes whole segments: use remat='sqrt' "
            "or a segment length)")
  if truncate:
    return f"truncate={truncate} (truncated BPTT runs on the plain scan)"
  if noise:
    return _NOISE_REASON
  return fused.unsupported(cell, dtypes)


def _dtypes(params: Params, xs: Array, state: State) -> list[Any]:
  leaves = jax.tree_util.tree_leaves(params) + jax.tree_util.tree_leaves(state) + [xs]
  return [leaf.dtype for leaf in leaves]


def scan_layer(cell: Cell, params: Params, xs: Array, state: State,
               lengths: Array | None = None, *, reverse: bool = False,
               unroll: int = 1, remat: Remat = False,
               emit: Callable[[Array], Array] | None = None,
               truncate: int = 0, impl: str = "auto",
               noise: StateNoise | None = None) -> tuple[Array, State]:
  """The bare scan of ``cell.step`` over time (no shape checks, no jit).

  Meant for use inside a caller's own ``jit``; :func:`rnn` is the checked entry.
  With ``impl="auto"`` (the default) an LSTM layer that :func:`resolve_impl`
  finds covered runs through :func:`lstm_jax.fused.fused_layer` (same values,
  a faster backward pass, no forward-mode autodiff), a minGRU or minLSTM
  layer through :func:`lstm_jax.mincells.parallel_layer` (same values, a
  prefix scan); anything else is the plain scan below. ``impl="fused"`` and
  ``"parallel"`` are trusted (the checked entry points resolve them before
  calling here).

  Args:
    cell: static cell description.
    params: the cell's parameters.
    xs: ``[T, B, I]`` time-major inputs.
    state: carry for batch ``B``.
    lengths: ``[B]`` valid lengths, or ``None`` (all ``T``).
    reverse: scan from ``t = T-1`` down to 0.
    unroll: ``lax.scan`` unroll factor.
    remat: memory policy of the backward pass (:data:`Remat`).
    emit: applied to each step's output ``[B, R]`` inside the scan (e.g. a
      readout to a few units), so the ``[T, B, R]`` outputs are never stored:
      with ``remat="sqrt"`` training memory is then ``O(sqrt(T))`` apart from
      the emitted values.

    truncate: truncated backpropagation through time: if ``k > 0``, the
      gradient through the carry is cut before every step ``t`` with
      ``t % k == 0`` (counted from the scan's first step, so from ``T-1`` in
      a reverse scan); the forward pass is unchanged.
    impl: ``"auto"`` (resolved here), ``"fused"`` (already resolved: the
      fused layer), ``"parallel"`` (already resolved: the prefix scan; ``unroll``
      is not used) or ``"scan"`` (:data:`IMPLS`).
    noise: recurrent dropout and zoneout (:class:`StateNoise`; ``None``:
      none); runs on the plain scan only. At step ``t`` (the time index,
      also in a reverse scan) zoneout draws from ``fold_in(fold_in(key_b,
      3), t)``; the recurrent-dropout mask from ``fold_in(key_b, 2)``.

  Returns:
    ``(ys [T, B, R], final_state)`` (``ys = emit(y)`` per step with ``emit``);
    ``y`` is zero at padded steps (before ``emit``).
  """
  remat = remat_policy(remat)
  if impl == "auto":
    impl = resolve_impl(cell, impl, remat, truncate, _dtypes(params, xs, state),
                        batch=xs.shape[1], noise=noise is not None, time=xs.shape[0])
  if noise is not None and impl != "scan":
    raise ValueError(f"impl={impl!r} is not allowed; the {impl} form does not cover "
                     f"{_NOISE_REASON}; allowed: 'scan' or 'auto'")
  time = xs.shape[0]
  chunk = remat_chunk(remat, time)
  if impl == "fused":
    return fused.fused_layer(cell, params, xs, state, lengths, reverse=reverse,
                             unroll=unroll, segment=chunk, emit=emit)
  if impl == "parallel":
    if cell.kind == "mlstm":
      return xlstm.mlstm_parallel(params, xs, state, lengths, num_heads=cell.num_heads,
                                  forget_fn=cell.forget_fn, reverse=reverse, emit=emit)
    return mincells.parallel_layer(cell.kind, params, xs, state, lengths, reverse=reverse,
                                   emit=emit)
  step = cell.step if noise is None else _noisy(cell, cell.step, noise)
  when = (lambda t: ()) if noise is None else (lambda t: (t,))
  if remat == "step" or chunk:
    step = jax.checkpoint(step)
  masked = (lengths is not None or bool(chunk and time % chunk) or truncate > 0
            or noise is not None)
  if masked and lengths is None:
    lengths = jnp.full((xs.shape[1],), time, jnp.int32)

  out = (lambda y: y) if emit is None else emit

  def body(carry, inp):
    if not masked:
      carry, y = step(params, carry, inp)
      return carry, out(y)
    x, t = inp
    if truncate > 0:
      since_start = (time - 1 - t) if reverse else t
      cut = since_start % truncate == 0
      carry = jax.tree_util.tree_map(
          lambda c: jnp.where(cut, jax.lax.stop_gradient(c), c), carry)
    new, y = step(params, carry, x, *when(t))
    valid = t < lengths
    return _masked(valid, new, carry), out(_masked(valid, y, jnp.zeros_like(y)))

  ts = jnp.arange(time, dtype=jnp.int32 if lengths is None else lengths.dtype)
  if not chunk:
    final, ys = jax.lax.scan(body, state, (xs, ts) if masked else xs, reverse=reverse,
                             unroll=unroll)
    return ys, final

  # Nested scan: the outer one stores a carry per segment; each segment is
  # recomputed in the backward pass. Padding steps (t >= T) are masked.
  segments = -(-time // chunk)
  pad = segments * chunk - time
  xs_p = jnp.concatenate([xs, jnp.zeros((pad,) + xs.shape[1:], xs.dtype)]) if pad else xs
  ts_p = jnp.arange(segments * chunk, dtype=ts.dtype)
  seg_xs = xs_p.reshape((segments, chunk) + xs.shape[1:])
  seg_in = (seg_xs, ts_p.reshape(segments, chunk)) if masked else seg_xs

  @jax.checkpoint
  def segment(carry, inp):
    return jax.lax.scan(body, carry, inp, reverse=reverse, unroll=unroll)

  final, ys = jax.lax.scan(segment, state, seg_in, reverse=reverse)
  ys = ys.reshape((segments * chunk,) + ys.shape[2:])
  return ys[:time], final


def _layer_input_size(cell: Cell, layer: int, input_size: int, directions: int) -> int:
  return input_size if layer == 0 else directions * cell.output_size


def run_layers(cell: Cell, layers: Sequence[Any], xs: Array,
               states: Sequence[Any] | None = None, lengths: Array | None = None, *,
               bidirectional: bool = False, reverse: bool = False, unroll: int = 1,
               remat: str | int = "none", truncate: int = 0, impl: str = "auto",
               emit: Callable[[Array], Array] | None = None,
               regularization: Regularization | None = None,
               keys: Array | None = None) -> tuple[Array, tuple[Any, ...]]:
  """The layers of a stack, one after another, time-major (no validation, no jit).

  Layer ``k > 0`` reads layer ``k - 1``'s outputs (both directions
  concatenated, forward first, when ``bidirectional``). Meant for use inside
  a caller's own ``jit`` with checked arguments; :func:`stacked_rnn` is the
  checked entry.

  Args:
    cell: the cell of every layer.
    layers: per-layer params (``{"fwd", "bwd"}`` pairs when bidirectional).
    xs: ``[T, B, I]``.
    states: per-layer initial states (pairs when bidirectional), each may be
      ``None`` for zeros (float32, or the parameters' dtype where wider);
      ``None`` for all zeros.
    lengths, reverse, unroll, remat, truncate, impl: as for :func:`scan_layer`.
    emit: applied to the top layer's output at each step, inside its scan
      (e.g. a readout), so the top layer's ``[T, B, R]`` outputs are never
      stored (except at training with ``dropout_out``, which acts on them
      before ``emit``); not with ``bidirectional``.
    regularization: dropout, recurrent dropout and zoneout
      (:class:`Regularization`, checked; ``None``: none). Layer ``k`` draws
      from ``fold_in(keys[b], k)`` for sequence ``b``, folded again with 0
      (input dropout), 1 (output dropout), 2 (recurrent mask), 3 (zoneout;
      a bidirectional layer's backward direction folds 4 first).
    keys: ``[B]`` per-sequence PRNG keys at training (:func:`sequence_keys`);
      ``None`` at evaluation (dropout off, zoneout its expectation).

  Returns:
    ``(ys [T, B, D*R] or the emitted values, finals)``, one final state (or
    ``(fwd, bwd)`` pair) per layer.
  """
  batch = xs.shape[1]
  # Zero states default to float32, or wider when the parameters are wider.
  dtype = jnp.promote_types(jnp.float32, jax.tree_util.tree_leaves(layers)[0].dtype)
  zero = functools.partial(cell.initial_state, batch, dtype)
  run = functools.partial(scan_layer, cell, lengths=lengths, unroll=unroll, remat=remat,
                          truncate=truncate, impl=impl)
  states = (None,) * len(layers) if states is None else states
  reg = Regularization() if regularization is None else regularization
  train = keys is not None
  finals = []
  h = xs
  for k, (params, state) in enumerate(zip(layers, states)):
    layer_keys = fold_rows(keys, k) if train and reg.active else None
    noise = None
    if reg.in_recurrence:
      noise = StateNoise(reg.recurrent_dropout, reg.zoneout_c, reg.zoneout_h, layer_keys)
    if train and reg.dropout_in:
      h = dropout(h, reg.dropout_in, fold_rows(layer_keys, _DROP_IN))
    drop_out = train and reg.dropout_out
    if bidirectional:
      s_f, s_b = state if state is not None else (None, None)
      noise_b = noise
      if noise is not None and noise.keys is not None:  # the directions draw apart
        noise_b = noise._replace(keys=fold_rows(noise.keys, _BACKWARD))
      y_f, f_f = run(params["fwd"], h, zero() if s_f is None else s_f, reverse=False,
                     noise=noise)
      y_b, f_b = run(params["bwd"], h, zero() if s_b is None else s_b, reverse=True,
                     noise=noise_b)
      h = jnp.concatenate([y_f, y_b], axis=-1)
      finals.append((f_f, f_b))
    else:
      top = k == len(layers) - 1
      late = top and emit is not None and drop_out  # dropout before the readout
      h, final = run(params, h, zero() if state is None else state, reverse=reverse,
                     emit=emit if top and not late else None, noise=noise)
      finals.append(final)
      if late:
        h = emit(dropout(h, reg.dropout_out, fold_rows(layer_keys, _DROP_OUT)))
        continue
    if drop_out:
      h = dropout(h, reg.dropout_out, fold_rows(layer_keys, _DROP_OUT))
  return h, tuple(finals)


@functools.partial(jax.jit, static_argnames=("cell", "bidirectional", "reverse", "unroll",
                                             "remat", "time_major", "batched", "truncate",
                                             "impl"))
def _run(cell: Cell, layers: tuple[Any, ...], xs: Array, states: tuple[Any, ...],
         lengths: Array | None, *, bidirectional: bool, reverse: bool, unroll: int,
         remat: str | int, time_major: bool, batched: bool,
         truncate: int = 0, impl: str = "auto") -> tuple[Array, tuple[Any, ...]]:
  if not batched:
    xs = xs[:, None]
  elif not time_major:
    xs = jnp.swapaxes(xs, 0, 1)
  h, finals = run_layers(cell, layers, xs, states, lengths, bidirectional=bidirectional,
                         reverse=reverse, unroll=unroll, remat=remat, truncate=truncate,
                         impl=impl)
  if not batched:
    h = h[:, 0]
    finals = tuple(jax.tree_util.tree_map(lambda a: a[0], f) for f in finals)
  elif not time_major:
    h = batch_major(h)
  return h, finals


def batch_major(ys: Array) -> Array:
  """``[T, B, ...]`` -> ``[B, T, ...]``, materialised.

  Left to fusion, XLA CPU folds the transpose into consumers such as a
  reduction over the outputs, which then walk memory with a large stride
  (several times slower at B*H ~ 3e4).
  """
  return jax.lax.optimization_barrier(jnp.swapaxes(ys, 0, 1))


# ----------------------------------------------------------------------------
# Public entry points.


def stacked_rnn(cell: Cell, params: Sequence[Params], xs: Array,
                initial_state: Sequence[State] | None = None, *,
                lengths: Array | None = None, time_major: bool = False,
                bidirectional: bool = False, reverse: bool = False, unroll: int = 1,
                remat: Remat = False, truncate: int = 0,
                impl: str = "auto") -> tuple[Array, list[State]]:
  """Run a stack of layers of ``cell`` over a sequence (compiled, one program).

  Layer ``k > 0`` reads the outputs of layer ``k - 1`` (both directions
  concatenated, forward first, when bidirectional), as in ``torch.nn.LSTM``.

  Args:
    cell: the cell of every layer (see :func:`lstm_jax.make_cell`).
    params: one entry per layer: the cell's params, or ``{"fwd": p, "bwd": p}``
      when ``bidirectional`` (see :func:`init_stack`).
    xs: ``[B, T, I]`` (or ``[T, B, I]`` with ``time_major``; ``[T, I]`` unbatched).
    initial_state: ``None``, or one state per layer (a ``(fwd, bwd)`` pair per
      layer when bidirectional); each may be ``None`` for zeros.
    lengths: ``[B]`` integer lengths in ``[0, T]``, or ``None``.
    time_major: layout of ``xs`` and of the outputs.
    bidirectional: run each layer forward and backward.
    reverse: run a unidirectional stack from the end of each sequence.
    unroll: ``lax.scan`` unroll factor (>= 1).
    remat: memory policy of the backward pass: ``False``, ``True``/``"step"``,
      ``"sqrt"`` (O(sqrt(T)) stored states) or a segment length (:data:`Remat`).
    truncate: truncated BPTT: cut the gradient through the state every
      ``truncate`` steps (0: none); see :func:`scan_layer`.
    impl: ``"auto"`` (default: the fused LSTM layer of :mod:`lstm_jax.fused`
      or the parallel form of a minGRU/minLSTM where it applies, else the
      plain scan), ``"fused"`` or ``"parallel"`` (an error where it does not
      apply) or ``"scan"`` (plain autodiff; needed for forward-mode
      ``jax.jvp``/``jacfwd`` of LSTM layers). Values agree to rounding
      (:data:`IMPLS`).

  Returns:
    ``(outputs [B, T, D*R], final_states)`` with one final state (or
    ``(fwd, bwd)`` pair) per layer.

  Raises:
    ValueError, TypeError: bad shapes, dtypes, lengths or options (before any
      compile).
  """
  _check_common(cell, unroll, time_major, reverse)
  checks.boolean("bidirectional", bidirectional)
  remat = remat_policy(remat)
  truncate = checks.integer("truncate", truncate, 0, meaning="0: no truncation")
  checks.choice("impl", impl, IMPLS)
  if bidirectional and reverse:
    raise ValueError("reverse=True has no meaning with bidirectional=True; "
                     "a bidirectional run already includes the reverse direction")
  if isinstance(params, dict) or not isinstance(params, (list, tuple)) or not params:
    raise TypeError("params: expected a non-empty list with one entry per layer "
                    f"(see lstm_jax.init_stack), got {type(params).__name__}")
  batch, time, features, batched = _check_xs(xs, time_major)
  directions = 2 if bidirectional else 1
  layers = tuple(params)
  for k, layer in enumerate(layers):
    want = _layer_input_size(cell, k, features, directions)
    parts = ("fwd", "bwd") if bidirectional else (None,)
    for part in parts:
      if part is not None and (not hasattr(layer, "keys") or part not in layer):
        raise ValueError(f"params[{k}]: expected a dict with 'fwd' and 'bwd' entries for "
                         "a bidirectional layer")
      p = layer if part is None else layer[part]
      try:
        cell.check_params(p, want)
      except ValueError as err:
        where = f"params[{k}]" + (f"[{part!r}]" if part else "")
        raise ValueError(f"{where} (layer {k}): {err}") from None
  if initial_state is None:
    states = (None,) * len(layers)
  else:
    if not isinstance(initial_state, (list, tuple)) or len(initial_state) != len(layers):
      raise ValueError(f"initial_state: expected None or a list of {len(layers)} per-layer "
                       f"states, got {type(initial_state).__name__}"
                       f"{' of length %d' % len(initial_state) if hasattr(initial_state, '__len__') else ''}")
    checked = []
    for k, s in enumerate(initial_state):
      if bidirectional:
        if s is None:
          checked.append(None)
          continue
        if not isinstance(s, (list, tuple)) or len(s) != 2:
          raise ValueError(f"initial_state[{k}]: expected a (fwd, bwd) pair for a "
                           "bidirectional layer")
        checked.append(tuple(_check_state(cell, d, batch, batched, f"initial_state[{k}][{i}]")
                             for i, d in enumerate(s)))
      else:
        checked.append(_check_state(cell, s, batch, batched, f"initial_state[{k}]"))
    states = tuple(checked)
  lengths = _check_lengths(lengths, batch, time, batched)
  if impl != "scan":
    param_dtype = jax.tree_util.tree_leaves(layers)[0].dtype
    state_dtypes = [leaf.dtype for leaf in jax.tree_util.tree_leaves(states)] or \
        [jnp.promote_types(jnp.float32, param_dtype)]
    dtypes = [xs.dtype, *state_dtypes, *(p.dtype for p in jax.tree_util.tree_leaves(layers))]
    impl = resolve_impl(cell, impl, remat, truncate, dtypes, batch=batch, time=time)
  outputs, finals = _run(cell, layers, xs, states, lengths, bidirectional=bidirectional,
                         reverse=reverse, unroll=unroll, remat=remat,
                         time_major=time_major, batched=batched, truncate=truncate,
                         impl=impl)
  return outputs, list(finals)


def rnn(cell: Cell, params: Params, xs: Array, initial_state: State | None = None, *,
        lengths: Array | None = None, time_major: bool = False, reverse: bool = False,
        unroll: int = 1, remat: Remat = False, truncate: int = 0,
        impl: str = "auto") -> tuple[Array, State]:
  """Run one layer of ``cell`` over a sequence with ``lax.scan`` (compiled).

  ``carry_t, y_t = cell.step(params, carry_{t-1}, x_t)`` for ``t = 0..T-1``
  (``T-1..0`` with ``reverse``), with the padding semantics of the module
  docstring when ``lengths`` is given.

  Args:
    cell: static cell description (:func:`lstm_jax.make_cell`).
    params: the cell's parameters (``cell.init(key, I)``).
    xs: ``[B, T, I]`` (``[T, B, I]`` with ``time_major``; ``[T, I]`` unbatched).
    initial_state: carry for the batch (``cell.initial_state(B)``), or ``None``
      for zeros (float32, or the parameters' dtype where that is wider).
    lengths: ``[B]`` integers in ``[0, T]``, or ``None``.
    time_major: layout of ``xs`` and of the outputs.
    reverse: process each sequence from its last real step to its first.
    unroll: ``lax.scan`` unroll factor (>= 1).
    remat: memory policy of the backward pass: ``False``, ``True``/``"step"``,
      ``"sqrt"`` (O(sqrt(T)) stored states) or a segment length (:data:`Remat`).
    truncate: truncated BPTT every ``truncate`` steps (0: none).
    impl: ``"auto"``, ``"fused"``, ``"scan"`` or ``"parallel"``; see :func:`stacked_rnn`.

  Returns:
    ``(outputs [B, T, R], final_state)``; outputs are zero at padded steps.
  """
  if isinstance(params, (list, tuple)):
    raise TypeError("params: expected one layer's params (a dict); "
                    "use stacked_rnn for a list of layers")
  outputs, finals = stacked_rnn(cell, [params], xs,
                                None if initial_state is None else [initial_state],
                                lengths=lengths, time_major=time_major, reverse=reverse,
                                unroll=unroll, remat=remat, truncate=truncate, impl=impl)
  return outputs, finals[0]


def bidirectional_rnn(cell: Cell, params: dict[str, Params], xs: Array,
                      initial_state: tuple[State, State] | None = None, *,
                      lengths: Array | None = None, time_major: bool = False,
                      unroll: int = 1, remat: Remat = False, impl: str = "auto"
                      ) -> tuple[Array, tuple[State, State]]:
  """One bidirectional layer: forward and reverse runs, outputs concatenated.

  ``outputs[..., t, :] = [y_fwd_t, y_bwd_t]`` where the backward direction
  starts at each sequence's last real step.

  Args:
    cell: static cell description.
    params: ``{"fwd": params, "bwd": params}``.
    xs: ``[B, T, I]`` (or time-major / unbatched).
    initial_state: ``(fwd_state, bwd_state)`` or ``None``.
    lengths, time_major, unroll, remat, impl: as for :func:`rnn`.

  Returns:
    ``(outputs [B, T, 2R], (final_fwd, final_bwd))``.
  """
  outputs, finals = stacked_rnn(cell, [params], xs,
                                None if initial_state is None else [initial_state],
                                lengths=lengths, time_major=time_major, bidirectional=True,
                                unroll=unroll, remat=remat, impl=impl)
  return outputs, finals[0]


def init_stack(cell: Cell, key: Array, input_size: int, num_layers: int = 1, *,
               bidirectional: bool = False, dtype: jnp.dtype = jnp.float32) -> list[Params]:
  """Parameters for :func:`stacked_rnn`: one dict per layer (``fwd``/``bwd`` pairs
  when bidirectional); layer ``k > 0`` has input size ``D * cell.output_size``.

  Args:
    cell: the cell of every layer.
    key: PRNG key.
    input_size: ``I`` of the first layer.
    num_layers: number of layers (>= 1).
    bidirectional: two independent parameter sets per layer.
    dtype: parameter dtype.

  Returns:
    A list of ``num_layers`` parameter pytrees.
  """
  checks.integer("num_layers", num_layers, 1)
  directions = 2 if bidirectional else 1
  layers = []
  for k, layer_key in enumerate(jax.random.split(key, num_layers)):
    size = _layer_input_size(cell, k, input_size, directions)
    if bidirectional:
      k_f, k_b = jax.random.split(layer_key)
      layers.append({"fwd": cell.init(k_f, size, dtype), "bwd": cell.init(k_b, size, dtype)})
    else:
      layers.append(cell.init(layer_key, size, dtype))
  return layers

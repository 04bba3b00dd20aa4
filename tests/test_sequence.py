"""Sequence machinery: scan vs loops, padding, reverse, stacks, bidirectional runs,
compilation reuse, dtypes, gradients and argument checks."""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

import lstm_jax as L
from lstm_jax import sequence

B, T, I, H = 3, 6, 3, 4
LENGTHS = np.array([6, 2, 0])


def _xs(seed=0, shape=(B, T, I), dtype=jnp.float32):
  return jax.random.normal(jax.random.key(seed), shape, dtype)


def _sigmoid(z):
  return 1.0 / (1.0 + np.exp(-z))


def _numpy_lstm(params, xs, h0=None, c0=None):
  """Independent float64 reference for one vanilla LSTM layer over [T, I]."""
  p = {k: np.asarray(v, np.float64) for k, v in params.items()}
  hid = p["w_h"].shape[0]
  h = np.zeros(hid) if h0 is None else np.asarray(h0, np.float64)
  c = np.zeros(hid) if c0 is None else np.asarray(c0, np.float64)
  ys = []
  for x in np.asarray(xs, np.float64):
    z = x @ p["w_x"] + h @ p["w_h"] + p["b"]
    i, f, g, o = (z[k * hid:(k + 1) * hid] for k in range(4))
    c = _sigmoid(f) * c + _sigmoid(i) * np.tanh(g)
    h = _sigmoid(o) * np.tanh(c)
    ys.append(h)
  return np.stack(ys) if ys else np.zeros((0, hid)), h, c


def _random_params(cell, seed=1, input_size=I):
  """Initialised params plus noise so no entry is a special value."""
  params = cell.init(jax.random.key(seed), input_size)
  leaves, tree = jax.tree_util.tree_flatten(params)
  keys = jax.random.split(jax.random.key(seed + 100), len(leaves))
  leaves = [l + 0.3 * jax.random.normal(k, l.shape) for l, k in zip(leaves, keys)]
  return jax.tree_util.tree_unflatten(tree, leaves)


@pytest.fixture(scope="module")
def lstm():
  cell = L.make_cell("vanilla", H)
  return cell, _random_params(cell)


# ----------------------------------------------------------------------------
# Numbers.


def test_matches_numpy_reference_with_padding(lstm):
  cell, params = lstm
  xs = _xs()
  ys, final = L.rnn(cell, params, xs, lengths=LENGTHS)
  for b, n in enumerate(LENGTHS):
    ref_y, ref_h, ref_c = _numpy_lstm(params, xs[b, :n])
    np.testing.assert_allclose(ys[b, :n], ref_y, atol=1e-5)
    np.testing.assert_array_equal(ys[b, n:], 0.0)
    np.testing.assert_allclose(final.h[b], ref_h, atol=1e-5)
    np.testing.assert_allclose(final.c[b], ref_c, atol=1e-5)


@pytest.mark.parametrize("name", ["peephole", "gru", "fgr"])
def test_scan_equals_python_loop_over_step(name):
  cell = L.make_cell(name, H)
  params = _random_params(cell)
  xs = _xs(1)
  state = jax.tree_util.tree_map(lambda a: a + 0.5, cell.initial_state(B))
  ys, final = L.rnn(cell, params, xs, state)
  carry, loop_ys = state, []
  for t in range(T):
    carry, y = cell.step(params, carry, xs[:, t])
    loop_ys.append(y)
  np.testing.assert_allclose(ys, jnp.stack(loop_ys, axis=1), atol=1e-6)
  for a, b in zip(jax.tree_util.tree_leaves(final), jax.tree_util.tree_leaves(carry)):
    np.testing.assert_allclose(a, b, atol=1e-6)


def test_initial_state_is_used(lstm):
  cell, params = lstm
  xs = _xs(2)
  h0 = np.random.default_rng(0).normal(size=(B, H)).astype(np.float32)
  c0 = np.random.default_rng(1).normal(size=(B, H)).astype(np.float32)
  ys, final = L.rnn(cell, params, xs, L.LSTMState(jnp.asarray(h0), jnp.asarray(c0)))
  for b in range(B):
    ref_y, ref_h, ref_c = _numpy_lstm(params, xs[b], h0[b], c0[b])
    np.testing.assert_allclose(ys[b], ref_y, atol=1e-5)
    np.testing.assert_allclose(final.c[b], ref_c, atol=1e-5)


@pytest.mark.parametrize("name", ["vanilla", "gru"])
def test_padded_equals_unpadded(name):
  cell = L.make_cell(name, H)
  params = _random_params(cell)
  xs = _xs(3)
  for reverse in (False, True):
    ys, final = L.rnn(cell, params, xs, lengths=LENGTHS, reverse=reverse)
    for b, n in enumerate(LENGTHS):
      y1, f1 = L.rnn(cell, params, xs[b:b + 1, :max(n, 1)], reverse=reverse)
      if n == 0:  # an empty sequence keeps the initial state
        for leaf in jax.tree_util.tree_leaves(final):
          np.testing.assert_array_equal(leaf[b], 0.0)
        np.testing.assert_array_equal(ys[b], 0.0)
        continue
      np.testing.assert_allclose(ys[b, :n], y1[0], atol=1e-6)
      np.testing.assert_array_equal(ys[b, n:], 0.0)
      for a, c in zip(jax.tree_util.tree_leaves(final), jax.tree_util.tree_leaves(f1)):
        np.testing.assert_allclose(a[b], c[0], atol=1e-6)


def test_reverse_equals_forward_on_flipped_sequences(lstm):
  cell, params = lstm
  xs = _xs(4)
  ys, final = L.rnn(cell, params, xs, lengths=LENGTHS, reverse=True)
  for b, n in enumerate(LENGTHS[:2]):
    ref_y, _, ref_c = _numpy_lstm(params, np.asarray(xs[b, :n])[::-1])
    np.testing.assert_allclose(ys[b, :n], ref_y[::-1], atol=1e-5)
    np.testing.assert_allclose(final.c[b], ref_c, atol=1e-5)


def test_time_major_and_unbatched_layouts(lstm):
  cell, params = lstm
  xs = _xs(5)
  ys, final = L.rnn(cell, params, xs)
  ys_tm, final_tm = L.rnn(cell, params, jnp.swapaxes(xs, 0, 1), time_major=True)
  np.testing.assert_allclose(jnp.swapaxes(ys_tm, 0, 1), ys, atol=1e-6)
  np.testing.assert_allclose(final_tm.c, final.c, atol=1e-6)
  y0, f0 = L.rnn(cell, params, xs[0])
  assert y0.shape == (T, H) and f0.h.shape == (H,)
  np.testing.assert_allclose(y0, ys[0], atol=1e-6)
  y3, f3 = L.rnn(cell, params, xs[0], lengths=3)  # a plain int for one sequence
  np.testing.assert_allclose(y3[:3], ys[0, :3], atol=1e-6)
  np.testing.assert_array_equal(y3[3:], 0.0)


def test_unroll_and_remat_do_not_change_results(lstm):
  cell, params = lstm
  xs = _xs(6)
  base, _ = L.rnn(cell, params, xs, lengths=LENGTHS)
  unrolled, _ = L.rnn(cell, params, xs, lengths=LENGTHS, unroll=3)
  np.testing.assert_allclose(unrolled, base, atol=1e-6)

  def loss(p, remat):
    return jnp.sum(L.rnn(cell, p, xs, remat=remat)[0] ** 2)

  g_plain = jax.grad(loss)(params, False)
  g_remat = jax.grad(loss)(params, True)
  for a, b in zip(jax.tree_util.tree_leaves(g_plain), jax.tree_util.tree_leaves(g_remat)):
    np.testing.assert_allclose(a, b, atol=1e-5)


# ----------------------------------------------------------------------------
# Stacks and bidirectional runs.


def test_stack_equals_composition_of_layers():
  cell = L.make_cell("vanilla", H)
  layers = [_random_params(cell, 1), _random_params(cell, 2, H)]
  xs = _xs(7)
  ys, finals = L.stacked_rnn(cell, layers, xs, lengths=LENGTHS)
  y0, f0 = L.rnn(cell, layers[0], xs, lengths=LENGTHS)
  y1, f1 = L.rnn(cell, layers[1], y0, lengths=LENGTHS)
  np.testing.assert_allclose(ys, y1, atol=1e-6)
  np.testing.assert_allclose(finals[0].c, f0.c, atol=1e-6)
  np.testing.assert_allclose(finals[1].h, f1.h, atol=1e-6)


def test_bidirectional_equals_forward_and_reverse_runs():
  cell = L.make_cell("cifg", H)
  layer = {"fwd": _random_params(cell, 1), "bwd": _random_params(cell, 2)}
  xs = _xs(8)
  ys, (ff, fb) = L.bidirectional_rnn(cell, layer, xs, lengths=LENGTHS)
  yf, sf = L.rnn(cell, layer["fwd"], xs, lengths=LENGTHS)
  yb, sb = L.rnn(cell, layer["bwd"], xs, lengths=LENGTHS, reverse=True)
  np.testing.assert_allclose(ys, jnp.concatenate([yf, yb], -1), atol=1e-6)
  np.testing.assert_allclose(ff.h, sf.h, atol=1e-6)
  np.testing.assert_allclose(fb.c, sb.c, atol=1e-6)


def test_bidirectional_stack_equals_composition():
  cell = L.make_cell("vanilla", H)
  layers = L.init_stack(cell, jax.random.key(3), I, 2, bidirectional=True)
  assert layers[1]["fwd"]["w_x"].shape == (2 * H, 4 * H)
  xs = _xs(9)
  ys, finals = L.stacked_rnn(cell, layers, xs, bidirectional=True, lengths=LENGTHS)
  y0, _ = L.bidirectional_rnn(cell, layers[0], xs, lengths=LENGTHS)
  y1, (f1, b1) = L.bidirectional_rnn(cell, layers[1], y0, lengths=LENGTHS)
  assert ys.shape == (B, T, 2 * H)
  np.testing.assert_allclose(ys, y1, atol=1e-6)
  np.testing.assert_allclose(finals[1][1].c, b1.c, atol=1e-6)


# ----------------------------------------------------------------------------
# Compilation, dtypes, gradients.


def test_rnn_traces_its_program_once_per_shape(lstm, monkeypatch):
  """chex.assert_max_traces on the layer loop that rnn's one jitted program
  calls: new values, an equal cell built again, and a new initial state of
  the same shape reuse the trace."""
  cell, params = lstm
  chex.clear_trace_counter()
  monkeypatch.setattr(sequence, "run_layers", chex.assert_max_traces(sequence.run_layers, n=1))
  xs = lambda seed: jax.random.normal(jax.random.key(seed), (2, 7, I))  # a shape of its own
  for seed in (1, 2):
    L.rnn(cell, params, xs(seed))
  L.rnn(L.make_cell("vanilla", H), params, xs(3))
  with pytest.raises(AssertionError, match="traced > 1 times"):
    L.rnn(cell, params, jax.random.normal(jax.random.key(4), (2, 8, I)))  # a new shape


def test_second_call_with_same_shapes_does_not_recompile(lstm):
  cell, params = lstm
  L.rnn(cell, params, _xs(10), lengths=LENGTHS)
  size = sequence._run._cache_size()
  for seed in (11, 12):
    L.rnn(cell, params, _xs(seed), lengths=np.array([1, 5, 6]))
  assert sequence._run._cache_size() == size
  # An equal but separately built cell is the same static argument.
  L.rnn(L.make_cell("vanilla", H), params, _xs(13), lengths=LENGTHS)
  assert sequence._run._cache_size() == size
  # A new shape does compile once.
  L.rnn(cell, params, _xs(14, (B, T + 1, I)), lengths=LENGTHS)
  assert sequence._run._cache_size() == size + 1


def test_works_under_user_jit_with_traced_lengths(lstm):
  cell, params = lstm
  xs = _xs(15)
  fn = jax.jit(lambda p, x, n: L.rnn(cell, p, x, lengths=n)[1].c)
  np.testing.assert_allclose(fn(params, xs, jnp.asarray(LENGTHS)),
                             L.rnn(cell, params, xs, lengths=LENGTHS)[1].c, atol=1e-6)


def _bf16_rounding_bound(params, xs):
  """First-order bound on how far one vanilla LSTM layer's outputs ``[T, H]``
  and final ``c`` move when ``x``, ``W_x``, ``W_h`` and ``b`` are rounded to
  bfloat16 and so is ``x @ W_x`` (the matmul of two bfloat16 operands), the
  state and the rest staying float32. Each rounding is a relative error of at
  most u = 2^-8, so a pre-activation moves by at most
  ``dz = 3u |x||W_x| + u |h||W_h| + u |b| + |dh_prev||W_h|``; the gates by
  ``s(1 - s) dz`` (sigmoid) or ``(1 - g^2) dz`` (tanh), and ``c = f c + i g``,
  ``h = o tanh(c)`` pass that on to the state."""
  u = 2.0 ** -8
  p = {k: np.asarray(v, np.float64) for k, v in params.items()}
  hid = p["w_h"].shape[0]
  h, c, dh, dc = (np.zeros(hid) for _ in range(4))
  bounds = []
  for x in np.asarray(xs, np.float64):
    z = x @ p["w_x"] + h @ p["w_h"] + p["b"]
    dz = (3 * u * np.abs(x) @ np.abs(p["w_x"]) + u * np.abs(h) @ np.abs(p["w_h"])
          + u * np.abs(p["b"]) + dh @ np.abs(p["w_h"]))
    (zi, zf, zg, zo), (di, df, dg, do) = (np.split(v, 4) for v in (z, dz))
    i, f, g, o = _sigmoid(zi), _sigmoid(zf), np.tanh(zg), _sigmoid(zo)
    dc = (f * dc + np.abs(c) * f * (1 - f) * df + np.abs(g) * i * (1 - i) * di
          + i * (1 - g * g) * dg)
    c = f * c + i * g
    dh = np.abs(np.tanh(c)) * o * (1 - o) * do + o * (1 - np.tanh(c) ** 2) * dc
    h = o * np.tanh(c)
    bounds.append(dh)
  return np.stack(bounds), dc


def test_bfloat16_inputs_with_float32_state(lstm):
  cell, params = lstm
  xs = _xs(16)
  bf16_init = cell.init(jax.random.key(0), I, jnp.bfloat16)
  assert all(a.dtype == jnp.bfloat16 for a in jax.tree_util.tree_leaves(bf16_init))
  xs16 = xs.astype(jnp.bfloat16)
  # float32 parameters: the bfloat16 input promotes to float32 in the matmul,
  # so the run is the float32 one at the rounded input (float32 accuracy).
  ys, final = L.rnn(cell, params, xs16)
  assert final.c.dtype == jnp.float32 and final.h.dtype == jnp.float32
  assert ys.dtype == jnp.float32
  for b in range(B):
    ref_ys, _, ref_c = _numpy_lstm(params, np.asarray(xs16[b], np.float64))
    np.testing.assert_allclose(ys[b], ref_ys, atol=1e-5)
    np.testing.assert_allclose(final.c[b], ref_c, atol=1e-5)
  # bfloat16 parameters: within the first-order rounding bound of the float32
  # reference (plus 1e-5 of float32 error), which is far below the outputs.
  p16 = jax.tree_util.tree_map(lambda a: a.astype(jnp.bfloat16), params)
  ys, final = L.rnn(cell, p16, xs16)
  assert final.c.dtype == jnp.float32 and ys.dtype == jnp.float32
  for b in range(B):
    ref_ys, _, ref_c = _numpy_lstm(params, xs[b])
    bound_ys, bound_c = _bf16_rounding_bound(params, xs[b])
    assert np.all(np.abs(np.asarray(ys[b], np.float64) - ref_ys) <= bound_ys + 1e-5)
    assert np.all(np.abs(np.asarray(final.c[b], np.float64) - ref_c) <= bound_c + 1e-5)
    assert bound_ys.max() < 0.1 * np.abs(ref_ys).max()


@pytest.mark.parametrize("name", ["vanilla", "gru"])
def test_sequence_gradients(name):
  cell = L.make_cell(name, 3)
  with jax.enable_x64(True):
    params = jax.tree_util.tree_map(lambda a: a.astype(jnp.float64),
                                    _random_params(cell, 4, 2))
    xs = _xs(17, (2, 4, 2)).astype(jnp.float64)
    state = jax.tree_util.tree_map(lambda a: a.astype(jnp.float64) + 0.1,
                                   cell.initial_state(2))
    lengths = np.array([4, 2])

    def f(p, x, s):
      ys, final = L.rnn(cell, p, x, s, lengths=lengths)
      return jnp.sum(ys * 0.7) + sum(jnp.sum(l) for l in jax.tree_util.tree_leaves(final))

    check_grads(f, (params, xs, state), order=1, modes=("rev",), atol=1e-5, rtol=1e-5)
    rev = lambda p, x, s: jnp.sum(L.rnn(cell, p, x, s, reverse=True)[0])
    check_grads(rev, (params, xs, state), order=1, modes=("rev",), atol=1e-5, rtol=1e-5)


# ----------------------------------------------------------------------------
# Bad input: clear errors before any compile.


def _bad_calls(cell, params):
  xs = _xs(18)
  return [
      (lambda: L.rnn(cell, params, xs[0, 0]), ValueError, r"xs: expected rank 3"),
      (lambda: L.rnn(cell, params, jnp.zeros((B, T, I, 1))), ValueError, r"got shape"),
      (lambda: L.rnn(cell, params, jnp.zeros((B, T, I), jnp.int32)), TypeError,
       r"xs: expected a floating dtype"),
      (lambda: L.rnn(cell, params, jnp.zeros((B, T, I + 1))), ValueError,
       r"feature size 4 does not match .* input size 3"),
      (lambda: L.rnn(cell, params, xs, lengths=np.array([1, 2, T + 1])), ValueError,
       r"lengths: .*\[0, T=6\].*\[7\]"),
      (lambda: L.rnn(cell, params, xs, lengths=np.array([-1, 2, 3])), ValueError,
       r"lengths: .*\[-1\]"),
      (lambda: L.rnn(cell, params, xs, lengths=np.array([1, 2])), ValueError,
       r"lengths: expected shape \(3,\)"),
      (lambda: L.rnn(cell, params, xs, lengths=np.array([1.0, 2.0, 3.0])), TypeError,
       r"lengths: expected an integer dtype"),
      (lambda: L.rnn(cell, params, xs, L.LSTMState(jnp.zeros((B, H + 1)), jnp.zeros((B, H)))),
       ValueError, r"initial_state\[0\]: expected leaf shapes"),
      (lambda: L.rnn(cell, params, xs, (jnp.zeros((B, H)),)), ValueError,
       r"initial_state\[0\]: expected a state structured like"),
      (lambda: L.rnn(cell, params, xs, unroll=0), ValueError, r"unroll=0"),
      (lambda: L.rnn(cell, params, xs, time_major="yes"), ValueError, r"time_major='yes'"),
      (lambda: L.rnn(cell, {"w_x": params["w_x"], "b": params["b"]}, xs), ValueError,
       r"params\[.w_h.\] is missing"),
      (lambda: L.rnn(cell, dict(params, w_h=params["w_h"][:2]), xs), ValueError,
       r"params\['w_h'\]: expected shape \(4, 16\)"),
      (lambda: L.rnn(cell, dict(params, extra=params["b"]), xs), ValueError,
       r"params\['extra'\] is not a parameter"),
      (lambda: L.rnn("lstm", params, xs), TypeError, r"cell: expected an lstm_jax.Cell"),
      (lambda: L.rnn(cell, [params], xs), TypeError, r"use stacked_rnn"),
      (lambda: L.stacked_rnn(cell, params, xs), TypeError, r"one entry per layer"),
      (lambda: L.stacked_rnn(cell, [params, params], xs), ValueError,
       r"params\[1\] \(layer 1\).*feature size 4 does not match"),
      (lambda: L.stacked_rnn(cell, [params], xs, bidirectional=True), ValueError,
       r"'fwd' and 'bwd'"),
      (lambda: L.stacked_rnn(cell, [params], xs, reverse=True, bidirectional=True), ValueError,
       r"reverse=True has no meaning"),
      (lambda: L.stacked_rnn(cell, [params], xs, [None, None]), ValueError,
       r"initial_state: expected None or a list of 1"),
      (lambda: L.init_stack(cell, jax.random.key(0), I, 0), ValueError, r"num_layers=0"),
      (lambda: L.rnn(L.make_cell("vanilla", H, use_bias=False), params, xs), ValueError,
       r"params\['b'\] is not a parameter .*use_bias=False"),
      (lambda: L.rnn(cell, {k: v for k, v in params.items() if k != "b"}, xs), ValueError,
       r"params\['b'\] is missing .*use_bias=False"),
  ]


def test_bad_input_raises_clear_errors_before_compiling(lstm):
  cell, params = lstm
  before = sequence._run._cache_size()
  for call, exc, pattern in _bad_calls(cell, params):
    with pytest.raises(exc, match=pattern):
      call()
  assert sequence._run._cache_size() == before


# ----------------------------------------------------------------------------
# Memory policies.


@pytest.mark.parametrize("remat", ["sqrt", 4, "5", "step"])
def test_remat_policies_give_the_same_outputs_and_gradients(lstm, remat):
  cell, params = lstm
  xs = _xs(20, (B, 11, I))
  lengths = np.array([11, 4, 0])

  def loss(p, policy, reverse):
    ys, final = L.rnn(cell, p, xs, lengths=lengths, reverse=reverse, remat=policy)
    return jnp.sum(ys ** 2) + jnp.sum(final.c)

  for reverse in (False, True):
    np.testing.assert_allclose(loss(params, remat, reverse), loss(params, False, reverse),
                               rtol=1e-6)
    g0, g1 = jax.grad(loss)(params, False, reverse), jax.grad(loss)(params, remat, reverse)
    for a, b in zip(jax.tree_util.tree_leaves(g0), jax.tree_util.tree_leaves(g1)):
      np.testing.assert_allclose(a, b, atol=1e-5)


def test_unknown_remat_policy_is_rejected(lstm):
  cell, params = lstm
  with pytest.raises(ValueError, match=r"remat='log' is not allowed; expected 'none' \(or False\)"):
    L.rnn(cell, params, _xs(21), remat="log")
  assert sequence.remat_chunk("sqrt", 100) == 10 and sequence.remat_chunk("sqrt", 101) == 11


def test_sqrt_remat_training_memory_grows_sublinearly_in_time():
  """XLA's own accounting of a compiled training step. Without remat the
  temporaries grow with T * B * (12 H); with remat='sqrt' only the inputs and
  the emitted readout grow with T (T * B * (I + O)), the stored states with
  sqrt(T)."""
  from lstm_jax.models import make_model
  params = make_model("vanilla", 16, 1).init(jax.random.key(0), 2)

  def temp_bytes(time, remat):
    model = make_model("vanilla", 16, 1, remat=remat)
    xs = jax.ShapeDtypeStruct((2, time, 2), jnp.float32)
    step = jax.jit(jax.grad(lambda p, x: jnp.mean(model.apply(p, x) ** 2)))
    return step.lower(params, xs).compile().memory_analysis().temp_size_in_bytes

  small, large = temp_bytes(4096, "sqrt"), temp_bytes(16384, "sqrt")
  plain_small, plain_large = temp_bytes(4096, "none"), temp_bytes(16384, "none")
  assert plain_large / plain_small > 3.5
  assert (large - small) < 0.05 * (plain_large - plain_small)
  assert large < plain_large / 20


def test_truncated_bptt_equals_chunked_runs_with_cut_state(lstm):
  """Gradients with truncate=k equal those of runs over k-step chunks whose
  incoming state is a constant (stop_gradient), chained forward."""
  cell, params = lstm
  xs = _xs(22, (B, 10, I))
  w = jnp.arange(1, 11, dtype=jnp.float32)[None, :, None] / 10.0

  def truncated(p):
    ys, final = L.rnn(cell, p, xs, truncate=4)
    return jnp.sum(ys * w) + jnp.sum(final.c)

  def chunked(p):
    state, total = None, 0.0
    for start in (0, 4, 8):
      ys, state = L.rnn(cell, p, xs[:, start:start + 4], state)
      total = total + jnp.sum(ys * w[:, start:start + 4])
      state = jax.lax.stop_gradient(state) if start < 8 else state
    return total + jnp.sum(state.c)

  np.testing.assert_allclose(truncated(params), chunked(params), rtol=1e-6)
  g_t, g_c = jax.grad(truncated)(params), jax.grad(chunked)(params)
  for a, b in zip(jax.tree_util.tree_leaves(g_t), jax.tree_util.tree_leaves(g_c)):
    np.testing.assert_allclose(a, b, atol=1e-5)
  g_full = jax.grad(lambda p: jnp.sum(L.rnn(cell, p, xs)[0] * w)
                    + jnp.sum(L.rnn(cell, p, xs)[1].c))(params)
  assert not np.allclose(g_full["w_h"], g_t["w_h"], atol=1e-5)
  with pytest.raises(ValueError, match=r"truncate=-1"):
    L.rnn(cell, params, xs, truncate=-1)

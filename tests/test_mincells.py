"""minGRU and minLSTM (Feng et al. 2024) against NumPy loops written here, the
parallel form against the sequential scan, gradients, errors, impl choice, the
Flax wrappers and the experiment model.

The NumPy reference never calls ``lstm_jax``::

    minGRU:  z = sigmoid(x W_z + b_z), h~ = x W_h + b_h, h = (1 - z) h_prev + z h~
    minLSTM: f = sigmoid(x W_f + b_f), i = sigmoid(x W_i + b_i), h~ = x W_h + b_h,
             h = f / (f + i) h_prev + i / (f + i) h~
"""

import dataclasses
import importlib

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from jax.test_util import check_grads

import lstm_jax as L
from lstm_jax import config as config_lib
from lstm_jax import linen as lnn
from lstm_jax import mincells, sequence
from lstm_jax import nnx as lnnx
from lstm_jax.runner import train_and_evaluate

B, T, I, H = 3, 6, 3, 4
KINDS = ("mingru", "minlstm")
LENGTHS = np.array([6, 2, 0])
TOL = dict(rtol=1e-5, atol=1e-5)


# ----------------------------------------------------------------------------
# NumPy reference.


def _sigmoid(v):
  return 1.0 / (1.0 + np.exp(-v))


def np_step(kind, p, h_prev, x):
  """One step in float64; columns of ``w_x``: z, h~ (minGRU) or f, i, h~ (minLSTM)."""
  z = x @ p["w_x"] + p["b"]
  if kind == "mingru":
    k_z, h_tilde = z[..., :H], z[..., H:]
    gate = _sigmoid(k_z)
    return (1.0 - gate) * h_prev + gate * h_tilde
  f, i = _sigmoid(z[..., :H]), _sigmoid(z[..., H:2 * H])
  h_tilde = z[..., 2 * H:]
  return f / (f + i) * h_prev + i / (f + i) * h_tilde


def np_rnn(kind, p, xs, h0, lengths=None, reverse=False):
  """``xs [B, T, I]``: a loop over each sequence; padded steps keep the state
  and output zeros, a reverse run starts at the sequence's last real step."""
  batch, time = xs.shape[:2]
  lengths = np.full(batch, time) if lengths is None else lengths
  ys = np.zeros((batch, time, H))
  finals = np.array(h0, np.float64)
  for n in range(batch):
    h = np.array(h0[n], np.float64)
    steps = range(lengths[n])
    for t in (reversed(steps) if reverse else steps):
      h = np_step(kind, p, h, xs[n, t])
      ys[n, t] = h
    finals[n] = h
  return ys, finals


def _params(kind, seed=0, scale=1.0):
  rng = np.random.default_rng(seed)
  g = mincells.NUM_BLOCKS[kind]
  return {"w_x": scale * rng.normal(size=(I, g * H)), "b": scale * rng.normal(size=(g * H,))}


def _jnp(tree, dtype=jnp.float32):
  return jax.tree_util.tree_map(lambda a: jnp.asarray(a, dtype), tree)


def _data(seed=1, time=T):
  rng = np.random.default_rng(seed)
  return rng.normal(size=(B, time, I)), rng.normal(size=(B, H))


# ----------------------------------------------------------------------------
# Names, parameters, errors.


def test_names_shapes_and_params():
  assert set(KINDS) == set(L.MIN_CELLS) <= set(L.CELL_NAMES)
  assert set(KINDS) <= set(L.BASELINES)
  for kind, g in (("mingru", 2), ("minlstm", 3)):
    cell = L.make_cell(kind, H)
    assert cell.kind == kind and cell.linear and cell.num_blocks == g
    assert not L.make_cell("gru", H).linear and not L.make_cell("vanilla", H).linear
    params = cell.init(jax.random.key(0), I)
    assert cell.param_shapes(I) == {"w_x": (I, g * H), "b": (g * H,)}
    assert {k: v.shape for k, v in params.items()} == cell.param_shapes(I)
    np.testing.assert_array_equal(params["b"], 0.0)
    assert cell.check_params(params, I) == I
    assert L.make_cell(kind, H, use_bias=False).param_shapes(I) == {"w_x": (I, g * H)}
    assert cell.initial_state(B).shape == (B, H)
    with pytest.raises(ValueError, match=r"params\['w_h'\] is not a parameter of mingru|"
                                         r"params\['w_h'\] is not a parameter of minlstm"):
      cell.check_params({**params, "w_h": jnp.zeros((H, g * H))})
    with pytest.raises(ValueError, match=r"params\['b'\]: expected shape"):
      cell.check_params({**params, "b": jnp.zeros((H,))})
  drawn = L.make_cell("minlstm", H, bias_init=jax.nn.initializers.ones).init(
      jax.random.key(0), I)
  np.testing.assert_array_equal(drawn["b"], 1.0)


@pytest.mark.parametrize("kind", KINDS)
def test_lstm_only_options_are_refused(kind):
  with pytest.raises(ValueError, match=rf"peepholes=True .*cell='{kind}' has no memory cells"):
    L.make_cell(kind, H, peepholes=True)
  with pytest.raises(ValueError, match=rf"proj_size=2 is only available for LSTM cells, "
                                       rf"not '{kind}'"):
    L.make_cell(kind, H, proj_size=2)
  with pytest.raises(ValueError, match="chrono' is defined for LSTM, sLSTM and mLSTM cells only"):
    L.make_cell(kind, H, bias_init="chrono", chrono_t_max=10.0)
  with pytest.raises(ValueError, match=rf"cell='{kind}' is not an LSTM variant"):
    lnn.LSTMCell(features=H, cell=kind)
  with pytest.raises(ValueError, match=rf"activation_fn=tanh .*cell='{kind}' has no "
                                       "activation"):
    lnn.RecurrentCell(features=H, cell=kind, activation_fn=jnp.tanh)


# ----------------------------------------------------------------------------
# Against the NumPy loop.


@pytest.mark.parametrize("kind", KINDS)
def test_step_matches_numpy(kind):
  p = _params(kind)
  xs, h0 = _data()
  cell = L.make_cell(kind, H)
  got, y = cell.step(_jnp(p), jnp.asarray(h0, jnp.float32), jnp.asarray(xs[:, 0], jnp.float32))
  np.testing.assert_allclose(got, np_step(kind, p, h0, xs[:, 0]), **TOL)
  np.testing.assert_array_equal(got, y)
  step = L.mingru_step if kind == "mingru" else L.minlstm_step
  np.testing.assert_array_equal(step(_jnp(p), jnp.asarray(h0, jnp.float32),
                                     jnp.asarray(xs[:, 0], jnp.float32))[0], got)


def test_minlstm_normalisation_is_finite_for_saturated_gates():
  """f / (f + i) with both gates underflowing: the sigmoid of the log ratio stays finite."""
  cell = L.make_cell("minlstm", 1)
  p = {"w_x": jnp.zeros((1, 3)), "b": jnp.array([-200.0, -210.0, 2.0])}
  h, _ = cell.step(p, jnp.array([[1.0]]), jnp.zeros((1, 1)))
  # log f - log i = 10: f' = sigmoid(10), i' = sigmoid(-10).
  want = _sigmoid(10.0) * 1.0 + _sigmoid(-10.0) * 2.0
  np.testing.assert_allclose(h, [[want]], rtol=1e-6)


@pytest.mark.parametrize("impl", ["scan", "parallel"])
@pytest.mark.parametrize("kind", KINDS)
def test_rnn_matches_numpy_loop(kind, impl):
  p = _params(kind)
  xs, h0 = _data()
  cell = L.make_cell(kind, H)
  for state, lengths, reverse in ((None, None, False), (h0, LENGTHS, False),
                                  (h0, LENGTHS, True)):
    ys, final = L.rnn(cell, _jnp(p), jnp.asarray(xs, jnp.float32),
                      None if state is None else jnp.asarray(state, jnp.float32),
                      lengths=None if lengths is None else jnp.asarray(lengths),
                      reverse=reverse, impl=impl)
    want_ys, want_final = np_rnn(kind, p, xs, np.zeros((B, H)) if state is None else state,
                                 lengths, reverse)
    np.testing.assert_allclose(ys, want_ys, **TOL)
    np.testing.assert_allclose(final, want_final, **TOL)


# ----------------------------------------------------------------------------
# Parallel == sequential.


@pytest.mark.parametrize("kind", KINDS)
def test_parallel_equals_scan(kind):
  """With and without an initial state, with lengths, forward and reverse, in a
  bidirectional stack of two layers, and with a time-major layout."""
  cell = L.make_cell(kind, H)
  p = _jnp(_params(kind, scale=0.7))
  xs, h0 = (_jnp(a) for a in _data(time=9))
  lengths = jnp.array([9, 4, 0])
  for state in (None, h0):
    for lens in (None, lengths):
      for reverse in (False, True):
        want = L.rnn(cell, p, xs, state, lengths=lens, reverse=reverse, impl="scan")
        got = L.rnn(cell, p, xs, state, lengths=lens, reverse=reverse, impl="parallel")
        for g, w in zip(jax.tree_util.tree_leaves(got), jax.tree_util.tree_leaves(want)):
          np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-6)
  stack = L.init_stack(cell, jax.random.key(3), I, 2, bidirectional=True)
  states = [(h0, h0 + 1.0), None]
  runs = [L.stacked_rnn(cell, stack, jnp.swapaxes(xs, 0, 1), states, lengths=lengths,
                        time_major=True, bidirectional=True, impl=impl)
          for impl in ("scan", "parallel")]
  for g, w in zip(jax.tree_util.tree_leaves(runs[1]), jax.tree_util.tree_leaves(runs[0])):
    np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-6)
  bi = [L.bidirectional_rnn(cell, stack[0], xs, lengths=lengths, impl=impl)
        for impl in ("scan", "parallel")]
  for g, w in zip(jax.tree_util.tree_leaves(bi[1]), jax.tree_util.tree_leaves(bi[0])):
    np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-6)


def test_parallel_long_saturated_sequence_is_finite_and_equal():
  """Large pre-activations over 512 steps: products of the forget factors
  underflow to zero, and the plain combine stays finite and exact."""
  cell = L.make_cell("minlstm", H)
  p = _jnp(_params("minlstm", seed=4, scale=8.0))
  xs, h0 = (_jnp(a) for a in _data(seed=5, time=512))
  want = L.rnn(cell, p, xs, 100.0 * h0, impl="scan")
  got = L.rnn(cell, p, xs, 100.0 * h0, impl="parallel")
  assert all(np.isfinite(leaf).all() for leaf in jax.tree_util.tree_leaves(got))
  for g, w in zip(jax.tree_util.tree_leaves(got), jax.tree_util.tree_leaves(want)):
    np.testing.assert_allclose(g, w, rtol=1e-4, atol=1e-4)


def test_parallel_layer_with_emit_and_empty_sequence():
  cell = L.make_cell("mingru", H)
  p = _jnp(_params("mingru"))
  xs, h0 = (_jnp(a) for a in _data())
  w = jnp.arange(H * 2.0).reshape(H, 2)
  tm = jnp.swapaxes(xs, 0, 1)
  ys, final = sequence.scan_layer(cell, p, tm, h0, impl="parallel", emit=lambda y: y @ w)
  want_ys, want_final = sequence.scan_layer(cell, p, tm, h0, impl="scan", emit=lambda y: y @ w)
  np.testing.assert_allclose(ys, want_ys, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(final, want_final, rtol=1e-5, atol=1e-6)
  ys0, final0 = mincells.parallel_layer("mingru", p, tm[:0], h0)
  assert ys0.shape == (0, B, H)
  np.testing.assert_array_equal(final0, h0)


# ----------------------------------------------------------------------------
# Gradients (float64).


@pytest.mark.parametrize("kind", KINDS)
def test_check_grads_step_and_both_forms(kind):
  xs_np, h0_np = _data(seed=6, time=5)
  with jax.enable_x64(True):
    cell = L.make_cell(kind, H)
    p = _jnp(_params(kind, seed=7), jnp.float64)
    x64, h64 = jnp.asarray(xs_np), jnp.asarray(h0_np)
    check_grads(cell.step, (p, h64, x64[:, 0]), order=1, modes=("fwd", "rev"))
    tm = jnp.swapaxes(x64, 0, 1)
    lengths = jnp.array([5, 3, 0])
    for impl in ("scan", "parallel"):
      for reverse in (False, True):
        layer = lambda p_, xs_, h_: sequence.scan_layer(cell, p_, xs_, h_, lengths,
                                                        reverse=reverse, impl=impl)
        check_grads(layer, (p, tm, h64), order=1, modes=("fwd", "rev"))
    # Both forms give the same gradients.
    loss = lambda impl: jax.grad(lambda p_, h_: jnp.sum(jnp.sin(sequence.scan_layer(
        cell, p_, tm, h_, lengths, impl=impl)[0])), argnums=(0, 1))(p, h64)
    for g, w in zip(jax.tree_util.tree_leaves(loss("parallel")),
                    jax.tree_util.tree_leaves(loss("scan"))):
      np.testing.assert_allclose(g, w, rtol=1e-10, atol=1e-12)


# ----------------------------------------------------------------------------
# impl.


def test_impl_resolution():
  gru, mingru = L.make_cell("gru", H), L.make_cell("mingru", 32)
  assert sequence.IMPLS == ("auto", "fused", "scan", "parallel")
  # "auto": the measured CPU rule B * H <= PARALLEL_CPU_MAX_WIDTH.
  limit = sequence.PARALLEL_CPU_MAX_WIDTH
  assert sequence.parallel_pays(mingru, limit // 32, "cpu")
  assert not sequence.parallel_pays(mingru, limit // 32 + 1, "cpu")
  assert sequence.parallel_pays(mingru, 10_000, "gpu")
  if jax.default_backend() == "cpu":
    assert sequence.resolve_impl(mingru, "auto", batch=limit // 32) == "parallel"
    assert sequence.resolve_impl(mingru, "auto", batch=limit // 32 + 1) == "scan"
  assert sequence.resolve_impl(mingru, "auto") == "auto"  # the layer decides with its batch
  assert sequence.resolve_impl(mingru, "parallel") == "parallel"
  assert sequence.resolve_impl(mingru, "scan") == "scan"
  assert sequence.resolve_impl(mingru, "auto", "sqrt", batch=1) == "scan"
  assert sequence.resolve_impl(mingru, "auto", truncate=2, batch=1) == "scan"
  assert sequence.resolve_impl(gru, "auto", batch=1) == "scan"
  for rows in sequence.PARALLEL_TIMINGS + sequence.PARALLEL_LONG_TIMINGS:  # the rule follows
    kind, time, batch, hidden, scan_t, parallel_t = rows                  # the measurements
    assert (parallel_t < scan_t) == sequence.parallel_pays(
        L.make_cell(kind, hidden), batch, "cpu", time=time), rows
  assert not sequence.parallel_pays(mingru, 1, "cpu", time=sequence.PARALLEL_CPU_MAX_TIME + 1)
  assert sequence.parallel_pays(mingru, 1, "gpu", time=10 ** 6)
  if jax.default_backend() == "cpu":
    assert sequence.resolve_impl(mingru, "auto", batch=1, time=10 ** 4) == "scan"
  with pytest.raises(ValueError, match=r"impl='parallel' .*cell kind 'gru' .*not linear"):
    sequence.resolve_impl(gru, "parallel")
  with pytest.raises(ValueError, match=r"impl='parallel' .*remat='step'"):
    sequence.resolve_impl(mingru, "parallel", "step")
  with pytest.raises(ValueError, match=r"impl='parallel' .*truncate=3"):
    sequence.resolve_impl(mingru, "parallel", truncate=3)
  with pytest.raises(ValueError, match=r"impl='fused' .*cell kind 'mingru' .*impl='parallel'"):
    sequence.resolve_impl(mingru, "fused")
  p = gru.init(jax.random.key(0), I)
  with pytest.raises(ValueError, match=r"impl='parallel' .*cell kind 'gru'"):
    L.rnn(gru, p, jnp.zeros((B, T, I)), impl="parallel")
  with pytest.raises(ValueError, match=r"impl='parallel' .*remat='sqrt'"):
    L.models.make_model("minlstm", H, 2, impl="parallel", remat="sqrt")


# ----------------------------------------------------------------------------
# Flax wrappers, the experiment model and config.


@pytest.mark.parametrize("kind", KINDS)
def test_linen_and_nnx_cells(kind):
  core = L.make_cell(kind, H)
  params = _jnp(_params(kind, seed=8))
  xs, h0 = (_jnp(a) for a in _data(seed=9))
  want_ys, want_final = L.rnn(core, params, xs, h0, impl="parallel")
  cell = lnn.RecurrentCell(features=H, cell=kind)
  assert cell.core == core and lnn.RecurrentCell.from_core(core).core == core
  assert cell.initialize_carry(None, (B, I)).shape == (B, H)
  layer = nn.RNN(cell)
  shapes = jax.eval_shape(layer.init, jax.random.key(0), xs)
  assert {k: v.shape for k, v in lnn.to_core_params(shapes).items()} == core.param_shapes(I)
  carry, ys = layer.apply(lnn.to_variables(params, "rnn"), xs, initial_carry=h0,
                          return_carry=True)
  np.testing.assert_allclose(ys, want_ys, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(carry, want_final, rtol=1e-5, atol=1e-6)
  fresh = lnnx.RecurrentCell(I, H, cell=kind, rngs=nnx.Rngs(0))
  assert fresh.core == core and set(fresh.param_names) == {"w_x", "b"}
  held = lnnx.RecurrentCell.from_core_params(core, params)
  assert held.initialize_carry((B, I)).shape == (B, H)
  carry, ys = nnx.RNN(held)(xs, initial_carry=h0, return_carry=True)
  np.testing.assert_allclose(ys, want_ys, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(carry, want_final, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("kind", KINDS)
def test_sequence_model_both_forms_agree(kind):
  model = L.models.make_model(kind, H, 2, num_layers=2)
  params = model.init(jax.random.key(0), I)
  xs = jnp.asarray(_data(seed=10)[0], jnp.float32)
  lengths = jnp.asarray(LENGTHS)
  outs = {impl: dataclasses.replace(model, impl=impl).apply(params, xs, lengths)
          for impl in ("auto", "scan", "parallel")}
  assert outs["auto"].shape == (B, T, 2)
  for impl in ("auto", "parallel"):
    np.testing.assert_allclose(outs[impl], outs["scan"], rtol=1e-5, atol=1e-6)


def test_auto_in_a_model_is_decided_by_the_layer_batch(monkeypatch):
  """A model resolves "auto" without its batch; the layer then picks the
  parallel form by B * H (CPU rule), and it is what runs."""
  calls = []
  real = mincells.parallel_layer
  monkeypatch.setattr(mincells, "parallel_layer",
                      lambda *a, **k: calls.append(a[2].shape) or real(*a, **k))
  model = L.models.make_model("mingru", H, 2)
  params = model.init(jax.random.key(0), I)
  limit = sequence.PARALLEL_CPU_MAX_WIDTH // H
  for batch in (limit, limit + 1):
    model.apply(params, jnp.ones((batch, 2, I)))
  want = [(2, limit, I)] if jax.default_backend() == "cpu" else [(2, limit, I),
                                                                 (2, limit + 1, I)]
  assert calls == want


def test_config_builds_and_trains_a_mingru(tmp_path):
  cfg = importlib.import_module("configs.delayed_recall").get_config("quick")
  cfg.model.cell = "mingru"
  _, model, _ = config_lib.build(cfg)
  assert model.cell.kind == "mingru"
  bad = importlib.import_module("configs.delayed_recall").get_config("quick")
  bad.model.cell, bad.impl = "minlstm", "fused"
  with pytest.raises(config_lib.ConfigError, match=r"config.impl='fused' .*'minlstm'"):
    config_lib.build(bad)
  cfg.budget_sequences = 160
  summary = train_and_evaluate(cfg, str(tmp_path / "run"), progress=False)
  assert summary["status"] == "finished"

"""sLSTM and mLSTM (Beck et al. 2024) against NumPy loops written here, the
chunkwise mLSTM against its recurrence, gradients, stability, errors, the Flax
wrappers, regularisation and the experiment config.

The NumPy references never call ``lstm_jax`` and keep the **unstabilised**
states (float64, moderate inputs), so they also check that the stabiliser
cancels::

    sLSTM: k = x W_x + h R + b (R block-diagonal per head), i = exp(k_i),
           f = sigmoid(k_f) or exp(k_f), c = f c + i tanh(k_z), n = f n + i,
           h = sigmoid(k_o) c / n
    mLSTM: per head q, k / sqrt(d), v, scalar i = exp(k_i), f; C = f C + i v k^T,
           n = f n + i k, h = sigmoid(k_o) (C q) / max(|n . q|, 1)
"""

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
from lstm_jax import nnx as lnnx
from lstm_jax import diagnostics, sequence, xlstm

B, T, I, H, NH = 3, 7, 3, 4, 2
D = H // NH
LENGTHS = np.array([7, 3, 0])


def _sigmoid(v):
  return 1.0 / (1.0 + np.exp(-v))


def _forget(k_f, forget_fn):
  return np.exp(k_f) if forget_fn == "exp" else _sigmoid(k_f)


def np_slstm(p, xs, forget_fn="sigmoid", lengths=None):
  """``xs [B, T, I]`` -> ``ys [B, T, H]`` by a loop over sequences, steps and heads."""
  batch, time = xs.shape[:2]
  lengths = np.full(batch, time) if lengths is None else lengths
  ys = np.zeros((batch, time, H))
  for b in range(batch):
    h, c, n = np.zeros(H), np.zeros(H), np.zeros(H)
    for t in range(lengths[b]):
      k = xs[b, t] @ p["w_x"] + p["b"]
      for j in range(NH):          # head j: its own d x 4d recurrent block
        rec = h[j * D:(j + 1) * D] @ p["w_h"][j]
        for g in range(4):
          k[g * H + j * D:g * H + (j + 1) * D] += rec[g * D:(g + 1) * D]
      k_i, k_f, k_z, k_o = (k[g * H:(g + 1) * H] for g in range(4))
      i, f = np.exp(k_i), _forget(k_f, forget_fn)
      c = f * c + i * np.tanh(k_z)
      n = f * n + i
      h = _sigmoid(k_o) * c / n
      ys[b, t] = h
  return ys


def np_mlstm(p, xs, forget_fn="sigmoid", lengths=None, state=None):
  """``xs [B, T, I]`` -> ``(ys [B, T, H], C [B, NH, D, D], n [B, NH, D])`` (unstabilised)."""
  batch, time = xs.shape[:2]
  lengths = np.full(batch, time) if lengths is None else lengths
  ys = np.zeros((batch, time, H))
  cs, ns = np.zeros((batch, NH, D, D)), np.zeros((batch, NH, D))
  for b in range(batch):
    for j in range(NH):
      if state is None:
        mem, norm = np.zeros((D, D)), np.zeros(D)
      else:  # the given (stabilised) state, times exp(m)
        mem = state["c"][b, j] * np.exp(state["m"][b, j])
        norm = state["n"][b, j] * np.exp(state["m"][b, j])
      for t in range(lengths[b]):
        z = xs[b, t] @ p["w_x"] + p["b"]
        g = xs[b, t] @ p["w_if"] + p["b_if"]
        cols = slice(j * D, (j + 1) * D)
        q, k, v, o = (z[blk * H:(blk + 1) * H][cols] for blk in range(4))
        k = k / np.sqrt(D)
        i, f = np.exp(g[j]), _forget(g[NH + j], forget_fn)
        mem = f * mem + i * np.outer(v, k)
        norm = f * norm + i * k
        ys[b, t, cols] = _sigmoid(o) * (mem @ q) / max(abs(norm @ q), 1.0)
      cs[b, j], ns[b, j] = mem, norm
  return ys, cs, ns


def _params(kind, seed=0, scale=0.5):
  rng = np.random.default_rng(seed)
  r = lambda *shape: scale * rng.normal(size=shape)
  if kind == "slstm":
    return {"w_x": r(I, 4 * H), "w_h": r(NH, D, 4 * D), "b": r(4 * H)}
  return {"w_x": r(I, 4 * H), "w_if": r(I, 2 * NH), "b": r(4 * H), "b_if": r(2 * NH)}


def _xs(seed=1, time=T, scale=1.0):
  return scale * np.random.default_rng(seed).normal(size=(B, time, I))


def _jnp(tree, dtype=jnp.float32):
  return jax.tree_util.tree_map(lambda a: jnp.asarray(a, dtype), tree)


# ----------------------------------------------------------------------------
# Cells and parameters.


def test_names_shapes_and_options():
  for kind in xlstm.KINDS:
    assert kind in L.CELL_NAMES and kind in L.cells.BASELINES
    cell = L.make_cell(kind, H, num_heads=NH, forget_fn="exp")
    assert (cell.kind, cell.num_heads, cell.forget_fn) == (kind, NH, "exp")
    assert cell.param_shapes(I) == {k: v.shape for k, v in _params(kind).items()}
    assert "heads=2" in cell.describe()
  assert L.make_cell("mlstm", H).has_parallel and not L.make_cell("slstm", H).has_parallel
  s = L.make_cell("slstm", 8, num_heads=2).initial_state(5)
  assert isinstance(s, xlstm.SLSTMState) and all(a.shape == (5, 8) for a in s)
  m = L.make_cell("mlstm", 8, num_heads=2).initial_state(5)
  assert (m.c.shape, m.n.shape, m.m.shape) == ((5, 2, 4, 4), (5, 2, 4), (5, 2))
  # Bias schemes: forget bias on f; chrono on the per-head gates of an mLSTM.
  b = L.make_cell("slstm", H, forget_bias=2.0).init(jax.random.key(0), I)["b"]
  np.testing.assert_array_equal(b, np.r_[np.zeros(H), 2 * np.ones(H), np.zeros(2 * H)])
  p = L.make_cell("mlstm", H, num_heads=NH, bias_init="chrono",
                  chrono_t_max=100.0).init(jax.random.key(0), I)
  b_i, b_f = np.split(np.asarray(p["b_if"]), 2)
  assert np.all(b_f >= 0) and np.all(b_f <= np.log(99)) and np.allclose(b_i, -b_f)
  np.testing.assert_array_equal(p["b"], 0)
  assert set(L.make_cell("mlstm", H, use_bias=False).init(jax.random.key(0), I)) == {
      "w_x", "w_if"}


@pytest.mark.parametrize("options, match", [
    (dict(name="slstm", hidden_size=6, num_heads=4), r"num_heads=4 .*hidden_size=6"),
    (dict(name="mlstm", hidden_size=4, num_heads=0), r"num_heads=0"),
    (dict(name="vanilla", hidden_size=4, num_heads=2), r"num_heads=2 .*'lstm' has no heads"),
    (dict(name="slstm", hidden_size=4, forget_fn="relu"), r"forget_fn='relu'.*'sigmoid'"),
    (dict(name="gru", hidden_size=4, forget_fn="exp"), r"forget_fn='exp' .*'gru'"),
    (dict(name="mlstm", hidden_size=4, bias_init="hs1997"), r"bias_init='hs1997'"),
    (dict(name="slstm", hidden_size=4, peepholes=True),
     r"peepholes=True .*'slstm' is not an LSTM variant"),
])
def test_bad_options_give_one_line(options, match):
  name = options.pop("name")
  with pytest.raises(ValueError, match=match) as err:
    L.make_cell(name, **options)
  assert "\n" not in str(err.value)


# ----------------------------------------------------------------------------
# Against the NumPy loops.


@pytest.mark.parametrize("forget_fn", xlstm.FORGET_FNS)
def test_slstm_matches_numpy_loop(forget_fn):
  p, xs = _params("slstm", seed=2), _xs(seed=3)
  want = np_slstm(p, xs, forget_fn, LENGTHS)
  cell = L.make_cell("slstm", H, num_heads=NH, forget_fn=forget_fn)
  ys, final = L.rnn(cell, _jnp(p), _jnp(xs), lengths=jnp.asarray(LENGTHS))
  np.testing.assert_allclose(ys, want, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(final.h[0], want[0, -1], rtol=1e-5, atol=1e-6)
  np.testing.assert_array_equal(final.n[2], 0)  # an empty sequence keeps the empty state


def test_slstm_heads_do_not_mix_within_a_step():
  """Block-diagonal recurrence: head 1's h reaches only head 1's pre-activations."""
  cell = L.make_cell("slstm", H, num_heads=NH)
  p = _jnp(_params("slstm", seed=4))
  base = jnp.zeros((1, H))
  moved = base.at[0, D:].set(1.0)
  pre = lambda h: xlstm.slstm_preactivations(p, cell.initial_state(1)._replace(h=h),
                                             jnp.zeros((1, I)))
  delta = np.asarray(pre(moved) - pre(base)).reshape(4, NH, D)
  np.testing.assert_array_equal(delta[:, 0], 0)
  assert np.all(np.abs(delta[:, 1]).sum(-1) > 0)


@pytest.mark.parametrize("forget_fn", xlstm.FORGET_FNS)
@pytest.mark.parametrize("impl", ["scan", "parallel"])
def test_mlstm_matches_numpy_loop(forget_fn, impl):
  p, xs = _params("mlstm", seed=5), _xs(seed=6)
  want, want_c, want_n = np_mlstm(p, xs, forget_fn, LENGTHS)
  cell = L.make_cell("mlstm", H, num_heads=NH, forget_fn=forget_fn)
  ys, final = L.rnn(cell, _jnp(p), _jnp(xs), lengths=jnp.asarray(LENGTHS), impl=impl)
  np.testing.assert_allclose(ys, want, rtol=1e-4, atol=1e-5)
  scale = np.exp(np.asarray(final.m))
  np.testing.assert_allclose(final.c * scale[..., None, None], want_c, rtol=1e-4, atol=1e-5)
  np.testing.assert_allclose(final.n * scale[..., None], want_n, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("chunk", [3, 64])
def test_mlstm_chunkwise_equals_recurrence(chunk):
  """Any block size, an initial state, lengths, both directions, and emit."""
  cell = L.make_cell("mlstm", H, num_heads=NH)
  p, xs = _jnp(_params("mlstm", seed=7)), jnp.swapaxes(_jnp(_xs(seed=8)), 0, 1)
  rng = np.random.default_rng(9)
  state = xlstm.MLSTMState(c=_jnp(rng.normal(size=(B, NH, D, D))),
                           n=_jnp(rng.normal(size=(B, NH, D))),
                           m=_jnp(rng.normal(size=(B, NH))))
  lengths = jnp.asarray(LENGTHS)
  emit = lambda y: jnp.tanh(y[:, :2])
  for reverse in (False, True):
    for init in (cell.initial_state(B), state):
      want_ys, want_final = sequence.scan_layer(cell, p, xs, init, lengths, reverse=reverse,
                                                impl="scan", emit=emit)
      ys, final = xlstm.mlstm_parallel(p, xs, init, lengths, num_heads=NH, chunk_size=chunk,
                                       reverse=reverse, emit=emit)
      np.testing.assert_allclose(ys, want_ys, rtol=1e-5, atol=1e-5)
      for got, want in zip(final, want_final):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
  # With a given state the NumPy loop agrees too (unstabilised there).
  np_state = {k: np.asarray(v, np.float64) for k, v in state._asdict().items()}
  want, _, _ = np_mlstm({k: np.asarray(v, np.float64) for k, v in p.items()},
                        np.swapaxes(np.asarray(xs, np.float64), 0, 1), state=np_state)
  ys, _ = xlstm.mlstm_parallel(p, xs, state, num_heads=NH, chunk_size=chunk)
  np.testing.assert_allclose(jnp.swapaxes(ys, 0, 1), want, rtol=1e-4, atol=1e-5)
  empty, final = xlstm.mlstm_parallel(p, xs[:0], state, num_heads=NH)
  assert empty.shape == (0, B, H) and final is state


# ----------------------------------------------------------------------------
# Gradients.


@pytest.mark.parametrize("kind", xlstm.KINDS)
def test_check_grads(kind):
  with jax.enable_x64(True):
    cell = L.make_cell(kind, H, num_heads=NH)
    p = _jnp(_params(kind, seed=10), jnp.float64)
    xs = jnp.swapaxes(_jnp(_xs(seed=11, time=5), jnp.float64), 0, 1)
    x0 = xs[0]
    # A state that is not empty (n > 0), so every branch of the stabiliser runs.
    state, _ = cell.step(p, cell.initial_state(B, jnp.float64), x0)
    check_grads(lambda p_, x_: cell.step(p_, state, x_)[1], (p, x0), order=1,
                modes=("fwd", "rev"))
    lengths = jnp.array([5, 3, 0])
    impls = ("scan", "parallel") if kind == "mlstm" else ("scan",)
    for impl in impls:
      layer = lambda p_, xs_: sequence.scan_layer(cell, p_, xs_, cell.initial_state(
          B, jnp.float64), lengths, impl=impl)[0]
      check_grads(layer, (p, xs), order=1, modes=("rev",))
    if kind == "mlstm":  # both forms give the same gradients
      grads = lambda impl: jax.grad(lambda p_: jnp.sum(jnp.sin(sequence.scan_layer(
          cell, p_, xs, state, lengths, impl=impl)[0])))(p)
      for g, w in zip(jax.tree_util.tree_leaves(grads("parallel")),
                      jax.tree_util.tree_leaves(grads("scan"))):
        np.testing.assert_allclose(g, w, rtol=1e-9, atol=1e-11)


def test_empty_state_has_finite_gradients_for_huge_inputs():
  """The first step's untaken branch (exp of a huge number) must not leak NaN."""
  cell = L.make_cell("slstm", H, num_heads=NH, forget_fn="exp")
  p = _jnp(_params("slstm", seed=12))
  x = jnp.full((B, I), 1e4)
  g = jax.grad(lambda p_: cell.step(p_, cell.initial_state(B), x)[1].sum())(p)
  assert all(np.isfinite(leaf).all() for leaf in jax.tree_util.tree_leaves(g))


# ----------------------------------------------------------------------------
# Stability (fuzz).


@pytest.mark.parametrize("forget_fn", xlstm.FORGET_FNS)
def test_slstm_finite_over_1e5_steps_and_huge_inputs(forget_fn):
  cell = L.make_cell("slstm", H, num_heads=NH, forget_fn=forget_fn)
  p = cell.init(jax.random.key(13), I)
  rng = np.random.default_rng(14)
  xs = rng.normal(size=(2, 100_000, I)).astype(np.float32)
  xs[:, ::997] *= 1e4  # bursts of |x| ~ 1e4
  ys, final = jax.jit(lambda p_, x_: L.rnn(cell, p_, x_))(p, jnp.asarray(xs))
  assert np.isfinite(ys).all() and all(np.isfinite(a).all() for a in final)
  assert np.abs(ys).max() <= 1.0 + 1e-6  # |h| <= 1: n >= 1 and |c| <= n
  for scale in (1e2, 1e3, 1e4):
    big = jnp.asarray(scale * rng.uniform(-1, 1, size=(4, 50, I)), jnp.float32)
    out, st = L.rnn(cell, p, big)
    assert np.isfinite(out).all() and all(np.isfinite(a).all() for a in st), scale
    g = jax.grad(lambda x_: L.rnn(cell, p, x_)[0].sum())(big)
    assert np.isfinite(g).all(), scale


@pytest.mark.parametrize("impl", ["scan", "parallel"])
def test_mlstm_finite_for_huge_inputs(impl):
  cell = L.make_cell("mlstm", H, num_heads=NH)
  p = cell.init(jax.random.key(15), I)
  rng = np.random.default_rng(16)
  for scale in (1e2, 1e4):
    big = jnp.asarray(scale * rng.uniform(-1, 1, size=(4, 300, I)), jnp.float32)
    out, st = L.rnn(cell, p, big, impl=impl)
    assert np.isfinite(out).all() and all(np.isfinite(a).all() for a in st), scale


# ----------------------------------------------------------------------------
# impl, the API around the cells.


def test_impl_resolution_for_mlstm():
  wide, narrow = L.make_cell("mlstm", 32, num_heads=2), L.make_cell("mlstm", 32, num_heads=4)
  assert sequence.parallel_pays(wide, 8, "cpu") and not sequence.parallel_pays(narrow, 8, "cpu")
  assert sequence.parallel_pays(narrow, 8, "gpu")
  for t, b, h, nh, scan_ms, chunk_ms in sequence.MLSTM_TIMINGS:  # the rule follows them
    assert (chunk_ms < scan_ms) == (h // nh >= sequence.MLSTM_PARALLEL_MIN_HEAD), (t, b, h, nh)
  assert sequence.resolve_impl(wide, "parallel") == "parallel"
  with pytest.raises(ValueError, match=r"impl='parallel' .*'slstm'"):
    sequence.resolve_impl(L.make_cell("slstm", H), "parallel")
  with pytest.raises(ValueError, match=r"impl='fused' .*'mlstm'"):
    sequence.resolve_impl(wide, "fused")


@pytest.mark.parametrize("kind", xlstm.KINDS)
def test_stacked_bidirectional_and_model(kind):
  cell = L.make_cell(kind, H, num_heads=NH)
  xs = _jnp(_xs(seed=17))
  stack = [cell.init(k, n) for k, n in zip(jax.random.split(jax.random.key(0)), (I, H))]
  ys, states = L.stacked_rnn(cell, stack, xs, lengths=jnp.asarray(LENGTHS))
  assert ys.shape == (B, T, H) and len(states) == 2
  bi = {"fwd": stack[0], "bwd": cell.init(jax.random.key(1), I)}
  ys, _ = L.bidirectional_rnn(cell, bi, xs)
  assert ys.shape == (B, T, 2 * H)
  model = L.models.make_model(kind, H, 2, num_layers=2, num_heads=NH)
  params = model.init(jax.random.key(2), I)
  out = model.apply(params, xs, jnp.asarray(LENGTHS))
  assert out.shape == (B, T, 2) and np.isfinite(out).all()
  # The memory diagnostics read the layer's output h (an mLSTM's state has none).
  h, mask = diagnostics.hidden_trace(cell, stack[0], xs, lengths=jnp.asarray(LENGTHS))
  np.testing.assert_allclose(h[:3, 1], jnp.swapaxes(L.rnn(cell, stack[0], xs)[0], 0, 1)[:3, 1],
                             rtol=1e-5, atol=1e-6)
  assert h.shape == (T, B, H) and not mask[:, 2].any()


@pytest.mark.parametrize("kind", xlstm.KINDS)
def test_linen_and_nnx_cells(kind):
  core = L.make_cell(kind, H, num_heads=NH)
  params = _jnp(_params(kind, seed=18))
  xs = _jnp(_xs(seed=19))
  want_ys, want_final = L.rnn(core, params, xs, impl="scan")
  cell = lnn.RecurrentCell(features=H, cell=kind, num_heads=NH)
  assert cell.core == core and lnn.RecurrentCell.from_core(core).core == core
  carry0 = cell.initialize_carry(None, (B, I))
  assert type(carry0) is type(core.initial_state(B))
  layer = nn.RNN(cell)
  shapes = jax.eval_shape(layer.init, jax.random.key(0), xs)
  assert {k: v.shape for k, v in lnn.to_core_params(shapes).items()} == core.param_shapes(I)
  carry, ys = layer.apply(lnn.to_variables(params, "rnn"), xs, return_carry=True)
  np.testing.assert_allclose(ys, want_ys, rtol=1e-5, atol=1e-6)
  for got, want in zip(carry, want_final):
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
  fresh = lnnx.RecurrentCell(I, H, cell=kind, num_heads=NH, rngs=nnx.Rngs(0))
  assert fresh.core == core and set(fresh.param_names) == set(params)
  held = lnnx.RecurrentCell.from_core_params(core, params)
  carry, ys = nnx.RNN(held)(xs, return_carry=True)
  np.testing.assert_allclose(ys, want_ys, rtol=1e-5, atol=1e-6)


def test_regularisation_options():
  slstm, mlstm = L.make_cell("slstm", H), L.make_cell("mlstm", H)
  L.Regularization(recurrent_dropout=0.3, zoneout_h=0.2).check(slstm)
  with pytest.raises(ValueError, match=r"recurrent_dropout=0.3 .*'mlstm'"):
    L.Regularization(recurrent_dropout=0.3).check(mlstm)
  with pytest.raises(ValueError, match=r"zoneout_h=0.2 .*'mlstm'"):
    L.Regularization(zoneout_h=0.2).check(mlstm)
  with pytest.raises(ValueError, match=r"zoneout_c=0.2 .*'slstm'"):
    L.Regularization(zoneout_c=0.2).check(slstm)
  # Zoneout at evaluation mixes old and new h by the rate: rate 0.5 over one
  # step from the empty state halves the first output.
  p = slstm.init(jax.random.key(0), I)
  xs = jnp.swapaxes(_jnp(_xs(seed=20, time=1)), 0, 1)
  plain, _ = sequence.scan_layer(slstm, p, xs, slstm.initial_state(B), impl="scan")
  half, _ = sequence.scan_layer(slstm, p, xs, slstm.initial_state(B), impl="scan",
                                noise=sequence.StateNoise(zoneout_h=0.5))
  np.testing.assert_allclose(half, 0.5 * plain, rtol=1e-6)


def test_config_builds_and_trains(tmp_path):
  from lstm_jax.runner import train_and_evaluate
  cfg = importlib.import_module("configs.delayed_recall").get_config("quick")
  cfg.model.cell, cfg.model.num_heads, cfg.model.forget_fn = "slstm", 2, "exp"
  _, model, _ = config_lib.build(cfg)
  assert (model.cell.kind, model.cell.num_heads, model.cell.forget_fn) == ("slstm", 2, "exp")
  bad = importlib.import_module("configs.delayed_recall").get_config("quick")
  bad.model.cell, bad.model.num_heads = "mlstm", 5
  with pytest.raises(config_lib.ConfigError, match=r"config.model.num_heads=5") as err:
    config_lib.build(bad)
  assert "\n" not in str(err.value)
  cfg.model.cell = "mlstm"
  cfg.budget_sequences = 160
  summary = train_and_evaluate(cfg, str(tmp_path / "run"), progress=False)
  assert summary["status"] == "finished"


def _selective_copy_budget(module) -> int:
  return module.get_config("selective_copy").base.budget_sequences


@pytest.mark.parametrize("task", ["delayed_recall", "copy", "selective_copy", "parity"])
def test_comparison_sweep_points_build(task):
  """Every model of the comparison sweep builds on every task (full and quick)."""
  from lstm_jax import sweep as sweep_lib
  module = importlib.import_module("configs.sweeps.modern_cells")
  for arg in (task, task + ",quick"):
    cfg = module.get_config(arg)
    points = sweep_lib.points(cfg)
    assert len(points) == len(module.MODELS) * len(cfg.lags)
    kinds = {config_lib.build(p.config).model.cell.kind for p in points}
    assert kinds == {"lstm", "gru", "mingru", "minlstm", "slstm", "mlstm"}
  with pytest.raises(ValueError, match=r"config argument 'adding' is not allowed"):
    module.get_config("adding")
  if task == "selective_copy":
    long = module.get_config("selective_copy,long")
    assert [m["label"] for m in long.models] == ["minGRU x3", "minLSTM x3"]
    assert long.base.budget_sequences == 5 * _selective_copy_budget(module) and long.lags == (64,)
  else:
    with pytest.raises(ValueError, match=rf"config argument '{task},long' is not allowed"):
      module.get_config(task + ",long")
  horizon = importlib.import_module("configs.sweeps.horizon_modern").get_config("quick")
  assert [m["label"] for m in horizon.models] == [m["label"] for m in module.MODELS]

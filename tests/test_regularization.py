"""Regularisation (lstm_jax.Regularization): dropout on each layer's inputs and
outputs, variational recurrent dropout, zoneout of c and h. Mask statistics,
determinism at evaluation, the zoneout expectation against a NumPy loop,
independence from how the batch is split, resume equality, the impl choice
and one-line errors."""

from __future__ import annotations

import importlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lstm_jax import Regularization, make_cell, online
from lstm_jax import config as config_lib
from lstm_jax import training
from lstm_jax.devices import Placement
from lstm_jax.models import make_model
from lstm_jax.runner import train_and_evaluate
from lstm_jax.sequence import (StateNoise, dropout, recurrent_mask, resolve_impl, scan_layer,
                               sequence_keys)
from test_reliability import _final_params, _train_losses

ALL = Regularization(dropout_in=0.2, dropout_out=0.3, recurrent_dropout=0.25, zoneout_c=0.3,
                     zoneout_h=0.2)


def _inputs(batch=4, time=6, size=3, seed=0):
  return jax.random.normal(jax.random.key(seed), (batch, time, size))


def test_dropout_mask_statistics_and_scale():
  """Keep fraction ~ 1 - p over many units, kept values scaled by 1/(1-p),
  different rows draw different masks."""
  p = 0.3
  keys = sequence_keys(jax.random.key(1), 8)
  out = np.asarray(dropout(jnp.ones((50, 8, 64)), p, keys))
  kept = out != 0
  assert abs(kept.mean() - (1 - p)) < 0.02
  np.testing.assert_allclose(out[kept], 1 / (1 - p), rtol=1e-6)
  assert not np.array_equal(kept[:, 0], kept[:, 1])
  mask = np.asarray(recurrent_mask(sequence_keys(jax.random.key(2), 64), p, 128))
  assert mask.shape == (64, 128)
  assert abs((mask != 0).mean() - (1 - p)) < 0.02
  np.testing.assert_allclose(mask[mask != 0], 1 / (1 - p), rtol=1e-6)
  assert len({row.tobytes() for row in (mask != 0)}) == 64  # one mask per sequence


def test_variational_mask_is_shared_over_time():
  """An Elman layer with recurrent dropout equals a NumPy loop that applies the
  one per-sequence mask at every step (and the masks differ between sequences)."""
  cell = make_cell("elman", 5)
  params = cell.init(jax.random.key(0), 3)
  xs = jnp.swapaxes(_inputs(4, 7, 3), 0, 1)
  keys = sequence_keys(jax.random.key(3), 4)
  noise = StateNoise(recurrent_dropout=0.4, keys=keys)
  ys, _ = scan_layer(cell, params, xs, cell.initial_state(4), noise=noise, impl="scan")
  mask = np.asarray(recurrent_mask(keys, 0.4, 5))
  assert not np.array_equal(mask[0], mask[1])
  w_x, w_h, b = (np.asarray(params[k], np.float64) for k in ("w_x", "w_h", "b"))
  h = np.zeros((4, 5))
  for t in range(7):
    h = np.tanh(np.asarray(xs[t], np.float64) @ w_x + (h * mask) @ w_h + b)
    np.testing.assert_allclose(np.asarray(ys[t]), h, rtol=1e-5, atol=1e-6)


def test_gru_recurrent_dropout_masks_the_matmul_only():
  """``h_{t-1} * m`` enters ``W_h``; the update ``u * h_{t-1}`` reads ``h_{t-1}``."""
  cell = make_cell("gru", 5)
  params = jax.tree_util.tree_map(lambda a: a + 0.1, cell.init(jax.random.key(0), 3))
  xs = jnp.swapaxes(_inputs(4, 6, 3), 0, 1)
  keys = sequence_keys(jax.random.key(3), 4)
  ys, _ = scan_layer(cell, params, xs, cell.initial_state(4),
                     noise=StateNoise(recurrent_dropout=0.4, keys=keys), impl="scan")
  mask = np.asarray(recurrent_mask(keys, 0.4, 5))
  p = {k: np.asarray(v, np.float64) for k, v in params.items()}
  h = np.zeros((4, 5))
  for t in range(6):
    zx = np.asarray(xs[t], np.float64) @ p["w_x"] + p["b"]
    zh = (h * mask) @ p["w_h"]
    xr, xz, xn = np.split(zx, 3, axis=-1)
    hr, hz, hn = np.split(zh, 3, axis=-1)
    r, u = _sigmoid(xr + hr), _sigmoid(xz + hz)
    h = (1 - u) * np.tanh(xn + r * (hn + p["b_hn"])) + u * h
    np.testing.assert_allclose(np.asarray(ys[t]), h, rtol=1e-5, atol=1e-6)


def test_zoneout_one_freezes_the_state_and_zero_is_the_plain_layer():
  cell = make_cell("vanilla", 4)
  params = cell.init(jax.random.key(0), 3)
  xs = jnp.swapaxes(_inputs(3, 6, 3), 0, 1)
  start = jax.tree_util.tree_map(lambda a: a + 0.5, cell.initial_state(3))
  keys = sequence_keys(jax.random.key(5), 3)
  frozen = StateNoise(zoneout_c=1.0, zoneout_h=1.0, keys=keys)
  ys, final = scan_layer(cell, params, xs, start, noise=frozen, impl="scan")
  np.testing.assert_array_equal(np.asarray(final.c), np.asarray(start.c))
  np.testing.assert_array_equal(np.asarray(ys), np.broadcast_to(np.asarray(start.h), ys.shape))
  plain = scan_layer(cell, params, xs, start, impl="scan")
  zero = scan_layer(cell, params, xs, start, noise=StateNoise(keys=keys), impl="scan")
  for a, b in zip(jax.tree_util.tree_leaves(plain), jax.tree_util.tree_leaves(zero)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def _sigmoid(z):
  return 1 / (1 + np.exp(-z))


def test_zoneout_at_evaluation_is_its_expectation():
  """``c_t = z_c c_{t-1} + (1 - z_c) c~_t`` and likewise ``h``, against a NumPy
  LSTM loop; the readout reads the zoned-out ``h_t``."""
  zc, zh = 0.3, 0.2
  model = make_model("vanilla", 4, 2, regularization=Regularization(zoneout_c=zc, zoneout_h=zh))
  params = model.init(jax.random.key(0), 3)
  x = _inputs(2, 5, 3)
  out = np.asarray(model.apply(params, x))
  layer = {k: np.asarray(v, np.float64) for k, v in params["rnn"][0].items()}
  w, b_out = (np.asarray(params["readout"][k], np.float64) for k in ("w", "b"))
  h, c = np.zeros((2, 4)), np.zeros((2, 4))
  for t in range(5):
    z = np.asarray(x[:, t], np.float64) @ layer["w_x"] + h @ layer["w_h"] + layer["b"]
    i, f, g, o = np.split(z, 4, axis=-1)
    c_new = _sigmoid(f) * c + _sigmoid(i) * np.tanh(g)
    h_new = _sigmoid(o) * np.tanh(c_new)
    c = zc * c + (1 - zc) * c_new
    h = zh * h + (1 - zh) * h_new
    np.testing.assert_allclose(out[:, t], h @ w + b_out, rtol=1e-5, atol=1e-6)


def test_evaluation_is_deterministic_and_dropout_is_the_identity():
  x = _inputs()
  plain = make_model("vanilla", 5, 2, num_layers=2)
  params = plain.init(jax.random.key(0), 3)
  dropped = make_model("vanilla", 5, 2, num_layers=2, regularization=Regularization(
      dropout_in=0.3, dropout_out=0.3, recurrent_dropout=0.3))
  np.testing.assert_allclose(dropped.apply(params, x), plain.apply(params, x), atol=1e-6)
  between = make_model("vanilla", 5, 2, num_layers=2,
                       regularization=Regularization(dropout_in=0.3, dropout_out=0.3))
  np.testing.assert_array_equal(between.apply(params, x, key=jax.random.key(1)),
                                plain.apply(params, x))
  # Training draws from the key: the same key gives the same result, another differs.
  full = make_model("vanilla", 5, 2, num_layers=2, regularization=ALL)
  train = jax.jit(lambda p, k: full.apply(p, x, None, k, train=True))
  a, b, c = train(params, jax.random.key(1)), train(params, jax.random.key(1)), \
      train(params, jax.random.key(2))
  np.testing.assert_array_equal(a, b)
  assert not np.allclose(a, c)
  assert not np.allclose(a, full.apply(params, x))


def test_all_rates_zero_is_the_program_of_today():
  model = make_model("vanilla", 5, 2)
  assert model == make_model("vanilla", 5, 2, regularization=Regularization(0, 0, 0, 0, 0))
  params = model.init(jax.random.key(0), 3)
  x = _inputs()
  train = jax.make_jaxpr(lambda p, k: model.apply(p, x, None, k, train=True))
  evaluate = jax.make_jaxpr(lambda p, k: model.apply(p, x))
  key = jax.random.key(1)
  assert str(train(params, key)) == str(evaluate(params, key))


def test_regularised_gradients_agree_over_remat_and_lengths():
  """Segment recompute (remat="sqrt") redraws the same masks: the gradient
  equals the one without recompute, with padded sequences."""
  x, lengths = _inputs(4, 9), jnp.array([9, 4, 0, 7])
  grads = []
  for remat in ("none", "sqrt"):
    model = make_model("vanilla", 5, 2, num_layers=2, remat=remat, regularization=ALL)
    params = model.init(jax.random.key(0), 3)
    loss = lambda p: (model.apply(p, x, lengths, jax.random.key(4), train=True) ** 2).sum()
    grads.append(jax.grad(loss)(params))
  for a, b in zip(*map(jax.tree_util.tree_leaves, grads)):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_masks_depend_on_the_sequence_not_on_the_batch_it_is_in():
  """Sequence b draws from fold_in(key, b): per-sequence keys give what one key
  gives, and half the batch with its keys gives half the outputs."""
  model = make_model("vanilla", 5, 2, num_layers=2, regularization=ALL)
  params = model.init(jax.random.key(0), 3)
  x = _inputs(6)
  key = jax.random.key(7)
  keys = sequence_keys(key, 6)
  whole = model.apply(params, x, None, key, train=True)
  np.testing.assert_array_equal(model.apply(params, x, None, keys, train=True), whole)
  np.testing.assert_allclose(model.apply(params, x[3:], None, keys[3:], train=True), whole[3:],
                             rtol=1e-6, atol=1e-6)


def _chunk_metrics(model, split):
  cfg = importlib.import_module("configs.delayed_recall").get_config("quick")
  task, _, _ = config_lib.build(cfg)
  placement = Placement.build(1, "auto", split)
  opt = training.make_optimizer("adam", 1e-2)
  init, data, _ = training.seed_keys(0, 1)
  state = training.init_state(model, opt, init, task.input_size)
  chunk = training.make_train_chunk(model, task, opt, 8, 3, placement)
  state, metrics, _ = chunk(state, data)
  return state, metrics


def test_split_and_unsplit_batch_train_alike():
  """The masks are drawn per sequence before the batch is split over the two
  test devices, so a split step equals an unsplit one (to rounding)."""
  cfg = importlib.import_module("configs.delayed_recall").get_config("quick")
  task = config_lib.build(cfg).task
  model = make_model("vanilla", 8, task.output_size, regularization=ALL)
  if len(jax.devices()) < 2:
    pytest.skip("needs two devices")
  split, m_split = _chunk_metrics(model, "on")
  whole, m_whole = _chunk_metrics(model, "off")
  np.testing.assert_allclose(m_split["loss"], m_whole["loss"], rtol=1e-5)
  for a, b in zip(jax.tree_util.tree_leaves(split.params), jax.tree_util.tree_leaves(whole.params)):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)
  plain, m_plain = _chunk_metrics(make_model("vanilla", 8, task.output_size), "off")
  assert not np.allclose(m_plain["loss"], m_whole["loss"])  # regularisation acts


def _reg_config(budget):
  cfg = importlib.import_module("configs.delayed_recall").get_config("quick")
  cfg.budget_sequences = budget
  cfg.checkpoint_every = 10
  cfg.eval_every = 100_000
  m = cfg.model
  m.dropout_in, m.dropout_out, m.recurrent_dropout = 0.1, 0.2, 0.1
  m.zoneout_c, m.zoneout_h = 0.1, 0.05
  return cfg



def test_resumed_run_with_regularization_equals_an_uninterrupted_one(tmp_path):
  """40 updates straight vs 20 updates, then the run continued to 40 from its
  checkpoint: the same training losses and the same final parameters."""
  straight, resumed = tmp_path / "straight", tmp_path / "resumed"
  assert train_and_evaluate(_reg_config(320), str(straight), progress=False)["status"] \
      == "finished"
  train_and_evaluate(_reg_config(160), str(resumed), progress=False)
  (resumed / "summary.json").unlink()
  train_and_evaluate(_reg_config(320), str(resumed), progress=False,
                     on_config_change="overwrite")
  assert _train_losses(resumed) == _train_losses(straight)
  step_a, params_a = _final_params(resumed)
  step_b, params_b = _final_params(straight)
  assert step_a == step_b == 40
  for a, b in zip(params_a, params_b):
    np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("field,value", [("dropout_in", 1.0), ("dropout_out", -0.1),
                                         ("recurrent_dropout", True), ("zoneout_c", 1.5),
                                         ("zoneout_h", "0.1")])
def test_bad_rates_are_one_line_naming_the_field(field, value):
  with pytest.raises(ValueError, match=rf"^{field}=.* is not allowed; expected a rate in "
                     r"\[0, 1\)") as err:
    make_model("vanilla", 4, 2, regularization=Regularization(**{field: value}))
  assert "\n" not in str(err.value)
  cfg = importlib.import_module("configs.delayed_recall").get_config("quick")
  cfg.model[field] = value if not isinstance(value, str) else 2.0
  with pytest.raises(config_lib.ConfigError, match=rf"^config\.model\.{field}=") as err:
    config_lib.build(cfg)
  assert "\n" not in str(err.value)


def test_cells_a_regulariser_does_not_apply_to_are_refused():
  with pytest.raises(ValueError, match=r"^recurrent_dropout=0.1 is not allowed; cell kind "
                     "'minlstm' has no recurrent matmul"):
    make_model("minlstm", 4, 2, regularization=Regularization(recurrent_dropout=0.1))
  with pytest.raises(ValueError, match=r"^zoneout_c=0.1 is not allowed; cell kind 'mingru'"):
    make_model("mingru", 4, 2, regularization=Regularization(zoneout_c=0.1))
  with pytest.raises(ValueError, match=r"^key=None is not allowed"):
    m = make_model("vanilla", 4, 2, regularization=Regularization(dropout_in=0.1))
    m.apply(m.init(jax.random.key(0), 3), _inputs(), train=True)


def test_fused_and_parallel_are_refused_and_auto_falls_back_to_the_scan():
  zone = Regularization(zoneout_h=0.1)
  with pytest.raises(ValueError, match=r"^impl='fused' is not allowed; the fused layer does "
                     "not cover recurrent dropout or zoneout"):
    make_model("vanilla", 4, 2, impl="fused", regularization=zone)
  with pytest.raises(ValueError, match=r"^impl='parallel' is not allowed; the parallel form "
                     "does not cover recurrent dropout or zoneout"):
    make_model("mingru", 4, 2, impl="parallel", regularization=zone)
  lstm, mingru = make_cell("vanilla", 4), make_cell("mingru", 4)
  assert resolve_impl(lstm, "auto") == "fused"
  assert resolve_impl(lstm, "auto", noise=True) == "scan"
  assert resolve_impl(mingru, "auto", batch=2, noise=True) == "scan"
  assert resolve_impl(mingru, "auto", noise=True) == "scan"
  # Dropout between layers runs with the fused layer.
  make_model("vanilla", 4, 2, impl="fused", regularization=Regularization(0.1, 0.1))
  # A minGRU with zoneout trains (plain scan) and evaluates to its expectation.
  model = make_model("mingru", 4, 2, regularization=zone)
  params = model.init(jax.random.key(0), 3)
  grads = jax.grad(lambda p: model.apply(p, _inputs(), None, jax.random.key(1),
                                         train=True).sum())(params)
  assert all(np.isfinite(np.asarray(g)).all() for g in jax.tree_util.tree_leaves(grads))


def test_per_step_learning_refuses_regularization():
  cfg = importlib.import_module("configs.delayed_recall").get_config("quick")
  model = make_model("lstm1997", 4, 2, truncated_gradient=True,
                     regularization=Regularization(dropout_in=0.1))
  task = config_lib.build(cfg).task
  assert "zoneout" in online.unsupported(model, task) or \
      "regularisation" in online.unsupported(model, task)

"""Batch split across devices (lstm_jax.parallel): the same numbers and
gradients as the unsplit layer, against a NumPy loop; device-count helpers."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

import lstm_jax as L
from lstm_jax import parallel
from test_sequence import _numpy_lstm, _random_params

TWO = jax.devices()[:2]
H, I, T = 4, 3, 5


@pytest.fixture(scope="module")
def lstm():
  cell = L.make_cell("vanilla", H)
  return cell, _random_params(cell, input_size=I)


@pytest.mark.parametrize("batch", [4, 5, 1])
def test_split_outputs_match_a_numpy_loop(lstm, batch):
  """4 rows: two per device; 5: padded to 6; 1: one device, no split."""
  cell, params = lstm
  xs = np.asarray(jax.random.normal(jax.random.key(batch), (batch, T, I)))
  lengths = np.array([T, 2, 0, 3, 1][:batch])
  layer = functools.partial(L.rnn, cell)
  split = parallel.split_batch(lambda p, x, n: layer(p, x, lengths=n), TWO,
                               batch_argnums=(1, 2))
  ys, state = jax.jit(split)(params, xs, lengths)
  h, c = state.h, state.c
  if batch > 1:
    assert ys.sharding.device_set == set(TWO)
  for b in range(batch):
    ref_ys, ref_h, ref_c = _numpy_lstm(params, xs[b, :lengths[b]])
    np.testing.assert_allclose(ys[b, :lengths[b]], ref_ys, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(ys[b, lengths[b]:], 0.0)
    np.testing.assert_allclose(h[b], ref_h, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(c[b], ref_c, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("impl", ["fused", "scan"])
def test_split_gradients_equal_the_unsplit_layer(lstm, impl):
  """Parameter, input and initial-state gradients of a loss over the whole
  batch (5 rows, padded) are the unsplit layer's."""
  cell, params = lstm
  xs = jax.random.normal(jax.random.key(7), (5, T, I))
  h0 = jax.random.normal(jax.random.key(8), (5, H))
  state = L.LSTMState(h0, jnp.tanh(h0))

  def loss(run, p, x, s):
    ys, last = run(p, x, s)
    return jnp.mean(jnp.sin(ys) ** 2) + jnp.sum(last.h[:, 0])

  whole = lambda p, x, s: L.rnn(cell, p, x, s, impl=impl)
  split = parallel.split_batch(whole, TWO, batch_argnums=(1, 2))
  got = jax.jit(jax.grad(functools.partial(loss, split), argnums=(0, 1, 2)))(params, xs, state)
  want = jax.grad(functools.partial(loss, whole), argnums=(0, 1, 2))(params, xs, state)
  jax.tree_util.tree_map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6),
                         got, want)


def test_split_gradients_against_finite_differences(lstm):
  cell, params = lstm
  with jax.enable_x64(True):
    p64 = jax.tree_util.tree_map(lambda v: jnp.asarray(v, jnp.float64), params)
    xs = jax.random.normal(jax.random.key(3), (3, 4, I), jnp.float64)
    split = parallel.split_batch(lambda p, x: L.rnn(cell, p, x)[0], TWO)
    check_grads(lambda p, x: jnp.sum(jnp.tanh(split(p, x))), (p64, xs), order=1,
                modes=["rev"], atol=1e-6, rtol=1e-6)


def test_device_counts_and_bad_arguments():
  assert parallel.batch_devices_used(7, TWO) == 2 and parallel.batch_devices_used(1, TWO) == 1
  assert parallel.batch_sharding(4, TWO).spec == jax.sharding.PartitionSpec("batch")
  assert parallel.batch_sharding(3, TWO).spec == jax.sharding.PartitionSpec()  # padded
  assert parallel.batch_sharding(1, TWO).device_set == {TWO[0]}
  assert parallel.replicated(2, TWO).device_set == set(TWO)
  with pytest.raises(ValueError, match=r"batch=0 is not allowed"):
    parallel.batch_devices_used(0)
  fn = parallel.split_batch(lambda p, x: x * p, TWO, batch_argnums=(3,))
  with pytest.raises(ValueError, match=r"batch_argnums=\(3,\) .* 2 positional"):
    fn(1.0, np.ones((4, 2)))
  fn = parallel.split_batch(lambda p, x, y: x * p + y, TWO, batch_argnums=(1, 2))
  with pytest.raises(ValueError, match=r"one common leading batch axis .*\[3, 4\]"):
    fn(1.0, np.ones((4, 2)), np.ones((3, 2)))
  for bad in (-1, 1.5, True, "2"):
    with pytest.raises(ValueError, match=r"cpu_devices=.* integer >= 1, or 0"):
      parallel.set_cpu_devices(bad)


def test_set_cpu_devices_leaves_an_initialised_backend_and_xla_flags_alone(monkeypatch):
  assert parallel.set_cpu_devices(3) == 0  # this process already ran JAX code
  assert len(jax.devices()) == 2  # tests/conftest.py
  monkeypatch.setenv("XLA_FLAGS", "--xla_force_host_platform_device_count=4")
  assert parallel.set_cpu_devices(0) == 0
  assert parallel.usable_cores() >= 1


def test_split_policy():
  assert parallel.split_pays(32, 100e6, TWO)
  assert not parallel.split_pays(32, 100e6, TWO[:1])  # one device
  assert not parallel.split_pays(6, 100e6, TWO)  # 3 rows per device
  assert not parallel.split_pays(32, 40e6, TWO)  # 20 MFLOP per device
  params = {"w": np.zeros((3, 4)), "b": np.zeros(4), "rnn": [{"w_h": np.zeros((2, 8))}]}
  assert parallel.matmul_flops(params, 10, train=False) == 2 * 10 * (12 + 16)
  assert parallel.matmul_flops(params, 10, train=True) == 6 * 10 * (12 + 16)
  with pytest.raises(ValueError, match=r"split_batch='yes' .*'auto', 'on', 'off'"):
    parallel.check_split("yes")


def test_one_seed_trains_the_same_with_its_batch_split():
  """A one-seed training chunk and evaluation with the batch split over two
  devices ("on") and not ("off"): same losses and parameters."""
  import importlib
  from lstm_jax import config as config_lib, training
  task, model = config_lib.validate(
      importlib.import_module("configs.delayed_recall").get_config("quick"))
  optimizer = training.make_optimizer(learning_rate=1e-2)
  init_keys, data_keys, eval_keys = training.seed_keys(0, 1)
  state = training.init_state(model, optimizer, init_keys, task.input_size)
  out = {}
  for split in ("on", "off"):
    chunk = training.make_train_chunk(model, task, optimizer, 6, 3, devices=TWO,
                                      split_batch=split)
    new, metrics, _ = chunk(jax.tree_util.tree_map(jnp.copy, state), data_keys)
    loss, per_seq = training.make_eval(model, task, 10, devices=TWO, split_batch=split)(
        new.params, eval_keys)
    out[split] = jax.device_get((new.params, metrics["loss"], loss, per_seq))
  jax.tree_util.tree_map(lambda a, b: np.testing.assert_allclose(a, b, rtol=2e-5, atol=1e-6),
                         out["on"], out["off"])

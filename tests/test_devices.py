"""The device module (lstm_jax.devices): seeds and batch rows split over
devices give the numbers of the unsplit computation (against NumPy loops),
however they are spread; the placement of a run; device-count helpers."""

from __future__ import annotations

import functools
import importlib
import types

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

import lstm_jax as L
from lstm_jax import config as config_lib
from lstm_jax import devices, training
from test_sequence import _numpy_lstm, _random_params

ONE = jax.devices()[:1]
TWO = jax.devices()[:2]
LAYOUTS = [("vmap", ONE), ("map", ONE), ("vmap", TWO), ("map", TWO)]
H, I, T = 4, 3, 5


def test_the_test_process_has_two_cpu_devices():
  assert len(TWO) == 2 and {d.platform for d in TWO} == {"cpu"}  # tests/conftest.py


# ----------------------------------------------------------------------------
# The primitive.


def test_split_leading_splits_only_the_named_arguments():
  """Rows of ``x`` (5, padded to 6) go to two devices; ``w`` is copied to both."""
  x = np.arange(15, dtype=np.float32).reshape(5, 3)
  w = np.array([1.0, -2.0, 0.5], np.float32)
  out = jax.jit(devices.split_leading(lambda w, x: x * w, TWO, argnums=(1,)))(w, x)
  np.testing.assert_array_equal(out, x * w)
  shards = [s.data.shape for s in out.addressable_shards]
  assert out.sharding.device_set == set(TWO) and len(shards) == 2
  with pytest.raises(ValueError, match=r"argnums=\(3,\) .* 2 positional"):
    devices.split_leading(lambda w, x: x, TWO, argnums=(3,))(w, x)


# ----------------------------------------------------------------------------
# Seeds.


def _numpy_fn(a, w, b):
  """Reference for ``fn`` below, written as a NumPy loop over rows."""
  out = np.zeros((a.shape[0], w.shape[1]), np.float64)
  for i in range(a.shape[0]):
    out[i] = np.tanh(a[i].astype(np.float64) @ w) + b
  return out, out.sum()


def fn(a, params):
  y = jnp.tanh(a @ params["w"]) + params["b"]
  return {"y": y, "total": jnp.sum(y)}


@pytest.mark.parametrize("num_seeds", [1, 2, 3, 5])
@pytest.mark.parametrize("mode,devs", LAYOUTS, ids=lambda v: str(v) if isinstance(v, str)
                         else f"{len(v)}dev")
def test_over_seeds_matches_a_numpy_loop_over_seeds(num_seeds, mode, devs):
  rng = np.random.default_rng(num_seeds)
  a = rng.normal(size=(num_seeds, 4, 3)).astype(np.float32)
  w = rng.normal(size=(num_seeds, 3, 2)).astype(np.float32)
  b = rng.normal(size=(num_seeds, 2)).astype(np.float32)
  out = jax.jit(devices.over_seeds(fn, mode, devs))(a, {"w": w, "b": b})
  chex.assert_shape([out["y"], out["total"]], [(num_seeds, 4, 2), (num_seeds,)])
  for s in range(num_seeds):
    y, total = _numpy_fn(a[s], w[s].astype(np.float64), b[s])
    np.testing.assert_allclose(out["y"][s], y, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(out["total"][s], total, rtol=1e-5, atol=1e-5)


def test_seeds_are_split_across_devices():
  a = np.ones((4, 2, 3), np.float32)
  params = {"w": np.ones((4, 3, 2), np.float32), "b": np.zeros((4, 2), np.float32)}
  out = jax.jit(devices.over_seeds(fn, "map", TWO))(a, params)
  assert out["y"].sharding.device_set == set(TWO)
  shards = sorted(out["y"].addressable_shards, key=lambda sh: sh.index[0].start)
  assert [sh.data.shape[0] for sh in shards] == [2, 2]  # two seeds per device
  assert devices.devices_used(4, TWO) == 2 and devices.seeds_per_device(4, TWO) == 2
  assert devices.devices_used(1, TWO) == 1 and devices.seeds_per_device(3, TWO) == 2


def test_random_keys_of_padded_seed_groups():
  """Typed PRNG keys go through the padding (3 seeds on 2 devices) unchanged."""
  keys = jax.vmap(jax.random.key)(jnp.arange(3))
  draw = lambda k: jax.random.uniform(k, (5,))
  out = jax.jit(devices.over_seeds(draw, "map", TWO))(keys)
  for s in range(3):
    np.testing.assert_array_equal(out[s], draw(keys[s]))


def test_auto_maps_on_cpu_and_vmaps_on_accelerators():
  assert devices.resolve("auto", ONE) == "map"
  assert devices.resolve("auto", [types.SimpleNamespace(platform="gpu")]) == "vmap"
  assert devices.resolve("auto", [types.SimpleNamespace(platform="tpu")]) == "vmap"
  assert devices.resolve("vmap", ONE) == "vmap" and devices.resolve("map") == "map"


def test_bad_seed_arguments_name_the_value():
  with pytest.raises(ValueError, match=r"ensemble='pmap' .*'auto', 'vmap', 'map'"):
    devices.over_seeds(fn, "pmap")
  with pytest.raises(ValueError, match=r"num_seeds=0"):
    devices.Placement.build(0)
  with pytest.raises(ValueError, match=r"leading seed axis .*\[2, 3\]"):
    devices.over_seeds(fn, "map", ONE)(np.ones((2, 4, 3)), {"w": np.ones((3, 3, 2)),
                                                            "b": np.ones((3, 2))})
  with pytest.raises(ValueError, match=r"ensemble='x'"):
    devices.Placement.build(2, ensemble="x")


# ----------------------------------------------------------------------------
# Batch rows.


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
  split = devices.split_batch(lambda p, x, n: layer(p, x, lengths=n), TWO,
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
  split = devices.split_batch(whole, TWO, batch_argnums=(1, 2))
  got = jax.jit(jax.grad(functools.partial(loss, split), argnums=(0, 1, 2)))(params, xs, state)
  want = jax.grad(functools.partial(loss, whole), argnums=(0, 1, 2))(params, xs, state)
  chex.assert_trees_all_close(got, want, rtol=1e-5, atol=1e-6)


def test_split_gradients_against_finite_differences(lstm):
  cell, params = lstm
  with jax.enable_x64(True):
    p64 = jax.tree_util.tree_map(lambda v: jnp.asarray(v, jnp.float64), params)
    xs = jax.random.normal(jax.random.key(3), (3, 4, I), jnp.float64)
    split = devices.split_batch(lambda p, x: L.rnn(cell, p, x)[0], TWO)
    check_grads(lambda p, x: jnp.sum(jnp.tanh(split(p, x))), (p64, xs), order=1,
                modes=["rev"], atol=1e-6, rtol=1e-6)


def test_device_counts_and_bad_arguments():
  assert devices.devices_used(7, TWO) == 2 and devices.devices_used(1, TWO) == 1
  assert devices.sharding(4, TWO).spec == jax.sharding.PartitionSpec("batch")
  assert devices.sharding(3, TWO).spec == jax.sharding.PartitionSpec()  # padded
  assert devices.sharding(1, TWO).device_set == {TWO[0]}
  assert devices.replicated(2, TWO).device_set == set(TWO)
  with pytest.raises(ValueError, match=r"size=0 is not allowed"):
    devices.devices_used(0)
  fn = devices.split_batch(lambda p, x: x * p, TWO, batch_argnums=(3,))
  with pytest.raises(ValueError, match=r"argnums=\(3,\) .* 2 positional"):
    fn(1.0, np.ones((4, 2)))
  fn = devices.split_batch(lambda p, x, y: x * p + y, TWO, batch_argnums=(1, 2))
  with pytest.raises(ValueError, match=r"one common leading batch axis .*\[3, 4\]"):
    fn(1.0, np.ones((4, 2)), np.ones((3, 2)))
  for bad in (-1, 1.5, True, "2"):
    with pytest.raises(ValueError, match=r"cpu_devices=.* integer >= 1, or 0"):
      devices.set_cpu_devices(bad)


def test_set_cpu_devices_leaves_an_initialised_backend_and_xla_flags_alone(monkeypatch):
  assert devices.set_cpu_devices(3) == 0  # this process already ran JAX code
  assert len(jax.devices()) == 2  # tests/conftest.py
  monkeypatch.setenv("XLA_FLAGS", "--xla_force_host_platform_device_count=4")
  assert devices.set_cpu_devices(0) == 0
  assert devices.usable_cores() >= 1


_FAULTS = """
import resource, sys
import numpy as np
from lstm_jax import devices
applied = devices.keep_freed_host_memory() if sys.argv[1] == "on" else None
def faults():
  return resource.getrusage(resource.RUSAGE_SELF).ru_minflt
def call():  # a program's temporaries: several blocks, all freed at the end
  blocks = [np.ones(3 * 2**19, np.float32) for _ in range(4)]   # 4 x 6 MiB
  return sum(float(b[-1]) for b in blocks)
for _ in range(3):
  call()
before = faults()
for _ in range(20):
  call()
print(applied, faults() - before)
"""


def test_keep_freed_host_memory_reuses_freed_blocks():
  """In a fresh process (the setting is process-wide): without it glibc trims
  the freed blocks off the heap after every call and the next call faults
  them in again (~2,000 faults per call here); with it the blocks come back warm."""
  import subprocess
  import sys
  runs = {}
  for mode in ("off", "on"):
    out = subprocess.run([sys.executable, "-c", _FAULTS, mode], capture_output=True, text=True,
                         check=True).stdout.split()
    runs[mode] = (out[0], int(out[1]))
  assert runs["off"][1] > 20 * 1000
  if runs["on"][0] == "True":  # glibc
    assert runs["on"][1] < 20 * 300
  else:
    assert runs["on"][0] == "False"


def test_split_policy():
  assert devices.split_pays(32, 100e6, TWO)
  assert not devices.split_pays(32, 100e6, TWO[:1])  # one device
  assert not devices.split_pays(6, 100e6, TWO)  # 3 rows per device
  assert not devices.split_pays(32, 40e6, TWO)  # 20 MFLOP per device
  params = {"w": np.zeros((3, 4)), "b": np.zeros(4), "rnn": [{"w_h": np.zeros((2, 8))}]}
  assert devices.matmul_flops(params, 10, train=False) == 2 * 10 * (12 + 16)
  assert devices.matmul_flops(params, 10, train=True) == 6 * 10 * (12 + 16)
  with pytest.raises(ValueError, match=r"split_batch='yes' .*'auto', 'on', 'off'"):
    devices.Placement.build(split_batch="yes")


# ----------------------------------------------------------------------------
# The placement of a run.


def test_placement_decides_the_layer_implementation():
  """The plain scan replaces "auto" only where one device runs several seeds vmapped."""
  build = devices.Placement.build
  assert build(1, "vmap", devices=ONE).layer_impl("auto") == "auto"
  assert build(3, "vmap", devices=ONE).layer_impl("auto") == "scan"
  assert build(3, "vmap", devices=TWO).layer_impl("auto") == "scan"  # 2 seeds per device
  assert build(2, "vmap", devices=TWO).layer_impl("auto") == "auto"  # 1 seed per device
  assert build(8, "map", devices=ONE).layer_impl("auto") == "auto"
  assert build(8, "auto", devices=ONE).layer_impl("auto") == "auto"  # map on CPU
  assert build(3, "vmap", devices=ONE).layer_impl("fused") == "fused"
  assert build(1).layer_impl("scan") == "scan"
  assert build(3, devices=TWO).seed_devices == 2 and build(3, devices=TWO).seeds_per_device == 2


def test_a_config_builds_its_placement():
  config = importlib.import_module("configs.delayed_recall").get_config("quick")
  config.num_seeds, config.ensemble, config.split_batch = 3, "vmap", "off"
  placement = config_lib.build(config, TWO).placement
  assert placement == devices.Placement(tuple(TWO), 3, "vmap", "off")
  config.ensemble = "pmap"
  with pytest.raises(config_lib.ConfigError, match=r"config.ensemble='pmap' is not allowed"):
    config_lib.build(config)


class _Counted:
  """A task whose loss counts how often it is traced (chex.assert_max_traces)."""

  def __init__(self, task, n):
    chex.clear_trace_counter()
    self._task = task
    self.loss = chex.assert_max_traces(task.loss, n=n)

  def __getattr__(self, name):
    return getattr(self._task, name)


def _setup(num_seeds):
  config = importlib.import_module("configs.delayed_recall").get_config("quick")
  task, model, _ = config_lib.build(config)
  optimizer = training.make_optimizer(learning_rate=1e-2)
  init_keys, data_keys, eval_keys = training.seed_keys(0, num_seeds)
  state = training.init_state(model, optimizer, init_keys, task.input_size)
  return task, model, optimizer, state, data_keys, eval_keys


def test_training_chunks_agree_however_seeds_are_run():
  """Three seeds trained vmapped on one device, and vmapped or one by one split
  over two (padded), and each seed trained alone: same losses and parameters;
  a loop feeding results back in traces its chunk once."""
  task, model, optimizer, state, data_keys, eval_keys = _setup(3)
  results = []
  for mode, devs in (("vmap", ONE), ("vmap", TWO), ("map", TWO)):
    placement = devices.Placement.build(3, mode, devices=devs)
    counted = _Counted(task, n=1)
    chunk = training.make_train_chunk(model, counted, optimizer, 8, 3, placement)
    new, metrics, per_seq = chunk(jax.tree_util.tree_map(jnp.copy, state), data_keys)
    chex.assert_shape([metrics["loss"], per_seq["error"]], [(3, 3), (3, 3, 8)])
    results.append(jax.device_get((new.params, metrics["loss"])))
  for _ in range(2):  # results fed back in (on two devices) hit the compiled program
    new, *_ = chunk(new, data_keys)  # a second trace would fail chex.assert_max_traces
  assert new.step.sharding.device_set == set(TWO) and chunk.jitted._cache_size() == 1
  for params, losses in results[1:]:
    chex.assert_trees_all_close(params, results[0][0], rtol=2e-5, atol=1e-6)
    np.testing.assert_allclose(losses, results[0][1], rtol=2e-5)
  alone = training.make_train_chunk(model, task, optimizer, 8, 3,
                                    devices.Placement.build(1, devices=ONE))
  for s in range(3):
    one = jax.tree_util.tree_map(lambda x: x[s:s + 1], state)
    _, metrics, _ = alone(one, data_keys[s:s + 1])
    np.testing.assert_allclose(metrics["loss"][:, 0], results[0][1][:, s], rtol=2e-5)
  losses = [training.make_eval(model, task, 16, devices.Placement.build(3, mode, devices=devs))(
      results[0][0], eval_keys)[0] for mode, devs in (("vmap", ONE), ("map", TWO))]
  np.testing.assert_allclose(losses[1], losses[0], rtol=2e-5)


def test_one_seed_trains_the_same_with_its_batch_split():
  """A one-seed training chunk and evaluation with the batch split over two
  devices ("on") and not ("off"): same losses and parameters."""
  task, model, optimizer, state, data_keys, eval_keys = _setup(1)
  out = {}
  for split in ("on", "off"):
    placement = devices.Placement.build(1, split_batch=split, devices=TWO)
    chunk = training.make_train_chunk(model, task, optimizer, 6, 3, placement)
    new, metrics, _ = chunk(jax.tree_util.tree_map(jnp.copy, state), data_keys)
    loss, per_seq = training.make_eval(model, task, 10, placement)(new.params, eval_keys)
    out[split] = jax.device_get((new.params, metrics["loss"], loss, per_seq))
  chex.assert_trees_all_close(out["on"], out["off"], rtol=2e-5, atol=1e-6)

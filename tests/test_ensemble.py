"""Seed ensembles (lstm_jax.ensemble): every seed's result equals the one-seed
computation, however the seeds are spread over devices and run on each."""

from __future__ import annotations

import importlib
import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lstm_jax import config as config_lib
from lstm_jax import ensemble, training

ONE = jax.devices()[:1]
TWO = jax.devices()[:2]
LAYOUTS = [("vmap", ONE), ("map", ONE), ("vmap", TWO), ("map", TWO)]


def test_the_test_process_has_two_cpu_devices():
  assert len(TWO) == 2 and {d.platform for d in TWO} == {"cpu"}  # tests/conftest.py


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
@pytest.mark.parametrize("mode,devices", LAYOUTS, ids=lambda v: str(v) if isinstance(v, str)
                         else f"{len(v)}dev")
def test_over_seeds_matches_a_numpy_loop_over_seeds(num_seeds, mode, devices):
  rng = np.random.default_rng(num_seeds)
  a = rng.normal(size=(num_seeds, 4, 3)).astype(np.float32)
  w = rng.normal(size=(num_seeds, 3, 2)).astype(np.float32)
  b = rng.normal(size=(num_seeds, 2)).astype(np.float32)
  out = jax.jit(ensemble.over_seeds(fn, mode, devices))(a, {"w": w, "b": b})
  assert out["y"].shape == (num_seeds, 4, 2) and out["total"].shape == (num_seeds,)
  for s in range(num_seeds):
    y, total = _numpy_fn(a[s], w[s].astype(np.float64), b[s])
    np.testing.assert_allclose(out["y"][s], y, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(out["total"][s], total, rtol=1e-5, atol=1e-5)


def test_seeds_are_split_across_devices():
  a = np.ones((4, 2, 3), np.float32)
  params = {"w": np.ones((4, 3, 2), np.float32), "b": np.zeros((4, 2), np.float32)}
  out = jax.jit(ensemble.over_seeds(fn, "map", TWO))(a, params)
  assert out["y"].sharding.device_set == set(TWO)
  shards = sorted(out["y"].addressable_shards, key=lambda sh: sh.index[0].start)
  assert [sh.data.shape[0] for sh in shards] == [2, 2]  # two seeds per device
  assert ensemble.num_devices_used(4, TWO) == 2 and ensemble.seeds_per_device(4, TWO) == 2
  assert ensemble.num_devices_used(1, TWO) == 1 and ensemble.seeds_per_device(3, TWO) == 2


def test_random_keys_of_padded_seed_groups():
  """Typed PRNG keys go through the padding (3 seeds on 2 devices) unchanged."""
  keys = jax.vmap(jax.random.key)(jnp.arange(3))
  draw = lambda k: jax.random.uniform(k, (5,))
  out = jax.jit(ensemble.over_seeds(draw, "map", TWO))(keys)
  for s in range(3):
    np.testing.assert_array_equal(out[s], draw(keys[s]))


def test_auto_maps_on_cpu_and_vmaps_on_accelerators():
  assert ensemble.resolve("auto", ONE) == "map"
  assert ensemble.resolve("auto", [types.SimpleNamespace(platform="gpu")]) == "vmap"
  assert ensemble.resolve("auto", [types.SimpleNamespace(platform="tpu")]) == "vmap"
  assert ensemble.resolve("vmap", ONE) == "vmap" and ensemble.resolve("map") == "map"


def test_bad_arguments_name_the_value():
  with pytest.raises(ValueError, match=r"ensemble='pmap' .*'auto', 'vmap', 'map'"):
    ensemble.over_seeds(fn, "pmap")
  with pytest.raises(ValueError, match=r"num_seeds=0"):
    ensemble.num_devices_used(0)
  with pytest.raises(ValueError, match=r"leading seed axis .*\[2, 3\]"):
    ensemble.over_seeds(fn, "map", ONE)(np.ones((2, 4, 3)), {"w": np.ones((3, 3, 2)),
                                                             "b": np.ones((3, 2))})
  with pytest.raises(ValueError, match=r"ensemble='x'"):
    training.make_eval(None, None, 4, ensemble="x")


def _setup(num_seeds):
  config = importlib.import_module("configs.delayed_recall").get_config("quick")
  task, model = config_lib.validate(config)
  optimizer = training.make_optimizer(learning_rate=1e-2)
  init_keys, data_keys, eval_keys = training.seed_keys(0, num_seeds)
  state = training.init_state(model, optimizer, init_keys, task.input_size)
  return task, model, optimizer, state, data_keys, eval_keys


def test_training_chunks_agree_however_seeds_are_run():
  """Three seeds trained vmapped on one device, and vmapped or one by one split
  over two (padded), and each seed trained alone: same losses and parameters."""
  task, model, optimizer, state, data_keys, eval_keys = _setup(3)
  results = []
  for mode, devices in (("vmap", ONE), ("vmap", TWO), ("map", TWO)):
    chunk = training.make_train_chunk(model, task, optimizer, 8, 3, ensemble=mode,
                                      devices=devices)
    new, metrics, per_seq = chunk(jax.tree_util.tree_map(jnp.copy, state), data_keys)
    assert metrics["loss"].shape == (3, 3) and per_seq["error"].shape[:2] == (3, 3)
    results.append(jax.device_get((new.params, metrics["loss"])))
  for _ in range(2):  # results fed back in (on two devices) hit the compiled program
    new, *_ = chunk(new, data_keys)
  assert new.step.sharding.device_set == set(TWO) and chunk.jitted._cache_size() == 1
  for params, losses in results[1:]:
    jax.tree_util.tree_map(lambda a, b: np.testing.assert_allclose(a, b, rtol=2e-5, atol=1e-6),
                           params, results[0][0])
    np.testing.assert_allclose(losses, results[0][1], rtol=2e-5)
  alone = training.make_train_chunk(model, task, optimizer, 8, 3, devices=ONE)
  for s in range(3):
    one = jax.tree_util.tree_map(lambda x: x[s:s + 1], state)
    _, metrics, _ = alone(one, data_keys[s:s + 1])
    np.testing.assert_allclose(metrics["loss"][:, 0], results[0][1][:, s], rtol=2e-5)
  losses = [training.make_eval(model, task, 16, ensemble=mode, devices=devices)(
      results[0][0], eval_keys)[0] for mode, devices in (("vmap", ONE), ("map", TWO))]
  np.testing.assert_allclose(losses[1], losses[0], rtol=2e-5)


"""Residual blocks of the experiment model (``block="residual"``) against a NumPy
loop written here, its options and errors, and a run from the config.

Reference (Elman cells, float64)::

    u_0 = x W_e + b_e
    v_k = u_{k-1} + RNN_k(LN(u_{k-1})),   RNN: h_t = tanh(a_t W_x + h_{t-1} W_h + b)
    u_k = v_k + GELU(LN(v_k) W_1 + b_1) W_2 + b_2
    y   = LN(u_L) W_out + b_out
"""

import importlib
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import lstm_jax as L
from lstm_jax import config as config_lib
from lstm_jax.runner import train_and_evaluate

B, T, I, H, O = 2, 5, 3, 4, 2


def np_layer_norm(z, p):
  mean = z.mean(-1, keepdims=True)
  var = ((z - mean) ** 2).mean(-1, keepdims=True)
  return (z - mean) / np.sqrt(var + 1e-5) * p["scale"] + p["bias"]


def np_gelu(z):  # the tanh approximation, as jax.nn.gelu's default
  return 0.5 * z * (1 + np.tanh(math.sqrt(2 / math.pi) * (z + 0.044715 * z ** 3)))


def np_elman(p, xs, lengths):
  ys = np.zeros(xs.shape[:2] + (H,))
  for b in range(xs.shape[0]):
    h = np.zeros(H)
    for t in range(lengths[b]):
      h = np.tanh(xs[b, t] @ p["w_x"] + h @ p["w_h"] + p["b"])
      ys[b, t] = h
  return ys


def np_model(params, xs, lengths):
  blocks = params["blocks"]
  u = xs @ blocks["embed"]["w"] + blocks["embed"]["b"]
  for k, layer in enumerate(params["rnn"]):
    u = u + np_elman(layer, np_layer_norm(u, blocks["norm"][k]), lengths)
    mlp = blocks["mlp"][k]
    u = u + np_gelu(np_layer_norm(u, blocks["mlp_norm"][k]) @ mlp["w1"] + mlp["b1"]) @ mlp["w2"] \
        + mlp["b2"]
  return np_layer_norm(u, blocks["final_norm"]) @ params["readout"]["w"] + params["readout"]["b"]


def _randomised(params, seed=0):
  rng = np.random.default_rng(seed)
  return jax.tree_util.tree_map(lambda a: 0.5 * rng.normal(size=a.shape), params)


def test_residual_model_matches_numpy():
  model = L.models.make_model("elman", H, O, num_layers=2, block="residual")
  params = model.init(jax.random.key(0), I)
  assert params["rnn"][0]["w_x"].shape == (H, H)  # every cell reads the residual width
  assert params["blocks"]["embed"]["w"].shape == (I, H)
  assert params["blocks"]["mlp"][1]["w1"].shape == (H, L.models.MLP_RATIO * H)
  np_params = _randomised(params)
  xs = np.random.default_rng(1).normal(size=(B, T, I))
  lengths = np.array([5, 3])
  want = np_model(np_params, xs, lengths)
  got = model.apply(jax.tree_util.tree_map(lambda a: jnp.asarray(a, jnp.float32), np_params),
                    jnp.asarray(xs, jnp.float32), jnp.asarray(lengths))
  np.testing.assert_allclose(got[0], want[0], rtol=1e-4, atol=1e-5)
  np.testing.assert_allclose(got[1, :3], want[1, :3], rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("cell", ["mingru", "mlstm"])
def test_residual_parallel_cells_agree_with_their_scan(cell):
  model = L.models.make_model(cell, 16, O, num_layers=2, block="residual")
  params = model.init(jax.random.key(2), I)
  xs = jax.random.normal(jax.random.key(3), (B, T, I))
  outs = [model.__class__(**{**model.__dict__, "impl": impl}).apply(params, xs)
          for impl in ("scan", "parallel")]
  np.testing.assert_allclose(outs[0], outs[1], rtol=1e-5, atol=1e-5)


def test_residual_options_and_errors():
  with pytest.raises(ValueError, match=r"block='dense'.*'plain', 'residual'"):
    L.models.make_model("gru", H, O, block="dense")
  with pytest.raises(ValueError, match=r"input_to_output=True .*block='residual'"):
    L.models.make_model("gru", H, O, block="residual", input_to_output=True)
  cfg = importlib.import_module("configs.delayed_recall").get_config("quick")
  cfg.model.block, cfg.diagnostics.every = "residual", 5
  with pytest.raises(config_lib.ConfigError, match=r"config.diagnostics.every=5 .*residual"):
    config_lib.build(cfg)
  cfg.model.block = "stacked"
  cfg.diagnostics.every = 0
  with pytest.raises(config_lib.ConfigError, match=r"config.model.block='stacked'"):
    config_lib.build(cfg)


def test_residual_run_from_config_with_dropout(tmp_path):
  """A run trains, with dropout drawn per block, and is reproducible."""
  cfg = importlib.import_module("configs.delayed_recall").get_config("quick")
  cfg.model.cell, cfg.model.block, cfg.model.num_layers = "minlstm", "residual", 2
  cfg.model.dropout_in = 0.1
  cfg.budget_sequences = 96
  summary = train_and_evaluate(cfg, str(tmp_path / "a"), progress=False)
  again = train_and_evaluate(cfg, str(tmp_path / "b"), progress=False)
  assert summary["status"] == "finished"
  assert summary["metrics"] == again["metrics"]

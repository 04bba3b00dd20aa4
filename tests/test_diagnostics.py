"""Memory diagnostics (lstm_jax.diagnostics) against independent computations:
a NumPy LSTM loop, hand-worked statistics, finite differences and a linear toy."""

from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import lstm_jax as L
from lstm_jax import diagnostics as D
from test_sequence import _random_params

B, T, I, H = 3, 6, 3, 4
LENGTHS = np.array([6, 2, 0])


def _sigmoid(z):
  return 1.0 / (1.0 + np.exp(-z))


def _numpy_trace(params, xs, coupled=False):
  """Float64 loop over [T, I]: per step (f, c). Vanilla (blocks i f g o, no
  peepholes) or CIFG (blocks i g o, peepholes, f = 1 - i)."""
  p = {k: np.asarray(v, np.float64) for k, v in params.items()}
  hid = p["w_h"].shape[0]
  h, c = np.zeros(hid), np.zeros(hid)
  fs, cs = [], []
  for x in np.asarray(xs, np.float64):
    z = x @ p["w_x"] + h @ p["w_h"] + p["b"]
    if coupled:
      zi, zg, zo = (z[k * hid:(k + 1) * hid] for k in range(3))
      pi, _, po = p["w_peep"]
      i = _sigmoid(zi + pi * c)
      f = 1.0 - i
      c = f * c + i * np.tanh(zg)
      o = _sigmoid(zo + po * c)
    else:
      zi, zf, zg, zo = (z[k * hid:(k + 1) * hid] for k in range(4))
      f = _sigmoid(zf)
      c = f * c + _sigmoid(zi) * np.tanh(zg)
      o = _sigmoid(zo)
    h = o * np.tanh(c)
    fs.append(f)
    cs.append(c)
  return np.array(fs), np.array(cs)


def _xs(seed=0, shape=(B, T, I)):
  return jax.random.normal(jax.random.key(seed), shape)


@pytest.mark.parametrize("name", ["vanilla", "cifg"])
def test_gate_trace_matches_numpy_loop_with_padding(name):
  cell = L.make_cell(name, H)
  params = _random_params(cell)
  xs = _xs()
  trace = D.gate_trace(cell, params, xs, lengths=LENGTHS)
  assert trace.f.shape == trace.c.shape == (T, B, H)
  np.testing.assert_array_equal(trace.mask, np.arange(T)[:, None] < LENGTHS[None, :])
  for b, n in enumerate(LENGTHS):
    ref_f, ref_c = _numpy_trace(params, xs[b, :n], coupled=name == "cifg")
    np.testing.assert_allclose(trace.f[:n, b], ref_f.reshape(n, H), atol=1e-5)
    np.testing.assert_allclose(trace.c[:n, b], ref_c.reshape(n, H), atol=1e-5)


def test_gate_trace_no_forget_gate_is_one_and_jits():
  cell = L.make_cell("lstm1997", H)
  params = _random_params(cell)
  xs = _xs(2)
  trace = jax.jit(D.gate_trace, static_argnums=0)(cell, params, xs)
  np.testing.assert_array_equal(trace.f, 1.0)
  assert bool(trace.mask.all())
  _, final = L.rnn(cell, params, xs)
  np.testing.assert_allclose(trace.c[-1], final.c, atol=1e-5)


def test_gate_trace_refuses_non_lstm():
  cell = L.make_cell("gru", H)
  with pytest.raises(ValueError, match="LSTM"):
    D.gate_trace(cell, cell.init(jax.random.key(0), I), _xs())


def test_forget_gate_stats_by_hand_with_eps_clip():
  # f[t, b=0, j]; units 0, 1, 2
  f = np.array([[[0.5, 0.995, 0.0]], [[0.9, 1.0, 0.75]]])
  s = D.forget_gate_stats(f)
  # tau_j: unit 0 (2 + 10) / 2 = 6; unit 1 (200 + 1e6 [clip]) / 2 = 500100;
  # unit 2 (1 + 4) / 2 = 2.5
  np.testing.assert_allclose(s["mean"], 4.145 / 6, rtol=1e-6)
  np.testing.assert_allclose(s["frac_above_0_99"], 2 / 6, rtol=1e-6)
  np.testing.assert_allclose(s["time_scale_mean"], (6 + 500100 + 2.5) / 3, rtol=1e-4)
  np.testing.assert_allclose(s["time_scale_median"], 6.0, rtol=1e-5)


def test_forget_gate_stats_mask_excludes_padded_steps():
  # f[t, b, 0]; the masked entry f = 1.0 would add 1e6 and count as > 0.99
  f = np.array([[[0.5], [0.9]], [[0.0], [1.0]]])
  mask = np.array([[True, True], [True, False]])
  s = D.forget_gate_stats(f, mask)
  np.testing.assert_allclose(s["mean"], 1.4 / 3, rtol=1e-6)
  np.testing.assert_allclose(s["frac_above_0_99"], 0.0)
  np.testing.assert_allclose(s["time_scale_mean"], 13 / 3, rtol=1e-5)
  np.testing.assert_allclose(s["time_scale_median"], 13 / 3, rtol=1e-5)
  unmasked = D.forget_gate_stats(f)
  np.testing.assert_allclose(unmasked["frac_above_0_99"], 0.25)


def test_cell_norm_over_time_by_hand():
  c = np.array([[[3.0, 4.0], [0.0, 1.0]], [[1.0, 0.0], [6.0, 8.0]]])  # norms 5, 1; 1, 10
  np.testing.assert_allclose(D.cell_norm_over_time(c), [3.0, 5.5], rtol=1e-6)
  mask = np.array([[True, True], [True, False]])
  np.testing.assert_allclose(D.cell_norm_over_time(c, mask), [3.0, 1.0], rtol=1e-6)


def test_input_gradient_matches_finite_differences_float64():
  with jax.enable_x64(True):
    model = L.models.make_model("vanilla", 3, 2)
    params = jax.tree_util.tree_map(lambda a: jnp.asarray(a, jnp.float64),
                                    model.init(jax.random.key(0), 2))
    xs = np.asarray(jax.random.normal(jax.random.key(1), (2, 4, 2)), np.float64)
    t_out = 3
    norms = np.asarray(D.input_gradient_by_distance(model, params, jnp.asarray(xs), t_out))
    assert norms.dtype == np.float64 and norms.shape == (t_out + 1,)
    s = jax.jit(lambda x: jnp.sum(model.apply(params, x)[:, t_out]))
    eps = 1e-6
    grad = np.zeros_like(xs)
    for idx in np.ndindex(*xs.shape):
      up, down = xs.copy(), xs.copy()
      up[idx] += eps
      down[idx] -= eps
      grad[idx] = (float(s(up)) - float(s(down))) / (2 * eps)
    ref = np.sqrt((grad ** 2).sum(axis=(0, 2)))[t_out::-1]
    np.testing.assert_allclose(norms, ref, rtol=1e-6, atol=1e-9)
    assert np.all(norms > 0)


def test_input_gradient_follows_geometric_law_on_linear_toy():
  a = 0.7

  def fn(params, xs):  # h_t = a h_{t-1} + x_t, y_t = h_t: dy_t / dx_{t-d} = a^d
    def step(h, x):
      h = params * h + x
      return h, h
    _, ys = jax.lax.scan(step, jnp.zeros(xs.shape[::2]), jnp.swapaxes(xs, 0, 1))
    return jnp.swapaxes(ys, 0, 1)

  xs = _xs(3, (2, 6, 3))
  norms = D.input_gradient_by_distance(fn, jnp.float32(a), xs, 4)
  np.testing.assert_allclose(norms, a ** np.arange(5) * np.sqrt(2 * 3), rtol=1e-5)
  with pytest.raises(ValueError, match="t_out"):
    D.input_gradient_by_distance(fn, jnp.float32(a), xs, 6)


def test_diagnose_lstm_keys_and_json():
  model = L.models.make_model("vanilla", H, 2)
  params = model.init(jax.random.key(0), I)
  xs = _xs(4, (2, 5, I))
  out = D.diagnose(model, params, xs)
  assert set(out) == {"forget_mean", "forget_frac_above_0_99", "time_scale_mean",
                      "time_scale_median", "cell_norm", "input_grad_norm"}
  json.loads(json.dumps(out, allow_nan=False))
  assert len(out["cell_norm"]) == 5 and len(out["input_grad_norm"]) == 5
  assert all(isinstance(v, float) for v in out["cell_norm"] + out["input_grad_norm"])
  assert 0.0 < out["forget_mean"] < 1.0 and out["time_scale_mean"] >= 1.0
  assert len(D.diagnose(model, params, xs, t_out=2)["input_grad_norm"]) == 3


def test_diagnose_gru_only_gradient_entry():
  model = L.models.make_model("gru", H, 2)
  params = model.init(jax.random.key(0), I)
  out = D.diagnose(model, params, _xs(5, (2, 4, I)))
  assert set(out) == {"input_grad_norm"}
  assert len(out["input_grad_norm"]) == 4
  json.dumps(out, allow_nan=False)

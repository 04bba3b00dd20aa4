"""Memory diagnostics (lstm_jax.diagnostics) against independent computations:
a NumPy LSTM loop, hand-worked statistics, finite differences, a linear toy and
a NumPy Elman loop with hand-written backpropagation of a task's loss."""

from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import lstm_jax as L
from lstm_jax import diagnostics as D
from lstm_jax.tasks import Batch, make_task
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


# ----------------------------------------------------------------------------
# What a training run logs.


def _numpy_elman(params, xs):
  """Float64 loop over [T, I] of h_t = tanh(x_t W_x + h_{t-1} W_h + b)."""
  p = {k: np.asarray(v, np.float64) for k, v in params.items()}
  h = np.zeros(p["w_h"].shape[0])
  hs = []
  for x in np.asarray(xs, np.float64):
    h = np.tanh(x @ p["w_x"] + h @ p["w_h"] + p["b"])
    hs.append(h)
  return np.array(hs).reshape(len(hs), p["w_h"].shape[0])


def test_hidden_trace_matches_numpy_elman_loop_with_padding():
  cell = L.make_cell("elman", H)
  params = _random_params(cell)
  xs = _xs(6)
  h, mask = jax.jit(D.hidden_trace, static_argnums=0)(cell, params, xs, None, LENGTHS)
  assert h.shape == (T, B, H)
  np.testing.assert_array_equal(mask, np.arange(T)[:, None] < LENGTHS[None, :])
  for b, n in enumerate(LENGTHS):
    ref = _numpy_elman(params, xs[b, :n])
    np.testing.assert_allclose(h[:n, b], ref.reshape(n, H), atol=1e-5)
    if n:  # padded steps hold the last real state
      np.testing.assert_allclose(h[n:, b], np.broadcast_to(ref[-1], (T - n, H)), atol=1e-5)
  lstm = L.make_cell("vanilla", H)
  lstm_params = _random_params(lstm)
  h, _ = D.hidden_trace(lstm, lstm_params, xs)
  ys, _ = L.rnn(lstm, lstm_params, xs)
  np.testing.assert_allclose(np.swapaxes(h, 0, 1), ys, atol=1e-6)


def test_norm_at_end_by_hand():
  # states[t, b]: row 0 ends at t = 1 (norm 5), row 1 at t = 0 (norm 1), row 2 is empty
  states = np.zeros((2, 3, 2))
  states[1, 0] = [3.0, 4.0]
  states[0, 1] = [0.0, 1.0]
  states[1, 1] = [6.0, 8.0]
  np.testing.assert_allclose(D.norm_at_end(states, np.array([2, 1, 0])), 3.0, rtol=1e-6)


def test_input_gradient_from_end_is_the_per_row_gradient_at_each_last_step():
  model = L.models.make_model("vanilla", H, 2)
  params = model.init(jax.random.key(7), I)
  xs = _xs(8)
  lengths = np.array([6, 4, 1])
  norms = np.asarray(jax.jit(D.input_gradient_from_end, static_argnums=0)(
      model, params, xs, lengths))
  assert norms.shape == (T,)
  squares = np.zeros(T)
  for b, n in enumerate(lengths):  # row b alone, cut at its length: output step n - 1
    row = np.asarray(D.input_gradient_by_distance(model, params, xs[b:b + 1, :n], n - 1))
    squares[:n] += row ** 2
  np.testing.assert_allclose(norms, np.sqrt(squares), rtol=1e-5)
  full = D.input_gradient_from_end(model, params, xs)
  np.testing.assert_allclose(full, D.input_gradient_by_distance(model, params, xs, T - 1),
                             rtol=1e-6)
  short = np.asarray(D.input_gradient_from_end(model, params, xs[:, :], np.array([3, 2, 1])))
  assert np.isfinite(short[:3]).all() and np.isnan(short[3:]).all()


def _numpy_elman_loss_gradient(params, batch):
  """Float64 NumPy: an Elman RNN (h_t = tanh(x_t W_x + h_{t-1} W_h + b)) with a
  linear readout (y_t = h_t W + c) and the task loss of "mse" tasks,
  L = sum_{b,t} mask[b,t] mean_o (y[b,t,o] - target[b,t,o])^2 / sum(mask),
  backpropagated through time by hand per row. Returns (L, norms[d]) with
  norms[d] = sqrt(sum_b ||dL/dx[b, len_b - 1 - d]||^2)."""
  cell = {k: np.asarray(v, np.float64) for k, v in params["rnn"][0].items()}
  w_out = np.asarray(params["readout"]["w"], np.float64)
  c_out = np.asarray(params["readout"]["b"], np.float64)
  xs, mask = np.asarray(batch.inputs, np.float64), np.asarray(batch.mask, np.float64)
  targets, lengths = np.asarray(batch.targets, np.float64), np.asarray(batch.lengths)
  count, outputs = mask.sum(), w_out.shape[1]
  loss, squares = 0.0, np.zeros(xs.shape[1])
  for b, n in enumerate(lengths):
    hs = _numpy_elman(cell, xs[b, :n])  # [n, H]
    err = hs @ w_out + c_out - targets[b, :n]  # [n, O]
    loss += (mask[b, :n, None] * err ** 2).sum() / (count * outputs)
    dys = 2.0 * mask[b, :n, None] * err / (count * outputs)
    dh = np.zeros(hs.shape[1])
    dxs = np.zeros((n, xs.shape[2]))
    for t in range(n - 1, -1, -1):
      dh = dh + dys[t] @ w_out.T
      da = dh * (1.0 - hs[t] ** 2)
      dxs[t] = da @ cell["w_x"].T
      dh = da @ cell["w_h"].T
    squares[:n] += (dxs[::-1] ** 2).sum(axis=1)  # index d = n - 1 - t
  return loss, np.sqrt(squares)


def test_loss_gradient_from_end_matches_numpy_backprop_of_the_task_loss():
  # An "mse" task (adding, T = 6, 2 inputs, 1 output) on a hand-made batch:
  # loss at several steps of rows 0 and 1 (mixed lengths), only at the end of row 2.
  task = make_task("adding", lag=T)
  model = L.models.make_model("elman", H, 1)
  params = model.init(jax.random.key(3), 2)
  params["rnn"][0] = _random_params(model.cell, seed=4, input_size=2)
  lengths = np.array([6, 4, 2])
  mask = np.zeros((B, T), np.float32)
  mask[0, [1, 3, 5]] = mask[1, [0, 3]] = mask[2, 1] = 1.0
  valid = np.arange(T)[None, :] < lengths[:, None]
  xs = np.asarray(_xs(10, (B, T, 2))) * valid[..., None]
  targets = np.asarray(jax.random.uniform(jax.random.key(11), (B, T, 1))) * mask[..., None]
  batch = Batch(jnp.asarray(xs), jnp.asarray(targets), jnp.asarray(mask), jnp.asarray(lengths))
  norms = np.asarray(jax.jit(D.loss_gradient_from_end, static_argnums=(0, 2))(
      model, params, task, batch))
  ref_loss, ref = _numpy_elman_loss_gradient(params, batch)
  assert float(task.loss(model.apply(params, batch.inputs, batch.lengths), batch)) == \
      pytest.approx(ref_loss, rel=1e-5)
  assert norms.shape == (T,) and np.all(ref > 0)
  np.testing.assert_allclose(norms, ref, rtol=1e-4)


def _adding_batch(task, lengths, seed):
  """A batch of ``task`` (adding) cut to ``lengths``: loss at each row's last real step."""
  batch = task.sample(jax.random.key(seed), len(lengths))
  lengths = jnp.asarray(lengths)
  valid = jnp.arange(task.max_length)[None, :] < lengths[:, None]
  mask = (jnp.arange(task.max_length)[None, :] == lengths[:, None] - 1).astype(jnp.float32)
  return Batch(batch.inputs * valid[..., None], mask[..., None] * 0.7, mask, lengths)


def test_measure_and_summarize_per_cell_kind():
  lengths = np.array([5, 3])
  task = make_task("adding", lag=5)  # 2 inputs, 1 output
  batch = _adding_batch(task, lengths, 9)
  xs = batch.inputs
  lstm = L.models.make_model("vanilla", H, 1)
  params = lstm.init(jax.random.key(0), 2)
  run = jax.jit(D.measure, static_argnums=(0, 3, 4))
  m = run(lstm, params, batch, task, "loss")
  assert set(m) == {"forget_mean", "forget_frac_above_0_99", "time_scale_mean",
                    "time_scale_median", "cell_norm", "cell_norm_end", "input_grad_norm"}
  np.testing.assert_allclose(m["input_grad_norm"],
                             D.loss_gradient_from_end(lstm, params, task, batch), rtol=1e-6)
  old = run(lstm, params, batch, None, "output")  # the sum of the last outputs, as before
  np.testing.assert_allclose(old["input_grad_norm"],
                             D.input_gradient_from_end(lstm, params, xs, lengths), rtol=1e-6)
  np.testing.assert_allclose(old["cell_norm"], m["cell_norm"], rtol=1e-6)
  assert not np.allclose(old["input_grad_norm"][:3], m["input_grad_norm"][:3])
  with pytest.raises(ValueError, match="gradient"):
    D.measure(lstm, params, batch, task, "grad")
  with pytest.raises(ValueError, match="task"):
    D.measure(lstm, params, batch)  # the default, "loss", needs the task
  trace = D.gate_trace(lstm.cell, params["rnn"][0], xs, lengths=lengths)
  np.testing.assert_allclose(m["forget_mean"],
                             D.forget_gate_stats(trace.f, trace.mask)["mean"], rtol=1e-6)
  scalars, curves = D.summarize(m, distances=[0, 2, 5])
  assert set(curves) == {"cell_norm", "input_grad_norm"}
  assert len(curves["cell_norm"]) == 5 and curves["input_grad_norm"][4] is not None
  cell = np.asarray(m["cell_norm"], np.float64)
  assert scalars["cell_norm_mean"] == pytest.approx(cell.mean())
  assert scalars["cell_norm_max"] == pytest.approx(cell.max())
  assert scalars["input_grad_norm_d2"] == pytest.approx(float(m["input_grad_norm"][2]))
  assert "input_grad_norm_d5" not in scalars  # T = 5: d <= 4
  json.dumps({**scalars, **curves}, allow_nan=False)

  gru = L.models.make_model("gru", H, 1)
  m = D.measure(gru, gru.init(jax.random.key(1), 2), _adding_batch(task, [4, 2], 12), task)
  assert set(m) == {"hidden_norm", "hidden_norm_end", "input_grad_norm"}
  scalars, curves = D.summarize(m, distances=[0])
  assert set(scalars) == {"hidden_norm_mean", "hidden_norm_max", "hidden_norm_end",
                          "input_grad_norm_d0"}
  # No row is real at t = 4 or reaches d = 4 back from its end: undefined, None.
  assert curves["hidden_norm"][4] is None and curves["input_grad_norm"][4] is None
  assert None not in curves["hidden_norm"][:4] + curves["input_grad_norm"][:4]
  json.dumps({**scalars, **curves}, allow_nan=False)

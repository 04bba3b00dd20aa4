"""The options of the 1997 setup, each against a NumPy loop written here:
memory-cell blocks (gates shared by ``block_size`` cells), the truncated
gradient (error flows back in time only through the cell state),
input-to-output connections and sigmoid output units on squared error."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

import lstm_jax
from lstm_jax import config as C
from lstm_jax.models import make_model
from lstm_jax.tasks import make_task

I, H, S, T, B = 3, 4, 2, 6, 2   # inputs, cells, block size, steps, batch
K = H // S                      # gates per kind: one per block


def np_sigmoid(v):
  return 1.0 / (1.0 + np.exp(-v))


def split(z, forget, output_gate=True):
  """Blocks of z in the order i, (f), g, (o): gates K columns, candidate H."""
  names = ["i"] + (["f"] if forget else []) + ["g"] + (["o"] if output_gate else [])
  widths = [H if n == "g" else K for n in names]
  parts = dict(zip(names, np.split(z, np.cumsum(widths)[:-1], axis=-1)))
  return [parts.get(n) for n in "ifgo"]


def ref_forward(p, xs, forget, g_fn=np.tanh, h_fn=np.tanh, output_gate=True):
  """Plain loop over time; the gate of cell j is gate j // S of its kind."""
  h, c = np.zeros((B, H)), np.zeros((B, H))
  trace = []
  for t in range(xs.shape[1]):
    x = xs[:, t]
    zi, zf, zg, zo = split(x @ p["w_x"] + h @ p["w_h"] + p["b"], forget, output_gate)
    i = np.repeat(np_sigmoid(zi), S, axis=-1)
    f = np.repeat(np_sigmoid(zf), S, axis=-1) if forget else np.ones((B, H))
    g = g_fn(zg)
    o = np.repeat(np_sigmoid(zo), S, axis=-1) if output_gate else np.ones((B, H))
    c_new = f * c + i * g
    h_new = o * h_fn(c_new)
    trace.append(dict(x=x, h_prev=h, c_prev=c, i=i, f=f, g=g, o=o, c=c_new, h=h_new))
    h, c = h_new, c_new
  return trace


def ref_truncated_grads(p, xs, r, forget):
  """Gradients of ``L = sum_t sum(h_t * r_t)`` with the 1997 truncation:
  ``dL/dh_t = r_t`` only (no error through ``h_{t-1} W_h``); the cell state
  carries ``dc_{t-1} = dc_t * f_t``. Block gates sum the error of their cells."""
  trace = ref_forward(p, xs, forget)
  grads = {k: np.zeros_like(v) for k, v in p.items()}
  dxs = np.zeros_like(xs)
  dc_next, f_next = np.zeros((B, H)), np.ones((B, H))
  block_sum = lambda v: v.reshape(B, K, S).sum(-1)
  for t in reversed(range(len(trace))):
    s = trace[t]
    dh = r[:, t]
    tc = np.tanh(s["c"])
    dc = dh * s["o"] * (1 - tc ** 2) + dc_next * f_next
    do = block_sum(dh * tc)
    o_k, i_k = s["o"][:, ::S], s["i"][:, ::S]
    dz_o = do * o_k * (1 - o_k)
    dz_i = block_sum(dc * s["g"]) * i_k * (1 - i_k)
    dz_g = dc * s["i"] * (1 - s["g"] ** 2)
    blocks = [dz_i]
    if forget:
      f_k = s["f"][:, ::S]
      blocks.append(block_sum(dc * s["c_prev"]) * f_k * (1 - f_k))
    dz = np.concatenate(blocks + [dz_g, dz_o], axis=-1)
    grads["w_x"] += s["x"].T @ dz
    grads["w_h"] += s["h_prev"].T @ dz
    grads["b"] += dz.sum(0)
    dxs[:, t] = dz @ p["w_x"].T
    dc_next, f_next = dc, s["f"]
  return grads, dxs


def _case(name, truncated, seed=0):
  cell = lstm_jax.make_cell(name, H, block_size=S, truncated_gradient=truncated)
  rng = np.random.default_rng(seed)
  shapes = cell.param_shapes(I)
  p = {k: rng.normal(0, 0.6, v) for k, v in shapes.items()}
  xs = rng.normal(0, 1, (B, T, I))
  r = rng.normal(0, 1, (B, T, H))
  return cell, p, xs, r


@pytest.mark.parametrize("name", ["lstm1997", "vanilla"])
def test_blocks_share_gates_forward_matches_numpy(name):
  cell, p, xs, _ = _case(name, truncated=False)
  assert cell.param_shapes(I)["w_x"] == (I, H + (3 if name == "vanilla" else 2) * K)
  ys, _ = lstm_jax.rnn(cell, jax.tree.map(jnp.asarray, p), jnp.asarray(xs, jnp.float32))
  want = np.stack([s["h"] for s in ref_forward(p, xs, name == "vanilla")], axis=1)
  np.testing.assert_allclose(np.asarray(ys), want, rtol=2e-5, atol=2e-6)


def test_1997_squashing_functions_match_numpy():
  """g(x) = 4 sigmoid(x) - 2 on the cell input, h(x) = 2 sigmoid(x) - 1 on the
  cell output (H&S 1997, Sec. 4), with blocks."""
  cell = lstm_jax.make_cell("lstm1997", H, block_size=S, input_activation="hs1997_input",
                            output_activation="hs1997_output")
  _, p, xs, _ = _case("lstm1997", truncated=False, seed=5)
  ys, _ = lstm_jax.rnn(cell, jax.tree.map(jnp.asarray, p), jnp.asarray(xs, jnp.float32))
  trace = ref_forward(p, xs, False, g_fn=lambda v: 4 * np_sigmoid(v) - 2,
                      h_fn=lambda v: 2 * np_sigmoid(v) - 1)
  np.testing.assert_allclose(np.asarray(ys), np.stack([s["h"] for s in trace], axis=1),
                             rtol=2e-5, atol=2e-6)
  assert lstm_jax.sequence.resolve_impl(cell, "auto") == "scan"


def test_exp2_cell_sigmoid_input_identity_output_no_output_gate_matches_numpy():
  """The Exp 2a/2b cell of the paper setup: no output gate, g = sigmoid, h = identity."""
  cell = lstm_jax.make_cell("lstm1997", H, block_size=S, output_gate=False,
                            input_activation="sigmoid", output_activation="identity")
  rng = np.random.default_rng(6)
  p = {k: rng.normal(0, 0.6, v) for k, v in cell.param_shapes(I).items()}
  assert p["w_x"].shape == (I, K + H)
  xs = rng.normal(0, 1, (B, T, I))
  ys, _ = lstm_jax.rnn(cell, jax.tree.map(jnp.asarray, p), jnp.asarray(xs, jnp.float32))
  trace = ref_forward(p, xs, False, g_fn=np_sigmoid, h_fn=lambda v: v, output_gate=False)
  np.testing.assert_allclose(np.asarray(ys), np.stack([s["h"] for s in trace], axis=1),
                             rtol=2e-5, atol=2e-6)


def test_gate_bias_steps_set_the_staircase():
  cell = lstm_jax.make_cell("lstm1997", 4, block_size=2, bias_init="hs1997",
                            gate_bias_steps=(3.0, 0.0))
  b = np.asarray(cell.init(jax.random.key(0), 3)["b"])
  np.testing.assert_array_equal(b, [-3, -6, 0, 0, 0, 0, 0, 0])  # i [2], g [4], o [2]
  with pytest.raises(ValueError, match=r"gate_bias_steps=\(1.0,\) is not allowed; expected "
                     r"\(input_step, output_step\)"):
    lstm_jax.make_cell("lstm1997", 4, gate_bias_steps=(1.0,))


@pytest.mark.parametrize("name", ["lstm1997", "vanilla"])
def test_truncated_gradient_matches_numpy_backward(name):
  """The truncated gradient is not the derivative of the loss (so a
  finite-difference check cannot judge it): compare with the hand-written
  truncated backward pass above, and check it differs from the full one."""
  forget = name == "vanilla"
  cell, p, xs, r = _case(name, truncated=True, seed=1)

  def loss(params, inputs, c):
    return jnp.sum(lstm_jax.rnn(c, params, inputs)[0] * r)

  with jax.enable_x64(True):
    jp = jax.tree.map(lambda v: jnp.asarray(v, jnp.float64), p)
    jx = jnp.asarray(xs, jnp.float64)
    g, dx = jax.grad(loss, argnums=(0, 1))(jp, jx, cell)
    full = jax.grad(loss)(jp, jx, lstm_jax.make_cell(name, H, block_size=S))
  want, want_dx = ref_truncated_grads(p, xs, r, forget)
  for k in want:
    np.testing.assert_allclose(np.asarray(g[k]), want[k], rtol=1e-9, atol=1e-12, err_msg=k)
  np.testing.assert_allclose(np.asarray(dx), want_dx, rtol=1e-9, atol=1e-12)
  assert not np.allclose(np.asarray(full["w_h"]), want["w_h"], rtol=1e-3)


def test_truncated_gradient_keeps_the_forward_pass():
  cell, p, xs, _ = _case("vanilla", truncated=True)
  jp, jx = jax.tree.map(jnp.asarray, p), jnp.asarray(xs, jnp.float32)
  full = lstm_jax.make_cell("vanilla", H, block_size=S)
  np.testing.assert_array_equal(np.asarray(lstm_jax.rnn(cell, jp, jx)[0]),
                                np.asarray(lstm_jax.rnn(full, jp, jx)[0]))


def test_blocks_gradients_check_grads():
  cell, p, xs, _ = _case("vanilla", truncated=False, seed=2)
  with jax.enable_x64(True):
    jp = jax.tree.map(lambda v: jnp.asarray(v, jnp.float64), p)
    jx = jnp.asarray(xs[:, :3], jnp.float64)
    check_grads(lambda q, x: jnp.sum(jnp.sin(lstm_jax.rnn(cell, q, x)[0])), (jp, jx),
                order=1, modes=("rev",))


def test_block_gate_biases_follow_the_1997_staircase_per_block():
  cell = lstm_jax.make_cell("lstm1997", 4, block_size=2, bias_init="hs1997")
  b = np.asarray(cell.init(jax.random.key(0), 3)["b"])
  np.testing.assert_array_equal(b, [-1, -2, 0, 0, 0, 0, -1, -2])  # i [2], g [4], o [2]


def test_input_to_output_readout_matches_numpy():
  model = make_model("vanilla", H, 2, input_to_output=True, readout_init="uniform",
                     init_scale=0.2)
  params = model.init(jax.random.key(1), I)
  w_in = np.asarray(params["readout"]["w_in"])
  assert w_in.shape == (I, 2) and np.abs(w_in).max() <= 0.2
  xs = np.random.default_rng(3).normal(size=(B, T, I)).astype(np.float32)
  ys = np.asarray(model.apply(params, jnp.asarray(xs)))
  hs, _ = lstm_jax.rnn(model.cell, params["rnn"][0], jnp.asarray(xs))
  ro = jax.tree.map(np.asarray, params["readout"])
  want = np.asarray(hs) @ ro["w"] + xs @ ro["w_in"] + ro["b"]
  np.testing.assert_allclose(ys, want, rtol=1e-5, atol=1e-6)
  plain = make_model("vanilla", H, 2).init(jax.random.key(1), I)
  assert "w_in" not in plain["readout"]


@pytest.mark.parametrize("task_name", ["hs2a", "hs4_adding"])
def test_sigmoid_units_squared_error_matches_numpy(task_name):
  task = make_task(task_name, lag=5, output_units="sigmoid")
  batch = task.sample(jax.random.key(0), 3)
  out = np.random.default_rng(4).normal(size=(3, task.max_length, task.output_size))
  out = out.astype(np.float32)
  target = np.asarray(task.dense_targets(batch))
  mask = np.asarray(batch.mask)
  step = 0.5 * ((np_sigmoid(out) - target) ** 2).sum(-1)   # the 1997 error of one step
  np.testing.assert_allclose(float(task.loss(jnp.asarray(out), batch)),
                             (step * mask).sum() / 3, rtol=1e-5)  # summed per sequence
  np.testing.assert_allclose(np.asarray(task.predict(jnp.asarray(out))), np_sigmoid(out),
                             rtol=1e-5)
  assert task.baseline is None


def test_output_units_errors_name_the_field():
  with pytest.raises(ValueError, match=r"output_units='sigmoid' is not allowed; this task's "
                     r"targets leave \[0, 1\]"):
    make_task("adding", lag=5, output_units="sigmoid")
  with pytest.raises(ValueError, match=r"output_units='tanh' is not allowed; allowed: 'task', "
                     r"'sigmoid'"):
    make_task("hs2a", lag=5, output_units="tanh")


@pytest.mark.parametrize("field, value, message", [
    ("model.block_size", 3, r"config.model.hidden_size=8 is not a multiple of block_size=3"),
    ("model.block_size", 0, r"config.model.block_size=0 is not allowed; expected an integer"),
    ("model.readout_init", "he", r"config.model.readout_init='he' is not allowed"),
    ("task_params.output_units", "linear",
     r"config.task_params.output_units='linear' is not allowed"),
])
def test_config_fields_of_the_1997_setup_are_checked(field, value, message):
  import configs.hs4_adding as cfg
  c = cfg.get_config("quick")
  section, name = field.split(".")
  c[section][name] = value
  with pytest.raises(C.ConfigError, match=message):
    C.build(c)


def test_block_options_refused_with_peepholes_and_for_baselines():
  with pytest.raises(ValueError, match=r"block_size=2 .* cannot be combined with "
                     r"peepholes=True"):
    lstm_jax.make_cell("peephole", 4, block_size=2)
  with pytest.raises(ValueError, match=r"block_size=2 is not allowed; cell='elman' has no "
                     r"memory cells"):
    lstm_jax.make_cell("elman", 4, block_size=2)
  assert lstm_jax.sequence.resolve_impl(
      lstm_jax.make_cell("vanilla", 4, truncated_gradient=True), "auto") == "scan"


PAPER_CONFIGS = ["reber", "hs2a", "hs2b", "hs2c", "hs3a", "hs3b", "hs3c", "hs4_adding",
                 "hs5_multiplication", "hs6a", "hs6b"]


@pytest.mark.parametrize("name", PAPER_CONFIGS)
def test_every_1997_config_has_a_paper_setup(name):
  import importlib
  module = importlib.import_module(f"configs.{name}")
  assert "Paper setup" in module.__doc__, name
  for arg in ("paper", "paper_quick"):
    c = module.get_config(arg)
    task, model, _ = C.build(c)
    assert c.batch_size == 1 and c.optimizer.name == "sgd" and c.optimizer.grad_clip == 0
    assert model.cell.variant.truncated_gradient and model.cell.variant.forget_gate == "none"
    assert task.output_units == "sigmoid" and model.readout_init == "uniform"
  with pytest.raises(ValueError, match=r"config argument 'papre' is not allowed; allowed: "
                     r"none \(the modern setup\), quick, paper, paper_quick"):
    module.get_config("papre")


def test_paper_quick_run_trains_online(tmp_path):
  """A tiny paper-setup run end to end: one sequence per update, plain SGD."""
  import importlib
  from lstm_jax import runner
  c = importlib.import_module("configs.hs4_adding").get_config("paper_quick")
  c.budget_sequences, c.log_every, c.eval_every, c.checkpoint_every = 200, 50, 100, 100
  summary = runner.train_and_evaluate(c, str(tmp_path), progress=False)
  assert summary["sequences_seen"] == 200
  records = [json.loads(line) for line in open(tmp_path / "metrics.jsonl")]
  train = [r for r in records if r["split"] == "train"]
  assert [r["sequences_seen"] for r in train] == [50, 100, 150, 200]
  assert all(np.isfinite(r["loss"]) for r in train)

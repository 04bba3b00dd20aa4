"""Per-step (real-time) learning of the 1997 LSTM (lstm_jax.online) against a
NumPy loop written here, and against one gradient step where only the last
step carries error; its config rules and a run end to end."""

import importlib
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lstm_jax import config as C
from lstm_jax import online, runner
from lstm_jax.models import make_model
from lstm_jax.tasks import make_task

H, S = 4, 2          # cells, cells per block
K = H // S


def sig(v):
  return 1.0 / (1.0 + np.exp(-v))


def numpy_online(p, xs, targets, mask, lr, forget):
  """Per-step learning, cell by cell: traces of d c_j / d(weights of its gates)."""
  p = {k: {n: np.array(v, np.float64) for n, v in d.items()} for k, d in p.items()}
  n_in = xs.shape[1]
  h, c = np.zeros(H), np.zeros(H)
  fan = n_in + H + 1
  names = ["i"] + (["f"] if forget else []) + ["g", "o"]
  width = {"i": K, "f": K, "g": H, "o": K}
  start = dict(zip(names, np.cumsum([0] + [width[n] for n in names])[:-1]))
  e = {n: np.zeros((fan, H)) for n in ("i", "f", "g")}
  outs = []
  for t in range(xs.shape[0]):
    r, ro = p["rnn"], p["readout"]
    u = np.concatenate([xs[t], h, [1.0]])
    w = np.concatenate([r["w_x"], r["w_h"], r["b"][None]], 0)   # [fan, columns]
    z = u @ w
    col = lambda n, j: start[n] + j
    c_new, hc, h_new, o = np.zeros(H), np.zeros(H), np.zeros(H), np.zeros(K)
    for j in range(H):
      b = j // S
      ig, gg = sig(z[col("i", b)]), 2 * np.tanh(z[col("g", j)] / 2)
      fg = sig(z[col("f", b)]) if forget else 1.0
      o[b] = sig(z[col("o", b)])
      dg = 1 - np.tanh(z[col("g", j)] / 2) ** 2              # d/dz of 2 tanh(z/2)
      e["g"][:, j] = fg * e["g"][:, j] + ig * dg * u
      e["i"][:, j] = fg * e["i"][:, j] + gg * ig * (1 - ig) * u
      if forget:
        e["f"][:, j] = fg * e["f"][:, j] + c[j] * fg * (1 - fg) * u
      c_new[j] = fg * c[j] + ig * gg
      hc[j] = np.tanh(c_new[j] / 2)
      h_new[j] = o[b] * hc[j]
    y_pre = h_new @ ro["w"] + xs[t] @ ro["w_in"] + ro["b"]
    outs.append(y_pre)
    y = sig(y_pre)
    dy = (y - targets[t]) * mask[t] * y * (1 - y)
    dh = ro["w"] @ dy
    grad = np.zeros_like(w)
    for j in range(H):
      b = j // S
      dc = dh[j] * o[b] * 0.5 * (1 - hc[j] ** 2)
      grad[:, col("g", j)] += dc * e["g"][:, j]
      grad[:, col("i", b)] += dc * e["i"][:, j]
      if forget:
        grad[:, col("f", b)] += dc * e["f"][:, j]
      grad[:, col("o", b)] += dh[j] * hc[j] * o[b] * (1 - o[b]) * u
    ro["w"] -= lr * np.outer(h_new, dy)
    ro["w_in"] -= lr * np.outer(xs[t], dy)
    ro["b"] -= lr * dy
    w -= lr * grad
    r["w_x"], r["w_h"], r["b"] = w[:n_in], w[n_in:n_in + H], w[n_in + H]
    h, c = h_new, c_new
  return p, np.stack(outs)


def _model(forget):
  return make_model("vanilla" if forget else "lstm1997", H, 3, block_size=S,
                    truncated_gradient=True, input_to_output=True,
                    input_activation="hs1997_input", output_activation="hs1997_output")


@pytest.mark.parametrize("forget", [False, True])
def test_per_step_learning_matches_numpy_with_error_at_every_step(forget):
  model = _model(forget)
  rng = np.random.default_rng(0)
  params = model.init(jax.random.key(0), 2)
  params = jax.tree.map(lambda a: np.asarray(rng.normal(0, 0.8, a.shape)), params)
  xs, targets = rng.normal(size=(5, 2)), rng.uniform(size=(5, 3))
  mask = np.array([1.0, 0.0, 1.0, 1.0, 1.0])
  want_p, want_out = numpy_online({"rnn": params["rnn"][0], "readout": params["readout"]},
                                  xs, targets, mask, 0.7, forget)
  with jax.enable_x64(True):
    jp = jax.tree.map(lambda a: jnp.asarray(a, jnp.float64), params)
    got, out, loss, _ = online.learn_sequence(model, jp, jnp.asarray(xs), jnp.asarray(targets),
                                              jnp.asarray(mask), jnp.asarray(5), 0.7)
  np.testing.assert_allclose(np.asarray(out), want_out, rtol=1e-10, atol=1e-12)
  for name in ("w_x", "w_h", "b"):
    np.testing.assert_allclose(np.asarray(got["rnn"][0][name]), want_p["rnn"][name],
                               rtol=1e-10, atol=1e-12, err_msg=name)
  for name in ("w", "w_in", "b"):
    np.testing.assert_allclose(np.asarray(got["readout"][name]), want_p["readout"][name],
                               rtol=1e-10, atol=1e-12, err_msg=name)


def test_error_only_at_the_end_is_one_step_on_the_truncated_gradient():
  """No error before the last step, so no weight changes before it: the result
  is one plain gradient step on the sequence's (truncated) gradient."""
  task = make_task("hs4_adding", lag=6, output_units="sigmoid")
  model = make_model("vanilla", H, 1, block_size=S, truncated_gradient=True,
                     input_to_output=True)
  with jax.enable_x64(True):
    params = jax.tree.map(lambda a: 3 * a.astype(jnp.float64),
                          model.init(jax.random.key(1), task.input_size))
    batch = task.sample(jax.random.key(3), 1)
    new, _, loss, _ = online.learn_sequence(model, params, batch.inputs[0].astype(jnp.float64),
                                            task.dense_targets(batch)[0], batch.mask[0],
                                            batch.lengths[0], 0.5)
    g = jax.grad(lambda p: task.loss(model.apply(p, batch.inputs, batch.lengths), batch))(params)
    want = jax.tree.map(lambda p, d: p - 0.5 * d, params, g)
  for got_leaf, want_leaf in zip(jax.tree.leaves(new), jax.tree.leaves(want)):
    # the task computes its loss in float32
    np.testing.assert_allclose(np.asarray(got_leaf), np.asarray(want_leaf), rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("field, value, message", [
    ("batch_size", 2, r"config.batch_size=2 is not allowed with update_every='step'"),
    ("optimizer.name", "adam", r"config.optimizer.name='adam' is not allowed with "
     r"update_every='step'"),
    ("model.truncated_gradient", False, r"config.update_every='step' does not cover "
     r"truncated_gradient=False"),
    ("task_params.output_units", "task", r"config.update_every='step' does not cover output "
     r"units of the task's own loss"),
    ("update_every", "epoch", r"config.update_every='epoch' is not allowed; allowed: "
     r"'sequence', 'step'"),
])
def test_per_step_config_rules_are_one_line(field, value, message):
  c = importlib.import_module("configs.hs2a").get_config("paper_quick")
  c.update_every = "step"
  section, _, name = field.rpartition(".")
  (c[section] if section else c)[name] = value
  with pytest.raises(C.ConfigError, match=message):
    C.build(c)


def test_per_step_run_end_to_end(tmp_path):
  c = importlib.import_module("configs.hs2a").get_config("paper_quick")
  c.update_every = "step"
  c.num_seeds = 2
  c.budget_sequences, c.log_every, c.eval_every, c.checkpoint_every = 100, 50, 50, 50
  summary = runner.train_and_evaluate(c, str(tmp_path), progress=False)
  assert summary["sequences_seen"] == 100
  train = [json.loads(line) for line in open(tmp_path / "metrics.jsonl")]
  train = [r for r in train if r["split"] == "train"]
  assert len(train) == 4 and all(np.isfinite(r["loss"]) and r["grad_norm"] > 0 for r in train)

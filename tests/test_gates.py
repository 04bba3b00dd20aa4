"""Gate functions of ``lstm_jax.gates`` against a plain NumPy (float64) reference.

The reference is written from the equations (Hochreiter & Schmidhuber 1997;
Gers et al. 2000; Gers & Schmidhuber 2000; Ba et al. 2016), one gate at a time,
never by calling ``lstm_jax``.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

from lstm_jax import gates as G

B, I, H = 3, 4, 5
TOL = dict(rtol=1e-6, atol=1e-6)


# ----------------------------------------------------------------------------
# NumPy reference.


def np_sigmoid(v):
  return 1.0 / (1.0 + np.exp(-v))


def np_layer_norm(v, gain, offset, eps=1e-5):
  out = np.empty_like(v)
  for b in range(v.shape[0]):
    mu = sum(v[b]) / v.shape[1]
    var = sum((e - mu) ** 2 for e in v[b]) / v.shape[1]
    out[b] = gain * (v[b] - mu) / np.sqrt(var + eps) + offset
  return out


@pytest.fixture
def rng():
  return np.random.default_rng(1234)


def f32(a):
  return jnp.asarray(a, jnp.float32)


def test_gate_order():
  assert G.GATE_ORDER == ("i", "f", "g", "o")


# ----------------------------------------------------------------------------
# Forward values.


def test_sigmoid_matches_the_logistic_function():
  z = np.concatenate([np.linspace(-40.0, 40.0, 801), [0.0, 1e-3, -1e-3]])
  got = np.asarray(G.sigmoid(f32(z)), np.float64)
  np.testing.assert_allclose(got, np_sigmoid(z), rtol=0, atol=1.2e-7)
  assert got.min() >= 0.0 and got.max() <= 1.0
  with jax.enable_x64(True):
    np.testing.assert_allclose(np.asarray(G.sigmoid(jnp.asarray(z, jnp.float64))),
                               np_sigmoid(z), rtol=1e-14, atol=1e-15)
    check_grads(G.sigmoid, (jnp.asarray(z[::40], jnp.float64),), order=2,
                modes=("fwd", "rev"))


@pytest.mark.parametrize("kinds", [("sigmoid", "sigmoid", "tanh", "sigmoid"),
                                   ("sigmoid", "identity", "sigmoid"),
                                   ("tanh",), ("identity", "identity")])
def test_activate_blocks_applies_each_blocks_activation(kinds, rng):
  z = rng.normal(size=(2, B, len(kinds) * H)) * 3.0
  want = np.empty_like(z)
  for k, kind in enumerate(kinds):  # block by block, elementwise
    block = z[..., k * H:(k + 1) * H]
    want[..., k * H:(k + 1) * H] = {"sigmoid": np_sigmoid, "tanh": np.tanh,
                                    "identity": lambda v: v}[kind](block)
  np.testing.assert_allclose(np.asarray(G.activate_blocks(f32(z), kinds)), want, **TOL)
  with jax.enable_x64(True):
    z64 = jnp.asarray(z, jnp.float64)
    np.testing.assert_allclose(np.asarray(G.activate_blocks(z64, kinds)), want, rtol=1e-13)
    check_grads(lambda v: G.activate_blocks(v, kinds), (z64,), order=2, modes=("rev",))


@pytest.mark.parametrize("fn", [G.input_gate, G.forget_gate, G.output_gate])
def test_sigmoid_gates_without_peephole(fn, rng):
  z = rng.normal(size=(B, H)) * 2.0
  got = np.asarray(fn(f32(z)))
  np.testing.assert_allclose(got, np_sigmoid(z), **TOL)
  assert np.all((got > 0) & (got < 1))


@pytest.mark.parametrize("fn", [G.input_gate, G.forget_gate, G.output_gate])
def test_sigmoid_gates_with_peephole(fn, rng):
  z = rng.normal(size=(B, H))
  c = rng.normal(size=(B, H)) * 1.5
  w = rng.normal(size=(H,))
  expected = np.empty((B, H))
  for b in range(B):
    for j in range(H):
      expected[b, j] = 1.0 / (1.0 + np.exp(-(z[b, j] + w[j] * c[b, j])))
  got = np.asarray(fn(f32(z), f32(c), f32(w)))
  np.testing.assert_allclose(got, expected, **TOL)
  # The peephole actually changes the value.
  assert not np.allclose(got, np_sigmoid(z), atol=1e-3)


@pytest.mark.parametrize("fn", [G.input_gate, G.forget_gate, G.output_gate])
def test_peephole_without_cell_state_raises(fn, rng):
  z = f32(rng.normal(size=(B, H)))
  with pytest.raises(ValueError, match="peephole"):
    fn(z, None, f32(np.ones(H)))


def test_candidate(rng):
  z = rng.normal(size=(B, H)) * 2.0
  np.testing.assert_allclose(np.asarray(G.candidate(f32(z))), np.tanh(z), **TOL)
  # NIAF: identity activation, values outside (-1, 1) survive.
  got = np.asarray(G.candidate(f32(z), G.identity))
  np.testing.assert_allclose(got, z, **TOL)
  assert np.max(np.abs(got)) > 1.0
  np.testing.assert_allclose(np.asarray(G.candidate(f32(z), G.ACTIVATIONS["tanh"])),
                             np.tanh(z), **TOL)


def test_cell_update(rng):
  f = np_sigmoid(rng.normal(size=(B, H)))
  i = np_sigmoid(rng.normal(size=(B, H)))
  g = np.tanh(rng.normal(size=(B, H)))
  c_prev = rng.normal(size=(B, H))
  expected = np.empty((B, H))
  for b in range(B):
    for j in range(H):
      expected[b, j] = f[b, j] * c_prev[b, j] + i[b, j] * g[b, j]
  got = np.asarray(G.cell_update(f32(f), f32(i), f32(g), f32(c_prev)))
  np.testing.assert_allclose(got, expected, **TOL)


def test_hidden_output(rng):
  o = np_sigmoid(rng.normal(size=(B, H)))
  c = rng.normal(size=(B, H)) * 2.0
  np.testing.assert_allclose(np.asarray(G.hidden_output(f32(o), f32(c))), o * np.tanh(c),
                             **TOL)
  # NOAF: h = o * c.
  np.testing.assert_allclose(np.asarray(G.hidden_output(f32(o), f32(c), G.identity)), o * c,
                             **TOL)


def test_identity_and_activation_table(rng):
  v = rng.normal(size=(B, H))
  np.testing.assert_array_equal(np.asarray(G.identity(f32(v))), np.asarray(f32(v)))
  assert set(G.ACTIVATIONS) == {"tanh", "identity", "sigmoid", "hs1997_input", "hs1997_output"}
  np.testing.assert_allclose(np.asarray(G.ACTIVATIONS["identity"](f32(v))), v, **TOL)
  sig = 1.0 / (1.0 + np.exp(-v))   # the 1997 squashing functions g = 4s - 2, h = 2s - 1
  np.testing.assert_allclose(np.asarray(G.ACTIVATIONS["hs1997_input"](f32(v))), 4 * sig - 2,
                             **TOL)
  np.testing.assert_allclose(np.asarray(G.ACTIVATIONS["hs1997_output"](f32(v))), 2 * sig - 1,
                             **TOL)
  kinds = ("sigmoid", "hs1997_input", "hs1997_output", "tanh")
  z = rng.normal(size=(B, 4 * H))
  want = np.concatenate([1 / (1 + np.exp(-z[:, :H])), 4 / (1 + np.exp(-z[:, H:2 * H])) - 2,
                         2 / (1 + np.exp(-z[:, 2 * H:3 * H])) - 1, np.tanh(z[:, 3 * H:])], -1)
  np.testing.assert_allclose(np.asarray(G.activate_blocks(f32(z), kinds)), want, **TOL)


@pytest.mark.parametrize("num_gates", [1, 3, 4])
@pytest.mark.parametrize("with_bias", [True, False])
def test_fused_preactivations(num_gates, with_bias, rng):
  R = 2
  x = rng.normal(size=(B, I))
  h = rng.normal(size=(B, R))
  w_x = rng.normal(size=(I, num_gates * H))
  w_h = rng.normal(size=(R, num_gates * H))
  b = rng.normal(size=(num_gates * H,)) if with_bias else None
  expected = np.zeros((B, num_gates * H))
  for bb in range(B):
    for col in range(num_gates * H):
      acc = 0.0
      for k in range(I):
        acc += x[bb, k] * w_x[k, col]
      for k in range(R):
        acc += h[bb, k] * w_h[k, col]
      expected[bb, col] = acc + (b[col] if with_bias else 0.0)
  got = G.fused_preactivations(f32(x), f32(h), f32(w_x), f32(w_h),
                               None if b is None else f32(b))
  assert got.shape == (B, num_gates * H)
  np.testing.assert_allclose(np.asarray(got), expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("num", [3, 4])
def test_split_gates(num, rng):
  z = rng.normal(size=(B, num * H))
  parts = G.split_gates(f32(z), num)
  assert isinstance(parts, tuple) and len(parts) == num
  for k, part in enumerate(parts):
    assert part.shape == (B, H)
    np.testing.assert_array_equal(np.asarray(part), np.asarray(f32(z[:, k * H:(k + 1) * H])))


def test_split_gates_default_is_four(rng):
  z = rng.normal(size=(2, 7, 4 * H))  # extra leading axis
  parts = G.split_gates(f32(z))
  assert len(parts) == 4
  np.testing.assert_array_equal(np.asarray(parts[2]), np.asarray(f32(z[..., 2 * H:3 * H])))


def test_layer_norm(rng):
  N = 4 * H
  z = rng.normal(size=(B, N)) * 3.0 + 1.5
  scale = 1.0 + rng.normal(size=(N,)) * 0.5
  bias = rng.normal(size=(N,)) * 0.5
  got = G.layer_norm(f32(z), f32(scale), f32(bias))
  assert got.dtype == jnp.float32
  np.testing.assert_allclose(np.asarray(got), np_layer_norm(z, scale, bias), rtol=1e-5,
                             atol=1e-5)
  # Custom eps matters for a nearly constant row.
  z2 = np.full((1, N), 2.0) + rng.normal(size=(1, N)) * 1e-2
  got2 = G.layer_norm(f32(z2), f32(np.ones(N)), f32(np.zeros(N)), eps=1e-2)
  np.testing.assert_allclose(np.asarray(got2), np_layer_norm(z2, 1.0, 0.0, eps=1e-2),
                             rtol=1e-4, atol=1e-4)


def test_layer_norm_unit_gain_moments(rng):
  N = 16
  z = rng.normal(size=(B, N)) * 5.0 - 3.0
  got = np.asarray(G.layer_norm(f32(z), f32(np.ones(N)), f32(np.zeros(N))), np.float64)
  np.testing.assert_allclose(got.mean(-1), 0.0, atol=1e-5)
  np.testing.assert_allclose(got.var(-1), 1.0, rtol=1e-3)


def test_layer_norm_bfloat16_keeps_dtype(rng):
  N = 4 * H
  z = rng.normal(size=(B, N)) * 100.0 + 1000.0  # large offset: needs float32 statistics
  scale = 1.0 + rng.normal(size=(N,)) * 0.5
  bias = rng.normal(size=(N,)) * 0.5
  zb = jnp.asarray(z, jnp.bfloat16)
  got = G.layer_norm(zb, jnp.asarray(scale, jnp.bfloat16), jnp.asarray(bias, jnp.bfloat16))
  assert got.dtype == jnp.bfloat16
  zq = np.asarray(zb, np.float64)
  sq = np.asarray(jnp.asarray(scale, jnp.bfloat16), np.float64)
  bq = np.asarray(jnp.asarray(bias, jnp.bfloat16), np.float64)
  np.testing.assert_allclose(np.asarray(got, np.float64), np_layer_norm(zq, sq, bq),
                             rtol=2e-2, atol=3e-2)


# ----------------------------------------------------------------------------
# Gradients (float64, finite differences vs autodiff).


def _grad_cases(rng):
  n = lambda *s: jnp.asarray(rng.normal(size=s), jnp.float64)
  sig = lambda *s: jnp.asarray(np_sigmoid(rng.normal(size=s)), jnp.float64)
  w_h_cols = 4 * H
  return {
      "input_gate": (G.input_gate, (n(B, H),)),
      "input_gate_peep": (G.input_gate, (n(B, H), n(B, H), n(H))),
      "forget_gate": (G.forget_gate, (n(B, H),)),
      "forget_gate_peep": (G.forget_gate, (n(B, H), n(B, H), n(H))),
      "output_gate": (G.output_gate, (n(B, H),)),
      "output_gate_peep": (G.output_gate, (n(B, H), n(B, H), n(H))),
      "candidate": (G.candidate, (n(B, H),)),
      "candidate_identity": (lambda z: G.candidate(z, G.identity), (n(B, H),)),
      "cell_update": (G.cell_update, (sig(B, H), sig(B, H), n(B, H), n(B, H))),
      "hidden_output": (G.hidden_output, (sig(B, H), n(B, H))),
      "hidden_output_identity": (lambda o, c: G.hidden_output(o, c, G.identity),
                                 (sig(B, H), n(B, H))),
      "fused_preactivations": (G.fused_preactivations,
                               (n(B, I), n(B, H), n(I, w_h_cols), n(H, w_h_cols),
                                n(w_h_cols))),
      "split_gates": (lambda z: G.split_gates(z, 4), (n(B, 4 * H),)),
      "layer_norm": (G.layer_norm, (n(B, 4 * H), 1.0 + 0.5 * n(4 * H), n(4 * H))),
  }


GRAD_NAMES = ["input_gate", "input_gate_peep", "forget_gate", "forget_gate_peep",
              "output_gate", "output_gate_peep", "candidate", "candidate_identity",
              "cell_update", "hidden_output", "hidden_output_identity",
              "fused_preactivations", "split_gates", "layer_norm"]


@pytest.mark.parametrize("name", GRAD_NAMES)
def test_check_grads(name, rng):
  with jax.enable_x64(True):
    fn, args = _grad_cases(rng)[name]
    assert all(a.dtype == jnp.float64 for a in args)
    # The function really runs in float64.
    out = jax.tree_util.tree_leaves(fn(*args))
    assert all(o.dtype == jnp.float64 for o in out)
    check_grads(fn, args, order=2, modes=("fwd", "rev"))


def test_grad_cases_cover_every_gate_function():
  names = {"input_gate", "forget_gate", "output_gate", "candidate", "cell_update",
           "hidden_output", "fused_preactivations", "split_gates", "layer_norm"}
  assert names <= {n.removesuffix("_peep").removesuffix("_identity") for n in GRAD_NAMES}


def test_sigmoid_gate_gradient_matches_analytic(rng):
  """d sigmoid(z + w c) / dw = s (1 - s) c, summed over the batch."""
  with jax.enable_x64(True):
    z = rng.normal(size=(B, H))
    c = rng.normal(size=(B, H))
    w = rng.normal(size=(H,))
    grad = jax.grad(lambda w_: jnp.sum(G.input_gate(jnp.asarray(z), jnp.asarray(c), w_)))(
        jnp.asarray(w))
    s = np_sigmoid(z + w * c)
    np.testing.assert_allclose(np.asarray(grad), np.sum(s * (1 - s) * c, axis=0), rtol=1e-10)

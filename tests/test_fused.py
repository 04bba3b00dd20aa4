"""The fused LSTM layer (custom VJP): outputs and gradients against plain
autodiff of the scanned reference step, an independent NumPy loop, numerical
gradients, chunked backward passes, and the automatic fallback."""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

import lstm_jax as L
from lstm_jax import fused, sequence

B, T, I, H = 3, 5, 2, 3
LENGTHS = np.array([5, 2, 0])

COVERED = ("vanilla", "lstm1997", "peephole", "nig", "nfg", "nog", "niaf", "noaf", "cifg")
CUSTOM = L.LSTMVariant(forget_gate="coupled", input_activation="identity",
                       output_activation="identity", output_gate=False, peepholes=True)


def _noisy(tree, seed):
  """Perturb every leaf so no parameter is a special value (zeros, ones)."""
  leaves, treedef = jax.tree_util.tree_flatten(tree)
  keys = jax.random.split(jax.random.key(seed), len(leaves))
  return jax.tree_util.tree_unflatten(
      treedef, [l + 0.4 * jax.random.normal(k, l.shape, l.dtype) for l, k in zip(leaves, keys)])


def _problem(cell, *, layers=1, bidirectional=False, dtype=jnp.float32, time=T):
  params = _noisy(L.init_stack(cell, jax.random.key(0), I, layers,
                               bidirectional=bidirectional, dtype=dtype), 1)
  xs = jax.random.normal(jax.random.key(2), (B, time, I), dtype)
  return params, xs


def _loss_fn(cell, impl, **kw):
  """A loss touching every output and final state, with distinct weights per entry."""
  def loss(params, xs, state):
    ys, finals = L.stacked_rnn(cell, params, xs, state, impl=impl, **kw)
    w = jnp.cos(jnp.arange(ys.size, dtype=ys.dtype)).reshape(ys.shape)
    total = jnp.sum(w * ys)
    for k, leaf in enumerate(jax.tree_util.tree_leaves(finals)):
      total = total + (0.5 + 0.1 * k) * jnp.sum(leaf * jnp.sin(leaf))
    return total
  return loss


def _compare(cell, params, xs, state, rtol=2e-5, atol=2e-6, **kw):
  got = jax.value_and_grad(_loss_fn(cell, "fused", **kw), argnums=(0, 1, 2))(params, xs, state)
  want = jax.value_and_grad(_loss_fn(cell, "scan", **kw), argnums=(0, 1, 2))(params, xs, state)
  chex.assert_trees_all_close(got, want, rtol=rtol, atol=atol)
  return got


def _state(cell, seed=3, dtype=jnp.float32):
  return _noisy(cell.initial_state(B, dtype), seed)


@pytest.mark.parametrize("name", COVERED + ("custom",))
def test_matches_plain_autodiff_with_initial_state(name):
  """One layer from a random initial state: loss and gradients with respect to
  parameters, inputs and the initial state equal plain autodiff of the scan."""
  cell = L.make_cell(CUSTOM if name == "custom" else name, H)
  params, xs = _problem(cell)
  value, grads = _compare(cell, params, xs, [_state(cell)])
  assert np.isfinite(value)
  assert all(np.abs(np.asarray(g)).sum() > 0 for g in jax.tree_util.tree_leaves(grads[0]))


@pytest.mark.parametrize("name", ("vanilla", "peephole", "cifg", "nog"))
def test_matches_plain_autodiff_bidirectional_padded_stack(name):
  """Two bidirectional layers over a padded batch: covers reverse runs, masking
  (including a length-0 sequence) and input gradients through the stack."""
  cell = L.make_cell(name, H)
  params, xs = _problem(cell, layers=2, bidirectional=True)
  _compare(cell, params, xs, None, bidirectional=True, lengths=LENGTHS)


def test_matches_plain_autodiff_without_bias_reverse_padded():
  cell = L.make_cell("peephole", H, use_bias=False)
  params, xs = _problem(cell)
  assert "b" not in params[0]
  _compare(cell, params, xs, [_state(cell)], reverse=True, lengths=LENGTHS)


@pytest.mark.parametrize("min_steps,time", [(2, 7), (3, 6), (1, 4)])
def test_chunked_backward(monkeypatch, min_steps, time):
  """Chunked backward passes (a partial chunk at the end, whole chunks, one
  step per chunk) give the same gradients as the plain scan."""
  monkeypatch.setattr(fused, "CHUNK_BYTES", 0)
  monkeypatch.setattr(fused, "CHUNK_ROWS", 1)
  monkeypatch.setattr(fused, "CHUNK_MIN_STEPS", min_steps)
  assert fused.backward_chunk(time, B, 4 * H, 4) == min_steps
  cell = L.make_cell("peephole", H)
  params, xs = _problem(cell, time=time)
  lengths = np.array([time, 3, 1])
  _compare(cell, params, xs, [_state(cell)], lengths=lengths)


def test_backward_chunk_rule():
  assert fused.backward_chunk(100, 32, 512, 4) == 100           # 6.5 MB: one chunk
  assert fused.backward_chunk(200, 128, 1024, 4) == 8           # 105 MB: 8 steps
  assert fused.backward_chunk(1000, 1, 4096, 4) == 1000         # 16 MB, B=1: 1024 rows > T
  assert fused.backward_chunk(5, 1, 10**7, 4) == 5              # never longer than T


def _sigmoid(z):
  return 1.0 / (1.0 + np.exp(-z))


def _numpy_rnn(params, xs):
  """Independent float64 loop of the vanilla LSTM (blocks i, f, g, o) over
  ``xs [B, T, I]`` from a zero state; returns the outputs ``[B, T, H]``."""
  p = {k: np.asarray(v, np.float64) for k, v in params.items()}
  xs = np.asarray(xs, np.float64)
  hid = p["w_h"].shape[0]
  h, c = np.zeros((xs.shape[0], hid)), np.zeros((xs.shape[0], hid))
  ys = []
  for t in range(xs.shape[1]):
    z = xs[:, t] @ p["w_x"] + h @ p["w_h"] + p["b"]
    i, f, g, o = (z[:, k * hid:(k + 1) * hid] for k in range(4))
    c = _sigmoid(f) * c + _sigmoid(i) * np.tanh(g)
    h = _sigmoid(o) * np.tanh(c)
    ys.append(h)
  return np.stack(ys, axis=1)


def test_numpy_reference_and_numerical_gradients():
  """Fused outputs against a NumPy loop (float64), and gradients of first and
  second order against finite differences."""
  with jax.enable_x64(True):
    cell = L.make_cell("vanilla", H)
    params, xs = _problem(cell, dtype=jnp.float64)
    ys, _ = L.rnn(cell, params[0], xs, impl="fused")
    np.testing.assert_allclose(ys, _numpy_rnn(params[0], xs), rtol=1e-12, atol=1e-12)

    def f(params, xs):
      ys, _ = L.rnn(cell, params, xs, lengths=LENGTHS, impl="fused")
      return jnp.sum(jnp.sin(ys))
    check_grads(f, (params[0], xs), order=2, modes=("rev",), atol=1e-6, rtol=1e-6)


def test_vmap_over_models():
  """Gradients of a vmapped ensemble (the seed axis of training) agree."""
  cell = L.make_cell("vanilla", H)
  params = jax.vmap(lambda k: _noisy(cell.init(k, I), 5))(jax.random.split(jax.random.key(0), 2))
  xs = jax.random.normal(jax.random.key(1), (B, T, I))

  def grads(impl):
    def loss(p):
      ys, _ = L.rnn(cell, p, xs, impl=impl)
      return jnp.sum(ys ** 2)
    return jax.vmap(jax.grad(loss))(params)
  chex.assert_trees_all_close(grads("fused"), grads("auto"), rtol=2e-5, atol=2e-6)
  chex.assert_trees_all_close(grads("fused"), grads("scan"), rtol=2e-5, atol=2e-6)


def _uses_custom_vjp(fn, *args) -> bool:
  return "custom_vjp_call" in str(jax.make_jaxpr(fn)(*args))


def test_auto_uses_fused_layer():
  cell = L.make_cell("cifg", H)
  params, xs = _problem(cell)
  assert sequence.fused_reason(cell, [jnp.float32]) is None
  loss = lambda impl: (lambda p: jnp.sum(sequence.scan_layer(
      cell, p, jnp.swapaxes(xs, 0, 1), cell.initial_state(B), impl=impl)[0]))
  assert _uses_custom_vjp(loss("auto"), params[0])
  assert not _uses_custom_vjp(loss("scan"), params[0])


FALLBACKS = [
    ("fgr", {}, "gate_recurrence"),
    ("layernorm", {}, "layer_norm"),
    ("lstmp", {"proj_size": 2}, "proj_size"),
    ("gru", {}, "gru"),
    ("elman", {}, "elman"),
    ("vanilla", {"remat": "step"}, "remat"),
    ("vanilla", {"truncate": 2}, "truncate"),
    ("vanilla", {"dtype": jnp.bfloat16}, "dtype"),
]


@pytest.mark.parametrize("name,options,reason", FALLBACKS,
                         ids=[f"{n}-{r}" for n, _, r in FALLBACKS])
def test_fallback_to_plain_scan(name, options, reason):
  """Uncovered cases run the plain scan under impl='auto' (identical numbers),
  and impl='fused' refuses them before compiling, naming the reason."""
  options = dict(options)
  proj = options.pop("proj_size", 0)
  dtype = options.pop("dtype", jnp.float32)
  cell = L.make_cell(name, H, proj_size=proj)
  params = L.init_stack(cell, jax.random.key(0), I)
  xs = jax.random.normal(jax.random.key(1), (B, T, I), dtype)
  loss = lambda impl: (lambda p: jnp.sum(L.stacked_rnn(cell, p, xs, impl=impl, **options)[0]))
  auto = jax.grad(loss("auto"))(params)
  scan = jax.grad(loss("scan"))(params)
  jax.tree_util.tree_map(lambda a, b: np.testing.assert_array_equal(a, b), auto, scan)
  assert not _uses_custom_vjp(loss("auto"), params)
  with pytest.raises(ValueError,
                     match=f"impl='fused' is not allowed; the fused layer does not cover.*{reason}"):
    L.stacked_rnn(cell, params, xs, impl="fused", **options)


def test_unsupported_mixed_dtypes():
  cell = L.make_cell("vanilla", H)
  assert "mixed dtypes" in fused.unsupported(cell, [jnp.float32, jnp.bfloat16])
  assert fused.unsupported(cell, [jnp.float64]) is None


def test_bad_impl_name():
  cell = L.make_cell("vanilla", H)
  params, xs = _problem(cell)
  with pytest.raises(ValueError, match="impl='fast'.*'auto', 'fused', 'scan'"):
    L.rnn(cell, params[0], xs, impl="fast")


def test_forward_mode_needs_plain_scan():
  """Forward-mode autodiff works with impl='scan'; the fused layer, a custom
  VJP, refuses it (as documented)."""
  cell = L.make_cell("vanilla", H)
  params, xs = _problem(cell)
  tangent = jax.random.normal(jax.random.key(4), xs.shape)
  run = lambda impl: (lambda x: L.rnn(cell, params[0], x, impl=impl)[0])
  primal, out = jax.jvp(run("scan"), (xs,), (tangent,))
  # Against central differences of the NumPy float64 loop (step 1e-5: truncation
  # ~1e-10, rounding ~1e-11); the float32 JVP is good to ~1e-6.
  eps, x64, t64 = 1e-5, np.asarray(xs, np.float64), np.asarray(tangent, np.float64)
  numeric = (_numpy_rnn(params[0], x64 + eps * t64)
             - _numpy_rnn(params[0], x64 - eps * t64)) / (2 * eps)
  np.testing.assert_allclose(primal, _numpy_rnn(params[0], x64), rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(out, numeric, rtol=1e-4, atol=1e-5)
  assert np.abs(numeric).max() > 0.1                  # the tangent moves the outputs
  with pytest.raises(TypeError, match="custom_vjp"):
    jax.jvp(run("fused"), (xs,), (tangent,))


def test_fused_layer_with_emit_matches_scan():
  """scan_layer's per-step readout (emit) is applied after the fused layer."""
  cell = L.make_cell("vanilla", H)
  params, xs = _problem(cell)
  w = jax.random.normal(jax.random.key(9), (H, 2))
  emit = lambda y: y @ w

  def loss(impl):
    def f(p):
      ys, _ = sequence.scan_layer(cell, p, jnp.swapaxes(xs, 0, 1), cell.initial_state(B),
                                  jnp.asarray(LENGTHS), emit=emit, impl=impl)
      assert ys.shape == (T, B, 2)
      return jnp.sum(jnp.tanh(ys))
    return jax.value_and_grad(f)(params[0])
  chex.assert_trees_all_close(loss("fused"), loss("scan"), rtol=2e-5, atol=2e-6)


@pytest.mark.parametrize("remat,time", [("sqrt", 5), (2, 5), (4, 8)],
                         ids=["sqrt-T5", "segment2-T5-padded", "segment4-T8"])
def test_segmented_backward_matches_plain_autodiff(remat, time):
  """remat='sqrt' or a segment length runs the fused layer segment by segment
  (padded tail, lengths, reverse direction, a per-step readout) with the same
  values and gradients as autodiff of the plain scan storing every step."""
  cell = L.make_cell("peephole", H)
  params, xs = _problem(cell, time=time)
  xs_t = jnp.swapaxes(xs, 0, 1)
  lengths = jnp.asarray([time, 2, 0])
  w = jax.random.normal(jax.random.key(9), (H, 2))
  state = _state(cell)

  def loss(impl, remat, reverse):
    def f(p, x, s):
      ys, final = sequence.scan_layer(cell, p, x, s, lengths, reverse=reverse,
                                      remat=remat, emit=lambda y: y @ w, impl=impl)
      assert ys.shape == (time, B, 2)
      return jnp.sum(jnp.tanh(ys) * jnp.cos(jnp.arange(ys.size).reshape(ys.shape))) + \
          jnp.sum(final.c ** 2) + jnp.sum(jnp.sin(final.h))
    return f

  for reverse in (False, True):
    got = jax.value_and_grad(loss("fused", remat, reverse), argnums=(0, 1, 2))(
        params[0], xs_t, state)
    want = jax.value_and_grad(loss("scan", "none", reverse), argnums=(0, 1, 2))(
        params[0], xs_t, state)
    chex.assert_trees_all_close(got, want, rtol=2e-5, atol=2e-6)
  jaxpr = str(jax.make_jaxpr(loss("auto", remat, False))(params[0], xs_t, state))
  assert "custom_vjp_call" in jaxpr and "remat" in jaxpr   # fused, segments recomputed


def test_segmented_backward_memory_is_sublinear():
  """XLA's own accounting: at T = 4096 the sqrt-segmented fused layer needs a
  small fraction of the temporaries of the one storing every step."""
  cell = L.make_cell("vanilla", 16)
  params = cell.init(jax.random.key(0), 1)
  spec = jax.ShapeDtypeStruct((4096, 2, 1), jnp.float32)
  w = jnp.ones((16, 1))

  def temp_bytes(remat):
    def loss(p, x):  # a readout inside the scan, as the experiment model has
      ys, _ = sequence.scan_layer(cell, p, x, cell.initial_state(2), remat=remat,
                                  emit=lambda y: y @ w, impl="fused")
      return jnp.sum(ys ** 2)
    compiled = jax.jit(jax.grad(loss)).lower(params, spec).compile()
    return compiled.memory_analysis().temp_size_in_bytes

  full, sqrt = temp_bytes("none"), temp_bytes("sqrt")
  assert full > 4096 * 2 * 6 * 16 * 4      # z, c, h of every step are stored
  assert sqrt < full / 8

"""flax.nnx cells: nnx.RNN / nnx.Bidirectional over them equal the core functions
and the linen cells, params round-trip as the core dict, options reach the core;
the LSTMCell is a drop-in for flax.nnx.OptimizedLSTMCell (Flax's cells are the
reference)."""

from __future__ import annotations

import contextlib
import re

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import lstm_jax as L
from lstm_jax import interop
from lstm_jax import linen as lnn
from lstm_jax import nnx as lnnx

import test_linen as linen_tests
from test_linen import TOL, _assert_same

B, T, I, H, P = 2, 5, 3, 4, 2
LENGTHS = jnp.array([5, 2])
CASES = [("vanilla", 0), ("peephole", 0), ("cifg", 0), ("fgr", 0), ("layernorm", 0),
         ("lstmp", P), ("gru", 0), ("elman", 0)]


def _xs(seed: int = 0, shape: tuple[int, ...] = (B, T, I)) -> jax.Array:
  return jax.random.normal(jax.random.key(seed), shape)


def _perturb(params: dict, seed: int = 7) -> dict:
  """Noise on every entry, so zero-initialised peepholes etc. take part."""
  names = sorted(params)
  keys = jax.random.split(jax.random.key(seed), len(names))
  return {n: params[n] + 0.3 * jax.random.normal(k, params[n].shape, params[n].dtype)
          for n, k in zip(names, keys)}


def _assert_tree_close(got, want, atol: float = 1e-6) -> None:
  assert jax.tree_util.tree_structure(got) == jax.tree_util.tree_structure(want)
  for g, w in zip(jax.tree_util.tree_leaves(got), jax.tree_util.tree_leaves(want)):
    assert g.shape == w.shape and g.dtype == w.dtype
    np.testing.assert_allclose(np.asarray(g), np.asarray(w), rtol=0, atol=atol)


def _as_core(core: L.Cell, carry):
  """Flax's carry (c, h[, gates]) as the core's LSTMState (GRU/Elman: unchanged)."""
  return interop.carry_from_flax(carry) if core.kind == "lstm" else carry


def _valid(ys: jax.Array, lengths: jax.Array) -> np.ndarray:
  """``ys [B, T, F]`` with padded steps zeroed (flax leaves them non-zero)."""
  mask = np.arange(ys.shape[1])[None, :] < np.asarray(lengths)[:, None]
  return np.where(mask[..., None], np.asarray(ys), 0.0)


@pytest.mark.parametrize("name,proj", CASES)
def test_rnn_matches_core_and_linen(name, proj):
  core = L.make_cell(name, H, proj_size=proj)
  fresh = lnnx.RecurrentCell(I, H, cell=name, proj_size=proj, rngs=nnx.Rngs(0))
  assert fresh.core == core
  assert {k: v.shape for k, v in fresh.core_params().items()} == core.param_shapes(I)
  params = _perturb(core.init(jax.random.key(0), I))
  cell = lnnx.RecurrentCell.from_core_params(core, params)
  assert isinstance(cell.w_x, nnx.Param)
  xs = _xs()
  carry, ys = nnx.RNN(cell)(xs, return_carry=True)
  want_ys, want_carry = L.rnn(core, params, xs)
  assert ys.shape == (B, T, core.output_size)
  _assert_tree_close(ys, want_ys)
  _assert_tree_close(_as_core(core, carry), want_carry)
  # linen with the same params: the same numbers.
  linen_layer = nn.RNN(lnn.RecurrentCell.from_core(core))
  l_carry, l_ys = linen_layer.apply(lnn.to_variables(params, "rnn"), xs, return_carry=True)
  _assert_tree_close(ys, l_ys, atol=0)
  _assert_tree_close(carry, l_carry, atol=0)


def test_bare_cell_step_matches_core_step():
  core = L.make_cell("fgr", H)
  params = _perturb(core.init(jax.random.key(0), I))
  cell = lnnx.RecurrentCell.from_core_params(core, params)
  x = _xs(shape=(B, I))
  carry = cell.initialize_carry(x.shape)
  new_carry, y = cell(carry, x)
  want_carry, want_y = core.step(params, interop.carry_from_flax(carry), x)
  _assert_tree_close(y, want_y)
  _assert_tree_close(interop.carry_from_flax(new_carry), want_carry)
  c, h, gates = new_carry  # FGR: (c, h, gates)
  assert gates.shape == (B, 3 * H)
  state, _ = cell(interop.carry_from_flax(carry), x)  # an LSTMState comes back as one
  assert isinstance(state, L.LSTMState)
  _assert_tree_close(state, want_carry)


def test_bidirectional_and_seq_lengths_match_core():
  core = L.make_cell("peephole", H)
  k_f, k_b = jax.random.split(jax.random.key(0))
  params = {"fwd": _perturb(core.init(k_f, I), 1), "bwd": _perturb(core.init(k_b, I), 2)}
  fwd = lnnx.RecurrentCell.from_core_params(core, params["fwd"])
  bwd = lnnx.RecurrentCell.from_core_params(core, params["bwd"])
  layer = nnx.Bidirectional(nnx.RNN(fwd), nnx.RNN(bwd))
  xs = _xs()
  carry, ys = layer(xs, return_carry=True)
  want_ys, want_carry = L.bidirectional_rnn(core, params, xs)
  _assert_tree_close(ys, want_ys)
  _assert_tree_close(tuple(map(interop.carry_from_flax, carry)), want_carry)
  # With lengths flax picks each sequence's last real carry and reverses each
  # sequence within its length: same finals and real-step outputs as the core.
  carry, ys = layer(xs, return_carry=True, seq_lengths=LENGTHS)
  want_ys, want_carry = L.bidirectional_rnn(core, params, xs, lengths=LENGTHS)
  _assert_tree_close(tuple(map(interop.carry_from_flax, carry)), want_carry)
  np.testing.assert_allclose(_valid(ys, LENGTHS), want_ys, rtol=0, atol=1e-6)
  carry, ys = nnx.RNN(fwd)(xs, return_carry=True, seq_lengths=LENGTHS)
  _assert_tree_close(interop.carry_from_flax(carry), want_carry[0])
  np.testing.assert_allclose(_valid(ys, LENGTHS), want_ys[..., :H], rtol=0, atol=1e-6)


def test_gradients_match_core():
  core = L.make_cell("cifg", H)
  params = _perturb(core.init(jax.random.key(0), I))
  cell = lnnx.RecurrentCell.from_core_params(core, params)
  xs = _xs()

  def nnx_loss(model):
    return jnp.sum(nnx.RNN(model)(xs) ** 2)

  grads = nnx.grad(nnx_loss)(cell)
  want = jax.grad(lambda p: jnp.sum(L.rnn(core, p, xs)[0] ** 2))(params)
  got = {k: v.get_value() for k, v in nnx.to_flat_state(grads)}
  got = {k[-1]: v for k, v in got.items()}
  assert set(got) == set(want)
  for k in want:
    np.testing.assert_allclose(got[k], want[k], rtol=1e-5, atol=1e-6)
  assert float(jnp.abs(got["w_peep"]).sum()) > 0


def test_forget_bias_and_chrono():
  cell = lnnx.RecurrentCell(I, H, forget_bias=3.0, rngs=nnx.Rngs(0))
  blocks = np.asarray(cell.b.get_value()).reshape(4, H)  # i, f, g, o
  np.testing.assert_array_equal(blocks[1], 3.0)
  np.testing.assert_array_equal(blocks[[0, 2, 3]], 0.0)

  t_max = 10.0
  cell = lnnx.LSTMCell(I, H, bias_init="chrono", chrono_t_max=t_max, rngs=nnx.Rngs(0))
  b_i, b_f, b_g, b_o = np.asarray(cell.b.get_value()).reshape(4, H)
  assert np.all(b_f >= 0) and np.all(b_f <= np.log(t_max - 1) + 1e-6)
  assert np.unique(b_f).size == H
  np.testing.assert_allclose(b_i, -b_f)
  np.testing.assert_array_equal(np.stack([b_g, b_o]), 0.0)


def test_other_options_and_dtypes():
  cell = lnnx.RecurrentCell(I, H, cell="elman", kernel_init="zeros", recurrent_init="uniform",
                            init_scale=0.01, use_bias=False, rngs=nnx.Rngs(0))
  assert cell.param_names == ("w_x", "w_h")
  np.testing.assert_array_equal(cell.w_x.get_value(), 0.0)
  assert 0 < float(jnp.abs(cell.w_h.get_value()).max()) <= 0.01

  cell = lnnx.RecurrentCell(I, H, cell="gru", param_dtype=jnp.bfloat16, rngs=nnx.Rngs(0))
  assert {v.dtype for v in cell.core_params().values()} == {jnp.dtype(jnp.bfloat16)}
  assert cell.initialize_carry((B, I)).dtype == jnp.bfloat16  # follows param_dtype
  cell = lnnx.RecurrentCell(I, H, cell="gru", param_dtype=jnp.bfloat16,
                            carry_dtype=jnp.float16, rngs=nnx.Rngs(0))
  assert cell.initialize_carry((B, I)).dtype == jnp.float16

  custom = L.LSTMVariant(gate_recurrence=True)
  cell = lnnx.RecurrentCell(I, H, cell=custom, rngs=nnx.Rngs(0))
  assert cell.core.variant == custom and cell.w_gates.get_value().shape == (3 * H, 3 * H)

  a = lnnx.RecurrentCell(I, H, rngs=nnx.Rngs(0)).core_params()
  b = lnnx.RecurrentCell(I, H, rngs=nnx.Rngs(0)).core_params()
  c = lnnx.RecurrentCell(I, H, rngs=nnx.Rngs(1)).core_params()
  _assert_tree_close(a, b, atol=0)
  assert not np.allclose(a["w_x"], c["w_x"])


def test_initialize_carry():
  lstmp = lnnx.RecurrentCell(I, H, cell="lstmp", proj_size=P, rngs=nnx.Rngs(0))
  c, h = lstmp.initialize_carry((B, I))
  assert h.shape == (B, P) and c.shape == (B, H)
  assert lstmp.num_feature_axes == 1
  fgr = lnnx.RecurrentCell(I, H, cell="fgr", rngs=nnx.Rngs(0))
  ones = fgr.initialize_carry((7, I), nnx.Rngs(carry=1),
                              carry_init=nnx.initializers.ones_init())
  assert [a.shape for a in ones] == [(7, H), (7, H), (7, 3 * H)]  # (c, h, gates)
  assert all(np.all(np.asarray(leaf) == 1) for leaf in jax.tree_util.tree_leaves(ones))
  with pytest.raises(ValueError, match="carry_init needs an nnx.Rngs"):
    fgr.initialize_carry((7, I), carry_init=nnx.initializers.ones_init())


def test_core_params_round_trip_and_split_merge():
  cell = lnnx.RecurrentCell(I, H, cell="layernorm", rngs=nnx.Rngs(0))
  params = cell.core_params()
  assert set(params) == set(cell.core.param_shapes(I))
  again = lnnx.RecurrentCell.from_core_params(cell.core, params)
  _assert_tree_close(again.core_params(), params, atol=0)
  graphdef, state = nnx.split(cell, nnx.Param)
  merged = nnx.merge(graphdef, state)
  _assert_tree_close(merged.core_params(), params, atol=0)
  assert merged.core == cell.core


def test_bad_arguments_raise():
  allowed = re.escape(", ".join(map(repr, L.CELL_NAMES)))
  with pytest.raises(ValueError, match=r"cell='bogus' is not allowed; allowed: " + allowed):
    lnnx.RecurrentCell(I, H, cell="bogus", rngs=nnx.Rngs(0))
  with pytest.raises(ValueError, match="cell='elman' is not an LSTM variant"):
    lnnx.LSTMCell(I, H, cell="elman", rngs=nnx.Rngs(0))
  with pytest.raises(ValueError, match="needs proj_size > 0"):
    lnnx.RecurrentCell(I, H, cell="lstmp", rngs=nnx.Rngs(0))
  with pytest.raises(ValueError, match="kernel_init='he' is not allowed; allowed: "
                                       "'lecun_normal'.*, or an initialiser"):
    lnnx.RecurrentCell(I, H, kernel_init="he", rngs=nnx.Rngs(0))
  with pytest.raises(TypeError, match="rngs: an nnx.Rngs is needed"):
    lnnx.RecurrentCell(I, H)
  params = L.make_cell("vanilla", H).init(jax.random.key(0), I)
  with pytest.raises(ValueError, match="does not match params\\['w_x'\\]"):
    lnnx.RecurrentCell(I + 1, H, params=params)
  with pytest.raises(ValueError, match=r"params\['w_peep'\] is missing"):
    lnnx.RecurrentCell(I, H, cell="peephole", params=params)


# ----------------------------------------------------------------------------
# LSTMCell as a drop-in for flax.nnx.OptimizedLSTMCell: Flax's cell, with
# random params (biases too), is the reference; ours holds the same params
# through lstm_jax.interop.

NORMAL = nnx.initializers.normal(0.5)  # a random carry_init, shared by both sides


def _flax_and_ours(seed: int = 0, **kwargs) -> tuple[nnx.Module, lnnx.LSTMCell]:
  """flax.nnx.OptimizedLSTMCell(I, H) with random params, and our LSTMCell
  holding them (converted by lstm_jax.interop)."""
  flax_cell = nnx.OptimizedLSTMCell(I, H, rngs=nnx.Rngs(seed), **kwargs)
  flax_cell.dense_h.bias.set_value(
      jax.random.normal(jax.random.key(seed + 100), (4 * H,)))
  params = interop.from_flax_lstm(nnx.state(flax_cell, nnx.Param))
  return flax_cell, lnnx.LSTMCell(I, H, params=params, **kwargs)


# Every option of nnx.RNN, as in the linen tests: (RNN options, call arguments,
# input shape).
RNN_CASES = linen_tests.RNN_CASES


@pytest.mark.parametrize("case", list(RNN_CASES))
def test_drop_in_rnn_matches_flax(case):
  attrs, kwargs, shape = RNN_CASES[case]
  flax_cell, ours = _flax_and_ours()
  xs = _xs(shape=shape)
  if case != "plain":  # a carry made by Flax's cell (random), accepted by ours
    step_shape = shape[1:] if attrs.get("time_major") else shape[:-2] + shape[-1:]
    kwargs = dict(kwargs, initial_carry=flax_cell.initialize_carry(
        step_shape, nnx.Rngs(carry=3), carry_init=NORMAL))
  want_carry, want_ys = nnx.RNN(flax_cell, return_carry=True, **attrs)(xs, **kwargs)
  carry, ys = nnx.RNN(ours, return_carry=True, **attrs)(xs, **kwargs)
  _assert_same(ys, want_ys)
  _assert_same(carry, want_carry)  # (c, h), a tuple like Flax's
  c, h = carry
  np.testing.assert_array_equal(np.asarray(carry), np.stack([c, h]))  # [2, *batch, H]


def test_drop_in_initialize_carry_matches_flax():
  """The same stream and carry_init give Flax's carry, leaf by leaf; the
  dtype is param_dtype; carry_init given at construction is the default."""
  flax_cell, ours = _flax_and_ours()
  want = flax_cell.initialize_carry((2, 3, I), nnx.Rngs(carry=1), carry_init=NORMAL)
  got = ours.initialize_carry((2, 3, I), nnx.Rngs(carry=1), carry_init=NORMAL)
  _assert_same(got, want, rtol=0, atol=0)
  assert float(jnp.abs(got[0]).sum()) > 0
  # (Flax's orthogonal init has no bfloat16 QR on CPU: zeros for the recurrent kernel.)
  bf16 = {"param_dtype": jnp.bfloat16, "recurrent_kernel_init": nnx.initializers.zeros_init()}
  for kwargs in (bf16, {"carry_init": NORMAL}):
    with pytest.warns(UserWarning) if "carry_init" in kwargs else contextlib.nullcontext():
      flax_cell = nnx.OptimizedLSTMCell(I, H, rngs=nnx.Rngs(0), **kwargs)
    ours = lnnx.LSTMCell(I, H, rngs=nnx.Rngs(0), **kwargs)
    want = flax_cell.initialize_carry((B, I), nnx.Rngs(carry=2))
    _assert_same(ours.initialize_carry((B, I), nnx.Rngs(carry=2)), want, rtol=0, atol=0)
  # keep_rngs: the kept carry stream serves calls without rngs, as in Flax.
  with pytest.warns(UserWarning):
    flax_cell = nnx.OptimizedLSTMCell(I, H, keep_rngs=True, rngs=nnx.Rngs(0, carry=4))
  ours = lnnx.LSTMCell(I, H, keep_rngs=True, rngs=nnx.Rngs(0, carry=4))
  _assert_same(ours.initialize_carry((B, I), carry_init=NORMAL),
               flax_cell.initialize_carry((B, I), carry_init=NORMAL), rtol=0, atol=0)


def test_drop_in_bidirectional_matches_flax():
  (flax_f, ours_f), (flax_b, ours_b) = _flax_and_ours(1), _flax_and_ours(2)
  xs = _xs()
  carry0 = tuple(flax_f.initialize_carry((B, I), nnx.Rngs(carry=k), carry_init=NORMAL)
                 for k in (5, 6))
  run = lambda f, b: nnx.Bidirectional(nnx.RNN(f), nnx.RNN(b))(
      xs, seq_lengths=LENGTHS, initial_carry=carry0, return_carry=True)
  want_carry, want_ys = run(flax_f, flax_b)
  carry, ys = run(ours_f, ours_b)
  _assert_same(ys, want_ys)  # every step, padded ones too: the same flax machinery
  _assert_same(carry, want_carry)  # ((c, h), (c, h))


def test_drop_in_nnx_scan_and_lax_scan_match_flax():
  flax_cell, ours = _flax_and_ours()
  xs = _xs()
  carry0 = flax_cell.initialize_carry((B, I), nnx.Rngs(carry=7), carry_init=NORMAL)
  scan = nnx.scan(lambda cell, carry, x: cell(carry, x),
                  in_axes=(None, nnx.Carry, 1), out_axes=(nnx.Carry, 1))
  want_carry, want_ys = scan(flax_cell, carry0, xs)
  carry, ys = scan(ours, carry0, xs)
  _assert_same(ys, want_ys)
  _assert_same(carry, want_carry)

  x_tm = jnp.swapaxes(xs, 0, 1)  # [T, B, I]
  want_carry, want_ys = jax.lax.scan(lambda c, x: flax_cell(c, x), carry0, x_tm)
  carry, ys = jax.lax.scan(lambda c, x: ours(c, x), carry0, x_tm)
  _assert_same(ys, want_ys)
  _assert_same(carry, want_carry)


def test_drop_in_matches_flax_lstm_cell_and_activations():
  """flax.nnx.LSTMCell (separate dense layers, interop's 'nnx' layout) as the
  reference, with Flax's default functions spelled out and with identity."""
  x = _xs(shape=(B, I))
  for act in (nnx.tanh, jax.nn.identity):
    flax_cell = nnx.LSTMCell(I, H, gate_fn=nnx.sigmoid, activation_fn=act, rngs=nnx.Rngs(0))
    tree = nnx.state(flax_cell, nnx.Param).to_pure_dict()
    ours = lnnx.LSTMCell(I, H, gate_fn=nnx.sigmoid, activation_fn=act,
                         params=interop.from_flax_lstm(tree))
    carry0 = flax_cell.initialize_carry((B, I), nnx.Rngs(carry=1), carry_init=NORMAL)
    _assert_same(ours(carry0, x), flax_cell(carry0, x))
  with pytest.raises(ValueError, match=r"^gate_fn=relu is not allowed; allowed: jax.nn.sigmoid"):
    lnnx.LSTMCell(I, H, gate_fn=jax.nn.relu, rngs=nnx.Rngs(0))
  with pytest.raises(ValueError, match=r"^activation_fn=softplus is not allowed"):
    lnnx.LSTMCell(I, H, activation_fn=jax.nn.softplus, rngs=nnx.Rngs(0))


def test_drop_in_dtype_follows_flax():
  flax_cell, ours = _flax_and_ours(dtype=jnp.bfloat16)
  xs = _xs()
  want_carry, want_ys = nnx.RNN(flax_cell, return_carry=True)(xs)
  carry, ys = nnx.RNN(ours, return_carry=True)(xs)
  assert ys.dtype == want_ys.dtype == jnp.float32  # bfloat16 matmuls, float32 carry
  _assert_same(ys, want_ys, rtol=0, atol=2e-2)  # bfloat16 rounding, sums in another order
  _assert_same(carry, want_carry, rtol=0, atol=2e-2)


def test_drop_in_constructor_and_init():
  rngs = nnx.Rngs(0)
  zeros = nnx.initializers.zeros_init()
  # Flax's argument names; bias as Flax's is one argument away.
  for kwargs in ({"bias_init": zeros}, {"forget_bias": 0.0}):
    cell = lnnx.LSTMCell(in_features=I, hidden_features=H, rngs=rngs, **kwargs)
    np.testing.assert_array_equal(cell.b.get_value(), nnx.OptimizedLSTMCell(
        I, H, rngs=rngs).dense_h.bias.get_value())  # zeros, as Flax's
  b_f = np.asarray(lnnx.LSTMCell(I, H, rngs=rngs).b.get_value()).reshape(4, H)[1]
  np.testing.assert_array_equal(b_f, 1.0)  # our default forget-gate bias
  # Initialisers: Flax callables reach the right entries; names still work.
  const = lambda v: nnx.initializers.constant(v)
  cell = lnnx.LSTMCell(I, H, kernel_init=const(0.5), recurrent_kernel_init=const(-0.25),
                       bias_init=const(0.125), rngs=rngs)
  flax_cell = nnx.OptimizedLSTMCell(I, H, kernel_init=const(0.5),
                                    recurrent_kernel_init=const(-0.25),
                                    bias_init=const(0.125), rngs=rngs)
  _assert_tree_close(cell.core_params(), interop.from_flax_lstm(nnx.state(flax_cell, nnx.Param)),
                     atol=0)
  assert lnnx.LSTMCell(I, H, recurrent_init="uniform", rngs=rngs).core.recurrent_init == "uniform"
  # Metadata on the Params, as Flax's kernel_metadata etc.
  cell = lnnx.LSTMCell(I, H, kernel_metadata={"tag": "x"}, recurrent_kernel_metadata={"tag": "h"},
                       bias_metadata={"tag": "b"}, rngs=rngs)
  assert [getattr(cell, k).get_metadata()["tag"] for k in ("w_x", "w_h", "b")] == ["x", "h", "b"]
  assert (cell.in_features, cell.hidden_features) == (I, H)
  assert lnnx.LSTMCell(I, features=H, rngs=rngs).hidden_features == H  # linen's name
  with pytest.raises(TypeError, match="hidden_features=4 and features=5 name the same size"):
    lnnx.LSTMCell(I, H, features=H + 1, rngs=rngs)
  with pytest.raises(TypeError, match="missing hidden_features"):
    lnnx.LSTMCell(I, rngs=rngs)
  with pytest.raises(TypeError, match=r"unexpected keyword argument\(s\) kernel_metdata; the "
                                      r"initialisation options are kernel_init, recurrent_init"):
    lnnx.LSTMCell(I, H, kernel_metdata={}, rngs=rngs)
  # from_core_params passes every init option through.
  core = L.make_cell("vanilla", H, kernel_init=const(0.5), bias_init=zeros, init_scale=0.2)
  again = lnnx.LSTMCell.from_core_params(core, core.init(jax.random.key(0), I))
  assert again.core == core


def test_interop_nnx_layouts_round_trip():
  """Ours -> flax.nnx cell params (both layouts) -> ours, and a Flax cell
  loaded that way runs like ours."""
  core = L.make_cell("vanilla", H)
  params = _perturb(core.init(jax.random.key(0), I))
  for layout, cls in (("nnx_optimized", nnx.OptimizedLSTMCell), ("nnx", nnx.LSTMCell)):
    flax_cell = cls(I, H, rngs=nnx.Rngs(0))
    state = nnx.state(flax_cell, nnx.Param)
    nnx.replace_by_pure_dict(state, interop.to_flax_lstm(params, core, layout=layout))
    nnx.update(flax_cell, state)
    _assert_tree_close(interop.from_flax_lstm(nnx.state(flax_cell, nnx.Param)), params, atol=0)
    if layout == "nnx_optimized":
      ours = lnnx.LSTMCell.from_core_params(core, params)
      carry0 = ours.initialize_carry((B, I), nnx.Rngs(carry=1), carry_init=NORMAL)
      x = _xs(shape=(B, I))
      _assert_same(ours(carry0, x), flax_cell(carry0, x))

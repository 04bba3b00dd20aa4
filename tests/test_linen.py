"""flax.linen cells: nn.RNN / nn.Bidirectional over them equal the core functions,
params are the core params dict, constructor options reach the core cell; the
LSTMCell is a drop-in for Flax's LSTM cells (Flax's cells are the reference)."""

from __future__ import annotations

import re

import flax.linen as nn
import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import lstm_jax as L
from lstm_jax import interop
from lstm_jax import linen as lnn

B, T, I, H, P = 2, 5, 3, 4, 2
LENGTHS = jnp.array([5, 2])
# (cell, proj_size): every structurally different kind of carry and param set.
CASES = [("vanilla", 0), ("peephole", 0), ("cifg", 0), ("fgr", 0), ("layernorm", 0),
         ("lstmp", P), ("gru", 0), ("elman", 0)]


def _xs(seed: int = 0, shape: tuple[int, ...] = (B, T, I)) -> jax.Array:
  return jax.random.normal(jax.random.key(seed), shape)


def _perturb(params: dict, seed: int = 7) -> dict:
  """Add noise to every entry, so zero-initialised peepholes, gate recurrence
  and layer-norm offsets take part in the comparison."""
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
def test_rnn_matches_core_rnn(name, proj):
  cell = lnn.RecurrentCell(features=H, cell=name, proj_size=proj)
  core = cell.core
  assert core == L.make_cell(name, H, proj_size=proj)
  layer = nn.RNN(cell)
  xs = _xs()
  shapes = jax.eval_shape(layer.init, jax.random.key(0), xs)  # no compile
  assert {k: v.shape for k, v in lnn.to_core_params(shapes).items()} == core.param_shapes(I)
  params = _perturb(core.init(jax.random.key(0), I))
  carry, ys = layer.apply(lnn.to_variables(params, "rnn"), xs, return_carry=True)
  want_ys, want_carry = L.rnn(core, params, xs)
  assert ys.shape == (B, T, core.output_size)
  _assert_tree_close(ys, want_ys)
  _assert_tree_close(_as_core(core, carry), want_carry)
  if core.kind == "lstm":  # Flax's carry: a plain tuple (c, h), (c, h, gates) for FGR
    assert type(carry) is tuple and len(carry) == (3 if name == "fgr" else 2)
    assert carry[0].shape == (B, H) and carry[1].shape == (B, core.output_size)


def test_bare_cell_step_matches_core_step():
  cell = lnn.RecurrentCell(features=H, cell="fgr")
  x = _xs(shape=(B, I))
  carry = cell.initialize_carry(jax.random.key(1), x.shape)
  variables = cell.init(jax.random.key(0), carry, x)
  # The params collection *is* the core params dict.
  assert set(variables) == {"params"}
  params = _perturb(lnn.to_core_params(variables))
  carry1, y = cell.apply(lnn.to_variables(params), carry, x)
  want_carry, want_y = cell.core.step(params, interop.carry_from_flax(carry), x)
  _assert_tree_close(y, want_y)
  _assert_tree_close(interop.carry_from_flax(carry1), want_carry)
  c, h, gates = carry1  # FGR: (c, h, gates), gates the previous [i, f, o]
  assert float(jnp.abs(gates).sum()) > 0
  # An LSTMState carry is accepted and comes back as one.
  state1, y2 = cell.apply(lnn.to_variables(params), interop.carry_from_flax(carry), x)
  assert isinstance(state1, L.LSTMState)
  _assert_tree_close(state1, want_carry)
  _assert_tree_close(y2, want_y)
  with pytest.raises(ValueError, match=r"carry: expected \(c, h, gates\) for lstm 'fgr' H=4, "
                                       r"got tuple of 2"):
    cell.apply(lnn.to_variables(params), carry[:2], x)


def test_extra_batch_axes():
  cell = lnn.RecurrentCell(features=H, cell="peephole")
  xs = _xs(shape=(2, 3, T, I))  # batch axes (2, 3)
  params = _perturb(cell.core.init(jax.random.key(0), I))
  carry, ys = nn.RNN(cell).apply(lnn.to_variables(params, "rnn"), xs, return_carry=True)
  want_ys, want_carry = L.rnn(cell.core, params, xs.reshape(6, T, I))
  _assert_tree_close(ys.reshape(6, T, H), want_ys)
  carry = jax.tree_util.tree_map(lambda a: a.reshape(6, -1), carry)
  _assert_tree_close(interop.carry_from_flax(carry), want_carry)


@pytest.mark.parametrize("name,proj", [("lstmp", P), ("gru", 0)])
def test_bidirectional_matches_core(name, proj):
  cell = lnn.RecurrentCell(features=H, cell=name, proj_size=proj)
  layer = nn.Bidirectional(nn.RNN(cell), nn.RNN(cell.clone()))
  xs = _xs()
  variables = layer.init(jax.random.key(0), xs)
  params = lnn.to_core_params(variables)
  assert set(params) == {"fwd", "bwd"}
  assert not np.allclose(params["fwd"]["w_x"], params["bwd"]["w_x"])  # independent
  params = {"fwd": _perturb(params["fwd"], 1), "bwd": _perturb(params["bwd"], 2)}
  carry, ys = layer.apply(lnn.to_variables(params, "bidirectional"), xs, return_carry=True)
  want_ys, want_carry = L.bidirectional_rnn(cell.core, params, xs)
  assert ys.shape == (B, T, 2 * cell.core.output_size)
  _assert_tree_close(ys, want_ys)
  _assert_tree_close(tuple(_as_core(cell.core, c) for c in carry), want_carry)


def test_bidirectional_with_one_cell_instance_shares_params():
  cell = lnn.RecurrentCell(features=H, cell="cifg")
  layer = nn.Bidirectional(nn.RNN(cell), nn.RNN(cell))
  xs = _xs()
  variables = layer.init(jax.random.key(0), xs)
  assert set(variables["params"]) == {"forward_rnn"}  # linen module sharing
  params = lnn.to_core_params(variables)
  assert params["fwd"] is params["bwd"]
  carry, ys = layer.apply(variables, xs, return_carry=True)
  want_ys, want_carry = L.bidirectional_rnn(cell.core, params, xs)
  _assert_tree_close(ys, want_ys)
  _assert_tree_close(tuple(_as_core(cell.core, c) for c in carry), want_carry)


def test_seq_lengths_forward_reverse_and_bidirectional():
  """flax selects the carry after each sequence's last real step and (with
  reverse) flips each sequence within its length: the final carries and the
  outputs at real steps equal lstm_jax's padding semantics."""
  cell = lnn.RecurrentCell(features=H, cell="fgr")
  core = cell.core
  xs = _xs()
  params = _perturb(core.init(jax.random.key(0), I))
  var = lnn.to_variables(params, "rnn")
  for reverse in (False, True):
    layer = nn.RNN(cell, reverse=reverse, keep_order=True)
    carry, ys = layer.apply(var, xs, seq_lengths=LENGTHS, return_carry=True)
    want_ys, want_carry = L.rnn(core, params, xs, lengths=LENGTHS, reverse=reverse)
    _assert_tree_close(interop.carry_from_flax(carry), want_carry)
    np.testing.assert_allclose(_valid(ys, LENGTHS), want_ys, rtol=0, atol=1e-6)

  bi = nn.Bidirectional(nn.RNN(cell), nn.RNN(cell.clone()))
  bparams = {"fwd": params, "bwd": _perturb(params, 3)}
  carry, ys = bi.apply(lnn.to_variables(bparams, "bidirectional"), xs,
                       seq_lengths=LENGTHS, return_carry=True)
  want_ys, want_carry = L.bidirectional_rnn(core, bparams, xs, lengths=LENGTHS)
  _assert_tree_close(tuple(map(interop.carry_from_flax, carry)), want_carry)
  np.testing.assert_allclose(_valid(ys, LENGTHS), want_ys, rtol=0, atol=1e-6)


def test_forget_bias_in_f_block():
  cell = lnn.RecurrentCell(features=H, forget_bias=3.0)
  params = lnn.to_core_params(nn.RNN(cell).init(jax.random.key(0), _xs()))
  blocks = np.asarray(params["b"]).reshape(4, H)  # i, f, g, o
  np.testing.assert_array_equal(blocks[1], 3.0)
  np.testing.assert_array_equal(blocks[[0, 2, 3]], 0.0)


def test_chrono_bias():
  t_max = 10.0
  cell = lnn.LSTMCell(features=H, bias_init="chrono", chrono_t_max=t_max)
  assert cell.core.bias_init == "chrono" and cell.core.chrono_t_max == t_max
  params = lnn.to_core_params(nn.RNN(cell).init(jax.random.key(0), _xs()))
  b_i, b_f, b_g, b_o = np.asarray(params["b"]).reshape(4, H)
  assert np.all(b_f >= 0) and np.all(b_f <= np.log(t_max - 1) + 1e-6)
  assert np.unique(b_f).size == H  # drawn, not constant
  np.testing.assert_allclose(b_i, -b_f)
  np.testing.assert_array_equal(np.stack([b_g, b_o]), 0.0)


def test_other_options_reach_the_core():
  xs = _xs()
  cell = lnn.RecurrentCell(features=H, cell="elman", kernel_init="zeros",
                           recurrent_init="uniform", init_scale=0.01, use_bias=False)
  params = lnn.to_core_params(nn.RNN(cell).init(jax.random.key(0), xs))
  assert set(params) == {"w_x", "w_h"}  # use_bias=False
  np.testing.assert_array_equal(params["w_x"], 0.0)
  assert 0 < float(jnp.abs(params["w_h"]).max()) <= 0.01

  cell = lnn.RecurrentCell(features=H, cell="gru", param_dtype=jnp.bfloat16)
  variables = nn.RNN(cell).init(jax.random.key(0), xs.astype(jnp.bfloat16))
  assert {v.dtype for v in jax.tree_util.tree_leaves(variables)} == {jnp.dtype(jnp.bfloat16)}
  # The carry follows param_dtype (Flax's rule) unless carry_dtype says otherwise.
  assert cell.initialize_carry(jax.random.key(0), (B, I)).dtype == jnp.bfloat16
  assert cell.clone(carry_dtype=jnp.float16).initialize_carry(None, (B, I)).dtype == jnp.float16

  custom = L.LSTMVariant(peepholes=True, output_activation="identity")
  cell = lnn.RecurrentCell(features=H, cell=custom)
  assert cell.core.variant == custom and "w_peep" in cell.core.param_shapes(I)


def test_initialize_carry_and_feature_axes():
  lstmp = lnn.RecurrentCell(features=H, cell="lstmp", proj_size=P)
  c, h = lstmp.initialize_carry(jax.random.key(0), (B, I))
  assert h.shape == (B, P) and c.shape == (B, H)
  assert lstmp.num_feature_axes == 1
  c, h, gates = lnn.RecurrentCell(features=H, cell="fgr").initialize_carry(None, (7, 2, I))
  assert gates.shape == (7, 2, 3 * H) and not np.any(np.asarray(c))
  gru = lnn.RecurrentCell(features=H, cell="gru").initialize_carry(None, (B, I))
  assert gru.shape == (B, H)


def test_init_is_deterministic_per_key():
  layer = nn.RNN(lnn.RecurrentCell(features=H, cell="layernorm"))
  xs = _xs()
  a = lnn.to_core_params(layer.init(jax.random.key(0), xs))
  b = lnn.to_core_params(layer.init(jax.random.key(0), xs))
  c = lnn.to_core_params(layer.init(jax.random.key(1), xs))
  _assert_tree_close(a, b, atol=0)
  assert not np.allclose(a["w_x"], c["w_x"])
  np.testing.assert_array_equal(a["ln_c"], 1.0)  # layer-norm gains start at one


def test_from_core_round_trip():
  core = L.make_cell("nfg", H, forget_bias=2.0, kernel_init="glorot_uniform", init_scale=0.5)
  cell = lnn.RecurrentCell.from_core(core, carry_dtype=jnp.float16)
  assert cell.core == core and cell.carry_dtype == jnp.float16
  custom = L.make_cell(L.LSTMVariant(layer_norm=True, peepholes=True), H)
  assert lnn.LSTMCell.from_core(custom).core == custom


def test_to_variables_round_trip_and_errors():
  params = L.make_cell("vanilla", H).init(jax.random.key(0), I)
  for layout in ("cell", "rnn"):
    assert lnn.to_core_params(lnn.to_variables(params, layout)) == params
  pair = {"fwd": params, "bwd": params}
  assert lnn.to_core_params(lnn.to_variables(pair, "bidirectional")) == pair
  with pytest.raises(ValueError, match="layout='stack' is not allowed; allowed: 'cell', 'rnn', "
                                       "'bidirectional'"):
    lnn.to_variables(params, "stack")
  with pytest.raises(ValueError, match="needs {'fwd': params, 'bwd': params}"):
    lnn.to_variables(params, "bidirectional")
  with pytest.raises(ValueError, match=r"got entries \['dense'\]"):
    lnn.to_core_params({"params": {"dense": {"kernel": params["w_x"]}}})


def test_bad_options_raise():
  allowed = re.escape(", ".join(map(repr, L.CELL_NAMES)))
  with pytest.raises(ValueError, match=r"cell='bogus' is not allowed; allowed: " + allowed):
    lnn.RecurrentCell(features=H, cell="bogus")
  with pytest.raises(ValueError, match="cell='gru' is not an LSTM variant"):
    lnn.LSTMCell(features=H, cell="gru")
  with pytest.raises(ValueError, match="needs proj_size > 0"):
    lnn.RecurrentCell(features=H, cell="lstmp")
  with pytest.raises(ValueError, match="proj_size=2 is only available for LSTM"):
    lnn.RecurrentCell(features=H, cell="gru", proj_size=2)
  with pytest.raises(ValueError, match="bias_init='nope' is not allowed; allowed: 'forget', "
                                       "'chrono', 'hs1997', or an initialiser"):
    lnn.RecurrentCell(features=H, bias_init="nope")
  with pytest.raises(ValueError, match="chrono_t_max=None"):
    lnn.RecurrentCell(features=H, bias_init="chrono")


# ----------------------------------------------------------------------------
# LSTMCell as a drop-in for flax.linen.OptimizedLSTMCell / LSTMCell: Flax's
# cells, run with Flax's own (random) params, are the reference; ours gets the
# same params through lstm_jax.interop.

TOL = dict(rtol=1e-6, atol=1e-6)  # float32 rounding
NORMAL = nn.initializers.normal(0.5)  # a random carry_init, shared by both sides


def _flax_params(module: nn.Module, *args, seed: int = 1) -> dict:
  """Flax's variables for ``module.init(key, *args)``, every leaf (biases too)
  random, from shapes alone (no compile)."""
  shapes = jax.eval_shape(module.init, jax.random.key(0), *args)
  leaves, tree = jax.tree_util.tree_flatten(shapes)
  keys = jax.random.split(jax.random.key(seed), len(leaves))
  return tree.unflatten([0.5 * jax.random.normal(k, x.shape, x.dtype)
                         for k, x in zip(keys, leaves)])


def _assert_same(got, want, **tol) -> None:
  """Same pytree structure (tuples stay tuples), shapes and dtypes; values close."""
  chex.assert_trees_all_equal_shapes_and_dtypes(got, want)
  chex.assert_trees_all_close(got, want, **(tol or TOL))


# (nn.RNN attributes, call arguments, input shape): every option of nn.RNN.
RNN_CASES = {
    "plain": ({}, {}, (B, T, I)),
    "lengths": ({}, {"seq_lengths": LENGTHS}, (B, T, I)),
    "reverse_keep_order_lengths": ({"reverse": True, "keep_order": True},
                                   {"seq_lengths": LENGTHS}, (B, T, I)),
    "reverse": ({"reverse": True}, {}, (B, T, I)),
    "time_major_unroll": ({"time_major": True, "unroll": 2}, {}, (T, B, I)),
    "batch_axes": ({}, {}, (2, 3, T, I)),
}


@pytest.mark.parametrize("case", list(RNN_CASES))
def test_drop_in_rnn_matches_flax(case):
  attrs, kwargs, shape = RNN_CASES[case]
  xs = _xs(shape=shape)
  flax_rnn = nn.RNN(nn.OptimizedLSTMCell(H, carry_init=NORMAL), return_carry=True, **attrs)
  ours_rnn = nn.RNN(lnn.LSTMCell(H, carry_init=NORMAL), return_carry=True, **attrs)
  flax_vars = _flax_params(flax_rnn, xs)
  ours_vars = lnn.to_variables(interop.from_flax_lstm(flax_vars), "rnn")
  if case != "plain":  # a carry made by Flax's cell (random), accepted by ours
    step_shape = shape[1:] if attrs.get("time_major") else shape[:-2] + shape[-1:]
    kwargs = dict(kwargs, initial_carry=nn.OptimizedLSTMCell(H, carry_init=NORMAL)
                  .initialize_carry(jax.random.key(5), step_shape))
  want_carry, want_ys = flax_rnn.apply(flax_vars, xs, **kwargs)
  carry, ys = ours_rnn.apply(ours_vars, xs, **kwargs)
  _assert_same(ys, want_ys)
  _assert_same(carry, want_carry)  # (c, h), a tuple like Flax's
  c, h = carry
  batch = shape[1:-1] if attrs.get("time_major") else shape[:-2]
  assert c.shape == h.shape == batch + (H,)
  np.testing.assert_array_equal(np.asarray(carry), np.stack([c, h]))  # [2, *batch, H]


def test_drop_in_default_carry_matches_flax_init_key():
  """Without initial_carry nn.RNN draws the carry with init_key: our
  initialize_carry uses the keys as Flax's cell does, so a random carry_init
  gives the same initial carry and the same run."""
  xs = _xs()
  flax_rnn = nn.RNN(nn.OptimizedLSTMCell(H, carry_init=NORMAL), return_carry=True)
  ours_rnn = nn.RNN(lnn.LSTMCell(H, carry_init=NORMAL), return_carry=True)
  flax_vars = _flax_params(flax_rnn, xs)
  ours_vars = lnn.to_variables(interop.from_flax_lstm(flax_vars), "rnn")
  key = jax.random.key(3)
  for pd in (jnp.float32, jnp.bfloat16):
    want = nn.OptimizedLSTMCell(H, carry_init=NORMAL, param_dtype=pd).initialize_carry(
        key, (2, 3, I))
    got = lnn.LSTMCell(H, carry_init=NORMAL, param_dtype=pd).initialize_carry(key, (2, 3, I))
    _assert_same(got, want, rtol=0, atol=0)  # dtype param_dtype, as in Flax
    assert float(jnp.abs(got[0].astype(jnp.float32)).sum()) > 0  # really random
  want_carry, want_ys = flax_rnn.apply(flax_vars, xs, init_key=key)
  carry, ys = ours_rnn.apply(ours_vars, xs, init_key=key)
  _assert_same(ys, want_ys)
  _assert_same(carry, want_carry)


def test_drop_in_bidirectional_matches_flax():
  xs = _xs()
  flax_bi = nn.Bidirectional(nn.RNN(nn.OptimizedLSTMCell(H)), nn.RNN(nn.OptimizedLSTMCell(H)),
                             return_carry=True)
  ours_bi = nn.Bidirectional(nn.RNN(lnn.LSTMCell(H)), nn.RNN(lnn.LSTMCell(H)),
                             return_carry=True)
  flax_vars = _flax_params(flax_bi, xs)
  fp = flax_vars["params"]
  ours_vars = lnn.to_variables({"fwd": interop.from_flax_lstm(fp["forward_rnn"]),
                                "bwd": interop.from_flax_lstm(fp["backward_rnn"])},
                               "bidirectional")
  cell = nn.OptimizedLSTMCell(H, carry_init=NORMAL)
  carry0 = (cell.initialize_carry(jax.random.key(1), (B, I)),
            cell.initialize_carry(jax.random.key(2), (B, I)))
  want_carry, want_ys = flax_bi.apply(flax_vars, xs, seq_lengths=LENGTHS,
                                      initial_carry=carry0)
  carry, ys = ours_bi.apply(ours_vars, xs, seq_lengths=LENGTHS, initial_carry=carry0)
  _assert_same(ys, want_ys)  # every step, padded ones too: the same flax machinery
  _assert_same(carry, want_carry)  # ((c, h), (c, h))


def test_drop_in_nn_scan_and_lax_scan_match_flax():
  xs = _xs()
  x_tm = jnp.swapaxes(xs, 0, 1)  # [T, B, I] for lax.scan
  carry0 = nn.LSTMCell(H, carry_init=NORMAL).initialize_carry(jax.random.key(4), (B, I))

  def scanned(cls):
    return nn.scan(cls, variable_broadcast="params", split_rngs={"params": False},
                   in_axes=1, out_axes=1)(H)

  flax_vars = _flax_params(nn.OptimizedLSTMCell(H), carry0, xs[:, 0])
  ours_vars = lnn.to_variables(interop.from_flax_lstm(flax_vars))
  want_carry, want_ys = scanned(nn.OptimizedLSTMCell).apply(flax_vars, carry0, xs)
  carry, ys = scanned(lnn.LSTMCell).apply(ours_vars, carry0, xs)
  _assert_same(ys, want_ys)
  _assert_same(carry, want_carry)

  # jax.lax.scan over the bare cell; the reference here is flax.linen.LSTMCell
  # (separate dense layers, the same params tree).
  def run(cell, variables):
    return jax.lax.scan(lambda c, x: cell.apply(variables, c, x), carry0, x_tm)

  want_carry, want_ys = run(nn.LSTMCell(H), flax_vars)
  carry, ys = run(lnn.LSTMCell(H), ours_vars)
  _assert_same(ys, want_ys)
  _assert_same(carry, want_carry)


def test_drop_in_gate_and_activation_functions():
  x = _xs(shape=(B, I))
  carry0 = nn.LSTMCell(H, carry_init=NORMAL).initialize_carry(jax.random.key(4), (B, I))
  flax_vars = _flax_params(nn.OptimizedLSTMCell(H), carry0, x)
  ours_vars = lnn.to_variables(interop.from_flax_lstm(flax_vars))
  # Flax's defaults spelled out, and identity (Greff's NIAF + NOAF together).
  for gate_fn, act in ((nn.sigmoid, nn.tanh), (jax.nn.sigmoid, jax.nn.identity)):
    want = nn.OptimizedLSTMCell(H, gate_fn=gate_fn, activation_fn=act).apply(
        flax_vars, carry0, x)
    ours = lnn.LSTMCell(H, gate_fn=gate_fn, activation_fn=act)
    _assert_same(ours.apply(ours_vars, carry0, x), want)
  variant = lnn.LSTMCell(H, activation_fn=jax.nn.identity).core.variant
  assert (variant.input_activation, variant.output_activation) == ("identity", "identity")
  assert lnn.LSTMCell(H, cell="niaf").core.variant.input_activation == "identity"

  with pytest.raises(ValueError, match=r"^gate_fn=hard_sigmoid is not allowed; allowed: "
                                       r"jax.nn.sigmoid"):
    lnn.LSTMCell(H, gate_fn=jax.nn.hard_sigmoid)
  with pytest.raises(ValueError, match=r"^activation_fn=relu is not allowed; allowed: jnp.tanh"):
    lnn.LSTMCell(H, activation_fn=jax.nn.relu)
  with pytest.raises(ValueError, match=r"^activation_fn=identity is not allowed; cell='niaf' "
                                       r"sets input_activation='identity' and "
                                       r"output_activation='tanh'"):
    lnn.LSTMCell(H, cell="niaf", activation_fn=jax.nn.identity)
  with pytest.raises(ValueError, match=r"^activation_fn=identity is not allowed; cell='gru' "
                                       r"has a fixed tanh"):
    lnn.RecurrentCell(H, cell="gru", activation_fn=jax.nn.identity)
  with pytest.raises(ValueError, match=r"^recurrent_kernel_init=.* is not allowed; it is Flax's "
                                       r"name for recurrent_init='uniform'"):
    lnn.LSTMCell(H, recurrent_init="uniform", recurrent_kernel_init=nn.initializers.zeros_init())


def _recording(log: list, tag: str, scale: float):
  """A deterministic initialiser that logs (tag, shape) at each call that
  draws values (not at shape-only traces, where the key is a tracer)."""
  def init(key, shape, dtype=jnp.float32):
    if not isinstance(key, jax.core.Tracer):
      log.append((tag, tuple(shape)))
    return scale * jnp.arange(np.prod(shape), dtype=dtype).reshape(shape) / np.prod(shape)
  return init


def test_drop_in_flax_initialisers_are_applied_as_flax_applies_them():
  """Each Flax initialiser is called with the shapes Flax calls it with (one
  gate at a time) and fills the same entries."""
  x = _xs(shape=(B, I))
  carry0 = nn.LSTMCell(H).initialize_carry(jax.random.key(0), (B, I))
  logs = {"flax": [], "ours": []}
  params = {}
  for side, cls in (("flax", nn.OptimizedLSTMCell), ("ours", lnn.LSTMCell)):
    log = logs[side]
    cell = cls(H, kernel_init=_recording(log, "kernel", 0.5),
               recurrent_kernel_init=_recording(log, "recurrent", -0.3),
               bias_init=_recording(log, "bias", 0.2))
    params[side] = cell.init(jax.random.key(0), carry0, x)
  assert sorted(logs["ours"]) == sorted(logs["flax"])
  assert sorted(logs["flax"]) == sorted([("kernel", (I, H))] * 4 + [("recurrent", (H, H))] * 4
                                        + [("bias", (H,))] * 4)
  _assert_tree_close(lnn.to_core_params(params["ours"]),
                     interop.from_flax_lstm(params["flax"]), atol=0)


def test_drop_in_bias_default_and_flax_init_one_argument_away():
  x = _xs(shape=(B, I))
  carry0 = nn.LSTMCell(H).initialize_carry(jax.random.key(0), (B, I))
  params_of = lambda cell: lnn.to_core_params(cell.init(jax.random.key(0), carry0, x))
  flax_b = interop.from_flax_lstm(nn.OptimizedLSTMCell(H).init(jax.random.key(0), carry0, x))["b"]
  np.testing.assert_array_equal(flax_b, 0.0)  # Flax: every bias zero
  b_i, b_f, b_g, b_o = np.asarray(params_of(lnn.LSTMCell(H))["b"]).reshape(4, H)
  np.testing.assert_array_equal(b_f, 1.0)  # ours by default: forget-gate bias 1
  np.testing.assert_array_equal(np.stack([b_i, b_g, b_o]), 0.0)
  for cell in (lnn.LSTMCell(H, bias_init=nn.initializers.zeros_init()),
               lnn.LSTMCell(H, forget_bias=0.0)):
    np.testing.assert_array_equal(params_of(cell)["b"], flax_b)


def test_drop_in_default_kernels_are_distributed_as_flax_kernels():
  """Same initialisers per gate block as Flax: each [H, H] block of w_h is
  orthogonal like Flax's h* kernels; w_x has Flax's truncated-normal scale."""
  i, h = 128, 32  # enough entries (16k) for the sample scale
  x = jnp.zeros((1, i))
  carry0 = nn.LSTMCell(h).initialize_carry(jax.random.key(0), (1, i))
  ours = lnn.to_core_params(lnn.LSTMCell(h).init(jax.random.key(0), carry0, x))
  flax = interop.from_flax_lstm(nn.OptimizedLSTMCell(h).init(jax.random.key(1), carry0, x))
  for params in (ours, flax):
    for block in np.split(np.asarray(params["w_h"]), 4, axis=1):
      np.testing.assert_allclose(block.T @ block, np.eye(h), atol=1e-5)
  std_ours, std_flax = float(np.std(ours["w_x"])), float(np.std(flax["w_x"]))
  assert abs(std_ours / std_flax - 1) < 0.05
  assert abs(std_ours * np.sqrt(i) - 1) < 0.05  # lecun_normal: variance 1 / fan_in
  bound = 2 / 0.87962566103423978 / np.sqrt(i)  # truncated at two (corrected) stddevs
  assert float(np.abs(ours["w_x"]).max()) <= bound + 1e-6


def test_drop_in_dtypes_follow_flax():
  xs = _xs()
  # Computation in bfloat16, params (and so the carry) in float32.
  flax_rnn = nn.RNN(nn.OptimizedLSTMCell(H, dtype=jnp.bfloat16), return_carry=True)
  ours_rnn = nn.RNN(lnn.LSTMCell(H, dtype=jnp.bfloat16), return_carry=True)
  flax_vars = _flax_params(flax_rnn, xs)
  ours_vars = lnn.to_variables(interop.from_flax_lstm(flax_vars), "rnn")
  want_carry, want_ys = flax_rnn.apply(flax_vars, xs)
  carry, ys = ours_rnn.apply(ours_vars, xs)
  assert ys.dtype == want_ys.dtype == jnp.float32
  _assert_same(ys, want_ys, rtol=0, atol=2e-2)  # bfloat16 rounding, sums in another order
  _assert_same(carry, want_carry, rtol=0, atol=2e-2)
  # param_dtype: params drawn in it, carry in it (Flax's rule).
  cell = lnn.LSTMCell(H, param_dtype=jnp.bfloat16)
  variables = nn.RNN(cell).init(jax.random.key(0), xs.astype(jnp.bfloat16))
  assert {v.dtype for v in jax.tree_util.tree_leaves(variables)} == {jnp.dtype(jnp.bfloat16)}
  flax_carry = nn.OptimizedLSTMCell(H, param_dtype=jnp.bfloat16).initialize_carry(
      jax.random.key(0), (B, I))
  _assert_same(cell.initialize_carry(jax.random.key(0), (B, I)), flax_carry, rtol=0, atol=0)


def test_core_options_pass_every_init_option():
  init = nn.initializers.normal(0.2)
  core = L.make_cell("peephole", H, kernel_init=init, recurrent_init="uniform",
                     bias_init=nn.initializers.zeros_init(), init_scale=0.3, use_bias=True)
  options = lnn.core_options(core)
  assert set(L.cells.INIT_OPTIONS) <= set(options)
  assert {k: options[k] for k in L.cells.INIT_OPTIONS} == core.init_options()
  cell = lnn.LSTMCell.from_core(core)
  assert cell.core == core and hash(cell.core) == hash(core)  # still a static jit argument
  params = lnn.to_core_params(nn.RNN(cell).init(jax.random.key(0), _xs()))
  np.testing.assert_array_equal(params["b"], 0.0)
  assert lnn.LSTMCell(H, recurrent_kernel_init=init).core.recurrent_init is init


def test_callable_bias_init_for_gru_and_elman():
  const = nn.initializers.constant(0.25)
  for name in ("gru", "elman"):
    cell = lnn.RecurrentCell(H, cell=name, bias_init=const, kernel_init=const)
    params = lnn.to_core_params(nn.RNN(cell).init(jax.random.key(0), _xs()))
    assert {"b", "w_x"} <= set(params) and ("b_hn" in params) == (name == "gru")
    for k in ("b", "b_hn", "w_x"):
      if k in params:
        np.testing.assert_array_equal(params[k], 0.25)

"""Tasks: registry and argument errors, batch layout and padding, generator
statistics against the task definitions (TASKS.md / H&S 1997), losses,
per-sequence rules on perfect and wrong outputs and at their thresholds, and
stopping rules fed with synthetic streams."""

from __future__ import annotations

import ast
import functools
import json
import math
import pathlib
import pickle

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lstm_jax import tasks
from lstm_jax.tasks import Batch, Criterion, make_task
from lstm_jax.tasks import criteria as crit_mod
from lstm_jax.tasks.temporal_order import WINDOWS_1997, scaled_windows

B = 512           # one batch size everywhere: one compile per task and function
KEY = jax.random.key(0)

SMALL = {
    "reber": {}, "hs2a": dict(lag=6), "hs2b": dict(lag=6), "hs2c": dict(lag=5, p=3),
    "hs3a": dict(lag=20), "hs3b": dict(lag=20, n=1), "hs3c": dict(lag=20),
    "hs4_adding": dict(lag=40), "hs5_multiplication": dict(lag=40), "hs6a": {}, "hs6b": {},
    "temporal_order": dict(lag=30), "copy": dict(lag=5), "adding": dict(lag=10),
    "delayed_recall": dict(lag=5), "selective_copy": dict(lag=8, num_tokens=3),
    "mqar": dict(lag=12, num_pairs=3, vocab_size=8),
    "parity": dict(lag=8, test_min=8, test_max=16),
    "modular_arithmetic": dict(lag=9, test_min=9, test_max=15),
}


@functools.lru_cache(maxsize=None)
def _sampled(name: str):
  """(task, batch as NumPy arrays) for the small configuration of ``name``."""
  task = make_task(name, **SMALL[name])
  return task, Batch(*jax.device_get(task.sample(KEY, B)))


def _perfect_outputs(task, batch) -> np.ndarray:
  """Outputs that meet every task's rule: large logits on the targets, or the
  (noise-free) regression targets."""
  if task.loss_type == "softmax_xent":
    return 30.0 * np.eye(task.output_size, dtype=np.float32)[batch.targets]
  if task.loss_type == "sigmoid_xent":
    return 30.0 * (2.0 * batch.targets - 1.0)
  if task.name == "hs3c":
    clean = np.where(batch.inputs[:, 0, 0] > 0, 0.2, 0.8).astype(np.float32)
    return batch.mask[..., None] * clean[:, None, None]
  return batch.targets.copy()


def _wrong_outputs(task, batch) -> np.ndarray:
  """Outputs that fail every sequence: constant logits (ties count as wrong),
  or regression outputs 0.5 away from the target."""
  if task.loss_type == "mse":
    return _perfect_outputs(task, batch) + 0.5
  return np.zeros(batch.inputs.shape[:2] + (task.output_size,), np.float32)


def _ks_uniform(samples, lo, hi) -> float:
  """Kolmogorov-Smirnov statistic of ``samples`` against U[lo, hi]; below
  1.95 / sqrt(n) at the 0.1% level."""
  x = np.sort(np.asarray(samples, np.float64).ravel())
  cdf = np.clip((x - lo) / (hi - lo), 0.0, 1.0)
  n = len(x)
  return max(np.max(np.arange(1, n + 1) / n - cdf), np.max(cdf - np.arange(n) / n))


# ----------------------------------------------------------------------------
# Registry, hashing, argument errors.


def test_registry_names_and_classes():
  expected = {"reber", "hs2a", "hs2b", "hs2c", "hs3a", "hs3b", "hs3c", "hs4_adding",
              "hs5_multiplication", "hs6a", "hs6b", "temporal_order", "copy", "adding",
              "delayed_recall", "selective_copy", "mqar", "parity", "modular_arithmetic"}
  assert set(tasks.TASK_NAMES) == expected == set(SMALL)
  for name, cls in tasks.TASKS.items():
    task = make_task(name)
    assert isinstance(task, cls) and task.name == name
    assert task.loss_type in tasks.LOSS_TYPES
    assert task.input_size > 0 and task.output_size > 0 and task.max_length > 0
    assert task.lag == tasks.task_params(name)["lag"]
    assert isinstance(task.criterion, Criterion) and task.criterion.description
    assert json.loads(json.dumps(task.params))["lag"] == task.lag


def test_tasks_are_hashable_static_args():
  a, b, c = make_task("copy", lag=7), make_task("copy", lag=7), make_task("copy", lag=8)
  assert a == b and hash(a) == hash(b) and a != c
  assert make_task("hs2c", lag=5) == make_task("hs2c", lag=5, p=5)    # p defaults to q
  with pytest.raises(dataclasses_frozen_error()):
    a.lag = 3
  f = jax.jit(lambda task, x: x * task.lag, static_argnums=0)
  assert int(f(a, jnp.int32(2))) == 14 and int(f(c, jnp.int32(2))) == 16


def dataclasses_frozen_error():
  import dataclasses
  return dataclasses.FrozenInstanceError


@pytest.mark.parametrize("call, pattern", [
    (lambda: make_task("nope"), r"task='nope'.*allowed names: reber, hs2a.*delayed_recall"),
    (lambda: make_task("copy", lag=0), r"lag=0 is not allowed; expected an integer >= 1"),
    (lambda: make_task("copy", lag=2.5), r"lag=2\.5 is not allowed"),
    (lambda: make_task("copy", lag=True), r"lag=True is not allowed"),
    (lambda: make_task("hs4_adding", lag=1), r"lag=1 .*integer >= 2"),
    (lambda: make_task("hs2c", lag=10, p=0), r"p=0 is not allowed; expected an integer >= 1"),
    (lambda: make_task("hs2c", lag=0), r"lag=0 .*q: the minimum number of distractors"),
    (lambda: make_task("hs3a", lag=10, n=10), r"n=10 .*integer in \[1, 9\]"),
    (lambda: make_task("hs3a", n=0), r"n=0 is not allowed"),
    (lambda: make_task("hs3b", stop="ST3"),
     r"stop='ST3' is not allowed; allowed: 'ST1', 'ST2'"),
    (lambda: make_task("hs5_multiplication", n_seq=0), r"n_seq=0 .*\[1, 2000\]"),
    (lambda: make_task("reber", lag=20), r"reber: lag=20 .*\[9, 9\].*not a lag task"),
    (lambda: make_task("hs6a", lag=50), r"lag=50 .*temporal_order"),
    (lambda: make_task("temporal_order", n_markers=4), r"n_markers=4 .*allowed: 2, 3"),
    (lambda: make_task("temporal_order", lag=4, n_markers=3), r"lag=4 .*integer >= 5"),
    (lambda: make_task("delayed_recall", n_symbols=1), r"n_symbols=1 .*integer >= 2"),
    (lambda: make_task("delayed_recall", n_distractors=-1), r"n_distractors=-1"),
    (lambda: make_task("copy", q=3), r"unknown parameter q=3; allowed parameters: lag, output_units$"),
    (lambda: make_task("hs2c", foo=1), r"unknown parameter foo=1; allowed parameters: lag, p, .*output_units$"),
    (lambda: make_task("copy", lag=3).sample(KEY, 0), r"batch_size=0 is not allowed"),
])
def test_bad_arguments_name_field_value_and_allowed(call, pattern):
  with pytest.raises(ValueError, match=pattern):
    call()


def test_outputs_shape_is_checked():
  task, batch = _sampled("copy")
  with pytest.raises(ValueError, match=r"outputs have shape .*expected \[B, T, O\]"):
    task.loss(jnp.zeros((B, task.max_length, 10)), batch)


def test_tasks_import_no_model_code():
  """DESIGN.md: lstm_jax.tasks must not import sequence, cells or training
  (only its own modules and the shared argument checks)."""
  root = pathlib.Path(tasks.__file__).parent
  imported = set()
  for path in root.glob("*.py"):
    for node in ast.walk(ast.parse(path.read_text())):
      if isinstance(node, ast.ImportFrom) and node.module == "lstm_jax":
        imported.update(f"lstm_jax.{alias.name}" for alias in node.names)
      elif isinstance(node, ast.ImportFrom) and node.module:
        imported.add(node.module)
      elif isinstance(node, ast.Import):
        imported.update(alias.name for alias in node.names)
  ours = {m for m in imported if m.split(".")[0] == "lstm_jax"}
  assert ours and all(m.startswith("lstm_jax.tasks") or m == "lstm_jax.checks"
                     for m in ours), ours


# ----------------------------------------------------------------------------
# Layout, padding, determinism and the rules on perfect / wrong outputs (all tasks).


@pytest.mark.parametrize("name", sorted(SMALL))
def test_batch_layout_and_padding(name):
  task, batch = _sampled(name)
  t = task.max_length
  assert batch.inputs.shape == (B, t, task.input_size) and batch.inputs.dtype == np.float32
  if task.loss_type == "softmax_xent":
    assert batch.targets.shape == (B, t) and batch.targets.dtype == np.int32
    assert batch.targets.min() >= 0 and batch.targets.max() < task.output_size
  else:
    assert batch.targets.shape == (B, t, task.output_size)
    assert batch.targets.dtype == np.float32
  assert batch.mask.shape == (B, t) and batch.mask.dtype == np.float32
  assert batch.lengths.shape == (B,) and batch.lengths.dtype == np.int32
  assert batch.lengths.min() >= 1 and batch.lengths.max() <= t
  pad = np.arange(t)[None] >= batch.lengths[:, None]
  assert not batch.inputs[pad].any() and not batch.targets[pad].any()
  assert not batch.mask[pad].any()
  assert set(np.unique(batch.mask)) <= {0.0, 1.0} and batch.mask.sum(1).min() >= 1
  # Every real step has an input (no blank steps a model could count).
  real = ~pad
  if name not in ("hs3a", "hs3b", "hs3c", "hs4_adding", "hs5_multiplication", "adding"):
    assert (np.abs(batch.inputs).sum(-1)[real] > 0).all()


@pytest.mark.parametrize("name", sorted(SMALL))
def test_perfect_outputs_correct_wrong_outputs_not(name):
  task, batch = _sampled(name)
  good, bad = _perfect_outputs(task, batch), _wrong_outputs(task, batch)
  ok, ko = task.per_sequence(good, batch), task.per_sequence(bad, batch)
  for per_seq in (ok, ko):
    assert {"correct", "error", "loss", "mse"} <= set(per_seq)
    assert all(v.shape == (B,) for v in per_seq.values())
    assert per_seq["correct"].dtype == jnp.bool_
  assert bool(ok["correct"].all()) and not bool(ko["correct"].any())
  assert float(ok["error"].max()) < float(ko["error"].min())
  loss_good, loss_bad = float(task.loss(good, batch)), float(task.loss(bad, batch))
  assert math.isfinite(loss_good) and loss_good < loss_bad
  if name != "hs3c":          # 3c targets carry noise that no output can predict
    assert loss_good < 1e-6
  summary = task.summarize(jax.device_get(ok))
  assert summary["accuracy"] == 1.0 and summary["num_wrong"] == 0 and summary["count"] == B
  assert task.summarize(jax.device_get(ko))["accuracy"] == 0.0
  # The evaluation part of the rule (where there is one) accepts perfect outputs.
  rule = task.criterion
  if rule.eval_size:
    reps = -(-rule.eval_size // B)
    tile = lambda d: {k: np.tile(np.asarray(v), reps) for k, v in d.items()}  # noqa: E731
    assert rule.eval_ok(tile(ok)) and not rule.eval_ok(tile(ko))


@pytest.mark.parametrize("name", sorted(SMALL))
def test_padding_outputs_do_not_count(name):
  task, batch = _sampled(name)
  good = _perfect_outputs(task, batch)
  noisy = good + 50.0 * (batch.mask[..., None] == 0)
  # Outputs off the masked steps (padding, and unscored real steps) are ignored
  # by the loss and by the correctness rule.
  assert float(task.loss(noisy, batch)) == pytest.approx(float(task.loss(good, batch)), abs=1e-6)
  assert bool(task.per_sequence(noisy, batch)["correct"].all())


@pytest.mark.parametrize("name", sorted(SMALL))
def test_sampling_is_deterministic_and_key_dependent(name):
  task, batch = _sampled(name)
  again = jax.device_get(task.sample(KEY, B))
  other = jax.device_get(task.sample(jax.random.key(1), B))
  for x, y in zip(batch, again):
    np.testing.assert_array_equal(x, y)
  assert not np.array_equal(batch.inputs, other.inputs)


@pytest.mark.parametrize("name, params", [("hs2c", SMALL["hs2c"]),
                                          ("hs4_adding", dict(lag=12)),
                                          ("temporal_order", dict(lag=12)),
                                          ("delayed_recall", SMALL["delayed_recall"])])
def test_jit_sample_equals_eager_sample(name, params):
  task = make_task(name, **params)
  key = jax.random.key(7)
  jitted = jax.jit(task.sample, static_argnums=1)(key, 3)
  with jax.disable_jit():
    eager = task.sample(key, 3)
  for x, y in zip(jitted, eager):
    np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=1e-6, atol=1e-7)


# ----------------------------------------------------------------------------
# Losses against NumPy.


def _np_log_softmax(z):
  z = z - z.max(-1, keepdims=True)
  return z - np.log(np.exp(z).sum(-1, keepdims=True))


@pytest.mark.parametrize("name", ["hs6a", "reber", "hs4_adding"])
def test_loss_matches_numpy(name):
  task, batch = _sampled(name)
  out = np.asarray(jax.random.normal(jax.random.key(3), batch.inputs.shape[:2]
                                     + (task.output_size,)), np.float64)
  if task.loss_type == "softmax_xent":
    step = -np.take_along_axis(_np_log_softmax(out), batch.targets[..., None], -1)[..., 0]
  elif task.loss_type == "sigmoid_xent":
    p = 1.0 / (1.0 + np.exp(-out))
    step = -(batch.targets * np.log(p) + (1 - batch.targets) * np.log(1 - p)).mean(-1)
  else:
    step = ((out - batch.targets) ** 2).mean(-1)
  want = (step * batch.mask).sum() / batch.mask.sum()
  assert float(task.loss(out.astype(np.float32), batch)) == pytest.approx(want, rel=1e-4)
  grads = jax.grad(task.loss)(jnp.asarray(out, jnp.float32), batch)
  assert not np.asarray(grads)[batch.mask == 0].any()   # no gradient off the masked steps


# ----------------------------------------------------------------------------
# Generator statistics, task by task.


def test_copy_layout_and_baseline():
  task, batch = _sampled("copy")
  t = task.lag
  symbols = batch.inputs.argmax(-1)
  data = symbols[:, :10]
  assert data.min() >= 1 and data.max() <= 8
  assert (symbols[:, 10:t + 9] == 0).all() and (symbols[:, t + 9] == 9).all()
  assert (symbols[:, t + 10:] == 0).all()
  assert (batch.targets[:, :t + 10] == 0).all()
  np.testing.assert_array_equal(batch.targets[:, t + 10:], data)
  assert task.max_length == t + 20 and (batch.mask == 1).all()
  assert make_task("copy", lag=100).baseline == pytest.approx(10 * math.log(8) / 120)
  assert make_task("copy", lag=100).baseline == pytest.approx(0.173, abs=5e-4)
  assert make_task("copy", lag=1000).baseline == pytest.approx(0.0204, abs=5e-5)
  # The memoryless predictor (blank, then uniform over the data symbols) scores
  # exactly the baseline.
  out = np.full((B, t + 20, 9), -30.0, np.float32)
  out[:, :t + 10, 0] = 30.0
  out[:, t + 10:, 1:] = 0.0
  loss = float(task.loss(out, batch))
  assert loss == pytest.approx(task.baseline, rel=1e-4)
  summary = task.summarize(jax.device_get(task.per_sequence(out, batch)))
  assert summary["loss_over_baseline"] == pytest.approx(1.0, rel=1e-4)
  assert summary["symbol_accuracy"] == 0.0


def test_adding_le_markers_and_targets():
  task, batch = _sampled("adding")
  t, half = task.lag, task.lag // 2
  values, markers = batch.inputs[..., 0], batch.inputs[..., 1]
  assert values.min() >= 0 and values.max() <= 1
  assert _ks_uniform(values, 0.0, 1.0) < 1.95 / math.sqrt(values.size)     # U[0, 1]
  assert (markers[:, :half].sum(1) == 1).all() and (markers[:, half:].sum(1) == 1).all()
  np.testing.assert_allclose(batch.targets[:, -1, 0], (values * markers).sum(1), rtol=1e-6)
  assert (batch.mask[:, -1] == 1).all() and batch.mask.sum() == B
  # Predicting 1 gives MSE ~ 1/6 (the baseline).
  ones = np.ones((B, t, 1), np.float32)
  summary = task.summarize(jax.device_get(task.per_sequence(ones, batch)))
  assert task.baseline == pytest.approx(0.167, abs=1e-3)
  assert summary["mse"] == pytest.approx(1 / 6, abs=0.02)
  assert summary["mse_over_baseline"] == pytest.approx(summary["mse"] / task.baseline)


def _marked(batch):
  markers = batch.inputs[..., 1]
  idx = np.argsort(markers != 1, axis=1, kind="stable")[:, :2]   # marked first
  return markers, np.sort(idx, axis=1)


@pytest.mark.parametrize("name", ["hs4_adding", "hs5_multiplication"])
def test_hs4_hs5_markers_lengths_and_targets(name):
  task, batch = _sampled(name)
  t = task.lag
  values, (markers, idx) = batch.inputs[..., 0], _marked(batch)
  lengths = batch.lengths
  assert lengths.min() == t and lengths.max() == t + t // 10     # the whole range is used
  assert ((markers == 1).sum(1) == 2).all()
  a, b = idx[:, 0], idx[:, 1]
  n2 = t // 2 - 1
  # X1 among the first 10 pairs, X2 among the first T/2 - 1 (either order).
  assert (((a < 10) & (b < n2)) | ((b < 10) & (a < n2))).all()
  rows = np.arange(B)
  first_marked = markers[:, 0] == 1
  assert (markers[~first_marked, 0] == -1).all()
  last = markers[rows, lengths - 1]
  assert ((last == -1) | (last == 1)).all() and (last == -1).mean() > 0.9
  inner = np.ones_like(markers, bool)
  inner[:, 0] = False
  inner[rows, lengths - 1] = False
  inner &= np.arange(markers.shape[1])[None] < lengths[:, None]
  assert set(np.unique(markers[inner])) <= {0.0, 1.0}
  x1, x2 = values[rows, a], values[rows, b]
  target = batch.targets[rows, lengths - 1, 0]
  assert (batch.mask[rows, lengths - 1] == 1).all() and batch.mask.sum() == B
  # First pair marked as X1 (the other mark beyond the first 10): X1 := 0 / 1.
  forced = first_marked & (b >= 10)
  assert forced.any()
  # Values of the real steps other than the first (which X1 := 0 / 1 may
  # replace): U[-1, 1] (Exp 4) or U[0, 1] (Exp 5).
  real = (np.arange(markers.shape[1])[None] < lengths[:, None])
  real[:, 0] = False
  lo = -1.0 if name == "hs4_adding" else 0.0
  assert _ks_uniform(values[real], lo, 1.0) < 1.95 / math.sqrt(real.sum())
  if name == "hs4_adding":
    assert values.min() >= -1 and values.max() <= 1 and values.min() < -0.9
    np.testing.assert_allclose(target, 0.5 + (x1 + x2) / 4, rtol=1e-6)
    assert target.min() >= 0 and target.max() <= 1
    assert (values[forced, 0] == 0).all()
  else:
    assert values.min() >= 0 and values.max() <= 1
    np.testing.assert_allclose(target, x1 * x2, rtol=1e-6)
    assert (values[forced, 0] == 1).all()
  # The memoryless baseline is the variance of the target.
  assert task.baseline == pytest.approx(np.var(target), rel=0.2)


def _reber_walk(string: str):
  """Independent acceptor written from TASKS.md: the legal next-symbol sets
  after each prefix, or None if ``string`` is not an embedded Reber string."""
  graph = {0: {"T": 1, "P": 2}, 1: {"S": 1, "X": 3}, 2: {"T": 2, "V": 4},
           3: {"X": 2, "S": None}, 4: {"P": 3, "V": None}}
  if len(string) < 9 or string[0] != "B" or string[1] not in "TP" or string[2] != "B":
    return None
  legal = [set("TP"), {"B"}, set("TP")]
  state, i = 0, 3
  while state is not None:
    if i >= len(string) or string[i] not in graph[state]:
      return None
    state = graph[state][string[i]]
    legal.append({"E"} if state is None else set(graph[state]))
    i += 1
  if string[i:] != "E" + string[1] + "E":
    return None
  return legal + [{string[1]}, {"E"}]


def test_reber_strings_are_grammatical_with_exact_targets():
  task, batch = _sampled("reber")
  strings = tasks.strings_from_batch(batch)
  names = tasks.reber.SYMBOLS
  for b, s in enumerate(strings):
    legal = _reber_walk(s)
    assert legal is not None, s
    assert tasks.is_embedded_reber(s)
    assert len(s) == batch.lengths[b] + 1 <= task.max_length + 1
    got = [{names[k] for k in np.flatnonzero(row)} for row in batch.targets[b, :len(s) - 1]]
    assert got == legal[:len(s) - 1]
  lengths = np.array([len(s) for s in strings])
  assert lengths.min() == 9 and 10 < lengths.mean() < 14 and len(set(strings)) > 50


@settings(max_examples=60, deadline=None)
@given(st.text(alphabet="BTPSXVE", min_size=0, max_size=16))
def test_reber_acceptor_agrees_with_independent_walk(string):
  assert tasks.is_embedded_reber(string) == (_reber_walk(string) is not None)


def test_reber_length_cap_forces_grammatical_ends():
  task = make_task("reber", max_symbols=11)
  strings = tasks.strings_from_batch(task.sample(KEY, 64))
  assert all(_reber_walk(s) is not None and len(s) <= 11 for s in strings)


@pytest.mark.parametrize("name", ["hs2a", "hs2b"])
def test_hs2a_hs2b_sequences(name):
  task, batch = _sampled(name)
  p = task.lag
  symbols = batch.inputs.argmax(-1)
  assert np.isin(symbols[:, 0], [p - 1, p]).all() and 0.4 < (symbols[:, 0] == p).mean() < 0.6
  np.testing.assert_array_equal(batch.targets[:, :-1], symbols[:, 1:])   # next symbol
  np.testing.assert_array_equal(batch.targets[:, -1], symbols[:, 0])     # the lag
  middle = symbols[:, 1:]
  assert middle.max() <= p - 2
  if name == "hs2a":
    assert len({tuple(s) for s in symbols}) == 2
    np.testing.assert_array_equal(middle, np.broadcast_to(np.arange(p - 1), middle.shape))
  else:
    assert len({tuple(s) for s in symbols}) > 100
  assert (batch.lengths == p).all() and (batch.mask == 1).all()


def test_hs2c_structure_and_lengths():
  task, batch = _sampled("hs2c")
  q, p = task.lag, task.p
  e, start, x = p, p + 1, p + 2
  rows, lengths = np.arange(B), batch.lengths
  symbols = np.where(batch.inputs.any(-1), batch.inputs.argmax(-1), -1)
  assert (lengths + 1 >= q + 4).all() and (lengths + 1).min() == q + 4
  assert task.max_length == q + 3 + task.tail_cap and task.tail_cap == 88
  assert 0.9 ** task.tail_cap < 1e-4 <= 0.9 ** (task.tail_cap - 1)
  assert (lengths + 1).mean() == pytest.approx(q + 13, abs=1.5)
  assert (symbols[:, 0] == start).all() and np.isin(symbols[:, 1], [x, x + 1]).all()
  assert (symbols[rows, lengths - 1] == e).all() and ((symbols == e).sum(1) == 1).all()
  middle = np.arange(task.max_length)[None]
  middle = (middle >= 2) & (middle < lengths[:, None] - 1)
  assert (symbols[middle] < p).all() and (symbols[middle] >= 0).all()
  # The class symbol comes again after the trigger: it is the final target.
  np.testing.assert_array_equal(batch.targets[rows, lengths - 1], symbols[:, 1] - x)
  assert (batch.mask[rows, lengths - 1] == 1).all() and batch.mask.sum() == B
  # A forced trigger at the cap keeps the longest sequence within max_length.
  assert lengths.max() <= task.max_length


@pytest.mark.parametrize("name", ["hs3a", "hs3b", "hs3c"])
def test_hs3_lengths_information_and_targets(name):
  task, batch = _sampled(name)
  t, n = task.lag, task.n
  rows, lengths = np.arange(B), batch.lengths
  x = batch.inputs[..., 0]
  assert lengths.min() == t and lengths.max() == t + t // 10
  sign = np.sign(x[:, 0])
  target = batch.targets[rows, lengths - 1, 0]
  noise = x[:, n:][np.arange(n, task.max_length)[None] < lengths[:, None]]
  assert noise.var() == pytest.approx(0.2, rel=0.05) and abs(noise.mean()) < 0.02
  if name == "hs3b":
    info = x[:, :n] - sign[:, None]     # informative elements carry noise, var 0.2
    assert info.var() == pytest.approx(0.2, rel=0.3)
    cls1 = target == 1.0
  else:
    assert (x[:, :n] == sign[:, None]).all() and np.isin(sign, [-1, 1]).all()
    cls1 = sign > 0
  assert 0.4 < cls1.mean() < 0.6
  if name == "hs3c":
    clean = np.where(cls1, 0.2, 0.8)
    assert (target - clean).var() == pytest.approx(0.1, rel=0.2)
  else:
    np.testing.assert_array_equal(target, np.where(cls1, 1.0, 0.0))


@pytest.mark.parametrize("name", ["hs6a", "hs6b", "temporal_order"])
def test_temporal_order_positions_and_classes(name):
  task, batch = _sampled(name)
  rows, lengths = np.arange(B), batch.lengths
  symbols = np.where(batch.inputs.any(-1), batch.inputs.argmax(-1), -1)
  if name != "temporal_order":
    assert lengths.min() == 100 and lengths.max() == 110
    assert task.windows == WINDOWS_1997[task.n_markers]
  assert (symbols[:, 0] == 0).all() and (symbols[rows, lengths - 1] == 1).all()
  marks = symbols >= 6
  assert (marks.sum(1) == task.n_markers).all()
  positions = np.argwhere(marks)[:, 1].reshape(B, task.n_markers) + 1      # 1-based
  for i, (lo, hi) in enumerate(task.windows):
    assert positions[:, i].min() == lo and positions[:, i].max() == hi
  bits = symbols[marks].reshape(B, task.n_markers) - 6
  label = bits @ (2 ** np.arange(task.n_markers)[::-1])
  np.testing.assert_array_equal(batch.targets[rows, lengths - 1], label)
  counts = np.bincount(label, minlength=task.output_size)
  expected = B / task.output_size
  chi2 = ((counts - expected) ** 2 / expected).sum()
  assert chi2 < 3 * task.output_size      # far below any reasonable rejection level
  others = (symbols >= 2) & (symbols <= 5)
  assert (others.sum(1) == lengths - 2 - task.n_markers).all()


def test_temporal_order_windows_scale_with_lag():
  assert scaled_windows(2, 100) == ((10, 20), (50, 60))
  assert scaled_windows(3, 100) == ((10, 20), (33, 43), (66, 76))
  assert scaled_windows(2, 1000) == ((100, 200), (500, 600))
  for lag in (4, 7, 30, 333):
    windows = scaled_windows(2, lag)
    flat = [v for w in windows for v in w]
    assert flat == sorted(flat) and flat[0] >= 2 and flat[-1] <= lag - 1
    assert windows[0][1] < windows[1][0]
  assert make_task("temporal_order", lag=100, n_markers=3).windows == WINDOWS_1997[3]


def test_delayed_recall_layout():
  task, batch = _sampled("delayed_recall")
  k, d, lag = task.n_symbols, task.n_distractors, task.lag
  shown = batch.inputs[:, 0, :k].argmax(-1)
  assert (batch.inputs[:, 0].sum(-1) == 1).all() and (batch.inputs[:, 0, k:] == 0).all()
  np.testing.assert_array_equal(batch.targets[:, -1], shown)
  assert (batch.mask[:, -1] == 1).all() and batch.mask.sum() == B
  middle = batch.inputs[:, 1:lag + 1]
  assert (middle[..., :k] == 0).all() and (middle[..., k:k + d].sum(-1) == 1).all()
  assert (middle[..., -1] == 0).all()
  assert (batch.inputs[:, -1, -1] == 1).all() and batch.inputs[:, -1].sum() == B
  assert np.bincount(shown, minlength=k).min() > B / k * 0.7
  # Memoryless guess: always symbol 0 -> accuracy ~ 1/K, loss ln K for uniform outputs.
  guess = np.zeros((B, lag + 2, k), np.float32)
  guess[..., 0] = 1.0
  acc = task.summarize(jax.device_get(task.per_sequence(guess, batch)))["accuracy"]
  assert acc == pytest.approx(task.chance_accuracy, abs=0.06)
  uniform = task.summarize(jax.device_get(task.per_sequence(0 * guess, batch)))
  assert uniform["loss"] == pytest.approx(math.log(k)) == pytest.approx(task.baseline)
  # Without distractor tokens the gap is blank steps.
  blank = make_task("delayed_recall", lag=3, n_distractors=0)
  inputs = np.asarray(blank.sample(KEY, 4).inputs)
  assert inputs.shape == (4, 5, 5) and not inputs[:, 1:4].any() and (inputs[:, 4, -1] == 1).all()


# ----------------------------------------------------------------------------
# Per-sequence thresholds of the 1997 rules, just below, at and just above.
#
# The paper's wording decides the equality case: "below t" (Exp 2, 3, 4, 6)
# makes an error of exactly t wrong, "exceeding t" is wrong (Exp 5) makes it
# correct. The rules compare float32 errors with float32(t), so each case is
# built from float32 values: the error every row carries is computed here in
# NumPy float32 (IEEE subtraction, as XLA does it), and the "at" rows carry
# exactly float32(t).

# name, parameters, threshold, whether an error equal to it is correct
THRESHOLDS = [
    ("hs2a", dict(lag=2), 0.25, False),
    ("hs2b", dict(lag=2), 0.25, False),
    ("hs2c", dict(lag=1, p=1), 0.2, False),
    ("hs3a", dict(lag=2, n=1), 0.2, False),
    ("hs3b", dict(lag=2, n=1), 0.2, False),
    ("hs3c", dict(lag=2, n=1), 0.1, False),
    ("hs4_adding", dict(lag=2), 0.04, False),
    ("hs5_multiplication", dict(lag=2), 0.04, True),
    ("hs6a", {}, 0.3, False),
    ("hs6b", {}, 0.3, False),
    ("temporal_order", dict(lag=4), 0.3, False),
    ("adding", dict(lag=2), 0.04, False),     # this project's use of the Exp 4 tolerance
]


def _probes(threshold: float) -> np.ndarray:
  """float32 errors around ``threshold``: 1e-4 below, the float32 neighbours
  below, float32(threshold) itself, the neighbour above, 1e-4 above."""
  at = np.float32(threshold)
  return np.array([threshold - 1e-4, np.nextafter(at, np.float32(0)), at,
                   np.nextafter(at, np.float32(1)), threshold + 1e-4], np.float32)


def _boundary_rows(task, errors: np.ndarray):
  """A hand-made batch with two rows per error in ``errors`` and predictions
  whose per-sequence error is exactly that float32 value (or its float32
  rounding, returned).

  Returns ``(batch, predictions, carried)``: ``carried`` is the float32 error
  each row's predictions carry at its scored step (computed here).
  """
  n, t, o = 2 * len(errors), task.max_length, task.output_size
  every_step = task.name in ("hs2a", "hs2b")              # 2a/2b: lengths = p, all scored
  lengths = np.full(n, t, np.int32) if every_step or t == 1 else \
      (t - np.arange(n) % 2).astype(np.int32)              # alternate T and T - 1
  rows = np.arange(n)
  scored = lengths - 1
  if task.name == "hs2a":                                  # 2a's error is over all steps
    scored = np.where(rows % 2 == 0, 0, lengths - 1)
  mask = (np.arange(t)[None] == (lengths - 1)[:, None]).astype(np.float32)
  if every_step:
    mask = np.ones((n, t), np.float32)
  inputs = np.zeros((n, t, task.input_size), np.float32)
  e = np.repeat(errors, 2)
  if task.loss_type == "softmax_xent":
    cls = (rows % o).astype(np.int32)
    targets = np.broadcast_to(cls[:, None], (n, t)).copy()
    predictions = np.eye(o, dtype=np.float32)[targets]
    # Even rows: a wrong unit at e (error e exactly); odd rows: the target unit
    # at 1 - e (error |(1 - e) - 1| in float32).
    other = (cls + 1) % o
    predictions[rows[0::2], scored[0::2], other[0::2]] = e[0::2]
    predictions[rows[1::2], scored[1::2], cls[1::2]] = np.float32(1) - e[1::2]
    carried = np.abs(predictions[rows, scored] - np.eye(o, dtype=np.float32)[cls]).max(-1)
  else:
    # End target 0 (for 3a/3b class 2), so outputs of +-e carry e exactly; 3c
    # judges against the noise-free 0.2 of class 1, reached as 0.2 - e.
    target = np.float32(0.2 if task.name == "hs3c" else 0.0)
    if task.name.startswith("hs3"):
      inputs[:, :task.n, 0] = 1.0 if task.name == "hs3c" else -1.0
    targets = np.zeros((n, t, 1), np.float32)
    targets[rows, lengths - 1, 0] = target
    predictions = np.zeros((n, t, 1), np.float32)
    sign = np.where(rows % 2 == 0, np.float32(-1), np.float32(1))
    predictions[rows, lengths - 1, 0] = target + sign * e
    carried = np.abs(predictions[rows, lengths - 1, 0] - target)
  valid = np.arange(t)[None] < lengths[:, None]
  targets = np.where(valid if targets.ndim == 2 else valid[..., None], targets, 0)
  return Batch(inputs, targets, mask, lengths), predictions, carried.astype(np.float32)


@pytest.mark.parametrize("name, params, threshold, inclusive", THRESHOLDS,
                         ids=[row[0] for row in THRESHOLDS])
def test_per_sequence_threshold_boundaries(name, params, threshold, inclusive):
  task = make_task(name, **params)
  batch, predictions, carried = _boundary_rows(task, _probes(threshold))
  at = np.float32(threshold)
  assert (carried == at).any()                    # the equality case is really hit
  want = carried <= at if inclusive else carried < at
  assert want.any() and not want.all()
  if task.loss_type == "mse":                     # outputs are the predictions
    per_seq = jax.device_get(task.per_sequence(predictions, batch))
  else:                                           # exact probabilities: the rule itself
    logits = np.log(np.maximum(predictions, 1e-30))
    per_seq = jax.device_get(task._judge(jnp.asarray(logits), jnp.asarray(predictions),
                                         jax.tree_util.tree_map(jnp.asarray, batch)))
  np.testing.assert_array_equal(np.asarray(per_seq["error"], np.float32), carried)
  np.testing.assert_array_equal(np.asarray(per_seq["correct"], bool), want,
                                err_msg=f"{name}: errors {carried.tolist()}")


SOFTMAX_THRESHOLDS = [row[:3] for row in THRESHOLDS
                      if tasks.TASKS[row[0]].loss_type == "softmax_xent"]


@pytest.mark.parametrize("name, params, threshold", SOFTMAX_THRESHOLDS,
                         ids=[row[0] for row in SOFTMAX_THRESHOLDS])
def test_softmax_threshold_through_logits(name, params, threshold):
  """The public path: logits log(p) whose softmax p puts the error 1e-4 below
  or above the threshold (softmax rounding is ~1e-7)."""
  task = make_task(name, **params)
  o = task.output_size
  errors = np.array([threshold - 1e-4, threshold + 1e-4] * 2)
  batch, _, _ = _boundary_rows(task, np.zeros(2, np.float32))
  rows = np.arange(len(errors))
  scored = np.where((rows % 2 == 0) & (name == "hs2a"), 0, batch.lengths - 1)
  cls = batch.targets[rows, scored]
  p = np.eye(o)[batch.targets] * (1 - 1e-12) + 1e-12 / o     # near one-hot everywhere
  p[rows, scored] = 0.0
  p[rows, scored, cls] = 1.0 - errors
  p[rows, scored, (cls + 1) % o] = errors
  p[rows, scored] += 1e-12
  per_seq = jax.device_get(task.per_sequence(np.log(p).astype(np.float32), batch))
  np.testing.assert_allclose(per_seq["error"], errors, atol=2e-6)
  np.testing.assert_array_equal(per_seq["correct"], errors < threshold)


# ----------------------------------------------------------------------------
# Stopping rules.


def _stream(correct, error=0.0):
  correct = np.asarray(correct, bool)
  return {"correct": correct, "error": np.full(correct.shape, error)}


def test_hs4_rule_needs_2000_recent_correct_and_low_mean_error():
  rule = make_task("hs4_adding").criterion
  assert (rule.window, rule.max_wrong, rule.max_mean_error, rule.eval_size,
          rule.test_size) == (2000, 0, 0.01, 0, 2560)
  state = rule.new_state()
  state = rule.update(state, _stream([True] * 1999 + [False], 0.001))
  assert not rule.train_ok(state) and not rule.solved(state)
  state = rule.update(state, _stream([True] * 1999, 0.001))
  assert not rule.train_ok(state)                         # 1,999 since the miss
  state = rule.update(state, _stream([True], 0.001))
  assert rule.train_ok(state) and rule.solved(state)
  high = rule.update(rule.new_state(), _stream([True] * 2000, 0.02))
  assert not rule.train_ok(high)                          # mean error 0.02 >= 0.01
  assert not rule.train_ok(rule.update(rule.new_state(), _stream([True] * 1999, 0.0)))


def test_hs4_rule_from_real_per_sequence_metrics():
  task, batch = _sampled("hs4_adding")
  rule = task.criterion
  good = jax.device_get(task.per_sequence(_perfect_outputs(task, batch), batch))
  state = rule.new_state()
  for _ in range(3):
    state = rule.update(state, good)
  assert not rule.train_ok(state)                          # 1,536 < 2,000 seen
  state = rule.update(state, good)
  assert rule.train_ok(state)
  near = jax.device_get(task.per_sequence(_perfect_outputs(task, batch) + 0.03, batch))
  assert near["correct"].all()
  state = rule.update(rule.new_state(), {k: np.tile(v, 4) for k, v in near.items()})
  assert not rule.train_ok(state)                          # all correct, mean error 0.03


def test_hs5_rule_counts_wrong_in_window():
  rule = make_task("hs5_multiplication", n_seq=13).criterion
  assert rule.max_wrong == 12 and rule.max_mean_error is None
  stream = np.ones(2000, bool)
  stream[np.arange(12) * 150] = False
  ok = rule.update(rule.new_state(), _stream(stream))
  assert rule.train_ok(ok)
  stream[5] = False
  bad = rule.update(rule.new_state(), _stream(stream))
  assert not rule.train_ok(bad)
  # 2,000 correct later, the old misses have left the window.
  assert rule.train_ok(rule.update(bad, _stream(np.ones(2000, bool))))


def test_hs2_rules_need_10000_successive():
  for name in ("hs2a", "hs2b", "hs2c"):
    rule = make_task(name, lag=5).criterion
    state = rule.update(rule.new_state(), _stream([False] + [True] * 9999))
    assert not rule.train_ok(state)
    assert rule.train_ok(rule.update(state, _stream([True])))
    assert state["correct"].size == 0 and state["error"].size == 0   # a counter suffices


def test_hs3_eval_rules_st1_st2():
  rule = make_task("hs3a").criterion                 # ST2
  assert rule.eval_size == 256 and rule.window == 0
  state = rule.new_state()
  assert rule.solved(state, _stream([True] * 256, 0.005))
  assert not rule.solved(state, _stream([True] * 256, 0.02))        # ST2 mean error
  assert not rule.solved(state, _stream([True] * 255 + [False], 0.005))
  assert make_task("hs3a", stop="ST1").criterion.eval_ok(_stream([True] * 256, 0.02))
  rule_b = make_task("hs3b").criterion
  assert rule_b.eval_ok(_stream([False] * 5 + [True] * 251, 0.03))
  assert not rule_b.eval_ok(_stream([False] * 6 + [True] * 250, 0.03))
  assert not rule_b.eval_ok(_stream([True] * 256, 0.05))
  rule_c = make_task("hs3c").criterion
  assert rule_c.eval_ok(_stream([True] * 256, 0.014))
  assert not rule_c.eval_ok(_stream([True] * 256, 0.016))
  with pytest.raises(ValueError, match="eval_size=256"):
    rule.solved(state)
  with pytest.raises(ValueError, match="has 100 sequences.*eval_size=256"):
    rule.eval_ok(_stream([True] * 100))


def test_hs6_and_reber_rules():
  rule = make_task("hs6b").criterion
  assert (rule.window, rule.max_wrong, rule.max_mean_error) == (2000, 0, 0.1)
  assert rule.train_ok(rule.update(rule.new_state(), _stream([True] * 2000, 0.05)))
  assert not rule.train_ok(rule.update(rule.new_state(), _stream([True] * 2000, 0.15)))
  reber = make_task("reber").criterion
  assert reber.eval_size == 512 and reber.train_ok(reber.new_state())
  assert reber.eval_ok(_stream([True] * 512)) and not reber.eval_ok(_stream([True] * 511 + [False]))


def test_modern_eval_rules_on_summaries():
  dr = make_task("delayed_recall").criterion
  assert dr.eval_size == 1024
  assert dr.eval_ok({"count": 1024.0, "accuracy": 0.99})
  assert not dr.eval_ok({"count": 1024.0, "accuracy": 0.985})
  cp = make_task("copy").criterion
  assert cp.eval_ok({"count": 1024.0, "symbol_accuracy": 0.995})
  assert not cp.eval_ok({"count": 1024.0, "symbol_accuracy": 0.9})
  ad = make_task("adding").criterion
  assert ad.eval_ok({"count": 2048.0, "mse": 0.009})
  assert not ad.eval_ok({"count": 2048.0, "mse": 0.02})
  with pytest.raises(ValueError, match="needs metric 'mse'"):
    ad.eval_ok({"count": 2048.0})


def test_stream_state_is_checkpointable_and_not_mutated():
  rule = make_task("hs5_multiplication").criterion
  state = rule.update(rule.new_state(), _stream([True, False, True], 0.1))
  before = pickle.dumps(state)
  rule.update(state, _stream([False] * 5))
  assert pickle.dumps(state) == before
  restored = crit_mod.state_from_json(json.loads(json.dumps(crit_mod.state_to_json(state))))
  assert restored["seen"] == 3 and restored["streak"] == 1
  np.testing.assert_array_equal(restored["correct"], state["correct"])
  assert pickle.loads(before)["correct"].size == 2000


@settings(max_examples=25, deadline=None)
@given(st.lists(st.booleans(), min_size=1, max_size=60), st.data())
def test_stream_updates_are_chunking_invariant(flags, data):
  rule = Criterion("t", window=7, max_wrong=2, max_mean_error=0.5)
  errors = np.linspace(0, 1, len(flags))
  whole = rule.update(rule.new_state(), {"correct": np.array(flags), "error": errors})
  cuts = sorted(data.draw(st.lists(st.integers(0, len(flags)), max_size=4)))
  state = rule.new_state()
  for lo, hi in zip([0] + cuts, cuts + [len(flags)]):
    state = rule.update(state, {"correct": np.array(flags[lo:hi], bool), "error": errors[lo:hi]})
  assert state["seen"] == whole["seen"] == len(flags) and state["streak"] == whole["streak"]
  np.testing.assert_array_equal(state["correct"], whole["correct"])
  np.testing.assert_array_equal(state["error"], whole["error"])
  recent = np.array(flags[-7:])
  want = (len(flags) >= 7 and (~recent).sum() <= 2 and errors[-7:].mean() < 0.5)
  assert rule.train_ok(state) == want

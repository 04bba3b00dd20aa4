"""Shared test setup.

The test process has two CPU devices, so runs with several seeds split them
across devices (lstm_jax.devices) as they do on a multi-core machine.

PyTorch is optional: tests that compare against it take the ``torch``
fixture, which skips them when torch cannot be imported. Setting
``LSTM_JAX_REQUIRE_TORCH=1`` (``.ci/run`` does, after installing torch) makes
those tests fail instead, so a CI run cannot pass with them silently skipped.
"""

import os

import jax
import pytest

jax.config.update("jax_num_cpu_devices", 2)

REQUIRE_TORCH = os.environ.get("LSTM_JAX_REQUIRE_TORCH", "").strip() not in ("", "0")


@pytest.fixture(scope="session")
def torch():
  """The ``torch`` module; skips the test without it, or fails it where
  ``LSTM_JAX_REQUIRE_TORCH`` is set."""
  if not REQUIRE_TORCH:
    return pytest.importorskip("torch")
  try:
    import torch as module  # pylint: disable=import-outside-toplevel
    return module
  except ImportError as err:
    reason = str(err)
  pytest.fail(f"LSTM_JAX_REQUIRE_TORCH={os.environ['LSTM_JAX_REQUIRE_TORCH']!r} but torch "
              f"cannot be imported ({reason}); install torch (.ci/run installs torch==2.13.0) "
              "or unset LSTM_JAX_REQUIRE_TORCH to skip the torch tests", pytrace=False)

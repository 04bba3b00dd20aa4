"""Flag parsing shared by the entry points: user errors in flags become one
line on stderr and exit status 2, never a traceback."""

from __future__ import annotations

import contextlib
import sys
from typing import Iterator

from absl import flags

from lstm_jax.config import ConfigError
from lstm_jax.devices import set_cpu_devices
from lstm_jax.runner import Interrupted, NonFiniteError
from lstm_jax.workdir import WorkdirError


CPU_DEVICES = flags.DEFINE_integer(
    "cpu_devices", 0, "CPU devices JAX makes (a run spreads its seeds, or one seed's "
    "batch, over them: lstm_jax.devices); 0: one per usable core. "
    "Ignored when XLA_FLAGS sets --xla_force_host_platform_device_count.", lower_bound=0)


def parse_flags(argv: list[str]) -> list[str]:
  """``absl.app.run``'s ``flags_parser``: parse, or print one line and exit 2.

  Catches unknown config fields (``--config.lagg=3``: ml_collections suggests
  the closest field), values of the wrong type and missing required flags.
  Then applies ``--cpu_devices`` (flags are parsed before any JAX computation).
  """
  try:
    rest = flags.FLAGS(argv)
    set_cpu_devices(CPU_DEVICES.value)
    return rest
  except (flags.Error, AttributeError, KeyError, TypeError, ValueError) as err:
    message = str(err).replace("\\n", " ").replace("\\'", "'")
    message = " ".join(message.split())
    if message[:1] == message[-1:] and message[:1] in "'\"":
      message = message[1:-1]
    if isinstance(err, (AttributeError, KeyError)):
      message = f"unknown config field {message}; a locked config accepts only its own fields"
    print(f"error: {message}", file=sys.stderr)
    sys.exit(2)


@contextlib.contextmanager
def exit_codes() -> Iterator[None]:
  """Map the library's user-facing errors to one stderr line and an exit status:
  2 bad config or unusable workdir, 3 non-finite values, 128 + signal number
  after SIGTERM/SIGINT (a checkpoint was saved)."""
  try:
    yield
  except (ConfigError, WorkdirError) as err:
    print(f"error: {err}", file=sys.stderr)
    sys.exit(2)
  except NonFiniteError as err:
    print(f"error: {err}", file=sys.stderr)
    sys.exit(3)
  except Interrupted as err:
    print(f"interrupted: {err}", file=sys.stderr)
    sys.exit(128 + err.signum)

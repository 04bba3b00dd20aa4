"""Benchmark shapes ``(B, T, I, H)`` and the matmul FLOPs credited to one step.

Only matmul FLOPs are counted: the elementwise gate work (a few percent) is
not, and neither is the recomputation done by ``remat``, so every
implementation is credited the same useful work::

    forward = 2 * B * T * (I + H) * 4H         x @ W_x and h @ W_h, every step
    train   = forward + 2*B*T*(I + H)*4H       dW_x, dW_h
                      + 2*B*T*H*4H             dh_prev (no input gradient)
            = 2 * B * T * 4H * (2I + 3H)       (~3x forward when H >> I)
    ceiling forward = 2 * B * T * H * 4H,  ceiling train = 3x that
"""

from __future__ import annotations

import dataclasses

MODES = ("train", "forward")
"""What one timed call computes: the parameter gradient of the loss, or the loss."""

DEFAULT_SHAPES = ((32, 100, 8, 128), (128, 200, 8, 256), (16, 1000, 8, 128),
                  (1, 1000, 8, 64), (256, 50, 64, 512))
QUICK_SHAPES = ((2, 5, 3, 4), (4, 20, 8, 16))


@dataclasses.dataclass(frozen=True)
class Shape:
  """One benchmark shape: batch ``B``, time ``T``, input size ``I``, hidden size
  ``H``; ``name`` labels a named row (the config whose shape it is) and is not
  part of the shape's identity."""
  B: int
  T: int
  I: int
  H: int
  name: str = dataclasses.field(default="", compare=False)

  def __post_init__(self) -> None:
    for field in ("B", "T", "I", "H"):
      value = getattr(self, field)
      if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"shape {field}={value!r}: expected an integer >= 1")

  @property
  def label(self) -> str:
    """``"B=32 T=100 I=8 H=128"``, then `` (name)`` for a named row."""
    text = f"B={self.B} T={self.T} I={self.I} H={self.H}"
    return f"{text} ({self.name})" if self.name else text

  def as_dict(self) -> dict[str, int]:
    """``{"B": ..., "T": ..., "I": ..., "H": ...}`` (without the name)."""
    return {"B": self.B, "T": self.T, "I": self.I, "H": self.H}


def parse_shapes(text: str) -> list[Shape]:
  """Parse ``"32x100x8x128,1x1000x8x64"`` (``BxTxIxH``, comma separated)."""
  shapes = []
  for part in text.split(","):
    part = part.strip()
    if not part:
      continue
    try:
      values = [int(f) for f in part.lower().split("x")]
    except ValueError:
      values = []
    if len(values) != 4:
      raise ValueError(f"--shapes: {part!r} is not BxTxIxH (four integers, e.g. 32x100x8x128)")
    shapes.append(Shape(*values))
  if not shapes:
    raise ValueError("--shapes: no shape given")
  return shapes


def _check_mode(mode: str) -> None:
  if mode not in MODES:
    raise ValueError(f"mode={mode!r}; allowed: {', '.join(MODES)}")


def model_flops(shape: Shape, mode: str) -> int:
  """Matmul FLOPs of one LSTM forward or training step (formulas: module docstring)."""
  _check_mode(mode)
  b, t, i, h = shape.B, shape.T, shape.I, shape.H
  if mode == "forward":
    return 2 * b * t * (i + h) * 4 * h
  return 2 * b * t * 4 * h * (2 * i + 3 * h)


def ceiling_flops(shape: Shape, mode: str) -> int:
  """FLOPs of the recurrent-matmul-only scan: ``2*B*T*H*4H`` forward, 3x for train."""
  _check_mode(mode)
  forward = 2 * shape.B * shape.T * shape.H * 4 * shape.H
  return forward if mode == "forward" else 3 * forward

"""The README's code example runs as written and prints the shapes it claims."""

from __future__ import annotations

import contextlib
import io
import pathlib
import re

README = pathlib.Path(__file__).resolve().parents[1] / "README.md"


def test_readme_example_runs_as_written():
  text = README.read_text()
  block = re.search(r"## Use the functions in research code\n\n```python\n(.*?)```", text, re.S)
  assert block, "README lost its research-code example"
  code = block.group(1)
  out = io.StringIO()
  with contextlib.redirect_stdout(out):
    exec(compile(code, str(README), "exec"), {})
  claimed = re.findall(r"# (\(.*\))\s*$", code, re.M)
  printed = out.getvalue().splitlines()
  assert claimed and [line.strip() for line in printed] == claimed

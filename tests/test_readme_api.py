"""The README's Python API example runs as written (issue 12: keep README.md true)."""

from __future__ import annotations

import contextlib
import io
import re
from pathlib import Path


def test_readme_api_example_runs():
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    block = re.search(r"<!-- api-example -->\n```python\n(.*?)```\n<!-- /api-example -->", readme, re.S)
    assert block, "README.md lost its api-example block"
    assert len(block.group(1).strip().splitlines()) <= 10
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(block.group(1), "README.md:api-example", "exec"), {})
    printed = out.getvalue()
    assert "pool2" in printed and "PSNR (dB)" in printed and "rFID [proxy]" in printed  # proxy labelled as one
    rate, bpp = printed.strip().splitlines()[-1].split()
    assert rate == "exact" and 0 < float(bpp) < 24

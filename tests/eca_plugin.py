"""The README's plugin example (ECA, section "Adding a module"), written to a file outside the package, so the tests
run exactly what the README shows."""
from __future__ import annotations

import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def eca_source() -> str:
    """The first Python block of the README's "Adding a module" section."""
    text = README.read_text()
    start = text.index("\n## Adding a module\n")
    end = text.index("\n## ", start + 1)
    m = re.search(r"```python\n(.*?)```", text[start:end], flags=re.S)
    assert m, "README's 'Adding a module' has no python block"
    return m.group(1)


def write_eca_plugin(folder: str | Path, name: str = "eca.py") -> Path:
    p = Path(folder) / name
    p.write_text(eca_source())
    return p

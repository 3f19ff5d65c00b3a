"""The torch pins: exact releases in constraints.txt (what `make venv` installs), a supported range in
pyproject.toml (what a machine with its own torch needs); the pins lie in the range, and so does the torch running."""
import tomllib
from pathlib import Path

import pytest
import torch
import torchvision
from packaging.requirements import Requirement
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[1]


def ranges() -> dict[str, Requirement]:
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    return {Requirement(d).name: Requirement(d) for d in deps}


def pins() -> dict[str, Version]:
    out = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        line = line.split("#")[0].strip()
        if line:
            req = Requirement(line)
            (spec,) = req.specifier
            assert spec.operator == "==", line
            out[req.name] = Version(spec.version)
    return out


def test_pyproject_states_a_range_and_constraints_pin_it():
    r, p = ranges(), pins()
    assert set(p) == {"torch", "torchvision"}
    for name, version in p.items():
        spec = r[name].specifier
        assert not any(s.operator == "==" for s in spec), f"pyproject pins {name} exactly: {spec}"
        assert any(s.operator == ">=" for s in spec), f"pyproject gives {name} no floor: {spec}"
        assert spec.contains(version), f"constraints.txt pins {name}=={version}, outside pyproject's {spec}"
    assert "-c constraints.txt" in (ROOT / "Makefile").read_text()


@pytest.mark.parametrize("module", [torch, torchvision], ids=["torch", "torchvision"])
def test_the_running_release_is_in_the_range(module):
    v = Version(Version(module.__version__).base_version)     # 2.14.1+cu130 -> 2.14.1
    assert ranges()[module.__name__].specifier.contains(v), (module.__name__, v)

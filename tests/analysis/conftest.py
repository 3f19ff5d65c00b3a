"""The analysis tests' run folders (:mod:`analysis_records`), written once per test module."""
from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from analysis_records import PRESET, write_runs

from attnrepro.analysis import results


@pytest.fixture(scope="module")
def runs_root(tmp_path_factory) -> Path:
    return write_runs(tmp_path_factory.mktemp("runs"))


@pytest.fixture(scope="module")
def runs(runs_root) -> pd.DataFrame:
    return results.load_runs(runs_root, PRESET)

"""attnrepro.train.metrics: the facts recorded with every run."""
import shutil
from pathlib import Path

import attnrepro
from attnrepro.train.metrics import CODE_GROUPS, code_hashes, env_info

PACKAGE = Path(attnrepro.__file__).parent


def test_code_hashes_change_with_their_group_only(tmp_path):
    copy = tmp_path / "attnrepro"
    shutil.copytree(PACKAGE, copy, ignore=shutil.ignore_patterns("__pycache__"))
    before = code_hashes(copy)
    assert before == code_hashes(PACKAGE) and set(before) == set(CODE_GROUPS)
    (copy / "modules" / "aw.py").write_text((copy / "modules" / "aw.py").read_text() + "\n# changed\n")
    (copy / "analysis" / "stats.py").write_text("# not training code\n")
    after = code_hashes(copy)
    assert [g for g in CODE_GROUPS if after[g] != before[g]] == ["modules"]
    (copy / "config.py").write_text((copy / "config.py").read_text() + "\n")
    assert code_hashes(copy)["config"] != before["config"]


def test_env_records_the_code_and_the_threads():
    import torch
    env = env_info(torch.device("cpu"))
    assert env["code"] == code_hashes() and env["num_threads"] == torch.get_num_threads()

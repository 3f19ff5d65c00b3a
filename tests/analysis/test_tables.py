"""attnrepro.analysis.tables and .counting: the papers' params / GFLOPs rows beside the built models, under named counting conventions.

The conventions are checked against hand counts (ResNet v1 strides) and against counting a whole modified model
(the module counts only the changed blocks); the CLI is run once on the package's rows (slow: it builds ResNet-152s).
"""
from __future__ import annotations

import copy
import math

import pandas as pd
import pytest
import torch
import torch.nn as nn
import yaml

from attnrepro import cli
from attnrepro.analysis import counting, tables
from attnrepro.flops import ATTENTION_MATMUL_OPS, count_macs, count_params, mac_breakdown
from attnrepro.models import build_model
from attnrepro.models.placement import iter_blocks


pytestmark = pytest.mark.usefixtures("one_thread")   # tests/conftest.py


def test_conventions_are_the_product_of_three_choices():
    assert len(tables.CONVENTIONS) == 8 and tables.DEFAULT_CONVENTION in tables.CONVENTIONS
    default = tables.CONVENTIONS[tables.DEFAULT_CONVENTION]
    assert (default.strides, default.strided_blocks, default.attention_matmuls) == ("v1.5", "attention", True)
    assert {"no-attention-matmuls", "resnet-v1-strides", "strided-blocks-plain",
            "resnet-v1-strides+strided-blocks-plain+no-attention-matmuls"} <= set(tables.CONVENTIONS)
    assert len({(c.strides, c.strided_blocks, c.attention_matmuls) for c in tables.CONVENTIONS.values()}) == 8
    with pytest.raises(ValueError, match="choose one of: fvcore-default"):
        counting.check_convention("tf-profiler")


def test_v1_strides_against_hand_count():
    # ResNet v1 moves the stride of each stage's first bottleneck from the 3x3 to the first 1x1: that 1x1 conv (and
    # its BN) then runs at the output side instead of the input side; nothing else changes.
    side = 64
    spec = tables.ModelSpec("resnet50", 10, side)
    m = tables.measure(spec)
    model = build_model("resnet50", 10)
    bn_per_element = count_macs(nn.BatchNorm2d(4), (1, 4, 3, 3)) / 36
    saved = 0
    for _, block, s_in in iter_blocks(model, side, "resnet50"):
        if block.conv2.stride[0] == 2:
            s_out = math.ceil(s_in / 2)
            c_in, width = block.conv1.in_channels, block.conv1.out_channels
            saved += (c_in * width + bn_per_element * width) * (s_in ** 2 - s_out ** 2)
    assert saved > 0
    assert m["fvcore-default"]["macs"] == count_macs(model, (1, 3, side, side))
    assert m["fvcore-default"]["macs"] - m["resnet-v1-strides"]["macs"] == saved
    assert m["resnet-v1-strides"]["params"] == m["fvcore-default"]["params"] == count_params(model)
    # a plain net has no attention layer: the other two choices change nothing
    for name, c in tables.CONVENTIONS.items():
        assert m[name] == m["resnet-v1-strides" if c.strides == "v1" else "fvcore-default"], name


def _whole_variant(model, name, side, conv):
    """The model with every strided block replaced by its variant (the module counts the blocks alone)."""
    model = copy.deepcopy(model)
    for _, block, _ in list(iter_blocks(model, side, name)):
        plain, v1 = counting._applies(block, conv)
        if plain or v1:
            new = counting._variant_block(block, plain, v1)
            for parent in model.modules():
                for child_name, child in parent.named_children():
                    if child is block:
                        setattr(parent, child_name, new)
    return model


@pytest.mark.parametrize("name, side", [("resnet50", 32), ("resnet20", 16)])
def test_block_counts_equal_counting_the_whole_modified_model(name, side):
    spec = tables.ModelSpec(name, 10, side, "aa", (("heads", 2),))
    m = tables.measure(spec)
    model = spec.build()
    for conv in tables.CONVENTIONS.values():
        whole = _whole_variant(model, name, side, conv)
        ops = mac_breakdown(whole, (1, 3, side, side))[""]
        want = sum(v for op, v in ops.items() if conv.attention_matmuls or op not in ATTENTION_MATMUL_OPS)
        assert m[conv.name] == {"params": count_params(whole), "macs": want}, conv.name
    # the choices do change the counts of an augmented net
    assert len({v["macs"] for v in m.values()}) >= (8 if name == "resnet50" else 4)


def test_strided_blocks_plain_params_and_attention_matmuls():
    spec = tables.ModelSpec("resnet20", 10, 16, "aa", (("heads", 2),))
    m = tables.measure(spec)
    model = spec.build()
    strided = [b.conv1 for _, b, _ in iter_blocks(model, 16, "resnet20") if b.conv1.stride == 2]
    assert len(strided) == 2   # the first block of stages 2 and 3
    plain = sum(count_params(a) - a.in_channels * a.out_channels * 9 for a in strided)
    assert m["fvcore-default"]["params"] - m["strided-blocks-plain"]["params"] == plain != 0
    ops = mac_breakdown(model, (1, 3, 16, 16))[""]
    attention = sum(v for op, v in ops.items() if op in ATTENTION_MATMUL_OPS)
    assert attention > 0 and m["fvcore-default"]["macs"] - m["no-attention-matmuls"]["macs"] == attention


def test_a_variant_that_ignores_its_stride_is_caught():
    model = build_model("resnet50", 10)
    block = model.layer2[0]
    bad = counting._variant_block(block, False, True)
    bad.conv1.stride = (1, 1)   # the stride lost on both paths: the block runs, at twice the output side
    bad.downsample[0].stride = (1, 1)
    with pytest.raises(RuntimeError, match="instead of"):
        counting._count_block(block, bad, 16)


# ------------------------------------------------------------------------------------------------ rows and table
def _small_rows():
    aa = tables.ModelSpec("resnet20", 10, 16, "aa", (("heads", 2),))
    ex = tables.ModelSpec("resnet20", 10, 16, "expatt", (("heads", 2),))
    plain = tables.ModelSpec("resnet20", 10, 16)
    return [tables.PaperRow("P", "T", "ResNet-20", "params_M", 0.3, plain),
            tables.PaperRow("P", "T", "AA-ResNet-20", "gflops", 0.05, aa, decimals=2),
            tables.PaperRow("P", "claim c", "ExpAtt vs AA", "params_M", -5.0, ex, aa)]


def test_build_tables_against_the_built_models():
    rows = _small_rows()
    t = tables.build_tables(rows, ["fvcore-default", "no-attention-matmuls"])
    assert list(t.columns) == tables.COLUMNS and len(t) == 6
    plain = build_model("resnet20", 10)
    r = t[(t.model == "ResNet-20") & (t.convention == "fvcore-default")].iloc[0]
    assert r.measured == count_params(plain) / 1e6 and r.reported == 0.3
    assert r.residual == pytest.approx(r.measured - 0.3) and r.tolerance == pytest.approx(0.05)
    assert r.matches == (abs(r.measured - 0.3) <= 0.05)
    assert r.residual_rel_pct == pytest.approx(100 * r.residual / 0.3)
    aa = build_model("resnet20", 10, attention="aa", heads=2, input_size=16)
    g = t[(t.model == "AA-ResNet-20") & (t.convention == "fvcore-default")].iloc[0]
    assert g.measured == pytest.approx(2 * count_macs(aa, (1, 3, 16, 16)) / 1e9) and g.tolerance == 0.005
    g2 = t[(t.model == "AA-ResNet-20") & (t.convention == "no-attention-matmuls")].iloc[0]
    assert g2.measured < g.measured
    ex = build_model("resnet20", 10, attention="expatt", heads=2, input_size=16)
    rel = t[(t.model == "ExpAtt vs AA") & (t.convention == "fvcore-default")].iloc[0]
    assert rel.measured == pytest.approx(100 * (count_params(ex) - count_params(aa)) / count_params(aa))
    assert rel.unit.startswith("% vs resnet20")


def test_matches_is_the_papers_rounding():
    # a paper printing one decimal matches a measured value within half a unit of that decimal (0.05), no further
    spec = tables.ModelSpec("resnet20", 10, 16)
    p = count_params(build_model("resnet20", 10)) / 1e6
    t = tables.build_tables([tables.PaperRow("P", "T", "a", "params_M", round(p + 0.04, 4), spec),
                             tables.PaperRow("P", "T", "b", "params_M", round(p - 0.07, 4), spec)], ["fvcore-default"])
    assert t.tolerance.tolist() == [0.05, 0.05] and t.matches.tolist() == [True, False]
    assert tables._decimals(36.2) == 1 and tables._decimals(0.05) == 2 and tables._decimals(-6.4) == 1


def test_column_verdicts_say_which_convention_and_by_how_much():
    rows = []
    for conv, res in (("a", (0.01, -0.02)), ("b", (0.3, 0.0))):
        for model, r in zip(("m1", "m2"), res):
            rows.append({"paper": "P", "table": "T", "model": model, "quantity": "gflops", "convention": conv,
                         "reported": 1.0, "measured": 1.0 + r, "residual": r, "residual_rel_pct": 100 * r,
                         "tolerance": 0.05, "matches": abs(r) <= 0.05})
    for conv, r in (("a", 0.4), ("b", -0.2)):
        rows.append({"paper": "P", "table": "T", "model": "m1", "quantity": "params_M", "convention": conv,
                     "reported": 1.0, "measured": 1.0 + r, "residual": r, "residual_rel_pct": 100 * r,
                     "tolerance": 0.05, "matches": False})
    lines = tables.column_verdicts(pd.DataFrame(rows))
    assert lines[0] == "P, T, gflops: every row (2) reproduced within the paper's rounding by a."
    assert "no convention reproduces every row" in lines[1] and "Closest: b" in lines[1]
    assert "m1 -0.20 M" in lines[1]
    summ = tables.summarize_conventions(pd.DataFrame(rows)).set_index(["quantity", "convention"])
    assert summ.loc[("gflops", "b"), "max_abs_residual"] == 0.3 and summ.loc[("gflops", "b"), "rows_matching"] == 1


def test_package_rows_are_the_yaml_numbers():
    from importlib import resources

    data = yaml.safe_load(resources.files("attnrepro.analysis").joinpath("paper_tables.yaml").read_text())
    claims = yaml.safe_load(resources.files("attnrepro.analysis").joinpath("claims.yaml").read_text())
    rows = tables.load_paper_rows()
    got = {(r.model, r.quantity): r.reported for r in rows if r.reference is None}
    want = {(r["model"], q): r[q] for r in data["rows"] for q in ("params_M", "gflops") if q in r}
    assert got == want
    assert {"ResNet-34", "AA-ResNet-34", "ResNet-50", "SE-ResNet-50", "AA-ResNet-50", "ResNet-101", "AA-ResNet-101",
            "AA-ResNet-152", "WRN-28-10", "SE-WRN-28-10", "AA-WRN-28-10"} == {m for m, _ in got}
    rel = {r.quantity: r for r in rows if r.reference is not None}
    cost = {c["metric"]: c for c in claims["claims"] if c["kind"] == "cost"}
    assert rel["params_M"].reported == cost["params"]["effect"] and rel["gflops"].reported == cost["macs"]["effect"]
    assert rel["gflops"].spec == tables.ModelSpec("resnet152", 1000, 224, "expatt")
    assert rel["gflops"].reference == tables.ModelSpec("resnet152", 1000, 224, "aa")
    assert {r.quantity for r in rows} == {"params_M", "gflops"}
    wrn = next(r for r in rows if r.model == "AA-WRN-28-10")
    assert (wrn.spec.num_classes, wrn.spec.input_size) == (100, 32)


def test_bad_rows_name_the_value(tmp_path):
    p = tmp_path / "t.yaml"
    p.write_text("papers: {aa: AA}\nrows:\n  - {paper: bb, table: T, model: M, build: {model: resnet20}, "
                 "params_M: 1.0}\n")
    with pytest.raises(ValueError, match="paper='bb' is not valid; choose one of: aa"):
        tables.load_paper_rows(p, {"claims": []})
    p.write_text("papers: {aa: AA}\nrows:\n  - {paper: aa, table: T, model: M, build: {model: resnet20}}\n")
    with pytest.raises(ValueError, match="neither params_M nor gflops"):
        tables.load_paper_rows(p, {"claims": []})
    p.write_text("papers: {aa: AA}\nrows:\n  - {paper: aa, table: T, model: M, build: {num_classes: 10}, "
                 "gflops: 1.0}\n")
    with pytest.raises(ValueError, match="'model'"):
        tables.load_paper_rows(p, {"claims": []})


@pytest.mark.slow
def test_cli_writes_the_table(tmp_path, capsys):
    assert cli.main(["tables", "--out", str(tmp_path)]) == 0
    t = pd.read_csv(tmp_path / "paper_tables.csv")
    assert {"paper", "model", "quantity", "reported", "measured", "residual", "residual_rel_pct",
            "convention"} <= set(t.columns)
    rows = tables.load_paper_rows()
    assert len(t) == len(rows) * len(tables.CONVENTIONS)
    assert set(t.quantity) == {"params_M", "gflops"} and set(t.convention) == set(tables.CONVENTIONS)
    d = t[t.convention == "fvcore-default"].set_index(["model", "quantity"])
    r50 = build_model("resnet50", 1000)
    assert d.loc[("ResNet-50", "params_M"), "measured"] == pytest.approx(count_params(r50) / 1e6)
    assert d.loc[("ResNet-50", "gflops"), "measured"] == pytest.approx(2 * count_macs(r50) / 1e9)
    assert (t.residual - (t.measured - t.reported)).abs().max() < 1e-9
    summ = pd.read_csv(tmp_path / "paper_tables_conventions.csv")
    assert len(summ) == t.groupby(["paper", "table", "quantity"]).ngroups * len(tables.CONVENTIONS)
    out = capsys.readouterr().out
    assert out.count("reproduce") == t.groupby(["paper", "table", "quantity"]).ngroups


def test_the_committed_tables_are_what_the_models_give(tmp_path):
    """reports/tables/ is committed so that a reader sees the papers' rows beside the suite's models without running
    anything; it must be what `attnrepro tables` writes from the code as it is."""
    from pathlib import Path

    committed = Path(__file__).resolve().parents[2] / "reports" / "tables"
    fresh = tables.write_tables(tmp_path)
    for p in fresh:
        want = committed / p.name
        assert want.is_file(), f"{want.name} is not committed: run attnrepro tables"
        pd.testing.assert_frame_equal(pd.read_csv(p), pd.read_csv(want), check_dtype=False, obj=p.name)


def test_counts_are_cached_on_disk_under_the_code_that_counts_them(tmp_path, monkeypatch):
    """A second report over unchanged code counts nothing: measure() reads the disk cache; a change of the
    counting code (its key) or a damaged file means counting again."""
    import json

    from attnrepro.analysis import counting
    monkeypatch.setenv("ATTNREPRO_CACHE", str(tmp_path))
    spec = counting.ModelSpec("resnet20", 10, 32, "se")
    counting.measure.cache_clear()
    first = counting.measure(spec)
    files = list((tmp_path / "counts").glob("*.json"))
    assert len(files) == 1 and json.loads(files[0].read_text()) == first
    planted = {c: {"params": 7, "macs": 11} for c in first}
    files[0].write_text(json.dumps(planted))
    counting.measure.cache_clear()
    assert counting.measure(spec) == planted                 # read from disk, not counted
    monkeypatch.setattr(counting, "_code_key", lambda: "other code")
    counting.measure.cache_clear()
    assert counting.measure(spec) == first                   # another code key: counted again
    files[0].write_text("{torn")
    monkeypatch.undo()
    monkeypatch.setenv("ATTNREPRO_CACHE", str(tmp_path))
    counting.measure.cache_clear()
    assert counting.measure(spec) == first                   # a damaged entry is ignored and rewritten
    monkeypatch.setenv("ATTNREPRO_CACHE", "off")
    assert counting.cache_dir() is None
    counting.measure.cache_clear()

"""attnrepro.analysis.claims: the claims rule on run records with known truth (in memory, :mod:`synthetic`), in and
outside the paper's setting; compound and ambiguous claims; cost claims on built models."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from synthetic import frame, run_rows

from attnrepro.analysis import matching
from attnrepro.analysis.claims import (AmbiguousClaim, check_claim, evaluate_claims, judge_claim, judge_cost_claim,
                                       load_claims)
from attnrepro.design import AnalysisSpec

pytestmark = pytest.mark.usefixtures("one_thread")   # tests/conftest.py

SEEDS = 10
NOISE = np.array([0.1, -0.2, 0.15, -0.05, 0.0, 0.2, -0.1, 0.05, -0.15, 0.1])
BASE = 80 + np.array([0.3, -0.4, 0.2, 0.5, -0.1, 0.0, -0.3, 0.4, 0.1, -0.2])     # a shared seed effect


def baseline(**facts):
    """A baseline ablation over 10 seeds: expatt +1.0 (resolved), aa -1.0 (resolved the other way), se +0.00
    (equivalent within 0.5), aw +0.3 with noise (inconclusive); ``facts`` set dataset, model, stages..."""
    g = [run_rows("baseline", "none", BASE, reference=True, **facts),
         run_rows("baseline", "expatt", BASE + 1.0 + NOISE, config={"attention": "expatt"}, **facts),
         run_rows("baseline", "aa", BASE - 1.0 + NOISE, config={"attention": "aa"}, params=1200, **facts),
         run_rows("baseline", "se", BASE + NOISE - NOISE.mean(), config={"attention": "se"}, params=1100, **facts),
         run_rows("baseline", "aw", BASE + 0.3 + 4 * NOISE[::-1], config={"attention": "aw"}, **facts)]
    return frame(*g)


SPEC = AnalysisSpec(delta=0.5, delta_why="test")


def _claim(**kw):
    c = {"id": "x", "paper": "p", "claim": "c", "reported": "r", "kind": "accuracy", "metric": "val_top1",
         "direction": "greater", "effect": None, "setting": {},
         "compare": {"ablation": "baseline", "variant": {"attention": "expatt"}, "reference": {"attention": "none"}}}
    c.update(kw)
    return c


def _cmp(variant, reference="none"):
    return {"ablation": "baseline", "variant": {"attention": variant}, "reference": {"attention": reference}}


def judge(claim, runs, spec=SPEC):
    return judge_claim(claim, runs, None, None, spec)


def test_match_variant_needs_every_key(runs):
    m = matching.match_variant
    assert m(runs, "radius_init", {"attention": "expatt", "radius_init": 0.5}) == ["r0.5-learn"]
    assert m(runs, "radius_init", {"radius_init": 0.5 + 1e-12}) == ["r0.5-learn"]      # numbers compared as numbers
    assert m(runs, "placement", {"stages": [3]}) == ["s3"] and m(runs, "placement", {"stages": None}) == ["none"]
    assert m(runs, "kernel", None) == ["gaussian"] and m(runs, "kernel", "uniform") == ["uniform"]
    assert m(runs, "kernel", "cauchy") == [] and m(runs, "kernel", {"kernel": "cauchy"}) == []
    assert m(runs, "nothing", {"kernel": "uniform"}) == []


def test_statuses_follow_the_family_wise_verdicts():
    runs = baseline()
    assert judge(_claim(), runs)["status"] == "consistent"
    r = judge(_claim(compare=_cmp("aa")), runs)
    assert r["status"] == "inconsistent" and "opposite side" in r["why"]
    r = judge(_claim(compare=_cmp("se")), runs)
    assert r["status"] == "inconclusive" and "equivalent within ±0.5" in r["why"]
    r = judge(_claim(compare=_cmp("aw")), runs)
    assert r["status"] == "inconclusive" and "neither a difference" in r["why"]
    r = judge(_claim(direction="less"), runs)
    assert r["status"] == "inconsistent"
    r = judge(_claim(compare=_cmp("none", "expatt"), direction="less"), runs)     # read the other way round
    assert r["status"] == "consistent" and r["value"] == pytest.approx(-1.0 - NOISE.mean())
    r = judge(_claim(compare=_cmp("cbam")), runs)
    assert r["status"] == "not run" and "no variant" in r["why"]
    r = judge(_claim(compare={**_cmp("expatt"), "ablation": "kernel"}), runs)
    assert r["status"] == "not run" and "no runs of ablation 'kernel'" in r["why"]


def test_too_few_seeds_or_epochs_are_inconclusive():
    runs = baseline()
    short = runs.copy()
    short.loc[(short.variant == "expatt") & (short.seed == 3), "epochs_completed"] = 5
    r = judge(_claim(), short)
    assert r["status"] == "inconclusive" and "5 epochs < 10" in r["why"]
    cut = runs.copy()
    cut.loc[cut.variant == "none", "max_steps"] = 3
    assert "max_steps=3" in judge(_claim(), cut)["why"]
    one = runs[runs.seed == 0]
    r = judge(_claim(), one)
    assert r["status"] == "inconclusive" and "1 paired seed < 2" in r["why"]


def test_outside_its_setting_a_claim_is_judged_on_direction_only_and_says_where_it_differs():
    setting = {"dataset": "imagenet", "model": "resnet50", "placement": "paper", "input_size": 224}
    runs = baseline(stages=[3])
    r = judge(_claim(setting=setting, effect=5.0), runs)        # a claimed +5 is not judged on size out here
    assert r["status"] == "consistent" and "direction only" in r["why"]
    for part in ("dataset fashion_mnist (paper: imagenet)", "model resnet20 (paper: resnet50)",
                 "placement stages 3 (paper: where the paper puts it)", "input 28 px (paper: 224 px)"):
        assert part in r["why"] and part in r["setting"]
    # in its own setting the same +1.0 contradicts a claimed +5: the corrected interval lies below it
    own = baseline(dataset="imagenet", model="resnet50", input_size=224)
    r = judge(_claim(setting=setting, effect=5.0), own)
    assert r["status"] == "inconsistent" and "lies below the claimed 5" in r["why"] and r["setting"] == "the paper's"
    assert judge(_claim(setting=setting, effect=0.5), own)["status"] == "consistent"
    # a single part differing is enough, and only that part is named
    r = judge(_claim(setting=setting, effect=5.0), baseline(dataset="imagenet", model="resnet50", input_size=224,
                                                           stages=[4]))
    assert r["status"] == "consistent" and r["setting"] == "placement stages 4 (paper: where the paper puts it)"


def test_an_imagenet_claim_is_judged_on_size_in_its_own_setting():
    """An imagefolder preset that declares its images to be ImageNet (analysis.stands_for) is the AA paper's setting
    for AA-ResNet-50, and a measured +1.0 (corrected interval below 1.3) is then inconsistent with its claimed +1.3."""
    claims = {c["id"]: c for c in load_claims()["claims"]}
    c = claims["aa_over_resnet50"]
    runs = baseline(dataset="imagefolder", model="resnet50", input_size=224).replace({"variant": {"aa": "x"}})
    runs = runs.replace({"variant": {"expatt": "aa"}})
    runs.loc[runs.variant == "aa", "attention"] = "aa"
    runs.loc[runs.variant == "aa", "config"] = [{"attention": "aa", "stages": None}] * int((runs.variant == "aa").sum())
    runs.loc[runs.variant == "aa", "varied"] = [{"attention": "aa"}] * int((runs.variant == "aa").sum())
    runs = runs[runs.variant != "x"]
    plain = judge(c, runs, SPEC)
    assert plain["status"] == "consistent" and "dataset imagefolder (paper: imagenet)" in plain["why"]
    r = judge(c, runs, AnalysisSpec(delta=0.5, delta_why="test", stands_for={"dataset": "imagenet"}))
    assert r["status"] == "inconsistent" and r["setting"] == "the paper's"
    assert r["high"] < 1.3 and r["low"] > 0


def test_a_claim_judged_only_in_its_setting_is_not_run_elsewhere():
    claims = {c["id"]: c for c in load_claims()["claims"]}
    wrn = claims["aa_over_wrn_cifar100"]
    assert wrn["judge_outside"] is False
    r = judge(wrn, baseline())
    assert r["status"] == "not run" and "does not build the claim's setting" in r["why"]
    own = baseline(dataset="cifar100", model="wrn28_10", input_size=32)
    assert judge(wrn, own)["status"] in ("consistent", "inconsistent", "inconclusive")


def test_a_compound_claim_checks_every_part():
    runs = baseline()
    c = _claim(compare=_cmp("expatt", "aa"), also=[{"metric": "params", "direction": "less"}])
    r = judge(c, runs)                         # expatt beats aa (+2) with 1000 against 1200 params
    assert r["status"] == "consistent" and "fewer params (1,000 vs 1,200: holds)" in r["why"]
    c = _claim(compare=_cmp("aa", "se"), direction="less", also=[{"metric": "params", "direction": "less"}])
    r = judge(c, runs)                         # aa is below se as claimed, but it has more params
    assert r["status"] == "inconsistent" and "other part fails" in r["why"] and "1,200 vs 1,100" in r["why"]
    with pytest.raises(ValueError, match="also entry"):
        check_claim(_claim(also=[{"metric": "latency", "direction": "less"}]))


def test_a_claim_that_matches_several_variants_is_an_error_naming_them():
    runs = baseline()
    extra = frame(run_rows("baseline", "expatt-s3", BASE + 1, config={"attention": "expatt"}, stages=[3]))
    both = pd.concat([runs, extra], ignore_index=True)
    with pytest.raises(AmbiguousClaim, match="matches 2 variants of baseline: expatt, expatt-s3"):
        judge(_claim(), both)
    assert judge(_claim(compare={"ablation": "baseline", "variant": "expatt", "reference": "none"}),
                 both)["status"] == "consistent"
    with pytest.raises(AmbiguousClaim):
        evaluate_claims(both, {"claims": [_claim()], "defaults": {}}, spec=SPEC)


def test_claims_take_the_family_wise_verdict():
    """Many null comparisons beside one claimed one: its raw p would pass, the family's adjusted p does not."""
    runs = baseline()
    g = [runs]
    for j in range(12):
        g.append(frame(run_rows("baseline", f"z{j}", BASE + NOISE * (j % 3 - 1), config={"attention": "cbam",
                                                                                            "reduction": j + 2})))
    d = np.array([0.5, -0.1, 0.4, 0.2, 0.3, -0.2, 0.6, 0.1, 0.0, 0.3])        # t about 2.6: p about 0.03
    weak = frame(run_rows("baseline", "aw+se", BASE + d, config={"attention": "aw+se"}))
    many = pd.concat([*g, weak], ignore_index=True)
    c = _claim(compare=_cmp("aw+se"))
    r = judge(c, many)
    assert r["p"] < 0.05 <= r["p_adj"] and r["status"] == "inconclusive"
    alone = pd.concat([runs[runs.variant == "none"], weak], ignore_index=True)
    assert judge(c, alone)["status"] == "consistent"


def _cost(**kw):
    c = {"id": "cost", "paper": "p", "claim": "c", "reported": "r", "kind": "cost", "metric": "params",
         "direction": "less", "effect": None, "tolerance": 0.5,
         "build": {"model": "resnet20", "input_size": 16, "num_classes": 10, "variant": {"attention": "expatt"},
                   "reference": {"attention": "aa"}}}
    c.update(kw)
    return c


def test_cost_claims_are_judged_on_the_built_models_against_the_claimed_size():
    from attnrepro.flops import count_macs, count_params
    from attnrepro.models import build_model

    ex = build_model("resnet20", 10, attention="expatt", input_size=16)
    aa = build_model("resnet20", 10, attention="aa", input_size=16)
    rel = 100 * (count_params(ex) - count_params(aa)) / count_params(aa)
    assert rel < 0
    no_runs = pd.DataFrame()
    ok = judge_cost_claim(_cost(effect=round(rel + 0.4, 1)))      # within 0.5 pp
    assert ok["status"] == "consistent" and ok["value"] == pytest.approx(rel)
    assert judge_claim(_cost(effect=round(rel + 0.4, 1)), no_runs)["status"] == "consistent"   # runs play no part
    wrong = judge_cost_claim(_cost(effect=round(rel - 1.0, 1)))   # the right sign, the wrong size
    assert wrong["status"] == "inconsistent" and "> the declared tolerance 0.5 pp" in wrong["why"]
    assert judge_cost_claim(_cost(effect=round(rel - 1.0, 1), tolerance=1.5))["status"] == "consistent"
    # sign only when the paper gives no size
    assert judge_cost_claim(_cost())["status"] == "consistent"
    assert judge_cost_claim(_cost(direction="greater"))["status"] == "inconsistent"
    macs = 100 * (count_macs(ex, 16) - count_macs(aa, 16)) / count_macs(aa, 16)
    m = judge_cost_claim(_cost(metric="macs", effect=round(macs, 1)))
    assert m["status"] == "consistent" and m["value"] == pytest.approx(macs)
    no_mm = judge_cost_claim(_cost(metric="macs", effect=round(macs, 1), convention="no-attention-matmuls"))
    assert no_mm["value"] != pytest.approx(macs)


def test_cost_claims_are_checked():
    with pytest.raises(ValueError, match="tolerance"):
        check_claim(_cost(effect=-5.0, tolerance=None))
    with pytest.raises(ValueError, match="choose one of: fvcore-default"):
        check_claim(_cost(convention="tf"))
    with pytest.raises(ValueError, match="does not have the sign"):
        check_claim(_cost(effect=5.0))
    with pytest.raises(ValueError, match="choose one of: params, macs"):
        check_claim(_cost(metric="val_top1"))
    with pytest.raises(ValueError, match="build"):
        check_claim(_cost(build={"model": "resnet20"}))
    with pytest.raises(ValueError, match="lacks 'compare'"):
        check_claim({k: v for k, v in _claim().items() if k != "compare"})


def test_cost_claims_judge_the_sign_too():
    """A relative difference within the tolerance of the claimed one but of the other sign is inconsistent."""
    from attnrepro.flops import count_params
    from attnrepro.models import build_model

    ex = build_model("resnet20", 10, attention="expatt", input_size=16)
    aa = build_model("resnet20", 10, attention="aa", input_size=16)
    rel = 100 * (count_params(ex) - count_params(aa)) / count_params(aa)
    r = judge_cost_claim(_cost(direction="greater", effect=0.1, tolerance=abs(rel) + 1.0))
    assert rel < 0 and r["status"] == "inconsistent" and "other sign" in r["why"]


def test_package_claims_all_evaluate(runs):
    claims = load_claims()
    assert len(claims["claims"]) >= 8 and "not run" in claims["rule"] and "inconclusive" in claims["rule"]
    assert "tolerance" in claims["rule"] and "paper's own setting" in claims["rule"]
    for c in claims["claims"]:
        if c["kind"] == "accuracy":
            assert set(c["setting"]) >= {"dataset", "placement", "input_size"}, c["id"]
    ev = evaluate_claims(runs)
    assert set(ev.status) <= {"consistent", "inconsistent", "inconclusive", "not run"}
    row = ev.set_index("id").loc["expatt_over_resnet"]
    assert row.variant == "expatt" and row.reference == "none" and "direction only" in row.why
    cost = [c for c in claims["claims"] if c["kind"] == "cost"]
    assert len(cost) == 2
    for c in cost:
        assert c["build"]["model"] == "resnet152" and c["build"]["input_size"] == 224
        assert c["tolerance"] > 0 and len(c["tolerance_why"]) > 100
    empty = evaluate_claims(runs.iloc[0:0]).set_index("id")
    kinds = {c["id"]: c["kind"] for c in claims["claims"]}
    assert all(empty.loc[i, "status"] == "not run" for i, k in kinds.items() if k == "accuracy")
    # cost claims need no runs: judged on ResNet-152 at 224 px whatever the runs hold
    from attnrepro.flops import count_params
    from attnrepro.models import build_model
    p = {a: count_params(build_model("resnet152", 1000, attention=a)) for a in ("expatt", "aa")}
    rel = 100 * (p["expatt"] - p["aa"]) / p["aa"]
    r = empty.loc["expatt_fewer_params_than_aa"]
    assert r.value == pytest.approx(rel) and r.status == ("consistent" if abs(rel + 6.4) <= 1.0 else "inconsistent")
    assert empty.loc["expatt_fewer_macs_than_aa", "status"] in ("consistent", "inconsistent")


def test_plain_controls_beside_the_reference_do_not_make_the_package_claims_ambiguous():
    """A preset may add plain-net variants (controls) to the baseline ablation; the package's claims against the
    plain net name the ablation's reference, so they still match one variant each."""
    runs = pd.concat([baseline(), frame(run_rows("baseline", "ctrl-aa", BASE + NOISE, config={"attention": "none",
                                                                                             "seed_stream": 1}),
                                        run_rows("baseline", "ctrl-narrow", BASE - 1 + NOISE,
                                                 config={"attention": "none", "width": 0.375}))],
                     ignore_index=True)
    ev = evaluate_claims(runs, spec=SPEC).set_index("id")
    assert ev.loc["expatt_over_resnet", "reference"] == "none" and ev.loc["aa_over_resnet50", "reference"] == "none"


def _judged_on(v, r, **kw):
    """``judge_cost_claim`` of a claim whose built variant counts ``v`` and reference ``r`` under the claim's
    convention (the default when it names none); the other conventions count 100 more of each."""
    from attnrepro.analysis import counting
    own = kw.get("convention", "fvcore-default")

    def fake(spec):
        n = v if spec.attention == "expatt" else r
        return {conv: {"params": n + (0 if conv == own else 100), "macs": 10 * n + (0 if conv == own else 100)}
                for conv in counting.CONVENTIONS}
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(counting, "measure", fake)
        return judge_cost_claim(_cost(**kw))


@pytest.mark.parametrize("direction", ["less", "greater"])
def test_a_cost_difference_of_the_claimed_size_but_the_other_sign_is_inconsistent(direction):
    """Measured -5 % against a claimed +5 % (and the reverse), within any tolerance of the magnitude: inconsistent;
    the same magnitude with the claimed sign: consistent."""
    s = -1 if direction == "less" else 1
    effect = 5.0 * s
    wrong = _judged_on(100 - 5 * s, 100, direction=direction, effect=effect, tolerance=0.5)
    assert wrong["value"] == pytest.approx(-effect) and wrong["status"] == "inconsistent"
    assert "= 10.00 pp > the declared tolerance 0.5 pp" in wrong["why"]        # the miss is 10 pp, not 0
    from attnrepro.analysis.claims import CLAIM_COLUMNS
    assert set(wrong) <= set(CLAIM_COLUMNS) and [wrong[k] for k in ("id", "paper", "claim", "reported")] == \
        ["cost", "p", "c", "r"]
    assert wrong["unit"] == "%" and wrong["n_pairs"] == 0 and np.isnan(wrong["low"]) and np.isnan(wrong["high"])
    assert "attention=expatt" in wrong["variant"] and "attention=aa" in wrong["reference"]
    assert wrong["comparison"] == "built: resnet20 at 16 px, attention=expatt vs attention=aa (fvcore-default)"
    right = _judged_on(100 + 5 * s, 100, direction=direction, effect=effect, tolerance=0.5)
    assert right["value"] == pytest.approx(effect) and right["status"] == "consistent"
    # a tolerance wider than the gap between the two signs still does not admit the other sign
    wide = _judged_on(100 - 1 * s, 100, direction=direction, effect=1.0 * s, tolerance=3.0)
    assert wide["status"] == "inconsistent" and "other sign" in wide["why"]
    # sign only (no claimed size)
    only = _judged_on(100 + s, 100, direction=direction)
    word = "lower" if direction == "less" else "higher"
    assert only["status"] == "consistent" and only["why"] == f"params is {word} (no claimed size: sign only)"
    assert _judged_on(100 - s, 100, direction=direction)["status"] == "inconsistent"
    assert _judged_on(100, 100, direction=direction)["status"] == "inconsistent"


@settings(max_examples=80, deadline=None)
@given(v=st.integers(1, 400), r=st.integers(1, 400), direction=st.sampled_from(["less", "greater"]),
       size=st.one_of(st.none(), st.floats(0.1, 200)), inside=st.booleans(), slack=st.floats(0, 5),
       metric=st.sampled_from(["params", "macs"]),
       convention=st.sampled_from(["fvcore-default", "no-attention-matmuls"]))
def test_cost_claim_status_is_the_rule(v, r, direction, size, inside, slack, metric, convention):
    """Consistent exactly when the relative difference has the claimed sign and (with a claimed size) lies within
    the tolerance of it; the value is ``100 (v - r) / r`` of the claim's metric. Half the draws put the measured
    difference inside the tolerance, of either sign."""
    effect = None if size is None else (size if direction == "greater" else -size)
    rel = 100.0 * (v - r) / r
    miss = 0.0 if effect is None else abs(rel - effect)
    tol = miss + slack if inside else max(0.0, miss - slack - 1e-6)
    got = _judged_on(v, r, direction=direction, effect=effect, tolerance=tol, metric=metric, convention=convention)
    assert f"({convention})" in got["comparison"]
    right_sign = rel < 0 if direction == "less" else rel > 0
    ok = right_sign and (effect is None or abs(rel - effect) <= tol)
    assert got["value"] == pytest.approx(rel)
    assert got["status"] == ("consistent" if ok else "inconsistent"), (rel, effect, tol)
    assert f"{v:,} vs {r:,}" in got["measured"] or f"{10 * v:,} vs {10 * r:,}" in got["measured"]

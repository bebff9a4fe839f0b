"""analysis/make_offloading_docs.py on a reduced setting: every policy has its row, the plans
the runs report match the policies, and the byte and energy columns add up."""

import dataclasses

import pytest

from analysis.make_offloading_docs import (
    BEGIN,
    DESIGNER,
    END,
    POLICY,
    QUICK,
    SWEEP_POLICIES,
    claim_check,
    cost_table,
    make,
    metrics_frame,
    numbers,
    plans_by_profile,
    policy_table,
    policy_variants,
    saturation_table,
    without_overselection,
    write_doc,
)

# the --quick setting, with a one-point gateway sweep (12 runs of a few rounds)
SMALL = dataclasses.replace(QUICK, max_rounds=2, ns=(4,))
POLICIES = [
    "local", "full", "split(1)", "split(2)", "split(3)", "split(4)", "fastest", "deadline",
    "energy",
]  # fmt: skip


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    out = tmp_path_factory.mktemp("offloading")
    return out, make(out / "runs", out / "img", SMALL)


def test_variants_cover_every_policy_and_keep_untrusted_devices_local():
    variants = policy_variants(DESIGNER)
    assert list(variants) == POLICIES  # perfit_3nn on digits: 5 layers, k = 1..4
    # the operator edge (index 1, untrusted) keeps both its device groups local under full
    assert "topology.edges.1.devices.0.offload.use=local" in variants["full"]
    assert "topology.edges.1.devices.1.offload.use=local" in variants["full"]
    assert not any("edges.0" in s for s in variants["full"])
    # K = 8 with over-selection 1.25: 10 selected, then all of them are waited for
    assert without_overselection(DESIGNER) == [
        "rounds.over_selection=1.0",
        "rounds.participants=10",
    ]


def test_table_has_every_policy_and_consistent_plans(made):
    _, res = made
    rs = res.policies
    assert len(rs) == len(POLICIES) * SMALL.seeds
    for table in (policy_table(rs, SMALL.target), cost_table(rs, SMALL.target)):
        assert list(table[POLICY]) == POLICIES
        assert not table.isna().any().any()
    trusted = {i for i, e in enumerate(rs.runs[0].scenario["topology"]["edges"]) if e["trusted"]}
    for run in rs.runs:
        policy, r, d = run.params[POLICY], run.rounds, run.device_rounds
        plans = set(d["plan"])
        if policy == "local":
            assert plans == {"local"}
        elif policy == "full":
            full = d[d["plan"] == "full"]
            assert len(full) > 0 and set(full["edge_id"].astype(int)) <= trusted
            assert set(d[~d["edge_id"].astype(int).isin(trusted)]["plan"]) == {"local"}
        elif policy.startswith("split("):
            assert plans == {policy}
        else:
            assert plans <= {"local", "full", *(f"split({k})" for k in range(1, 5))}
        # the run's own counters agree with its device rows
        assert r["offloaded"].sum() == (d["plan"] != "local").sum()
        assert r["participants"].sum() == len(d)
        assert (d["act_bytes_up"] > 0).any() == policy.startswith("split(")
        assert (d[~d["plan"].str.startswith("split")]["act_bytes_up"] == 0).all()
        assert (d[d["plan"] != "full"]["data_bytes_up"] == 0).all()
        assert (d[d["plan"] == "full"]["bytes_up"] == 0).all()  # the edge holds the model
    m = metrics_frame(rs, SMALL.target)
    assert (m["backhaul_up_mb"] >= 0).all() and (m["backhaul_down_mb"] >= 0).all()
    parts = m["energy_compute_j"] + m["energy_radio_j"] + m["energy_idle_j"]
    assert parts.to_numpy() == pytest.approx(m["energy_j"].to_numpy(), rel=1e-9)
    assert ((m["util_home"] >= 0) & (m["util_home"] <= 1 + 1e-9)).all()
    assert (m.loc[m[POLICY] == "local", "util_home"] == 0).all()
    assert (m.loc[m[POLICY] == "full", "util_home"] > 0).all()
    mix = plans_by_profile(rs)
    assert list(mix[POLICY]) == ["fastest", "deadline", "energy"]
    assert {"rpi3b", "rpi4", "phone_mid", "phone_low"} <= set(mix.columns)


def test_sweep_claim_figures_and_doc(made, tmp_path):
    out, res = made
    sat = res.saturation
    assert set(sat[POLICY]) == set(SWEEP_POLICIES)
    assert sorted(sat["n"].unique()) == sorted(SMALL.ns)
    for rec in sat.to_dict("records"):
        if rec[POLICY] != "fastest":
            assert set(rec["plans"]) == {rec[POLICY]}
    assert (sat.loc[sat[POLICY] == "local", "gateway_util"] == 0).all()
    assert len(saturation_table(sat)) == len(SMALL.ns)
    holds, lines = claim_check(res.policies, SMALL.target)
    assert holds in (True, False, None) and lines[0].startswith("seed ")
    for name in ("accuracy_vs_time", "bytes_energy", "gateway_saturation"):
        for ext in ("png", "svg"):
            assert (out / "img" / f"offloading_{name}.{ext}").stat().st_size > 0
    doc = tmp_path / "doc.md"
    doc.write_text(f"# title\n\nintro\n\n{BEGIN}\nSTALE BLOCK\n{END}\n\nreading\n")
    write_doc(doc, numbers(res, SMALL, "python analysis/make_offloading_docs.py --quick", out))
    text = doc.read_text()
    assert text.startswith("# title\n\nintro\n") and text.endswith(f"{END}\n\nreading\n")
    assert "STALE BLOCK" not in text and "Table 1a" in text and "Table 2" in text
    for policy in POLICIES:
        assert f"| {policy} |" in text

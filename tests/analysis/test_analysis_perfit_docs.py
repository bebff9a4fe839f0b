"""analysis/make_perfit_docs.py and its modules (analysis/perfit_*.py) without running a
simulation: the methods, the tables, the model-size arithmetic, the findings and the doc
block (on hand-made runs)."""

import json
from pathlib import Path

import pandas as pd
import pytest

import analysis.perfit_baselines as perfit_baselines
from analysis.docgen import replace_block
from analysis.make_perfit_docs import main
from analysis.perfit_baselines import baseline_runs
from analysis.perfit_doc import BEGIN, END, doc_block, new_doc, scenario_summary
from analysis.perfit_findings import (
    built_params,
    cnn_params,
    fd_findings,
    findings,
    mlp3_params,
    paper_cnn_inputs,
)
from analysis.perfit_methods import (
    BASELINES,
    KEY,
    OTHERS,
    PAPER,
    QUICK,
    Setting,
    federated_variants,
    kind_of,
    method_order,
    model_of,
)
from analysis.perfit_plots import plot_boxplot, plot_rounds
from analysis.perfit_tables import (
    bytes_per_round,
    comm_table,
    convergence_points,
    device_frame,
    fd_comm_table,
    paper_comm_table,
    pct,
    rising_sentence,
    ua_at_rounds,
    ua_stats,
    ua_table,
)
from fedsim.analysis import RunData

ROOT = Path(__file__).resolve().parents[2]


def fake_run(
    method: str,
    seed: int,
    ua: list[float],
    bytes_up: int = 1000,
    params: int = 250,
    every: int = 5,
    rounds: int = 10,
) -> RunData:
    """A finished run of ``method``: its devices' final UA is ``ua`` (an earlier evaluation
    has UA 0.5 on every device), every round a 10-virtual-second round of 2 completed
    devices (and one dropped) moving ``bytes_up`` each way."""
    versions = range(1, rounds + 1)
    table = pd.DataFrame({
        "version": list(versions), "round": [v - 1 for v in versions],
        "round_start_s": [10.0 * (v - 1) for v in versions],
        "virtual_time_s": [10.0 * v for v in versions],
        "bytes_up": 2 * bytes_up, "bytes_down": 3 * bytes_up, "energy_j": 1.0,
        "ua_mean": [
            (sum(ua) / len(ua) if v == rounds else 0.5) if v % every == 0 else float("nan")
            for v in versions
        ],
    })  # fmt: skip
    dev_rounds = pd.DataFrame({
        "round": [r for r in range(rounds) for _ in range(3)],
        "device_id": [d for _ in range(rounds) for d in (0, 1, 2)],
        "status": [s for _ in range(rounds) for s in ("completed", "completed", "dropped")],
        "bytes_up": [b for _ in range(rounds) for b in (bytes_up, bytes_up, 0)],
        "bytes_down": [bytes_up] * (3 * rounds),
    })  # fmt: skip
    early = pd.DataFrame({"version": every, "device_id": range(len(ua)), "accuracy": 0.5})
    final = pd.DataFrame({"version": rounds, "device_id": range(len(ua)), "accuracy": ua})
    meta = {
        "seed": seed,
        "fedsim_version": "0.test",
        "model": {"num_params": params},
        "scenario": {
            "algorithm": {"params": {"lr": 0.05, "local_epochs": 2, "batch_size": 20}},
            "rounds": {"participants": 5},
            "stop": {"max_rounds": rounds},
            "evaluation": {"every": every},
        },
    }
    run_id = f"{method}/seed={seed}"
    return RunData(
        Path("/nonexistent") / run_id,
        run_id,
        meta,
        table,
        dev_rounds,
        pd.concat([early, final], ignore_index=True),
        params={KEY: method},
    )


def baseline_rows(method: str, seed: int, ua: list[float]) -> pd.DataFrame:
    """A centralised method's per-device UA, as :func:`perfit.baseline_runs` returns it."""
    return pd.DataFrame(
        {"method": method, "seed": seed, "device_id": range(len(ua)), "accuracy": ua}
    )


def test_variants_cover_both_models_and_every_scheme():
    variants = federated_variants(("stop.max_rounds=4",))
    labels = [v.label for v in variants]
    assert labels == [
        "FL-3NN", "FTL-3NN", "FTL-3NN (all layers)", "FedPer-3NN",
        "FL-CNN", "FTL-CNN", "FTL-CNN (all layers)", "FedPer-CNN",
        "FD-CNN", "FD-1", "FD-2", "MOCHA",
    ]  # fmt: skip
    assert len({v.folder for v in variants}) == len(variants)
    by = {v.label: v for v in variants}
    assert "algorithm.use=fedavg" in by["FL-3NN"].sets
    assert "model=perfit_cnn" not in by["FL-3NN"].sets
    cnn = by["FedPer-CNN"].sets
    assert "model=perfit_cnn" in cnn and "data.options.features=inertial" in cnn
    assert "algorithm.use=fedper" in cnn and cnn[-1] == "stop.max_rounds=4"
    # all layers: every module with parameters of the model as built here
    assert 'algorithm.params.tune_layers=["0","2","4"]' in by["FTL-3NN (all layers)"].sets
    assert 'algorithm.params.tune_layers=["0","3","6","9","11"]' in by["FTL-CNN (all layers)"].sets
    assert not any("tune_layers" in s for s in by["FTL-CNN"].sets)
    assert [model_of(x) for x in ("FTL-CNN (all layers)", "FL-3NN", "SVM")] == ["CNN", "3NN", ""]
    order = method_order()
    assert order[: len(BASELINES)] == list(BASELINES) and order[-len(OTHERS) :] == list(OTHERS)
    assert set(labels) <= set(order)


def test_quick_is_small():
    assert QUICK.seeds == 1 and QUICK.quick and "stop.max_rounds=4" in QUICK.sets
    assert QUICK.baseline.max_train is not None and Setting().seeds == 3


def test_device_frame_takes_the_last_evaluation_and_the_stats():
    runs = [fake_run("FL-3NN", 1, [0.8, 0.9, 1.0]), fake_run("FL-3NN", 2, [0.6, 0.9, 0.9])]
    frame = device_frame(runs, baseline_rows("SVM", 1, [0.7, 0.7, 0.7]))
    assert list(frame.columns) == ["method", "seed", "device_id", "accuracy"]
    fl = frame[frame["method"] == "FL-3NN"]
    assert len(fl) == 6 and 0.5 not in set(fl["accuracy"])
    stats = ua_stats(frame)
    assert stats["FL-3NN"]["seeds"] == 2
    assert stats["FL-3NN"]["mean"] == pytest.approx(0.85)  # seed means 0.9 and 0.8
    assert stats["FL-3NN"]["std"] == pytest.approx(0.0707107, abs=1e-6)
    assert stats["FL-3NN"]["min"] == pytest.approx(0.7)  # (0.8 + 0.6) / 2
    assert stats["FL-3NN"]["median"] == pytest.approx(0.9)
    assert stats["SVM"]["mean"] == pytest.approx(0.7) and pd.isna(stats["SVM"]["std"])


def test_ua_table_sets_ours_beside_the_paper():
    stats = ua_stats(
        device_frame(
            [fake_run("FL-CNN", 1, [0.8, 0.9]), fake_run("FL-CNN", 2, [0.9, 1.0])],
            baseline_rows("kNN", 1, [0.5, 0.75]),
        )
    )
    table = ua_table(stats, method_order()).set_index("method")
    ours = "mean UA (ours, ± std over seeds)"
    assert table.loc["FL-CNN", ours] == "90.00 ± 7.07 %"
    assert table.loc["FL-CNN", "PerFit (MobiAct)"] == "85.22 %"
    assert table.loc["FL-CNN", "min device UA"] == "85.00 %"
    assert table.loc["kNN", ours] == "62.50 %"  # one seed: no std
    assert table.loc["FTL-3NN", ours] == "not run"
    assert table.loc["FTL-3NN", "PerFit (MobiAct)"] == PAPER["FTL-3NN"] == "95.37 %"
    for name in ("FD-1", "FD-2", "MOCHA"):
        assert table.loc[name, ours] == "not run"
    assert table.loc["FD-CNN", "PerFit (MobiAct)"] == PAPER["FD-CNN"]
    assert table.loc["FD-1", "kind"] == "personalised FL (FD)"
    assert table.loc["MOCHA", "kind"] == "federated MTL"
    assert table.loc["cCNN", "kind"] == "centralised"
    assert table.loc["FedPer-CNN", "kind"] == "personalised FL"
    assert pct(0.95374) == "95.37 %" and pct(float("nan")) == "n/a"


def test_paper_numbers_follow_from_the_text():
    # FTL-3NN 95.37 is 11.12 above FL-3NN; FD-CNN is 5.69 above FL-CNN's 85.22
    assert PAPER["FL-3NN"].startswith(f"{95.37 - 11.12:.2f} %")
    assert PAPER["FD-CNN"].startswith(f"{85.22 + 5.69:.2f} %")


def test_comm_table_measures_bytes_per_device_and_round():
    runs = [
        fake_run("FTL-3NN", 1, [0.9], bytes_up=4000, params=1000),
        fake_run("FTL-3NN", 2, [0.9], bytes_up=4000, params=1000),
        fake_run("FedPer-3NN", 1, [0.9], bytes_up=3600, params=1000),
        fake_run("FL-CNN", 1, [0.9], bytes_up=800, params=200),
    ]
    table = comm_table(runs).set_index("method")
    assert table.loc["FTL-3NN", "up per device per round (B)"] == "4,000"  # dropped rows left out
    assert table.loc["FedPer-3NN", "values (float32)"] == "900"
    assert table.loc["FedPer-3NN", "up vs FTL"] == "0.9000"
    assert table.loc["FL-CNN", "up vs FTL"] == "n/a"  # no FTL-CNN run
    assert table.loc["FTL-3NN", "model parameters"] == "1,000"
    assert table.loc["FL-CNN", "mean round (virtual s)"] == "10.0"
    paper = paper_comm_table()
    fd = paper.iloc[-1]
    assert fd["values per device per round"] == "5,000"
    assert "0.0096 of FTL-3NN" in fd["FD / FTL"] and "0.1484 of FTL-CNN" in fd["FD / FTL"]


def test_model_size_arithmetic_matches_the_built_models():
    assert mlp3_params(1200, 10) == 521_510 == built_params("3NN", (1200,), 10)
    assert mlp3_params(561, 6) == built_params("3NN", (561,), 6)
    assert cnn_params(3, 200, 10) == 33_698 == built_params("CNN", (3, 20, 20), 10)
    assert cnn_params(9, 8 * 32, 6, kernel=3) == built_params("CNN", (9, 128), 6)
    sols = paper_cnn_inputs()
    assert (3, 200) in sols
    assert all(cnn_params(c, f, 10) == 33_698 for c, f in sols)


def test_findings_say_what_agrees():
    stats = {
        "FL-3NN": {"mean": 0.80, "min": 0.60},
        "FTL-3NN": {"mean": 0.90, "min": 0.80},
        "FedPer-3NN": {"mean": 0.75, "min": 0.50},
        "SVM": {"mean": 0.70, "min": 0.5},
        "c3NN": {"mean": 0.85, "min": 0.7},
    }
    text = "\n".join(findings(stats))
    assert "**FTL-3NN above FL-3NN**" in text and "+10.00 points" in text
    lines = {line.split("**")[1]: line for line in findings(stats)}
    assert lines["FTL-3NN above FL-3NN"].endswith(": agrees.")
    assert lines["FedPer-3NN above FL-3NN"].endswith(": does not agree.")
    worst = lines["Personalisation lifts the worst devices (3NN)"]
    assert worst.endswith("agrees for FTL-3NN, not for FedPer-3NN.")
    assert lines["c3NN above SVM, kNN, RF"].endswith(": agrees.")
    assert lines["FL below centralised (3NN)"].endswith("agrees in direction.")
    assert not any("CNN" in key for key in lines)  # nothing measured for the CNN
    stats |= {"kNN": {"mean": 0.9, "min": 0.5}, "FedPer-3NN": {"mean": 0.85, "min": 0.7}}
    lines = {line.split("**")[1]: line for line in findings(stats)}
    assert lines["c3NN above SVM, kNN, RF"].endswith("does not agree: not above kNN.")
    worst = lines["Personalisation lifts the worst devices (3NN)"]
    assert worst.endswith("agrees (every personalised method).")


def test_convergence_points_and_table():
    runs = [fake_run("FL-3NN", 1, [0.9, 1.0], every=5, rounds=40)]
    points = convergence_points(runs, count=5)
    assert points[-1] == 40 and points[0] == 5 and len(points) == 5
    table = ua_at_rounds(runs, [5, 40])
    assert list(table.iloc[0]) == ["FL-3NN", "50.00 %", "95.00 %"]
    # 0.5 at round 35, 0.95 at 40: rising; two seeds far apart at the end: within spread
    assert "FL-3NN (+45.00 points)" in rising_sentence(runs, [35, 40])
    spread = [fake_run("FL-3NN", 1, [0.5]), fake_run("FL-3NN", 2, [1.0])]
    assert "no method gained" in rising_sentence(spread, [5, 10])
    assert rising_sentence(runs, [40]) == ""


def test_boxplot_has_a_box_per_method():
    frame = device_frame(
        [fake_run("FL-CNN", 1, [0.5, 0.9]), fake_run("FTL-CNN", 1, [0.9, 1.0])],
        baseline_rows("cCNN", 1, [0.8, 0.8]),
    )
    fig = plot_boxplot(frame, method_order())
    labels = [t.get_text() for t in fig.axes[0].get_xticklabels()]
    assert labels == ["cCNN", "FL-CNN", "FTL-CNN"]


def test_doc_block_goes_into_a_new_doc(tmp_path):
    runs = [
        fake_run("FL-3NN", 1, [0.8, 0.9], bytes_up=4000, params=1000),
        fake_run("FTL-3NN", 1, [0.9, 1.0], bytes_up=4000, params=1000),
    ]
    doc = tmp_path / "docs" / "perfit.md"
    imgs = {"boxplot": tmp_path / "docs/img/a.png", "rounds": tmp_path / "docs/img/b.png"}
    block = doc_block(
        runs, baseline_rows("RF", 1, [0.7, 0.8]), 12.0, "python x", tmp_path, imgs, doc
    )
    new_doc(doc)
    replace_block(doc, BEGIN, END, block)
    text = doc.read_text()
    assert text.startswith("# PerFit case study") and "python x" in text
    assert "](img/a.png)" in text and "](img/b.png)" in text
    assert "| FTL-3NN | personalised FL | 95.00 % |" in text
    assert "MobiAct is not available here" in text
    assert (
        "not in fedsim yet" not in text and "(521,510 − 400 − 40,100 − 1,010) / 400 = 1,200" in text
    )
    assert "**FTL-3NN above FL-3NN**" in text
    replace_block(doc, BEGIN, END, block)  # idempotent
    assert doc.read_text() == text


def test_baselines_are_cached_per_seed_and_view(tmp_path, monkeypatch):
    calls = []

    def fake_baselines(scenario, options, overrides, progress):
        calls.append((tuple(options.methods), tuple(overrides)))
        return pd.DataFrame({
            "method": [m for m in options.methods for _ in range(2)],
            "device_id": [0, 1] * len(options.methods),
            "test_samples": 160, "accuracy": 0.75,
        })  # fmt: skip

    monkeypatch.setattr(perfit_baselines, "run_baselines", fake_baselines)
    monkeypatch.setattr(perfit_baselines, "SCENARIO", ROOT / "scenarios/quickstart.yaml")
    setting = Setting(seeds=2)
    rows, _ = baseline_runs(tmp_path, setting, say=lambda _s: None)
    assert len(calls) == 4  # two views x two seeds
    assert ("svm", "knn", "rf", "nn") in {c[0] for c in calls} and ("nn",) in {c[0] for c in calls}
    assert set(rows["method"]) == set(BASELINES) and set(rows["seed"]) == {1, 2}
    rows_again, _ = baseline_runs(tmp_path, setting, say=lambda _s: None)
    assert len(calls) == 4  # all from the cache
    pd.testing.assert_frame_equal(rows, rows_again)
    # a cache made before a scenario field existed (here: the device groups' model) is kept
    for meta in tmp_path.glob("baselines/*/key.json"):
        saved = json.loads(meta.read_text())
        for edge in saved["key"]["scenario"]["topology"]["edges"]:
            for group in edge["devices"]:
                assert group.pop("model") is None
        meta.write_text(json.dumps(saved))
    baseline_runs(tmp_path, setting, say=lambda _s: None)
    assert len(calls) == 4
    # other options: run again
    baseline_runs(tmp_path, Setting(seeds=1, baseline=QUICK.baseline), say=lambda _s: None)
    assert len(calls) == 6


def device_models(label: str) -> dict[str, int]:
    """The devices per model that ``label``'s variant gives, as fedsim resolves it."""
    from fedsim.config import load_scenario

    variant = {v.label: v for v in federated_variants()}[label]
    sc = load_scenario(variant.scenario, list(variant.sets))
    counts: dict[str, int] = {}
    for edge in sc.topology.edges:
        for group in edge.devices:
            name = group.model or sc.model
            counts[name] = counts.get(name, 0) + group.count
    return counts


def test_fd_and_mocha_variants_give_perfits_device_models():
    by = {v.label: v for v in federated_variants(("stop.max_rounds=4",))}
    assert by["FD-1"].sets == ("stop.max_rounds=4",)  # fd.yaml as shipped
    assert by["FD-1"].scenario.name == "fd.yaml" and by["MOCHA"].scenario.name == "mocha.yaml"
    assert device_models("FD-1") == {"perfit_cnn": 20, "perfit_3nn": 10}
    assert device_models("FD-2") == {"perfit_3nn": 20, "perfit_cnn": 10}
    assert device_models("FD-CNN") == {"perfit_cnn": 30}
    assert device_models("MOCHA") == {"logreg": 30}
    assert [model_of(m) for m in ("FD-CNN", "FD-1", "FD-2", "MOCHA")] == ["CNN", "", "", ""]
    assert kind_of("FD-2") == "personalised FL (FD)" and kind_of("FTL-3NN") == "personalised FL"


def test_fd_and_mocha_bytes_against_ftl():
    runs = [
        fake_run("FTL-3NN", 1, [0.9], bytes_up=1_062_024, params=265_506),
        fake_run("FTL-CNN", 1, [0.9], bytes_up=146_040, params=36_510),
        fake_run("FD-CNN", 1, [0.9], bytes_up=12_000, params=36_510),
        fake_run("FD-1", 1, [0.9], bytes_up=12_000, params=123),
        fake_run("MOCHA", 1, [0.9], bytes_up=13_488, params=3_372),
    ]
    sent = bytes_per_round(runs)
    assert sent["FD-1"][:2] == (12_000, 12_000) and list(sent)[0] == "FTL-3NN"
    table = comm_table(runs).set_index("method")
    assert table.loc["FD-1", "model parameters"] == "mixed (10 3NN, 20 CNN)"
    assert table.loc["FD-1", "up vs FTL"] == "n/a" and table.loc["MOCHA", "up vs FTL"] == "n/a"
    assert table.loc["FD-CNN", "up vs FTL"] == "0.0822"  # against FTL-CNN
    assert table.loc["FD-CNN", "values (float32)"] == "3,000"
    assert table.loc["MOCHA", "model parameters"] == "3,372"
    fd = fd_comm_table(runs).set_index("method")
    assert list(fd.index) == ["FD-CNN", "FD-1", "MOCHA"]  # FD-2 did not run
    assert fd.loc["FD-1", "up vs FTL-3NN (1,062,024 B)"] == "0.0113 (88.5x fewer)"
    assert fd.loc["FD-1", "up vs FTL-CNN (146,040 B)"] == "0.0822 (12.2x fewer)"
    assert fd.loc["MOCHA", "devices' models"] == "30 logistic regressions"
    assert fd_comm_table(runs[:2]).empty


def test_fd_findings_say_what_agrees():
    stats = {
        "FL-3NN": {"mean": 0.80, "min": 0.50, "max": 0.95},
        "FL-CNN": {"mean": 0.85, "min": 0.55, "max": 1.0},
        "FTL-3NN": {"mean": 0.92, "min": 0.8, "max": 1.0},
        "FTL-CNN": {"mean": 0.95, "min": 0.8, "max": 1.0},
        "FD-CNN": {"mean": 0.91, "min": 0.75, "max": 1.0},
        "FD-1": {"mean": 0.88, "min": 0.7, "max": 1.0},
        "MOCHA": {"mean": 0.83, "min": 0.6, "max": 1.0},
    }
    sent = {
        "FTL-3NN": (1_062_024.0, 0.0, 1.0),
        "FTL-CNN": (146_040.0, 0.0, 1.0),
        "FD-CNN": (12_000.0, 0.0, 1.0),
        "FD-1": (12_000.0, 0.0, 1.0),
    }
    lines = {line.split("**")[1]: line for line in fd_findings(stats, sent)}
    comm = lines["FD's upload orders of magnitude below FTL's"]
    assert "FD-CNN, FD-1 12,000 B (3,000 float32 values)" in comm
    assert "6 class scores per public window here against PerFit's 10" in comm
    assert "0.0113 of FTL-3NN's (1.9 orders of magnitude fewer)" in comm
    assert comm.endswith(": agrees.")
    assert lines["FD-CNN above FL-CNN"].endswith(": agrees.")
    assert "+6.00 points" in lines["FD-CNN above FL-CNN"]
    both = lines["FD-1 above FL-3NN and FL-CNN"]
    assert "88.00 % against FL-3NN 80.00 %, +8.00 points; FL-CNN 85.00 %, +3.00 points" in both
    assert both.endswith(": agrees.")
    assert lines["FD-CNN narrows the spread over devices"].endswith(": agrees.")
    high = lines["Every personalised method above 90 %"]
    assert high.endswith("does not agree: FD-1 not.")
    mocha = lines["MOCHA"]
    assert "82.99" not in mocha and "83.00 %" in mocha and "FL-3NN 80.00 % (+3.00)" in mocha
    assert "primal form with SGD" in mocha
    # FD's upload as large as FTL-CNN's: does not agree; nothing measured: no bullets
    sent["FD-1"] = (146_040.0, 0.0, 1.0)
    lines = {line.split("**")[1]: line for line in fd_findings(stats, sent)}
    assert lines["FD's upload orders of magnitude below FTL's"].endswith("does not agree.")
    assert fd_findings({}, {}) == []


def test_rounds_plot_has_a_panel_for_fd_and_mocha():
    runs = [fake_run("FL-3NN", 1, [0.9]), fake_run("FD-1", 1, [0.8]), fake_run("MOCHA", 1, [0.7])]
    fig = plot_rounds(runs)
    titles = [ax.get_title() for ax in fig.axes]
    assert len(titles) == 3 and titles[2].startswith("FD-1, FD-2 (mixed models), MOCHA")
    labels = {t.get_text() for t in fig.axes[2].get_legend().get_texts()}
    assert labels == {"FD-1", "MOCHA"}
    assert len(plot_rounds(runs[:1]).axes) == 2  # no FD-1, FD-2 or MOCHA: no third panel


def test_scenario_summary_names_each_kind():
    fd = fake_run("FD-1", 1, [0.8])
    fd.meta["scenario"] = {
        "algorithm": {"params": {"lr": 0.02, "local_epochs": 2, "batch_size": 20,
                                 "public_size": 500, "digest_epochs": 1}},
        "data": {"sharing": {"global_size": 1000}},
    }  # fmt: skip
    mocha = fake_run("MOCHA", 1, [0.8])
    mocha.meta["scenario"] = {
        "algorithm": {"params": {"lr": 0.02, "local_epochs": 2, "batch_size": 20,
                                 "lam": 0.1, "weight_decay": 0.001}},
    }  # fmt: skip
    text = scenario_summary([fake_run("FL-3NN", 1, [0.9]), fd, mocha])
    assert text.startswith("FedAvg's devices run SGD at lr 0.05")
    assert "class probabilities on 500 public windows" in text and "the 1,000 class" in text
    assert "λ = 0.1, μ = 0.001" in text
    assert scenario_summary([]) == ""


def test_main_wires_the_flags(tmp_path, monkeypatch):
    import analysis.make_perfit_docs as cli
    from fedsim.analysis import RunSet

    seen = {}

    def fake_variants(variants, out, seeds, key, parallel):
        seen.update(labels=[v.label for v in variants], sets=variants[-1].sets, out=out,
                    seeds=seeds, parallel=parallel)  # fmt: skip
        runs = [fake_run(v.label, 1, [0.8, 0.9], bytes_up=4000) for v in variants]
        return RunSet(runs=runs, grid_keys=[key])

    monkeypatch.setattr(cli, "run_variants", fake_variants)
    monkeypatch.setattr(
        cli, "baseline_runs", lambda out, setting, say: (baseline_rows("SVM", 1, [0.7, 0.8]), 1.0)
    )
    out = tmp_path / "quick"
    assert cli.main(["--quick", "--seeds", "2", "--parallel", "1", "--out", str(out)]) == 0
    assert seen["seeds"] == 2 and seen["parallel"] == 1 and seen["out"] == out
    assert seen["labels"][-4:] == list(OTHERS) and "stop.max_rounds=4" in seen["sets"]
    text = (out / "perfit_case_study.md").read_text()
    assert "--quick --seeds 2" in text and "| FD-1 | personalised FL (FD) | 85.00 % |" in text
    assert (out / "img/perfit_ua_boxplot.png").is_file()
    doc = tmp_path / "other.md"
    assert main(["--quick", "--out", str(out), "--doc", str(doc), "--no-doc"]) == 0
    assert not doc.exists()

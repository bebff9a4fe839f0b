"""analysis/make_perfit_docs.py without running a simulation: the methods, the tables, the
model-size arithmetic, the findings and the doc block (on hand-made runs)."""

from pathlib import Path

import pandas as pd
import pytest

import analysis.make_perfit_docs as perfit
from analysis.docgen import replace_block
from analysis.make_perfit_docs import (
    BASELINES,
    BEGIN,
    END,
    KEY,
    MISSING,
    PAPER,
    QUICK,
    Setting,
    baseline_runs,
    built_params,
    cnn_params,
    comm_table,
    convergence_points,
    device_frame,
    doc_block,
    federated_variants,
    findings,
    method_order,
    mlp3_params,
    model_of,
    new_doc,
    paper_cnn_inputs,
    paper_comm_table,
    pct,
    plot_boxplot,
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
    assert order[: len(BASELINES)] == list(BASELINES) and order[-len(MISSING) :] == list(MISSING)
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
        assert table.loc[name, ours] == "not in fedsim yet"
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
    assert "not in fedsim yet" in text and "(521,510 − 400 − 40,100 − 1,010) / 400 = 1,200" in text
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

    monkeypatch.setattr(perfit, "run_baselines", fake_baselines)
    monkeypatch.setattr(perfit, "SCENARIO", ROOT / "scenarios/quickstart.yaml")
    setting = Setting(seeds=2)
    rows, _ = baseline_runs(tmp_path, setting, say=lambda _s: None)
    assert len(calls) == 4  # two views x two seeds
    assert ("svm", "knn", "rf", "nn") in {c[0] for c in calls} and ("nn",) in {c[0] for c in calls}
    assert set(rows["method"]) == set(BASELINES) and set(rows["seed"]) == {1, 2}
    rows_again, _ = baseline_runs(tmp_path, setting, say=lambda _s: None)
    assert len(calls) == 4  # all from the cache
    pd.testing.assert_frame_equal(rows, rows_again)
    # other options: run again
    baseline_runs(tmp_path, Setting(seeds=1, baseline=QUICK.baseline), say=lambda _s: None)
    assert len(calls) == 6

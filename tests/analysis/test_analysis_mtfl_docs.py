"""analysis/make_mtfl_docs.py without running anything: the paper's numbers, the cells, the
learning rate picked per cell and the table beside the paper (on hand-made runs)."""

from pathlib import Path

import pandas as pd

from analysis.make_mtfl_docs import (
    FIG5,
    LR_GRID,
    PRIVATE,
    QUICK,
    STRATEGIES,
    Cell,
    Setting,
    best_option,
    cell_table,
    fig5_cells,
    fig5_runset,
    fig5_table,
    fmt_rounds,
    paper_value,
    rate_of_c05,
    runnable,
    table_cells,
)
from fedsim.analysis import RunData


def fake_run(ua: list[float], seed: int, target: float = 0.97, name: str = "r") -> RunData:
    """A finished run whose rounds.csv has the given UA per round, one virtual minute each."""
    n = len(ua)
    rounds = pd.DataFrame(
        {"round": range(n), "virtual_time_s": [60.0 * (i + 1) for i in range(n)], "ua_mean": ua}
    )
    meta = {
        "seed": seed,
        "scenario": {"stop": {"target_ua": target, "max_rounds": 300}, "rounds": {}},
    }
    run_id = f"{name}/seed={seed}"
    return RunData(Path(run_id), run_id, meta, rounds, pd.DataFrame(), pd.DataFrame())


def test_paper_numbers_are_the_papers():
    # Table 2, MNIST: FL(FedAvg) W=200 C=0.5 is 99; MTFL(FedAvg, γβ) 29; μσ never (X)
    assert paper_value("table2", "mnist", "fedavg", "none", 200, 0.5) == "99"
    assert paper_value("table2", "mnist", "fedavg", "gamma_beta", 200, 0.5) == "29"
    assert paper_value("table2", "mnist", "fedavg", "mu_sigma", 400, 1.0) == "X"
    assert paper_value("table2", "mnist", "fedavg_adam", "gamma_beta", 400, 1.0) == "9"
    # the text's CIFAR-10 W=400 C=1.0 example: FedAvg 164, (μσγβ) 36, (μσ) 266, (γβ) 30
    cifar = [paper_value("table2", "cifar10", "fedavg", p, 400, 1.0) for p in PRIVATE]
    assert cifar == ["164", "36", "266", "30"]
    # Table 3: the text's CIFAR-10 W=400 C=1.0 example: FL 250, MTFL(γβ) 28
    assert paper_value("table3", "cifar10", "fedavg", "none", 400, 1.0) == "250"
    assert paper_value("table3", "cifar10", "fedavg", "gamma_beta", 400, 1.0) == "28"
    assert paper_value("table3", "mnist", "fedavg", "none", 200, 1.0) == "X"
    assert paper_value("table2", "mnist", "per_fedavg", "none", 200, 0.5) == "–"
    assert paper_value("table2", "mnist", "fedavg", "none", 20, 0.5) == "–"


def test_cells_cover_the_grid_and_quick_takes_two():
    full = table_cells("table2", Setting())
    assert len(full) == len(STRATEGIES) * len(PRIVATE) * 2
    assert all(len(c.options) == len(LR_GRID[c.algorithm]) for c in full)
    assert len({c.name for c in full}) == len(full)
    noisy = table_cells("table3", Setting())
    assert {(c.algorithm, c.private) for c in noisy} == {
        ("fedavg", "none"),
        ("fedavg", "gamma_beta"),
    }
    assert len(fig5_cells(Setting())) == len(FIG5) * 2
    for part in ("table2", "table3"):
        quick = table_cells(part, QUICK)
        assert len(quick) == 2 and all(len(c.options) == 1 for c in quick)
    assert len(fig5_cells(QUICK)) == 2
    sets = dict(s.split("=", 1) for s in full[0].options[0][1])
    assert sets["algorithm.use"] == "fedavg" and sets["topology.edges.0.devices.0.count"] == "100"


def test_missing_algorithms_are_skipped_with_a_warning():
    ok, warnings = runnable(table_cells("table2", Setting()) + fig5_cells(Setting()))
    assert {c.algorithm for c in ok} <= {"fedavg", "fedadam", "fedavg_adam", "per_fedavg", "pfedme"}
    from fedsim.algorithms import BUILTIN_ALGORITHMS

    assert all(c.algorithm in BUILTIN_ALGORITHMS for c in ok)
    for name in {"fedavg_adam", "per_fedavg", "pfedme"} - set(BUILTIN_ALGORITHMS):
        assert any(repr(name) in w and "skipped" in w for w in warnings)


def test_the_rate_with_fewest_misses_then_fewest_rounds_is_shown():
    cell = Cell("table2", "fedavg", "FedAvg", "gamma_beta", 200, 0.5,
                (("lr0.1", ()), ("lr0.3", ())))  # fmt: skip
    slow = [fake_run([0.9] * 9 + [0.97], s) for s in (1, 2, 3)]  # 10 rounds each
    fast = [fake_run([0.9, 0.97], 1), fake_run([0.9] * 3 + [0.98], 2), fake_run([0.9] * 5, 3)]
    by = {(cell.name, "lr0.1"): slow, (cell.name, "lr0.3"): fast}
    table, detail = cell_table("table2", [cell], by, "ua_mean")
    # lr0.3 is faster where it reaches the target, but one seed misses: lr0.1 wins
    row = table.iloc[0]
    assert row["C = 0.5: ours"] == "10 ± 0" and row["C = 0.5: lr"] == "lr0.1"
    assert row["C = 0.5: paper"] == "29"
    assert list(detail["rounds"]) == ["10 ± 0", "3 ± 1 (1/3 X)"]
    assert list(detail["virtual time to target (min)"]) == ["10.0", "3.0"]
    assert list(detail["best"]) == ["◀", ""]
    missing = Cell("table2", "fedavg_adam", "FedAvg-Adam", "none", 200, 0.5, (("lr0.001", ()),))
    table, _ = cell_table("table2", [missing], {}, "ua_mean")
    assert table.iloc[0]["C = 0.5: ours"] == "not run" and table.iloc[0]["C = 0.5: paper"] == "44"


def test_rate_from_c05_keeps_the_rate_that_won_the_same_cell_at_c05():
    options = (("lr0.1", ("rounds.participation=0.5",)), ("lr0.3", ("rounds.participation=0.5",)))
    c05 = Cell("table2", "fedavg", "FedAvg", "gamma_beta", 200, 0.5, options)
    c10 = Cell(
        "table2",
        "fedavg",
        "FedAvg",
        "gamma_beta",
        200,
        1.0,
        (("lr0.1", ("rounds.participation=1.0",)), ("lr0.3", ("rounds.participation=1.0",))),
    )
    other = Cell("table2", "fedavg", "FedAvg", "none", 200, 1.0, c10.options)  # fmt: skip
    slow = [fake_run([0.9] * 9 + [0.97], s) for s in (1, 2, 3)]
    fast = [fake_run([0.9, 0.97], s) for s in (1, 2, 3)]
    by = {(c05.name, "lr0.1"): slow, (c05.name, "lr0.3"): fast}
    kept = rate_of_c05(c10, [c05, c10, other], by, "table2")
    assert kept.options == (c10.options[1],) and kept.c == 1.0
    # no C = 0.5 twin ran: every rate stays
    assert rate_of_c05(other, [c05, c10, other], by, "table2") == other


def test_formats_and_choice_edge_cases():
    assert (
        fmt_rounds({"n": 3, "reached": 0, "mean": float("nan"), "std": float("nan")}) == "X (0/3)"
    )
    assert fmt_rounds({"n": 1, "reached": 1, "mean": 12.0, "std": float("nan")}) == "12"
    assert best_option({}) is None
    stats = {"a": {"n": 2, "reached": 2, "mean": 9.0}, "b": {"n": 2, "reached": 2, "mean": 7.0}}
    assert best_option(stats) == "b"


def test_fig5_table_reads_ua_after_n_rounds():
    cells = [c for c in fig5_cells(Setting()) if c.algorithm == "fedavg" and c.c == 0.5]
    by = {
        (cells[0].name, "paper"): [
            fake_run([0.5 + 0.01 * i for i in range(12)], s) for s in (1, 2)
        ],
        (cells[1].name, "paper"): [fake_run([0.6 + 0.01 * i for i in range(12)], 1, name="m")],
    }
    table = fig5_table(fig5_runset(cells, by))
    assert list(table["scheme"]) == ["FL(FedAvg)", "MTFL(FedAvg, γβ)"]
    assert list(table["UA after 10"]) == ["59.0 % ± 0.0", "69.0 %"]

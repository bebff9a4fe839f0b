"""PerFit's case study (papers/perfit.md, Sec. V): the methods compared, PerFit's numbers.

The federated methods are :class:`~analysis.docgen.Variant` items (a scenario, its
overrides, a sweep folder), the centralised ones :mod:`fedsim.baselines` methods; every
method has a label (``FTL-CNN (all layers)``, ``FD-1``, ``kNN``) that names it in the
tables, the figures and the ``method`` grid key of the runs.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from analysis.docgen import Variant
from fedsim.baselines import BaselineOptions
from fedsim.models import build_model

ROOT = Path(__file__).resolve().parents[1]
SCENARIO = ROOT / "scenarios/perfit/case_study.yaml"
FD_SCENARIO = ROOT / "scenarios/perfit/fd.yaml"
MOCHA_SCENARIO = ROOT / "scenarios/perfit/mocha.yaml"
KEY = "method"  # the grid key run_variants gives every run (its variant's label)

# --------------------------------------------------------------------------- the methods

#: Per model: the overrides of ``scenarios/perfit/case_study.yaml`` (written for the 3NN)
#: and the input it reads.
MODEL_SETS: dict[str, tuple[str, ...]] = {
    "3NN": (),
    "CNN": ("model=perfit_cnn", "data.options.features=inertial"),
}
MODEL_NAME = {"3NN": "perfit_3nn", "CNN": "perfit_cnn"}
MODEL_INPUT = {"3NN": (561,), "CNN": (9, 128)}  # synthetic_har's engineered / inertial views
MODEL_VIEW = {"3NN": "561 engineered features", "CNN": "9 x 128 inertial windows"}
NUM_CLASSES = 6  # synthetic_har's default num_activities

#: Federated schemes on the case study's scenario: label prefix -> (algorithm, extra
#: params as ``--set`` items or the marker ``"all"`` for every layer with parameters).
FEDERATED: dict[str, tuple[str, str]] = {
    "FL": ("fedavg", ""),
    "FTL": ("ftl", ""),
    "FTL (all layers)": ("ftl", "all"),
    "FedPer": ("fedper", ""),
}

#: ``scenarios/perfit/fd.yaml``'s device groups (edge, group): the first group of each
#: edge holds 10 devices, the second 5.
_FD_GROUPS = ((0, 0), (0, 1), (1, 0), (1, 1))


def _fd_models(first: str | None, second: str | None) -> tuple[str, ...]:
    """Return the overrides giving each edge's first group ``first`` and second ``second``."""
    return tuple(
        f"topology.edges.{e}.devices.{g}.model={first if g == 0 else second}" for e, g in _FD_GROUPS
    )


#: Federated distillation and MOCHA: label -> (scenario, overrides, sweep folder, what the
#: devices run). FD-1 is ``fd.yaml`` as shipped (20 devices the CNN, 10 the 3NN); FD-2
#: swaps the groups' models (its header comment); FD-CNN gives every device the CNN.
OTHERS: dict[str, tuple[Path, tuple[str, ...], str, str]] = {
    "FD-CNN": (
        FD_SCENARIO,
        ("model=perfit_cnn", *_fd_models("null", "null")),
        "fd-cnn",
        "30 CNN",
    ),
    "FD-1": (FD_SCENARIO, (), "fd-1", "10 3NN, 20 CNN"),
    "FD-2": (FD_SCENARIO, _fd_models("perfit_3nn", "perfit_cnn"), "fd-2", "20 3NN, 10 CNN"),
    "MOCHA": (MOCHA_SCENARIO, (), "mocha", "30 logistic regressions"),
}

#: The FD methods whose devices run different models.
MIXED = ("FD-1", "FD-2")

#: Centralised baselines: label -> (fedsim.baselines method, model whose data view it reads).
BASELINES: dict[str, tuple[str, str]] = {
    "SVM": ("svm", "3NN"),
    "kNN": ("knn", "3NN"),
    "RF": ("rf", "3NN"),
    "c3NN": ("nn", "3NN"),
    "cCNN": ("nn", "CNN"),
}


def fed_label(scheme: str, model: str) -> str:
    """Return a federated method's label: ``FTL-3NN``, ``FTL-CNN (all layers)``, ..."""
    base, _, rest = scheme.partition(" ")
    return f"{base}-{model}" + (f" {rest}" if rest else "")


def model_of(method: str) -> str:
    """Return the one model a method's devices all run (``FTL-CNN (all layers)``: ``CNN``).

    ``""`` for a centralised method and for FD-1, FD-2 (mixed) and MOCHA (logistic
    regression).
    """
    if "-" not in method:
        return ""
    model = method.split("-", 1)[1].split(" ")[0]
    return model if model in MODEL_SETS else ""


def is_other(method: str) -> bool:
    """Return whether ``method`` is federated distillation or MOCHA (no global model)."""
    return method in OTHERS


def param_layers(model: str) -> list[str]:
    """Return the names of ``model``'s modules that hold parameters (as built here)."""
    net = build_model(MODEL_NAME[model], MODEL_INPUT[model], NUM_CLASSES)
    return [n for n, m in net.named_modules() if n and next(m.parameters(False), None) is not None]


def federated_variants(extra: Sequence[str] = ()) -> list[Variant]:
    """Return every federated method as a :class:`~analysis.docgen.Variant`.

    The case study's schemes (3NN first, then the CNN), then FD-CNN, FD-1, FD-2 and MOCHA;
    ``extra`` overrides are appended to every variant's.
    """
    out = []
    for model, model_sets in MODEL_SETS.items():
        for scheme, (algorithm, params) in FEDERATED.items():
            sets = [*model_sets, f"algorithm.use={algorithm}"]
            if params == "all":
                names = ",".join(f'"{n}"' for n in param_layers(model))
                sets.append(f"algorithm.params.tune_layers=[{names}]")
            folder = fed_label(scheme, model).lower().replace(" (all layers)", "_all")
            out.append(Variant(fed_label(scheme, model), SCENARIO, (*sets, *extra), folder))
    for label, (scenario, other_sets, folder, _) in OTHERS.items():
        out.append(Variant(label, scenario, (*other_sets, *extra), folder))
    return out


def method_order() -> list[str]:
    """Return every method's label in the tables' order (PerFit Fig. 6's, then the rest)."""
    fed = [fed_label(s, m) for s in FEDERATED for m in MODEL_SETS]
    return [*BASELINES, *fed, *OTHERS]


def kind_of(method: str) -> str:
    """Return the kind of method: ``centralised``, ``federated``, ``personalised FL``, ...."""
    if method in BASELINES:
        return "centralised"
    if method == "MOCHA":
        return "federated MTL"
    if method.startswith("FD-"):
        return "personalised FL (FD)"
    return "federated" if method.startswith("FL-") else "personalised FL"


# --------------------------------------------------------------------------- the paper

#: PerFit's numbers for the methods it reports (papers/perfit.md, Sec. V-B; MobiAct, 30
#: users, 10 activities, K = 5, mean over 5 repetitions). The text gives FL-CNN and
#: FTL-3NN; FL-3NN and FD-CNN follow from its differences *if* they are percentage points
#: (the paper does not say); the others are only shown in Figs. 6-8 (no numbers).
PAPER: dict[str, str] = {
    "FL-CNN": "85.22 %",
    "FTL-3NN": "95.37 %",
    "FL-3NN": "84.25 % (95.37 − 11.12)",
    "FD-CNN": "90.91 % (85.22 + 5.69)",
    "FTL-CNN": "> 90 % (Fig. 8)",
    "FD-1": "> 90 % (Fig. 8)",
    "FD-2": "> 90 % (Fig. 8)",
    "cCNN": "≈ FL-CNN (text)",
    "c3NN": "above SVM, kNN, RF (Fig. 6)",
}
#: PerFit's model sizes and FD's payload per device per round (class scores of 500 public
#: samples x 10 classes).
PAPER_PARAMS = {"3NN": 521_510, "CNN": 33_698}
PAPER_FD_VALUES = 500 * 10
PAPER_CLASSES = 10

# --------------------------------------------------------------------------- settings


@dataclass(frozen=True)
class Setting:
    """How much to run."""

    seeds: int = 3
    sets: tuple[str, ...] = ()  # extra --set items for every federated run
    baseline: BaselineOptions = BaselineOptions()
    quick: bool = False


QUICK = Setting(
    seeds=1,
    sets=("stop.max_rounds=4", "evaluation.every=2"),
    baseline=BaselineOptions(epochs=2, rf_trees=10, max_train=2000),
    quick=True,
)

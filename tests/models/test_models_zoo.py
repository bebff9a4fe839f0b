"""Tests of the model zoo and of the measured model description."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from fedsim.errors import InputError
from fedsim.models import MODEL_NAMES, build_model, describe

# (name, input shape, classes, trainable parameters); published counts are marked.
COUNTS = [
    ("mtfl_2nn", (784,), 10, 199_610),  # 157,000 + 400 (BN) + 40,200 + 2,010
    ("fedavg_2nn", (784,), 10, 199_210),  # McMahan et al.'s 2NN: 157,000 + 40,200 + 2,010
    ("mtfl_cnn", (3, 32, 32), 10, 1_204_874),
    ("perfit_3nn", (1200,), 10, 521_510),  # PerFit: "521,510 total parameters"
    ("perfit_3nn", (561,), 6, 265_506),  # UCI-HAR features: 400*561 + 40,100 + 101*6
    ("perfit_cnn", (3, 20, 20), 10, 33_698),  # PerFit: "33,698 total parameters"
    ("perfit_cnn", (3, 23, 23), 10, 33_698),
    ("perfit_cnn", (9, 128), 6, 36_510),  # UCI-HAR raw windows, 1-D convolutions
    ("digits_mlp", (64,), 10, 2_410),
    ("logreg", (64,), 10, 650),
]


@pytest.mark.parametrize(("name", "shape", "classes", "expected"), COUNTS)
def test_parameter_counts(name: str, shape: tuple, classes: int, expected: int) -> None:
    model = build_model(name, shape, classes)
    info = describe(model, name, shape)
    assert info.num_params == expected
    assert info.num_params == sum(p.numel() for p in model.parameters())
    assert sum(layer.params for layer in info.layers) == expected


@pytest.mark.parametrize(("name", "shape", "classes", "expected"), COUNTS)
def test_forward_shape_sequential_and_torch_func(
    name: str, shape: tuple, classes: int, expected: int
) -> None:
    torch.manual_seed(0)
    model = build_model(name, shape, classes)
    assert isinstance(model, nn.Sequential)
    x = torch.randn(4, *shape)
    assert model(x).shape == (4, classes)
    params = {k: v.detach() for k, v in model.named_parameters()}
    buffers = dict(model.named_buffers())
    out = torch.func.functional_call(model, (params, buffers), (x,))
    assert out.shape == (4, classes)


def test_structure_is_deterministic_init_is_callers() -> None:
    torch.manual_seed(1)
    a = build_model("mtfl_2nn", (784,), 10).state_dict()
    torch.manual_seed(1)
    b = build_model("mtfl_2nn", (784,), 10).state_dict()
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_mtfl_2nn_layout() -> None:
    model = build_model("mtfl_2nn", (784,), 10)
    kinds = [type(m).__name__ for m in model]
    assert kinds == ["Linear", "ReLU", "BatchNorm1d", "Linear", "ReLU", "Linear"]


def test_linear_flops_and_activation_sizes() -> None:
    info = describe(build_model("mtfl_2nn", (784,), 10), "mtfl_2nn", (784,))
    linears = [layer for layer in info.layers if layer.kind == "Linear"]
    assert [lay.forward_flops_per_sample for lay in linears] == [
        2 * 784 * 200,
        2 * 200 * 200,
        2 * 200 * 10,
    ]
    assert [layer.name for layer in info.layers] == ["0", "1", "2", "3", "4", "5"]
    assert [layer.output_elements_per_sample for layer in info.layers] == [
        200,
        200,
        200,
        200,
        200,
        10,
    ]
    assert info.forward_flops_per_sample == sum(lay.forward_flops_per_sample for lay in info.layers)


def test_conv_flops() -> None:
    info = describe(build_model("mtfl_cnn", (3, 32, 32), 10), "mtfl_cnn", (3, 32, 32))
    conv1 = info.layers[0]
    assert conv1.kind == "Conv2d"
    assert conv1.output_elements_per_sample == 32 * 30 * 30
    assert conv1.forward_flops_per_sample == 2 * 3 * 9 * 32 * 30 * 30
    flatten = next(layer for layer in info.layers if layer.kind == "Flatten")
    assert flatten.output_elements_per_sample == 2304 and flatten.forward_flops_per_sample == 0


def test_buffers_and_bytes() -> None:
    info = describe(build_model("mtfl_2nn", (784,), 10), "mtfl_2nn", (784,))
    assert info.num_buffers == 400  # running mean and var of BatchNorm1d(200)
    assert info.param_bytes == 4 * (199_610 + 400)  # num_batches_tracked (int64) not sent
    cnn = describe(build_model("mtfl_cnn", (3, 32, 32), 10), "mtfl_cnn", (3, 32, 32))
    assert cnn.num_buffers == 2 * (32 + 64)


def test_describe_restores_mode_and_leaves_bn_stats_alone() -> None:
    model = build_model("mtfl_2nn", (784,), 10)
    model.train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    describe(model, "mtfl_2nn", (784,))
    assert model.training
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_flat_models_flatten_multi_dim_inputs() -> None:
    model = build_model("logreg", (1, 28, 28), 10)
    assert model(torch.zeros(2, 1, 28, 28)).shape == (2, 10)
    info = describe(model, "logreg", (1, 28, 28))
    assert info.num_params == 7850


def test_perfit_cnn_flat_input_is_one_channel_signal() -> None:
    model = build_model("perfit_cnn", (561,), 6)
    assert isinstance(model[0], nn.Unflatten) and isinstance(model[1], nn.Conv1d)
    assert model[1].in_channels == 1
    assert model(torch.zeros(3, 561)).shape == (3, 6)


@pytest.mark.parametrize(
    ("name", "shape", "classes", "fragments"),
    [
        ("mtfl_2nn", (64,), 10, ["mtfl_2nn", "(784,)", "(64,)"]),
        ("mtfl_2nn", (784,), 6, ["mtfl_2nn", "expects 10 classes", "has 6"]),
        ("mtfl_cnn", (784,), 10, ["mtfl_cnn", "(3, 32, 32)", "(784,)"]),
        ("perfit_cnn", (3, 3, 3), 10, ["perfit_cnn", ">= 4"]),
        ("perfit_cnn", (1, 2, 8, 8), 10, ["perfit_cnn", "(C, H, W)"]),
        ("logreg", (64,), 1, ["at least 2 classes"]),
        ("resnet", (64,), 10, ["unknown model", "mtfl_2nn", "logreg"]),
    ],
)
def test_mismatch_errors(name: str, shape: tuple, classes: int, fragments: list) -> None:
    with pytest.raises(InputError) as err:
        build_model(name, shape, classes)
    for fragment in fragments:
        assert fragment in str(err.value)


def test_model_names() -> None:
    assert set(MODEL_NAMES) == {
        "mtfl_2nn",
        "fedavg_2nn",
        "mtfl_cnn",
        "perfit_3nn",
        "perfit_cnn",
        "digits_mlp",
        "logreg",
    }

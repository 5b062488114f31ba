"""ssmc.api.compare: a net against its float reference, onnxruntime, or the numpy engine's integers."""

from __future__ import annotations

import numpy as np
import onnx
import pytest

import ssmc
from ssmc.api import compare
from ssmc.errors import SsmcError
from ssmc.runtime.compare import IntegerComparison, OutputComparison
from tests.builders.onnx_models import build_step_model, random_spec


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    spec = random_spec(0, activation="relu", glu=False, norm=False)
    path = tmp_path_factory.mktemp("compare") / "m.onnx"
    onnx.save(build_step_model(spec), str(path))
    x = np.random.default_rng(2).normal(size=(3, 5, spec.in_features))
    return path, x


def test_the_float_net_matches_onnxruntime_and_itself(model):
    path, x = model
    net = ssmc.compile(path, passes="canonicalize", readout="mean")
    vs_onnx = compare(net, x, against="onnx", engine="float", onnx_model=path)
    assert isinstance(vs_onnx, OutputComparison)
    assert vs_onnx.relative < 1e-5 and vs_onnx.argmax_agreement == 1.0  # the pool is applied to onnx's outputs
    assert compare(net, x, against="float", engine="float").max_abs == 0.0


def test_a_fixed_point_engine_is_compared_with_the_numpy_engine_integer_by_integer(model):
    path, x = model
    net = ssmc.compile(path)
    cmp = compare(net, x, against="numpy", engine="microcode")
    assert isinstance(cmp, IntegerComparison) and cmp.identical and cmp.total_values > 0
    assert compare(net, x, against="float", engine="numpy").max_abs > 0  # quantization is measured, not zero


def test_comparisons_that_cannot_be_made_are_refused_by_name(model):
    path, x = model
    net = ssmc.compile(path, passes="canonicalize")
    with pytest.raises(SsmcError, match="the float engine computes no integers"):
        compare(net, x, against="numpy", engine="float")
    with pytest.raises(SsmcError, match="cannot compare against 'lava'"):
        compare(net, x, against="lava", engine="float")
    with pytest.raises(SsmcError, match="needs the ONNX model"):
        compare(net, x, against="onnx", engine="float")


@pytest.mark.parametrize(
    "call",
    [
        lambda: ssmc.compile(None),
        lambda: ssmc.compile(123),
        lambda: ssmc.load(None),
        lambda: ssmc.load(123),
        lambda: ssmc.compile("examples/digits/digits_s4d_step.onnx", target=5),
    ],
)
def test_a_file_argument_that_is_not_a_file_name_is_a_one_line_error_not_a_type_error(call):
    with pytest.raises(ssmc.SsmcError, match="file name|target JSON file"):
        call()

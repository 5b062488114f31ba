"""The float reference: `run_float` (chunks of tokens, parts of the batch on threads, the compiled s4d
kernel) computes what `FloatEngine.step` defines token by token, up to float64 rounding order."""

from __future__ import annotations

import os
import tempfile

import numpy as np
import onnx
import pytest

from ssmc.frontend import import_onnx
from ssmc.passes import FLOAT_PIPELINE, parse_pipeline, run_pipeline
from ssmc.runtime import float_kernels, float_ref, parallel
from ssmc.runtime.float_ref import FloatEngine, run_float
from tests.builders.onnx_models import build_step_model, random_spec
from tests.builders.ssm_models import SharedSpec, build_shared_model

# measured: at most 1.1e-15 of the output's scale (a chunk's products round in another order than a
# token's); the s4d kernel itself adds nothing on this project's machines (numpy 1.26 with AVX-512)
NOISE = 1e-12


def _graph(model: onnx.ModelProto, readout: str = "none"):
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "m.onnx")
        onnx.save(model, path)
        return import_onnx(path, readout=readout)[0]


def _stepped(graph, x: np.ndarray) -> dict[str, np.ndarray]:
    engine = FloatEngine(graph)
    engine.reset(len(x))
    steps = [engine.step(x[:, t]) for t in range(x.shape[1])]
    return {name: np.stack([s[name] for s in steps], axis=1) for name in steps[0]}


def _graphs():
    """Every op kind the float reference runs: per-channel s4d (continuous), shared-mode s4d (S5, LRU),
    linear, activation, glu, norm, add, pool (mean and sum readouts), and the float pipeline's cpx."""
    for seed, readout in ((0, "mean"), (3, "sum"), (5, "none")):
        yield f"step model {seed}, readout {readout}", _graph(build_step_model(random_spec(seed, norm=True)), readout)
    yield "S5", _graph(build_shared_model(SharedSpec(family="s5", H=6, P=5, n_layers=2)))
    yield "LRU", _graph(build_shared_model(SharedSpec(family="lru", H=5, P=4, n_layers=2)))
    graph = _graph(build_step_model(random_spec(1, n_layers=2)))
    yield "discretized, cpx pairs", run_pipeline(graph, parse_pipeline(FLOAT_PIPELINE), verify_each=False)[0]


GRAPHS = list(_graphs())


@pytest.mark.parametrize("label,graph", GRAPHS, ids=[label for label, _ in GRAPHS])
@pytest.mark.parametrize(
    "kernel,chunk_values,threads",
    [(False, 1 << 20, 1), (True, 1 << 20, 1), (True, 200, 1), (True, 1 << 20, 3), (False, 1, 3)],
    ids=["numpy steps", "kernel", "chunks of a few tokens", "threads", "chunks of 1 token on threads"],
)
def test_run_float_computes_the_step_token_by_token(monkeypatch, label, graph, kernel, chunk_values, threads):
    monkeypatch.setattr(float_ref, "_kernel_pays", lambda state_steps: kernel)
    monkeypatch.setattr(float_ref, "_CHUNK_VALUES", chunk_values)
    monkeypatch.setattr(parallel, "THREAD_SEQUENCES", 1)
    monkeypatch.setattr(parallel, "cores", lambda: threads)
    features = graph.inputs()[0].shape[0]
    x = np.random.default_rng(7).normal(size=(5, 23, features)).astype(np.float32)
    want = _stepped(graph, x)
    got = run_float(graph, x)
    assert got.keys() == want.keys()
    for name in want:
        assert got[name].shape == want[name].shape
        assert np.abs(got[name] - want[name]).max() <= NOISE * np.abs(want[name]).max()


def test_chunks_of_one_token_when_the_work_limit_leaves_no_room_for_more(monkeypatch):
    graph = GRAPHS[0][1]
    x = np.random.default_rng(1).normal(size=(4, 9, graph.inputs()[0].shape[0]))
    engine = FloatEngine(graph)
    assert float_ref._chunk_tokens(engine, 4, 4, 9, room=0) == 1
    assert float_ref._chunk_tokens(engine, 4, 4, 9, room=1 << 40) == 9
    need = float_ref.check_run_size(graph, x.shape, "float reference")  # bytes left over under the default
    used = float_ref.limits.current().work_bytes - need
    monkeypatch.setenv("SSMC_MAX_WORK_BYTES", str(used))  # exactly what a run of 1-token chunks needs
    monkeypatch.setattr(float_ref, "_kernel_pays", lambda state_steps: False)
    assert float_ref.check_run_size(graph, x.shape, "float reference") == 0
    want = _stepped(graph, x)
    np.testing.assert_array_equal(run_float(graph, x)["y"], want["y"])  # 1-token chunks: the step's products


@pytest.mark.parametrize("modes", [1, 3, 4, 7, 32, 64, 65, 200])
def test_the_s4d_kernel_computes_the_numpy_step(modes):
    rng = np.random.default_rng(modes)
    batch, tokens, H = 3, 6, 4
    a_bar = np.exp(-rng.uniform(0, 0.2, (H, modes)) + 1j * rng.uniform(-3, 3, (H, modes)))
    b_bar, c = (rng.normal(size=(H, modes)) + 1j * rng.normal(size=(H, modes)) for _ in range(2))
    d, u = rng.normal(size=H), rng.normal(size=(batch, tokens, H))
    start = rng.normal(size=(batch, H, modes)) + 1j * rng.normal(size=(batch, H, modes))
    x, want = start.copy(), np.empty((batch, tokens, H))
    for t in range(tokens):  # FloatEngine's step of a per-channel s4d op
        x *= a_bar
        x += b_bar * u[:, t, :, None]
        want[:, t] = 2.0 * np.real(np.sum(c * x, axis=-1)) + d * u[:, t]
    state, got = start.copy(), np.empty_like(want)
    float_kernels.s4d_chunk(state, a_bar, b_bar, c, d, u, got)
    assert np.abs(state - x).max() <= NOISE * np.abs(x).max()
    assert np.abs(got - want).max() <= NOISE * np.abs(want).max()


@pytest.mark.parametrize("n", [1, 2, 3, 4, 5, 8, 31, 64, 65, 100, 129, 1000, 1031])
def test_pairwise_sum_adds_in_numpys_order(n):
    # numpy's sum of complex values, real lane: plain additions in a fixed tree, the same on every CPU
    values = np.random.default_rng(n).normal(size=n) * 10.0 ** np.random.default_rng(n + 1).integers(-8, 8, n)
    want = np.sum(values + 1j * np.ones(n)).real
    assert float_kernels.pairwise_sum(np.ascontiguousarray(values), 0, n) == want

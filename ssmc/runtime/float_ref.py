"""Float reference: executes the model-level IR token by token in float64.

It is the yardstick for everything after it: it must match onnxruntime on the
source ONNX, and the fixed-point engines are measured against it. State lives
in the engine (one complex array per `s4d` op, one accumulator per `pool`),
so the IR stays a DAG.
"""

from __future__ import annotations

import numpy as np

from ssmc import limits
from ssmc.data import check_sequences
from ssmc.errors import InputDataError, IRError
from ssmc.ir.activations import activation, gelu, gelu_tanh, sigmoid  # noqa: F401
from ssmc.ir.graph import Graph, Op
from ssmc.ir.ops import with_defaults
from ssmc.ir.ssm import discrete_params, is_dense, state_size


class FloatEngine:
    """Steps a model-level graph one token at a time over a batch."""

    def __init__(self, graph: Graph):
        self.graph = graph
        self.order = graph.ops()
        self._s4d = {op.name: discrete_params(op) for op in self.order if op.kind == "s4d"}
        # parameters as the step uses them, converted once instead of at every token
        self._weight_t = {op.name: op.params["weight"].astype(np.float64).T for op in self.order if op.kind == "linear"}
        self._c = {op.name: op.params["C"].astype(np.complex128) for op in self.order if op.kind == "s4d"}
        self._dense = {op.name for op in self.order if op.kind == "s4d" and is_dense(op)}
        self._a = {
            op.name: op.params["a_re"].astype(np.float64) + 1j * op.params["a_im"].astype(np.float64)
            for op in self.order
            if op.kind == "cpx"
        }
        self.state: dict[str, np.ndarray] = {}
        self.t = 0

    def reset(self, batch: int) -> None:
        self.t = 0
        self.state = {}
        for op in self.order:
            if op.kind == "s4d":
                shape = (state_size(op),) if op.name in self._dense else op.params["C"].shape
                self.state[op.name] = np.zeros((batch,) + shape, dtype=np.complex128)
            elif op.kind == "cpx":
                self.state[op.name] = np.zeros((batch, op.attrs["modes"]), dtype=np.complex128)
            elif op.kind == "pool":
                self.state[op.name] = np.zeros((batch,) + op.shape, dtype=np.float64)

    def step(self, x_t: np.ndarray) -> dict[str, np.ndarray]:
        """Advance one token; x_t is [batch, features]. Returns each output's value."""
        values = self.step_all(x_t)
        return {op.name: values[op.name] for op in self.order if op.kind == "output"}

    def step_all(self, x_t: np.ndarray, given: dict[str, np.ndarray] | None = None) -> dict[str, np.ndarray]:
        """Advance one token and return every op's value. `given`: op name -> the value its readers
        see this token instead of the op's own (ssmc.runtime.trace feeds ops the fixed-point values)."""
        values: dict[str, np.ndarray] = {}
        given = given or {}
        for op in self.order:
            ins = [given[s] if s in given else values[s] for s in op.inputs]
            values[op.name] = self._eval(op, ins, x_t)
        self.t += 1
        return values

    def _eval(self, op: Op, ins: list[np.ndarray], x_t: np.ndarray) -> np.ndarray:
        k = op.kind
        if k == "input":
            return x_t.astype(np.float64)
        if k == "output":
            return ins[0]
        if k == "linear":
            y = ins[0] @ self._weight_t[op.name]
            if "bias" in op.params:
                y = y + op.params["bias"]
            return y
        if k == "s4d":
            A_bar, B_bar = self._s4d[op.name]
            x = self.state[op.name]  # updated in place: the same products and sums, without new arrays
            if op.name in self._dense:  # P modes shared by all channels
                x *= A_bar
                x += ins[0] @ B_bar.T
                return 2.0 * np.real(x @ self._c[op.name].T) + op.params["D"] * ins[0]
            x *= A_bar
            x += B_bar * ins[0][..., None]
            return 2.0 * np.real(np.sum(self._c[op.name] * x, axis=-1)) + op.params["D"] * ins[0]
        if k == "cpx":
            drive = ins[0][..., 0::2] + 1j * ins[0][..., 1::2]
            x = self.state[op.name] = self._a[op.name] * self.state[op.name] + drive
            out = np.empty(x.shape[:-1] + (2 * x.shape[-1],))
            out[..., 0::2], out[..., 1::2] = x.real, x.imag
            return out
        if k == "activation":
            return activation(op.attrs["fn"], ins[0])
        if k == "add":
            return ins[0] + ins[1]
        if k == "norm":
            eps = with_defaults(op)["eps"]
            mu = ins[0].mean(axis=-1, keepdims=True)
            var = ((ins[0] - mu) ** 2).mean(axis=-1, keepdims=True)
            return (ins[0] - mu) / np.sqrt(var + eps) * op.params["weight"] + op.params["bias"]
        if k == "pool":
            self.state[op.name], y = pool_step(self.state[op.name], ins[0], self.t, op.attrs["mode"])
            return y
        raise IRError(f"the float reference cannot execute %{op.name} ({k})")


def pool_step(acc: np.ndarray, x_t: np.ndarray, t: int, mode: str) -> tuple[np.ndarray, np.ndarray]:
    """The `pool` op at token t (from 0): (new running sum, output: the sum, or the mean over t + 1 tokens)."""
    acc = acc + x_t
    return acc, (acc / (t + 1) if mode == "mean" else acc.copy())


def running_pool(y: np.ndarray, mode: str) -> np.ndarray:
    """The `pool` op over whole sequences y [batch, time, ...] (what --readout appends), token by token."""
    acc, out = np.zeros_like(y[:, 0], dtype=np.float64), np.empty(y.shape, np.float64)
    for t in range(y.shape[1]):
        acc, out[:, t] = pool_step(acc, y[:, t], t, mode)
    return out


def check_run_size(graph: Graph, x_shape: tuple, engine: str, fix: str | None = None) -> None:
    """Refuse a run whose per-step values and outputs over the whole batch would exceed the work limit."""
    batch, tokens = x_shape[0], x_shape[1]
    values = sum(int(np.prod(op.shape)) for op in graph.ops())  # every op's value at one step
    states = sum(state_size(op) for op in graph.ops() if op.kind == "s4d")
    outs = sum(int(np.prod(op.shape)) for op in graph.outputs())
    per_seq = 8 * (3 * values + 2 * states + 2 * tokens * outs + tokens * x_shape[2])
    fit = max(limits.current().work_bytes // max(per_seq, 1), 1)
    limits.check(
        "work_bytes",
        batch * per_seq,
        f"running {batch} sequences of {tokens} tokens on the {engine} ({limits.size(per_seq)} each)",
        fix=fix or f"run at most {fit} sequences at a time (ssmc run --limit N, or split the input)",
    )


def run_float(graph: Graph, x: np.ndarray) -> dict[str, np.ndarray]:
    """Run `graph` over whole sequences x [batch, time, features].

    Returns {output name: [batch, time, size]} in float64, from zero state.
    """
    inputs = graph.inputs()
    if len(inputs) != 1:
        raise InputDataError(f"the float reference runs graphs with one input, this one has {len(inputs)}")
    x = check_sequences(x, inputs[0].shape[0])
    check_run_size(graph, x.shape, "float reference")
    engine = FloatEngine(graph)
    engine.reset(x.shape[0])
    steps = [engine.step(x[:, t, :]) for t in range(x.shape[1])]
    return {name: np.stack([s[name] for s in steps], axis=1) for name in steps[0]} if steps else {}

"""Float reference: executes the model-level IR token by token in float64.

It is the yardstick for everything after it: it must match onnxruntime on the
source ONNX, and the fixed-point engines are measured against it. State lives
in the engine (one complex array per `s4d` op, one accumulator per `pool`),
so the IR stays a DAG.

`FloatEngine.step` defines it, one token at a time. `run_float` computes the
same numbers faster: it runs a chunk of tokens at a time (`run_chunk`), each op
over the whole chunk in one call -- a linear one product over all its tokens, a
per-channel `s4d` op one compiled kernel (ssmc.runtime.float_kernels, the
numpy step's own floating-point operations in its order) that keeps each
channel's modes in cache across the chunk -- and splits a large batch over the
cores (sequences are independent). The kernel equals the numpy step bit for
bit on this project's machines (numpy 1.26, AVX-512); a product over a chunk's
rows may add in another order than a token's (BLAS blocking): outputs differ
from the step's in the last bits (at most 4.4e-16 of the output scale on every
shipped model's test set, argmax never).
"""

from __future__ import annotations

import copy
import sys

import numpy as np

from ssmc import limits
from ssmc.data import check_sequences
from ssmc.errors import InputDataError, IRError
from ssmc.ir.activations import activation, gelu, gelu_tanh, sigmoid  # noqa: F401
from ssmc.ir.graph import Graph, Op
from ssmc.ir.ops import with_defaults
from ssmc.ir.ssm import discrete_params, is_dense, state_size
from ssmc.runtime.parallel import batch_parts, one_blas_thread, run_parts


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
        # a chunk drops each op's values after its last reader: index in self.order -> names
        last_read = {name: i for i, op in enumerate(self.order) for name in op.inputs}
        self._drop_after: dict[int, list[str]] = {}
        for op in self.order:
            if op.kind != "output" and op.name in last_read:
                self._drop_after.setdefault(last_read[op.name], []).append(op.name)
        self.kernel = False  # run per-channel s4d ops through ssmc.runtime.float_kernels (run_float decides)

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
            return self._cpx_step(op.name, ins[0][..., 0::2] + 1j * ins[0][..., 1::2])
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

    def _cpx_step(self, name: str, drive: np.ndarray) -> np.ndarray:
        x = self.state[name] = self._a[name] * self.state[name] + drive
        out = np.empty(x.shape[:-1] + (2 * x.shape[-1],))
        out[..., 0::2], out[..., 1::2] = x.real, x.imag
        return out

    def run_chunk(self, x: np.ndarray) -> dict[str, np.ndarray]:
        """Advance n tokens at once, x [batch, n, features]; each output's values [batch, n, size]. What n
        calls of `step` compute, up to rounding order (see the module doc): each op runs over the whole
        chunk, a stateful one token by token inside its call."""
        values: dict[str, np.ndarray] = {}
        for i, op in enumerate(self.order):
            values[op.name] = self._eval_chunk(op, [values[s] for s in op.inputs], x)
            for name in self._drop_after.get(i, ()):
                del values[name]
        self.t += x.shape[1]
        return {op.name: values[op.name] for op in self.order if op.kind == "output"}

    def _eval_chunk(self, op: Op, ins: list[np.ndarray], x: np.ndarray) -> np.ndarray:
        k, n = op.kind, x.shape[1]
        if k == "linear":  # one product over the chunk's tokens: [batch * n, in] @ [in, out]
            u = ins[0]
            y = (u.reshape(-1, u.shape[-1]) @ self._weight_t[op.name]).reshape(u.shape[:-1] + (-1,))
            if "bias" in op.params:
                y = y + op.params["bias"]
            return y
        if k == "s4d" and op.name in self._dense:  # input and output maps one product each over the chunk
            A_bar, B_bar = self._s4d[op.name]
            u, x_op = ins[0], self.state[op.name]
            drive = (u.reshape(-1, u.shape[-1]) @ B_bar.T).reshape(u.shape[:-1] + (-1,))
            for t in range(n):  # the states of the chunk, in place of its drive
                x_op *= A_bar
                x_op += drive[:, t]
                drive[:, t] = x_op
            read = (drive.reshape(-1, drive.shape[-1]) @ self._c[op.name].T).reshape(u.shape[:-1] + (-1,))
            return 2.0 * np.real(read) + op.params["D"] * u
        if k == "s4d" and self.kernel:
            from ssmc.runtime import float_kernels  # imports numba: only runs that pay for it

            y = np.empty(ins[0].shape)
            # C-ordered arrays (copies only where they are not): numba compiles once per array layout
            a_bar, b_bar, c = (np.ascontiguousarray(p) for p in (*self._s4d[op.name], self._c[op.name]))
            d = np.ascontiguousarray(op.params["D"], dtype=np.float64)
            u = np.ascontiguousarray(ins[0], dtype=np.float64)
            float_kernels.s4d_chunk(self.state[op.name], a_bar, b_bar, c, d, u, y)
            return y
        if k == "s4d":
            return np.stack([self._eval(op, [ins[0][:, t]], x[:, t]) for t in range(n)], axis=1)
        if k == "cpx":
            drive = ins[0][..., 0::2] + 1j * ins[0][..., 1::2]
            return np.stack([self._cpx_step(op.name, drive[:, t]) for t in range(n)], axis=1)
        if k == "pool":
            out = np.empty(ins[0].shape)
            for t in range(n):
                self.state[op.name], out[:, t] = pool_step(
                    self.state[op.name], ins[0][:, t], self.t + t, op.attrs["mode"]
                )
            return out
        return self._eval(op, ins, x)  # stateless and elementwise or per token: the same call over the chunk


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


def check_run_size(graph: Graph, x_shape: tuple, engine: str, fix: str | None = None) -> int:
    """Refuse a run whose per-step values and outputs over the whole batch would exceed the work limit.
    Returns the bytes the limit leaves over: run_float's chunks of tokens take at most that."""
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
    return limits.current().work_bytes - batch * per_seq


_CHUNK_VALUES = 1 << 20  # values a part's chunk holds at most (8 MiB): they mostly stay in cache
# state-steps (batch x tokens x per-channel s4d states) from which a run loads the compiled s4d kernel,
# unless it is loaded already: loading costs ~0.65 s of CPU once per process (importing numba ~0.3 s,
# the cached kernel ~0.33 s), the numpy step ~6-13 ns a state-step and the kernel ~1.6-2.8 ns (measured
# at the paper size, batch 64 and 1), so it pays for itself from about 2^26 state-steps in one run
_KERNEL_STATE_STEPS = 1 << 26


@one_blas_thread  # a chunk's products are small, and parts of the batch already use every core
def run_float(graph: Graph, x: np.ndarray) -> dict[str, np.ndarray]:
    """Run `graph` over whole sequences x [batch, time, features].

    Returns {output name: [batch, time, size]} in float64, from zero state: the values of FloatEngine.step
    token by token, computed in chunks of tokens (FloatEngine.run_chunk) and, for a large batch, in
    parts of the batch on the cores at once.
    """
    inputs = graph.inputs()
    if len(inputs) != 1:
        raise InputDataError(f"the float reference runs graphs with one input, this one has {len(inputs)}")
    x = check_sequences(x, inputs[0].shape[0])
    room = check_run_size(graph, x.shape, "float reference")
    batch, tokens = x.shape[0], x.shape[1]
    if not tokens:
        return {}
    engine = FloatEngine(graph)
    channel_states = sum(state_size(op) for op in engine.order if op.kind == "s4d" and op.name not in engine._dense)
    engine.kernel = _kernel_pays(batch * tokens * channel_states)
    parts = batch_parts(batch)
    chunk = _chunk_tokens(engine, -(-batch // len(parts)), batch, tokens, room)
    outs = {op.name: np.empty((batch, tokens) + tuple(op.shape)) for op in graph.outputs()}

    def run_part(rows: slice) -> None:
        part = copy.copy(engine)  # shares the prepared parameters, its own state (reset makes new arrays)
        part.reset(rows.stop - rows.start)
        for t0 in range(0, tokens, chunk):
            for name, v in part.run_chunk(x[rows, t0 : t0 + chunk]).items():
                outs[name][rows, t0 : t0 + chunk] = v

    run_parts(run_part, parts)
    return outs


def _chunk_tokens(engine: FloatEngine, part: int, batch: int, tokens: int, room: int) -> int:
    """Tokens a chunk runs: as many as keep a part of `part` sequences' chunk values (every op's value, a
    dense s4d op's drive and states twice over for its products' temporaries) within _CHUNK_VALUES and
    the whole batch's within the `room` (bytes) the work limit leaves over; at least 1."""
    per_token = sum(int(np.prod(op.shape)) for op in engine.order) + sum(
        4 * state_size(op) for op in engine.order if op.kind == "s4d" and op.name in engine._dense
    )
    return max(1, min(tokens, _CHUNK_VALUES // max(part * per_token, 1), room // max(8 * batch * per_token, 1)))


def _kernel_pays(state_steps: int) -> bool:
    return "ssmc.runtime.float_kernels" in sys.modules or state_steps >= _KERNEL_STATE_STEPS

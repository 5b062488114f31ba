"""Fixed-point process models (CPU, LoihiProtocol) of the processes in processes.py.

Each implements docs/fixed_point.md on int64 numpy arrays, written from the
contract (it shares no code with the numpy engine, which it is tested against).
Per Lava time step a model receives first and sends last; a synapse model sends
the output of step t (from messages it received `delay` steps ago) before it
receives the message of step t, which is the contract's delay >= 1.
"""

from __future__ import annotations

import sys
import traceback

import numpy as np
import scipy.sparse

from lava.magma.core.decorator import implements, requires, tag
from lava.magma.core.model.py.model import PyLoihiProcessModel
from lava.magma.core.model.py.ports import PyInPort, PyOutPort
from lava.magma.core.model.py.type import LavaPyType
from lava.magma.core.resources import CPU
from lava.magma.core.sync.protocols.loihi_protocol import LoihiProtocol

from ssmc.ir.fixed_point import ACC_BITS, rshr, sat
from ssmc.backend_loihi.lava_procs.processes import (
    Cpx,
    Integrator,
    Lut,
    Product,
    Relay,
    Relu,
    Source,
    SparseSynapses,
    Synapses,
)

ACCUMULATOR, STATE, MESSAGE = 0, 1, 2  # rows of `counts`


def _sat(v: np.ndarray, bits: int) -> tuple[np.ndarray, int]:
    """sat(v, bits) as a new array (a model's message must not alias its state) and how many values it changed."""
    out = sat(v, bits)
    return out, int(np.count_nonzero(out != v))


def _failed(model, size: int) -> np.ndarray:
    """After an exception in a step: note the time step and print the traceback; the model
    sends zeros from then on. (Lava 0.10 waits forever when a model raises: this keeps the
    run going, and the host reports the failure after it.)"""
    model.failed[0] = model.time_step
    print(
        f"ssmc: Lava process model {type(model).__name__} failed at time step {model.time_step}:\n"
        + traceback.format_exc(),
        file=sys.stderr,
        flush=True,
    )
    return np.zeros(size, np.int64)


class _NeuronModel(PyLoihiProcessModel):
    """One step of a neuron group: timing, dendrite, sigma-delta, counting and recording;
    `value(a)` is the kind's dense message before its msg_bits sat."""

    s_out: PyOutPort = LavaPyType(PyOutPort.VEC_DENSE, np.int64)
    bias: np.ndarray = LavaPyType(np.ndarray, np.int64)
    counts: np.ndarray = LavaPyType(np.ndarray, np.int64)
    zeros: np.ndarray = LavaPyType(np.ndarray, np.int64)
    last: np.ndarray = LavaPyType(np.ndarray, np.int64)
    messages: np.ndarray = LavaPyType(np.ndarray, np.int64)
    lasts: np.ndarray = LavaPyType(np.ndarray, np.int64)
    failed: np.ndarray = LavaPyType(np.ndarray, np.int64)

    def run_spk(self) -> None:
        a = self.receive()  # every step: the channels must be drained even while idle
        m = np.zeros(self.proc_params["size"], np.int64)
        if not self.failed[0]:
            try:
                m = self.step(a)
            except Exception:
                m = _failed(self, self.proc_params["size"])
        self.s_out.send(m)

    def step(self, a) -> np.ndarray:
        """The message of this time step."""
        p = self.proc_params
        step = self.time_step - 1
        t, b = step % p["period"], step // p["period"]
        if t == 0:
            self.reset()
        if not p["depth"] <= t < p["steps"]:  # idle before its depth and in the tail
            return np.zeros(p["size"], np.int64)
        m = self.message(a, t, b)
        if p["delta"]:
            d, n = _sat(m - self.last, p["msg_bits"])
            self.counts[MESSAGE] += n
            m = np.where(np.abs(d) >= p["delta"], d, 0)
            self.last += m
        if t - p["depth"] < p["tokens"]:
            self.zeros[0] += int(np.count_nonzero(m == 0))
        if p["record"]:
            row = b * p["steps"] + t
            self.messages[row] = m
            if p["delta"]:
                self.lasts[row] = self.last
            if hasattr(self, "states"):
                self.states[row] = self.state
        return m

    def reset(self) -> None:
        self.last[:] = 0
        if hasattr(self, "state"):
            self.state[:] = 0

    def receive(self):
        return self.a_in.recv()

    def dendrite(self, a: np.ndarray) -> np.ndarray:
        """sat(sum of synapse outputs + bias, 32), its clips counted."""
        if self.proc_params["has_bias"]:
            a = a + self.bias
        a, n = _sat(a, ACC_BITS)
        self.counts[ACCUMULATOR] += n
        return a

    def message(self, a: np.ndarray, t: int, b: int) -> np.ndarray:
        m, n = _sat(self.value(self.dendrite(a)), self.proc_params["msg_bits"])
        self.counts[MESSAGE] += n
        return m

    def value(self, a: np.ndarray) -> np.ndarray:
        raise NotImplementedError


@implements(proc=Source, protocol=LoihiProtocol)
@requires(CPU)
@tag("fixed_pt")
class PySourceModel(_NeuronModel):
    tokens_in: np.ndarray = LavaPyType(np.ndarray, np.int64)

    def receive(self):
        return None

    def message(self, a, t: int, b: int) -> np.ndarray:
        # The host quantized the tokens (and counts what that clipped); after the last token: 0.
        tokens = self.proc_params["tokens"]
        if t >= tokens:
            return np.zeros(self.proc_params["size"], np.int64)
        return self.tokens_in[b * tokens + t].copy()


@implements(proc=Relay, protocol=LoihiProtocol)
@requires(CPU)
@tag("fixed_pt")
class PyRelayModel(_NeuronModel):
    a_in: PyInPort = LavaPyType(PyInPort.VEC_DENSE, np.int64)

    def value(self, a):
        return a


@implements(proc=Relu, protocol=LoihiProtocol)
@requires(CPU)
@tag("fixed_pt")
class PyReluModel(_NeuronModel):
    a_in: PyInPort = LavaPyType(PyInPort.VEC_DENSE, np.int64)

    def value(self, a):
        return np.maximum(a, 0)


class _StatefulModel(_NeuronModel):
    """A neuron with a saturating state that its message reads (integrator, cpx)."""

    a_in: PyInPort = LavaPyType(PyInPort.VEC_DENSE, np.int64)
    state: np.ndarray = LavaPyType(np.ndarray, np.int64)
    states: np.ndarray = LavaPyType(np.ndarray, np.int64)

    def settle(self, new: np.ndarray) -> np.ndarray:
        """Store `new` saturated to state_bits (counting what saturates); the value is the state shifted out."""
        self.state[:], n = _sat(new, self.proc_params["state_bits"])
        self.counts[STATE] += n
        return rshr(self.state, self.proc_params["out_shift"])


@implements(proc=Integrator, protocol=LoihiProtocol)
@requires(CPU)
@tag("fixed_pt")
class PyIntegratorModel(_StatefulModel):
    def value(self, a):
        return self.settle(self.state + a)


@implements(proc=Cpx, protocol=LoihiProtocol)
@requires(CPU)
@tag("fixed_pt")
class PyCpxModel(_StatefulModel):
    c_re: np.ndarray = LavaPyType(np.ndarray, np.int64)
    c_im: np.ndarray = LavaPyType(np.ndarray, np.int64)

    def value(self, a):
        f = self.proc_params["coef_bits"] - 1
        xr, xi = self.state[0::2], self.state[1::2]
        new = np.empty_like(self.state)
        # both products in 64 bits, one rounding per component, then the input
        new[0::2] = rshr(self.c_re * xr - self.c_im * xi, f) + a[0::2]
        new[1::2] = rshr(self.c_re * xi + self.c_im * xr, f) + a[1::2]
        return self.settle(new)


@implements(proc=Lut, protocol=LoihiProtocol)
@requires(CPU)
@tag("fixed_pt")
class PyLutModel(_NeuronModel):
    a_in: PyInPort = LavaPyType(PyInPort.VEC_DENSE, np.int64)
    table: np.ndarray = LavaPyType(np.ndarray, np.int64)

    def message(self, a, t: int, b: int) -> np.ndarray:
        i = (self.dendrite(a) >> self.proc_params["lut_shift"]) - self.proc_params["lut_lo"]
        top = len(self.table) - 1
        self.counts[MESSAGE] += int(np.count_nonzero((i < 0) | (i > top)))  # a clipped index saturates
        return self.table[np.clip(i, 0, top)]  # table values lie inside msg_bits


@implements(proc=Product, protocol=LoihiProtocol)
@requires(CPU)
@tag("fixed_pt")
class PyProductModel(_NeuronModel):
    a0_in: PyInPort = LavaPyType(PyInPort.VEC_DENSE, np.int64)
    a1_in: PyInPort = LavaPyType(PyInPort.VEC_DENSE, np.int64)

    def receive(self):
        return self.a0_in.recv(), self.a1_in.recv()

    def message(self, a, t: int, b: int) -> np.ndarray:
        a0, a1 = a
        if self.proc_params["has_bias"]:  # the bias goes to the first operand only
            a0, n = _sat(a0 + self.bias, ACC_BITS)
            self.counts[ACCUMULATOR] += n
        m, n = _sat(rshr(a0 * a1, self.proc_params["out_shift"]), self.proc_params["msg_bits"])
        self.counts[MESSAGE] += n
        return m


class _SynapsesModel(PyLoihiProcessModel):
    s_in: PyInPort = LavaPyType(PyInPort.VEC_DENSE, np.int64)
    a_out: PyOutPort = LavaPyType(PyOutPort.VEC_DENSE, np.int64)
    counts: np.ndarray = LavaPyType(np.ndarray, np.int64)
    failed: np.ndarray = LavaPyType(np.ndarray, np.int64)

    def __init__(self, proc_params) -> None:
        super().__init__(proc_params)
        self.ring = None  # ring[t % delay]: the message received at step t - delay
        self.sigma = None

    def run_spk(self) -> None:
        out = np.zeros(self.weights.shape[0], np.int64)
        if not self.failed[0]:
            try:
                out = self.step()
            except Exception:
                out = _failed(self, self.weights.shape[0])
        self.a_out.send(out)
        m = self.s_in.recv()
        if not self.failed[0]:
            self.ring[(self.time_step - 1) % self.proc_params["period"] % self.proc_params["delay"]] = m

    def step(self) -> np.ndarray:
        """The output of this time step, from the message received `delay` steps ago."""
        p = self.proc_params
        t = (self.time_step - 1) % p["period"]
        if t == 0 or self.ring is None:  # a new sequence: nothing received yet
            self.ring = np.zeros((p["delay"], self.weights.shape[1]), np.int64)
            self.sigma = np.zeros(self.weights.shape[0], np.int64)
        acc = self.weights @ self.ring[t % p["delay"]]
        if p["sigma"]:  # the pre group sends changes: sum them before the shift
            self.sigma += acc
            acc = self.sigma.copy()
        e = p["weight_exp"]
        if e > 0:
            # any |acc| > 2^30 saturates once shifted left by >= 1: clip first so int64 cannot overflow
            acc = np.clip(acc, -(1 << 30) - 1, (1 << 30) + 1) << min(e, 32)
        else:
            acc = acc >> min(-e, 63)
        out, n = _sat(acc, ACC_BITS)
        if p["wake"] <= t < p["steps"]:  # clips count while the post group is awake
            self.counts[0] += n
        return out


@implements(proc=Synapses, protocol=LoihiProtocol)
@requires(CPU)
@tag("fixed_pt")
class PySynapsesModel(_SynapsesModel):
    weights: np.ndarray = LavaPyType(np.ndarray, np.int64)


@implements(proc=SparseSynapses, protocol=LoihiProtocol)
@requires(CPU)
@tag("fixed_pt")
class PySparseSynapsesModel(_SynapsesModel):
    # W @ m over the non-zeros only (scipy, int64): the same sums as the dense product
    weights: scipy.sparse.csr_matrix = LavaPyType(scipy.sparse.csr_matrix, np.int64)

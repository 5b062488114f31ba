"""Lava processes for the neuron kinds of the neuro-level IR and for saturating synapses.

A process runs a whole batch of sequences back to back: sequence b occupies
the time steps [b * period, (b + 1) * period), and inside it the local step
t = (time_step - 1) % period is the contract's step t. A group is idle (sends
0, keeps its state at 0) before its depth and from `steps` on; `period` leaves
at least max-delay idle steps at the end, so every synapse buffer is empty
when the next sequence starts, and every state is reset at t = 0.

Scalars travel as process parameters (`proc_params`); arrays as Vars. Every
process counts what its sats clip in `counts` ([accumulator, state, message])
and the zero messages it sends over the steps that carry tokens in `zeros`;
`failed` holds the first time step at which its model raised (0: never).
With `record=True` a neuron group keeps its messages (and state, `last`) of
every step t < steps in `messages` [batch * steps, size] (and `states`,
`lasts`): the host reads them after the run.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse

from lava.magma.core.process.ports.ports import InPort, OutPort
from lava.magma.core.process.process import AbstractProcess
from lava.magma.core.process.variable import Var


class NeuronGroup(AbstractProcess):
    """Base of the neuron processes: timing, message width, sigma-delta, counters, recording.

    size: neurons; depth: first awake step; steps: steps of a sequence (tokens + max depth);
    period: steps per sequence including the idle tail; tokens: tokens per sequence;
    batch: sequences; msg_bits; delta: sigma-delta threshold (0: dense messages);
    bias: int [size] added to the dendritic sum (None: no bias); record: keep every message.
    """

    stateful = False

    def __init__(
        self,
        *,
        size: int,
        depth: int,
        steps: int,
        period: int,
        tokens: int,
        batch: int,
        msg_bits: int,
        delta: int = 0,
        bias=None,
        record: bool = False,
        name: str | None = None,
        **params,
    ) -> None:
        super().__init__(
            size=size,
            depth=depth,
            steps=steps,
            period=period,
            tokens=tokens,
            batch=batch,
            msg_bits=msg_bits,
            delta=delta,
            has_bias=bias is not None,
            record=record,
            name=name,
            **params,
        )
        shape = (size,)
        self.s_out = OutPort(shape=shape)
        self.bias = Var(shape=shape, init=np.zeros(shape, np.int64) if bias is None else np.asarray(bias, np.int64))
        self.counts = Var(shape=(3,), init=np.zeros(3, np.int64))
        self.zeros = Var(shape=(1,), init=np.zeros(1, np.int64))
        self.failed = Var(shape=(1,), init=np.zeros(1, np.int64))  # time step + 1 of a failure in the model
        self.last = Var(shape=shape, init=np.zeros(shape, np.int64))
        rows = batch * steps if record else 1
        self.messages = Var(shape=(rows, size), init=np.zeros((rows, size), np.int64))
        self.lasts = Var(
            shape=(rows if record and delta else 1, size),
            init=np.zeros((rows if record and delta else 1, size), np.int64),
        )
        if self.stateful:
            self.state = Var(shape=shape, init=np.zeros(shape, np.int64))
            self.states = Var(shape=(rows, size), init=np.zeros((rows, size), np.int64))


class Source(NeuronGroup):
    """kind source: sends the host's quantized tokens, `tokens_in` [batch * tokens, size]
    (token k of sequence b in row b * tokens + k), one token per step."""

    def __init__(self, *, tokens_in, **kwargs) -> None:
        super().__init__(**kwargs)
        tokens_in = np.asarray(tokens_in, np.int64)
        self.tokens_in = Var(shape=tokens_in.shape, init=tokens_in)


class _Dendritic(NeuronGroup):
    """A group with one input port: the sum of its incoming synapse groups' outputs."""

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.a_in = InPort(shape=(kwargs["size"],))


class Relay(_Dendritic):
    """kind relay: m = sat(a, msg_bits)."""


class Relu(_Dendritic):
    """kind relu: m = sat(max(a, 0), msg_bits)."""


class Integrator(_Dendritic):
    """kind integrator: s' = sat(s + a, state_bits); m = sat(rshr(s', out_shift), msg_bits).
    Parameters state_bits, out_shift."""

    stateful = True


class Cpx(_Dendritic):
    """kind cpx: complex pairs [re_0, im_0, re_1, ...] with coefficients c_re, c_im [modes]
    of coef_bits; parameters state_bits, out_shift, coef_bits."""

    stateful = True

    def __init__(self, *, c_re, c_im, **kwargs) -> None:
        super().__init__(**kwargs)
        modes = kwargs["size"] // 2
        self.c_re = Var(shape=(modes,), init=np.asarray(c_re, np.int64))
        self.c_im = Var(shape=(modes,), init=np.asarray(c_im, np.int64))


class Lut(_Dendritic):
    """kind lut: m = table[clip(shr(a, lut_shift) - lut_lo, 0, L - 1)]; parameters lut_shift, lut_lo."""

    def __init__(self, *, table, **kwargs) -> None:
        super().__init__(**kwargs)
        table = np.asarray(table, np.int64)
        self.table = Var(shape=table.shape, init=table)


class Product(NeuronGroup):
    """kind product: m = sat(rshr(a0 * a1, out_shift), msg_bits), a0 = sat(first synapse + bias, 32)
    on port a0_in, a1 the second synapse's output on port a1_in; parameter out_shift."""

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.a0_in = InPort(shape=(kwargs["size"],))
        self.a1_in = InPort(shape=(kwargs["size"],))


class Synapses(AbstractProcess):
    """A synapse group with the contract's saturation, where Lava's Dense cannot be proven exact:
    out[t] = sat(shr(W @ m[t - delay], -weight_exp), 32), summing W @ m over time first when
    `sigma` (the pre group sends sigma-delta messages). weights int [post, pre]; parameters
    weight_exp, delay >= 1, sigma, wake (the post group's depth: clips count from then on),
    steps, period."""

    def __init__(
        self,
        *,
        weights,
        weight_exp: int,
        delay: int,
        sigma: bool,
        wake: int,
        steps: int,
        period: int,
        name: str | None = None,
    ) -> None:
        super().__init__(
            weight_exp=weight_exp, delay=delay, sigma=sigma, wake=wake, steps=steps, period=period, name=name
        )
        weights = self._weights(weights)
        post, pre = weights.shape
        self.s_in = InPort(shape=(pre,))
        self.a_out = OutPort(shape=(post,))
        self.weights = Var(shape=weights.shape, init=weights)
        self.counts = Var(shape=(1,), init=np.zeros(1, np.int64))
        self.failed = Var(shape=(1,), init=np.zeros(1, np.int64))

    @staticmethod
    def _weights(weights):
        return np.asarray(weights, np.int64)


class SparseSynapses(Synapses):
    """Synapses whose weights are mostly zeros, held as a scipy CSR matrix of their non-zeros (an S4D
    layer's C behind a sigma-delta sender is [H, H*M] with H*M of them): the same arithmetic."""

    @staticmethod
    def _weights(weights):
        return scipy.sparse.csr_matrix(weights, dtype=np.int64)

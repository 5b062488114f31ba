"""Diagonal state-space layers in torch, trained in the FFT convolution form and exported in step form.

Shared by the example training scripts (examples/real_tasks/train_export.py); torch is not an ssmc
dependency, so this module is imported only by those scripts, never by ssmc or its tests.

Three families, each a layer over H channels with a diagonal complex recurrence, written in real
arithmetic for the step form (ONNX has no complex tensors) and complex arithmetic for training:

  S4D   per channel h, M modes:  A = -exp(log_A_real) + i A_imag, dt_h = exp(log_dt[h])
        A_bar = exp(dt A), B_bar = (A_bar - 1) / A (ZOH, B = 1)
        x_t = A_bar x_{t-1} + B_bar u_t;      y_t = 2 Re(sum_m C[h, m] x_t[h, m]) + D[h] u_t[h]
  S5    one state of P modes shared by all channels (Smith et al. 2023), per-mode step dt_p = exp(log_step[p]):
        Lambda = -exp(log_Lambda_re) + i Lambda_im, Lambda_bar = exp(dt Lambda),
        B_bar = ((Lambda_bar - 1) / Lambda)[:, None] * B   (ZOH, B complex [P, H])
        x_t = Lambda_bar x_{t-1} + B_bar u_t;  y_t = 2 Re(C x_t) + D u_t   (C complex [H, P]; conjugate pairs)
  LRU   (Orvieto et al. 2023): lambda = exp(-exp(nu_log) + i exp(theta_log)), gamma = exp(gamma_log)
        (initialised to sqrt(1 - |lambda|^2)), B, C complex [P, H], [H, P], D real [H]
        x_t = lambda x_{t-1} + gamma B u_t;    y_t = Re(C x_t) + D u_t

All three are linear time-invariant, so the sequence form is one causal convolution per mode with the
kernel lambda^k, done with an FFT (zero-padded to 2L), as the S4 reference code and the seed paper do; the
step form recomputes the discretization from the raw parameters at every call, so legacy (dynamo=False)
exports keep the raw parameters, named like the state dict, as ONNX initializers (state_dict_from_onnx
reads them back: a raw export is also the model's checkpoint).

The step-form state of one layer has the shape `state_shape` (S4D (H, M), S5 and LRU (P,)) in two real
parts, re and im; `StepModel` lays the parts out as one of LAYOUTS:

  raw     one state per layer, [batch, *shape, 2] (re/im last; docs/onnx_step_form.md's layout)
  split   re and im as separate inputs/outputs per layer, [batch, *shape] each
  packed  one tensor for all layers, [n_layers, 2, batch, *shape] (batch not first)
"""

from __future__ import annotations

import math

import numpy as np
import onnx
import torch
import torch.nn.functional as F
from torch import nn

LEGACY_OPSET = 17
LAYOUTS = ("raw", "split", "packed")


def causal_fft_conv(v, powers):
    """v (B, L, P) complex, powers (P, L) complex kernel -> (B, L, P): y[t] = sum_{k<=t} powers[k] v[t-k]."""
    length = v.shape[1]
    v_f = torch.fft.fft(v.transpose(1, 2), n=2 * length)
    k_f = torch.fft.fft(powers, n=2 * length)
    return torch.fft.ifft(v_f * k_f)[..., :length].transpose(1, 2)


def complex_powers(log_decay, angle, length):
    """exp(k (log_decay + i angle)) for k = 0..length-1, shape (*log_decay.shape, length), closed form."""
    steps = torch.arange(length, dtype=log_decay.dtype)
    mag = torch.exp(log_decay[..., None] * steps)
    return torch.complex(mag * torch.cos(angle[..., None] * steps), mag * torch.sin(angle[..., None] * steps))


class S4D(nn.Module):
    """Diagonal S4 layer over H channels with M modes each (S4D-Lin initialisation)."""

    kind = "s4d"

    def __init__(self, h, m, dt_min, dt_max):
        super().__init__()
        self.log_dt = nn.Parameter(torch.rand(h) * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min))
        self.log_A_real = nn.Parameter(torch.full((h, m), math.log(0.5)))
        self.A_imag = nn.Parameter(math.pi * torch.arange(m, dtype=torch.float32).repeat(h, 1))
        self.C = nn.Parameter(torch.randn(h, m, 2) * math.sqrt(0.5))  # real view: [..., 0] re, [..., 1] im
        self.D = nn.Parameter(torch.randn(h))

    @property
    def state_shape(self):
        return tuple(self.log_A_real.shape)

    def slow_parameters(self):
        """The SSM parameters trained at a tenth of the learning rate without weight decay (all but C)."""
        return [self.log_dt, self.log_A_real, self.A_imag, self.D]

    def discretize(self):
        """ZOH discretization: (A_bar_re, A_bar_im, B_bar_re, B_bar_im), each (H, M)."""
        dt = torch.exp(self.log_dt)[:, None]
        a_re = -torch.exp(self.log_A_real)
        a_im = self.A_imag
        mag = torch.exp(dt * a_re)
        ab_re = mag * torch.cos(dt * a_im)
        ab_im = mag * torch.sin(dt * a_im)
        num_re = ab_re - 1.0
        den = a_re * a_re + a_im * a_im
        bb_re = (num_re * a_re + ab_im * a_im) / den
        bb_im = (ab_im * a_re - num_re * a_im) / den
        return ab_re, ab_im, bb_re, bb_im

    def kernel(self, length):
        """K[h, l] = 2 Re(sum_m C B_bar A_bar^l), with A_bar^l = exp(l dt A) in closed form."""
        dt = torch.exp(self.log_dt)[:, None, None]
        a_re = -torch.exp(self.log_A_real)[:, :, None]
        a_im = self.A_imag[:, :, None]
        _, _, bb_re, bb_im = self.discretize()
        c_re, c_im = self.C[..., 0], self.C[..., 1]
        cb_re = c_re * bb_re - c_im * bb_im
        cb_im = c_re * bb_im + c_im * bb_re
        steps = torch.arange(length, dtype=self.log_dt.dtype)
        mag = torch.exp(dt * a_re * steps)
        pow_re = mag * torch.cos(dt * a_im * steps)
        pow_im = mag * torch.sin(dt * a_im * steps)
        return 2.0 * (cb_re[:, :, None] * pow_re - cb_im[:, :, None] * pow_im).sum(1)

    def forward(self, u):
        """Sequence form. u: (B, L, H) -> (B, L, H), as a causal FFT convolution of the real kernel."""
        length = u.shape[1]
        k = self.kernel(length)
        # Zero-padding to 2L turns the circular convolution into a linear (causal) one.
        u_f = torch.fft.rfft(u.transpose(1, 2), n=2 * length)
        k_f = torch.fft.rfft(k, n=2 * length)
        y = torch.fft.irfft(u_f * k_f, n=2 * length)[..., :length]
        return y.transpose(1, 2) + self.D * u

    def step(self, u, x_re, x_im):
        """Step form. u: (B, H), x_re/x_im: (B, H, M) -> (y (B, H), new re, new im)."""
        ab_re, ab_im, bb_re, bb_im = self.discretize()
        u_m = u[:, :, None]
        new_re = ab_re * x_re - ab_im * x_im + bb_re * u_m
        new_im = ab_re * x_im + ab_im * x_re + bb_im * u_m
        y = 2.0 * (self.C[..., 0] * new_re - self.C[..., 1] * new_im).sum(-1) + self.D * u
        return y, new_re, new_im


class S5(nn.Module):
    """S5 layer: one diagonal complex state of P modes shared by all H channels, dense complex B and C,
    ZOH with a per-mode log step (Smith, Warrington, Linderman 2023), S4D-Lin eigenvalues."""

    kind = "s5"

    def __init__(self, h, p, dt_min, dt_max):
        super().__init__()
        self.log_Lambda_re = nn.Parameter(torch.full((p,), math.log(0.5)))
        self.Lambda_im = nn.Parameter(math.pi * torch.arange(p, dtype=torch.float32))
        self.log_step = nn.Parameter(torch.rand(p) * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min))
        # LeCun-normal B (fan-in H) and C (fan-in P), complex as a trailing re/im axis.
        self.B = nn.Parameter(torch.randn(p, h, 2) / math.sqrt(2 * h))
        self.C = nn.Parameter(torch.randn(h, p, 2) / math.sqrt(2 * p))
        self.D = nn.Parameter(torch.randn(h))

    @property
    def state_shape(self):
        return (self.Lambda_im.shape[0],)

    def slow_parameters(self):
        """As in the S5 reference: Lambda, the step and B at the lower SSM learning rate."""
        return [self.log_Lambda_re, self.Lambda_im, self.log_step, self.B]

    def discretize(self):
        """(Lambda_bar_re, Lambda_bar_im) (P,) and (B_bar_re, B_bar_im) (P, H)."""
        dt = torch.exp(self.log_step)
        a_re, a_im = -torch.exp(self.log_Lambda_re), self.Lambda_im
        mag = torch.exp(dt * a_re)
        lb_re, lb_im = mag * torch.cos(dt * a_im), mag * torch.sin(dt * a_im)
        num_re = lb_re - 1.0
        den = a_re * a_re + a_im * a_im
        g_re = (num_re * a_re + lb_im * a_im) / den  # (Lambda_bar - 1) / Lambda
        g_im = (lb_im * a_re - num_re * a_im) / den
        b_re, b_im = self.B[..., 0], self.B[..., 1]
        bb_re = g_re[:, None] * b_re - g_im[:, None] * b_im
        bb_im = g_re[:, None] * b_im + g_im[:, None] * b_re
        return lb_re, lb_im, bb_re, bb_im

    def forward(self, u):
        """Sequence form. u: (B, L, H) -> (B, L, H): B_bar u, per-mode FFT convolution, 2 Re(C x) + D u."""
        dt = torch.exp(self.log_step)
        _, _, bb_re, bb_im = self.discretize()
        v = torch.complex(u @ bb_re.T, u @ bb_im.T)  # (B, L, P)
        x = causal_fft_conv(v, complex_powers(-torch.exp(self.log_Lambda_re) * dt, self.Lambda_im * dt, u.shape[1]))
        c = torch.complex(self.C[..., 0], self.C[..., 1])
        return 2.0 * (x @ c.T).real + self.D * u

    def step(self, u, x_re, x_im):
        """Step form. u: (B, H), x_re/x_im: (B, P) -> (y (B, H), new re, new im)."""
        lb_re, lb_im, bb_re, bb_im = self.discretize()
        new_re = lb_re * x_re - lb_im * x_im + u @ bb_re.T
        new_im = lb_re * x_im + lb_im * x_re + u @ bb_im.T
        y = 2.0 * (new_re @ self.C[..., 0].T - new_im @ self.C[..., 1].T) + self.D * u
        return y, new_re, new_im


class LRU(nn.Module):
    """Linear Recurrent Unit (Orvieto et al. 2023): exponential parametrisation of a diagonal complex
    recurrence of P modes, |lambda| uniform on the ring [r_min, r_max], phase in [0, max_phase], and the
    gamma normalisation sqrt(1 - |lambda|^2) on B."""

    kind = "lru"

    def __init__(self, h, p, r_min, r_max, max_phase):
        super().__init__()
        u1, u2 = torch.rand(p), torch.rand(p)
        self.nu_log = nn.Parameter(torch.log(-0.5 * torch.log(u1 * (r_max**2 - r_min**2) + r_min**2)))
        self.theta_log = nn.Parameter(torch.log(max_phase * u2))
        with torch.no_grad():
            self.gamma_log = nn.Parameter(torch.log(torch.sqrt(1 - torch.exp(-torch.exp(self.nu_log)) ** 2)))
        self.B = nn.Parameter(torch.randn(p, h, 2) / math.sqrt(2 * h))
        self.C = nn.Parameter(torch.randn(h, p, 2) / math.sqrt(p))
        self.D = nn.Parameter(torch.randn(h))

    @property
    def state_shape(self):
        return (self.nu_log.shape[0],)

    def slow_parameters(self):
        """The recurrence (lambda, gamma) at the lower learning rate, as the LRU paper does."""
        return [self.nu_log, self.theta_log, self.gamma_log]

    def discretize(self):
        """(lambda_re, lambda_im) (P,) and the normalised input matrix (gamma B)_re, _im (P, H)."""
        mag = torch.exp(-torch.exp(self.nu_log))
        theta = torch.exp(self.theta_log)
        gamma = torch.exp(self.gamma_log)[:, None]
        return mag * torch.cos(theta), mag * torch.sin(theta), gamma * self.B[..., 0], gamma * self.B[..., 1]

    def forward(self, u):
        """Sequence form. u: (B, L, H) -> (B, L, H): gamma B u, per-mode FFT convolution, Re(C x) + D u."""
        _, _, bb_re, bb_im = self.discretize()
        v = torch.complex(u @ bb_re.T, u @ bb_im.T)
        x = causal_fft_conv(v, complex_powers(-torch.exp(self.nu_log), torch.exp(self.theta_log), u.shape[1]))
        c = torch.complex(self.C[..., 0], self.C[..., 1])
        return (x @ c.T).real + self.D * u

    def step(self, u, x_re, x_im):
        """Step form. u: (B, H), x_re/x_im: (B, P) -> (y (B, H), new re, new im)."""
        l_re, l_im, bb_re, bb_im = self.discretize()
        new_re = l_re * x_re - l_im * x_im + u @ bb_re.T
        new_im = l_re * x_im + l_im * x_re + u @ bb_im.T
        y = new_re @ self.C[..., 0].T - new_im @ self.C[..., 1].T + self.D * u
        return y, new_re, new_im


class ReluBlock(nn.Module):
    """SSM -> ReLU -> mixing Linear, with a residual. The layer keeps its family's attribute name
    (s4d, s5, lru), so parameter names say what they are."""

    def __init__(self, layer, h):
        super().__init__()
        setattr(self, layer.kind, layer)
        self.kind = layer.kind
        self.mix = nn.Linear(h, h)

    @property
    def ssm(self):
        return getattr(self, self.kind)

    def post(self, z, u):
        return u + self.mix(F.relu(z))

    def forward(self, u):
        return self.post(self.ssm(u), u)

    def step(self, u, x_re, x_im):
        z, x_re, x_im = self.ssm.step(u, x_re, x_im)
        return self.post(z, u), x_re, x_im


class SeqModel(nn.Module):
    """Sequence form: x (B, L, F) -> per-token logits (B, L, classes); make_layer() builds each SSM layer."""

    def __init__(self, in_features, h, n_layers, n_classes, make_layer):
        super().__init__()
        self.enc = nn.Linear(in_features, h)
        self.layers = nn.ModuleList(ReluBlock(make_layer(), h) for _ in range(n_layers))
        self.dec = nn.Linear(h, n_classes)

    def forward(self, x):
        u = self.enc(x)
        for layer in self.layers:
            u = layer(u)
        return self.dec(u)

    def slow_parameters(self):
        return [p for layer in self.layers for p in layer.ssm.slow_parameters()]


class MeanLogits(nn.Module):
    """The classification head over a whole sequence: mean of the per-token logits."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, x):
        return self.model(x).mean(1)


class StepModel(nn.Module):
    """One token and the states in `layout` in -> that token's logits and the next states."""

    def __init__(self, model, layout="raw"):
        super().__init__()
        assert layout in LAYOUTS, layout
        self.model = model
        self.layout = layout

    def unpack(self, states):
        """The layout's state tensors -> per layer (re, im)."""
        if self.layout == "split":
            return [(states[2 * k], states[2 * k + 1]) for k in range(len(self.model.layers))]
        if self.layout == "packed":
            (state,) = states
            return [(state[k, 0], state[k, 1]) for k in range(len(self.model.layers))]
        return [(s[..., 0], s[..., 1]) for s in states]

    def pack(self, parts):
        if self.layout == "split":
            return [t for pair in parts for t in pair]
        if self.layout == "packed":
            return [torch.stack([torch.stack(pair) for pair in parts])]
        return [torch.stack(pair, dim=-1) for pair in parts]

    def forward(self, x, *states):
        u = self.model.enc(x)
        out = []
        for layer, (x_re, x_im) in zip(self.model.layers, self.unpack(states)):
            u, x_re, x_im = layer.step(u, x_re, x_im)
            out.append((x_re, x_im))
        return (self.model.dec(u), *self.pack(out))


def state_specs(model, layout, batch):
    """(name, shape, batch axis) of each state input of `StepModel(model, layout)`."""
    shapes = [layer.ssm.state_shape for layer in model.layers]
    if layout == "split":
        return [(f"state{k}_{part}", (batch, *shape), 0) for k, shape in enumerate(shapes) for part in ("re", "im")]
    if layout == "packed":
        assert len(set(shapes)) == 1, "packing needs one state shape for all layers"
        return [("state", (len(shapes), 2, batch, *shapes[0]), 2)]
    return [(f"state{k}", (batch, *shape, 2), 0) for k, shape in enumerate(shapes)]


def zero_states(model, layout, batch, dtype=torch.float32):
    return [torch.zeros(shape, dtype=dtype) for _, shape, _ in state_specs(model, layout, batch)]


def run_step_torch(model, layout, x):
    """x (B, L, F) tensor -> per-token logits (B, L, classes), the step form from zero states."""
    step_model = StepModel(model, layout).eval()
    states = zero_states(model, layout, x.shape[0], x.dtype)
    out = []
    with torch.no_grad():
        for t in range(x.shape[1]):
            logits, *states = step_model(x[:, t], *states)
            out.append(logits)
    return torch.stack(out, 1)


def run_step_ort(model, layout, path, x):
    """The exported step form of `path` under onnxruntime, token by token: x (B, L, F) array -> logits."""
    import onnxruntime as ort

    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    specs = state_specs(model, layout, x.shape[0])
    names = [name for name, _, _ in specs]
    states = [np.zeros(shape, np.float32) for _, shape, _ in specs]
    out = []
    for t in range(x.shape[1]):
        logits, *states = sess.run(["logits"] + [n + "_out" for n in names], {"x": x[:, t], **dict(zip(names, states))})
        out.append(logits)
    return np.stack(out, 1)


def export_step(model, layout, dynamo, path, example_x):
    """Export StepModel(model, layout) to a self-contained ONNX file at `path` with a dynamic batch.

    dynamo=False keeps the raw parameters (no constant folding); dynamo=True writes torch.export's graph.
    Stack traces (which name this checkout's path) are dropped and external data folded back in."""
    step_model = StepModel(model, layout).eval()
    batch = example_x.shape[0]
    specs = state_specs(model, layout, batch)
    args = (example_x, *zero_states(model, layout, batch))
    in_names = ["x", *[name for name, _, _ in specs]]
    out_names = ["logits", *[f"{name}_out" for name, _, _ in specs]]
    if dynamo:
        b = torch.export.Dim("batch")
        dims = {"x": {0: b}, "states": tuple({axis: b} for _, _, axis in specs)}  # forward(x, *states)
        torch.onnx.export(
            step_model,
            args,
            str(path),
            dynamo=True,
            input_names=in_names,
            output_names=out_names,
            dynamic_shapes=dims,
            verbose=False,
        )
    else:
        axes = {"x": {0: "batch"}, "logits": {0: "batch"}}
        for name, _, axis in specs:
            axes[name] = axes[f"{name}_out"] = {axis: "batch"}
        torch.onnx.export(
            step_model,
            args,
            str(path),
            dynamo=False,
            opset_version=LEGACY_OPSET,
            input_names=in_names,
            output_names=out_names,
            dynamic_axes=axes,
            # Folding would bake the discretization into constants; keep the raw parameters.
            do_constant_folding=False,
        )
    proto = onnx.load(str(path))
    for node in proto.graph.node:
        kept = [p for p in node.metadata_props if p.key != "pkg.torch.onnx.stack_trace"]
        del node.metadata_props[:]
        node.metadata_props.extend(kept)
    onnx.save(proto, str(path), save_as_external_data=False)
    for leftover in path.parent.glob(path.name + ".data"):
        leftover.unlink()
    onnx.checker.check_model(proto, full_check=True)
    return proto


def state_dict_from_onnx(path):
    """The parameters of a raw (dynamo=False, unfolded) step export, keyed as SeqModel's state dict:
    such an export keeps every parameter as an initializer named model.<parameter>."""
    from onnx import numpy_helper

    proto = onnx.load(str(path))
    return {
        init.name.removeprefix("model."): torch.from_numpy(numpy_helper.to_array(init).copy())
        for init in proto.graph.initializer
        if init.name.startswith("model.")
    }


def value_info(values):
    return [
        {
            "name": v.name,
            "shape": [d.dim_param if d.HasField("dim_param") else d.dim_value for d in v.type.tensor_type.shape.dim],
        }
        for v in values
    ]

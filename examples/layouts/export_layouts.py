"""Export small S4D step models in the state layouts users write, with torch, both exporters.

Each model is a two-layer S4D network (encoder, S4D, ReLU, mixing linear with residual, decoder) written
the way people write a step module by hand, differing only in how the recurrent state is passed:

  split        re and im as separate state inputs/outputs per layer, [batch, H, M] each
  packed       one state tensor for all layers, [L, 2, batch, H, M] (batch not first)
  re_im_first  one state per layer, [2, batch, H, M]
  state_first  one state per layer, [H, M, batch, 2]
  fixed_batch  one state per layer, [1, H, M, 2], exported without dynamic axes (a fixed batch of 1)
  discrete     one state per layer, [batch, H, M, 2], A_bar, B_bar, C, D as buffers (no Exp/Cos/Sin)

Each is exported with dynamo=False and dynamo=True into <stem>_<exporter>.onnx next to this script, with a
sidecar <stem>_<exporter>.json: torch version, export mode, layout, input/output shapes and a torch reference
(two sequences of a few tokens and the model's outputs) that tests compare ssmc's float engine against.

dynamo=True writes the weights to an external file (model.onnx.data); this script loads and re-saves each
export self-contained, so the committed files stand alone.

Run in a Python 3.11 venv with torch (ssmc itself needs no torch):
    python3.11 -m venv /tmp/torchvenv && /tmp/torchvenv/bin/pip install torch==2.13.0 onnx onnxscript numpy
    /tmp/torchvenv/bin/python examples/layouts/export_layouts.py
"""

from __future__ import annotations

import json
import math
import pathlib

import numpy as np
import onnx
import torch
from torch import nn

HERE = pathlib.Path(__file__).resolve().parent
F, H, M, L, OUT = 3, 8, 4, 2, 4
LAYOUTS = ("split", "packed", "re_im_first", "state_first", "fixed_batch", "discrete")


class S4DKernel(nn.Module):
    """Diagonal S4D parameters (S4D-Lin init) and one step on re/im parts [.., H, M] in real arithmetic."""

    def __init__(self, discrete: bool):
        super().__init__()
        self.discrete = discrete
        log_dt = torch.rand(H) * (math.log(0.1) - math.log(0.005)) + math.log(0.005)
        log_A_real = torch.log(0.5 * torch.ones(H, M))
        A_imag = math.pi * torch.arange(M).float().repeat(H, 1)
        self.C = nn.Parameter(torch.randn(H, M, 2) / math.sqrt(M))
        self.D = nn.Parameter(torch.randn(H))
        if discrete:  # what a user keeps after discretizing once: buffers, no Exp/Cos/Sin in the graph
            A = torch.complex(-torch.exp(log_A_real), A_imag)
            A_bar = torch.exp(torch.exp(log_dt)[:, None] * A)
            B_bar = (A_bar - 1) / A
            for name, value in (
                ("A_bar_re", A_bar.real),
                ("A_bar_im", A_bar.imag),
                ("B_bar_re", B_bar.real),
                ("B_bar_im", B_bar.imag),
            ):
                self.register_buffer(name, value.float().contiguous())
        else:
            self.log_dt = nn.Parameter(log_dt)
            self.log_A_real = nn.Parameter(log_A_real)
            self.A_imag = nn.Parameter(A_imag)

    def coefficients(self):
        if self.discrete:
            return self.A_bar_re, self.A_bar_im, self.B_bar_re, self.B_bar_im
        dt = torch.exp(self.log_dt)[:, None]
        a_re, a_im = -torch.exp(self.log_A_real), self.A_imag
        mag = torch.exp(a_re * dt)
        abar_re, abar_im = mag * torch.cos(a_im * dt), mag * torch.sin(a_im * dt)
        den = a_re * a_re + a_im * a_im
        num_re = abar_re - 1
        return abar_re, abar_im, (num_re * a_re + abar_im * a_im) / den, (abar_im * a_re - num_re * a_im) / den

    def forward(self, u, s_re, s_im, u_modes):
        """u [B, H], s_re/s_im [B, H, M], u_modes u broadcast to [B, H, 1] -> y [B, H], next re, im."""
        abar_re, abar_im, bbar_re, bbar_im = self.coefficients()
        new_re = abar_re * s_re - abar_im * s_im + bbar_re * u_modes
        new_im = abar_re * s_im + abar_im * s_re + bbar_im * u_modes
        y = 2 * (self.C[..., 0] * new_re - self.C[..., 1] * new_im).sum(-1) + self.D * u
        return y, new_re, new_im


class StepNet(nn.Module):
    """Encoder, L x (S4D, ReLU, mixing linear, residual), decoder; the state layout by `layout`."""

    def __init__(self, layout: str):
        super().__init__()
        self.layout = layout
        self.encoder = nn.Linear(F, H)
        self.s4d = nn.ModuleList(S4DKernel(layout == "discrete") for _ in range(L))
        self.mix = nn.ModuleList(nn.Linear(H, H) for _ in range(L))
        self.decoder = nn.Linear(H, OUT)

    def blocks(self, x, parts):
        """parts: per layer (re, im) [B, H, M]; returns y and the next parts."""
        u = self.encoder(x)
        new = []
        for layer in range(L):
            u_modes = u.view(1, H, 1) if self.layout == "fixed_batch" else u.unsqueeze(-1)
            z, re, im = self.s4d[layer](u, *parts[layer], u_modes)
            u = u + self.mix[layer](torch.relu(z))
            new.append((re, im))
        return self.decoder(u), new

    def forward(self, x, *states):
        if self.layout == "split":  # s0_re, s0_im, s1_re, s1_im
            y, new = self.blocks(x, [(states[2 * k], states[2 * k + 1]) for k in range(L)])
            return (y, *[t for pair in new for t in pair])
        if self.layout == "packed":  # state [L, 2, B, H, M]
            (state,) = states
            y, new = self.blocks(x, [(state[k, 0], state[k, 1]) for k in range(L)])
            return y, torch.stack([torch.stack(pair) for pair in new])
        if self.layout == "re_im_first":  # [2, B, H, M] per layer
            y, new = self.blocks(x, [(s[0], s[1]) for s in states])
            return (y, *[torch.stack(pair) for pair in new])
        if self.layout == "state_first":  # [H, M, B, 2] per layer
            y, new = self.blocks(x, [(s[..., 0].permute(2, 0, 1), s[..., 1].permute(2, 0, 1)) for s in states])
            return (y, *[torch.stack(pair, -1).permute(1, 2, 0, 3) for pair in new])
        # fixed_batch, discrete: [B, H, M, 2] per layer
        y, new = self.blocks(x, [(s[..., 0], s[..., 1]) for s in states])
        return (y, *[torch.stack(pair, -1) for pair in new])


def state_specs(layout: str, batch: int) -> list[tuple[str, tuple, int | None]]:
    """(name, example shape, batch axis or None) of each state input."""
    if layout == "split":
        return [(f"s{k}_{p}", (batch, H, M), 0) for k in range(L) for p in ("re", "im")]
    if layout == "packed":
        return [("state", (L, 2, batch, H, M), 2)]
    if layout == "re_im_first":
        return [(f"state{k}", (2, batch, H, M), 1) for k in range(L)]
    if layout == "state_first":
        return [(f"state{k}", (H, M, batch, 2), 2) for k in range(L)]
    return [(f"state{k}", (batch, H, M, 2), None if layout == "fixed_batch" else 0) for k in range(L)]


def shapes(values) -> list[dict]:
    return [
        {
            "name": v.name,
            "shape": [d.dim_param if d.HasField("dim_param") else d.dim_value for d in v.type.tensor_type.shape.dim],
        }
        for v in values
    ]


def torch_reference(net: StepNet, layout: str, x: np.ndarray) -> np.ndarray:
    """Outputs [B, T, OUT] of x [B, T, F], zero initial states, one sequence at a time (any layout)."""
    ys = []
    with torch.no_grad():
        for seq in x:
            states = [torch.zeros(shape) for _, shape, _ in state_specs(layout, 1)]
            per_token = []
            for token in seq:
                y, *states = net(torch.from_numpy(token[None]).float(), *states)
                per_token.append(y[0].numpy())
            ys.append(per_token)
    return np.asarray(ys, np.float32)


def export(net: StepNet, layout: str, dynamo: bool, path: pathlib.Path) -> None:
    fixed = layout == "fixed_batch"
    batch = 1 if fixed else 2  # torch.export specializes a dimension of example size 1
    specs = state_specs(layout, batch)
    args = (torch.randn(batch, F), *[torch.zeros(shape) for _, shape, _ in specs])
    in_names = ["x", *[name for name, _, _ in specs]]
    out_names = ["logits", *[f"{name}_out" for name, _, _ in specs]]
    if dynamo:
        dims = None
        if not fixed:
            b = torch.export.Dim("batch")
            dims = {"x": {0: b}, "states": tuple({axis: b} for _, _, axis in specs)}  # forward(x, *states)
        torch.onnx.export(
            net,
            args,
            str(path),
            dynamo=True,
            input_names=in_names,
            output_names=out_names,
            dynamic_shapes=dims,
            verbose=False,
        )
    else:
        axes = None
        if not fixed:
            axes = {"x": {0: "batch"}, "logits": {0: "batch"}}
            for name, _, axis in specs:
                axes[name] = axes[f"{name}_out"] = {axis: "batch"}
        torch.onnx.export(
            net,
            args,
            str(path),
            dynamo=False,
            opset_version=17,
            input_names=in_names,
            output_names=out_names,
            dynamic_axes=axes,
        )
    # dynamo=True keeps the weights in <path>.data: make the file self-contained (until ssmc reads external data)
    proto = onnx.load(str(path))
    for node in proto.graph.node:  # stack traces carry this checkout's path
        kept = [p for p in node.metadata_props if p.key != "pkg.torch.onnx.stack_trace"]
        del node.metadata_props[:]
        node.metadata_props.extend(kept)
    onnx.save(proto, str(path), save_as_external_data=False)
    for leftover in path.parent.glob(path.name + ".data"):
        leftover.unlink()
    onnx.checker.check_model(proto, full_check=True)


def main() -> None:
    for i, layout in enumerate(LAYOUTS):
        torch.manual_seed(i)
        net = StepNet(layout).eval()
        x = np.random.default_rng(i).normal(size=(2, 6, F)).astype(np.float32)
        ref = torch_reference(net, layout, x)
        for dynamo in (False, True):
            stem = f"{layout}_{'dynamo' if dynamo else 'legacy'}"
            path = HERE / f"{stem}.onnx"
            export(net, layout, dynamo, path)
            proto = onnx.load(str(path))
            sidecar = {
                "torch_version": torch.__version__,
                "export_mode": f"dynamo={dynamo}",
                "onnx_opset": next(o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")),
                "layout": layout,
                "H": H,
                "M": M,
                "n_layers": L,
                "in_features": F,
                "n_out": OUT,
                "inputs": shapes(proto.graph.input),
                "outputs": shapes(proto.graph.output),
                "reference": {"x": x.tolist(), "y": ref.tolist()},
            }
            (HERE / f"{stem}.json").write_text(json.dumps(sidecar, indent=1) + "\n")
            print(f"wrote {path.name} ({path.stat().st_size} bytes)")


if __name__ == "__main__":
    main()

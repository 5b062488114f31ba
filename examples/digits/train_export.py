"""Train the shipped S4D example models on scikit-learn's 8x8 digits and export them to ONNX.

Each 8x8 image is read as a sequence of 64 tokens (pixels row-major, one feature per
token), like sequential MNIST. Two variants share one S4D layer:

* ``relu``: the main, Loihi-friendly example (S4D -> ReLU -> Linear, residual).
* ``full``: pre-norm blocks with LayerNorm, exact GELU and GLU, to exercise the frontend.

The S4D semantics implemented here are a contract the compiler relies on:

    dt = exp(log_dt)[:, None];  A = -exp(log_A_real) + i*A_imag
    A_bar = exp(dt*A);  B_bar = (A_bar - 1) / A           (ZOH, B = 1)
    x_t = A_bar * x_{t-1} + B_bar * u_t                    (x_{-1} = 0)
    y_t = 2 * Re(sum_m C[h,m] * x_t[h,m]) + D[h] * u_t[h]

Training uses the FFT convolution form; export mostly uses the recurrent step form, which
recomputes the discretization from the raw parameters on every call so that the
dynamo=False graphs keep the raw parameters and the Exp/Cos/Sin arithmetic on them.

Every export is checked with onnx.checker and against torch with onnxruntime; any
mismatch aborts the script.

Usage: python train_export.py [--out DIR] [--epochs N]
"""

import argparse
import copy
import json
import math
import random
import time
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import onnxscript.optimizer
import torch
import torch.nn.functional as F
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from torch import nn

SEQ_LEN = 64
N_CLASSES = 10
IN_FEATURES = 1
H = 32
MODES = 16  # complex modes per channel; the state size N is 2 * MODES
N_LAYERS = 2
# With A_real = -0.5 these keep between ~4% and ~70% of a token's contribution alive after
# 64 steps, so the channels cover both a single image row (8 tokens) and the whole image.
DT_MIN, DT_MAX = 0.01, 0.1
LEGACY_OPSET = 17
DYNAMO_OPSET = 18  # torchlib's native opset in torch 2.13: no version conversion pass
FOLD_LIMIT = 1 << 20  # elements; far above any tensor in these models
N_REF = 4
N_CALIB = 128
# Step vs convolution form, both in float64: any real disagreement is a semantic bug.
FORMS_TOL = 1e-4
# onnxruntime vs torch in float32, relative to max(1, largest |reference logit|): rounding
# grows with the logits, which reach a few tens after training.
ORT_RTOL = 1e-4


class S4D(nn.Module):
    """Diagonal S4 layer over H channels, with real arithmetic only (exportable to ONNX)."""

    def __init__(self, h, m):
        super().__init__()
        self.log_dt = nn.Parameter(torch.rand(h) * (math.log(DT_MAX) - math.log(DT_MIN)) + math.log(DT_MIN))
        # S4D-Lin initialisation.
        self.log_A_real = nn.Parameter(torch.full((h, m), math.log(0.5)))
        self.A_imag = nn.Parameter(math.pi * torch.arange(m, dtype=torch.float32).repeat(h, 1))
        # Unit-variance complex normal, real view [..., 0] = re, [..., 1] = im.
        self.C = nn.Parameter(torch.randn(h, m, 2) * math.sqrt(0.5))
        self.D = nn.Parameter(torch.randn(h))

    def discretize(self):
        """ZOH discretization: (A_bar_re, A_bar_im, B_bar_re, B_bar_im), each (H, M)."""
        dt = torch.exp(self.log_dt)[:, None]
        a_re = -torch.exp(self.log_A_real)
        a_im = self.A_imag
        mag = torch.exp(dt * a_re)
        ab_re = mag * torch.cos(dt * a_im)
        ab_im = mag * torch.sin(dt * a_im)
        # (A_bar - 1) / A, the complex division written out.
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
        """Sequence form. u: (B, L, H) -> (B, L, H), as a causal FFT convolution."""
        length = u.shape[1]
        k = self.kernel(length)  # (H, L)
        # Zero-padding to 2L turns the circular convolution into a linear (causal) one.
        # Full complex fft/ifft rather than rfft/irfft (same result): irfft exports as
        # DFT(inverse=1, onesided=1), which onnxruntime 1.23 (ssmc's venv) rejects.
        u_f = torch.fft.fft(u.transpose(1, 2), n=2 * length)
        k_f = torch.fft.fft(k, n=2 * length)
        y = torch.fft.ifft(u_f * k_f)[..., :length].real
        return y.transpose(1, 2) + self.D * u

    def step(self, u, state):
        """Step form. u: (B, H), state: (B, H, M, 2) -> (y (B, H), new state)."""
        ab_re, ab_im, bb_re, bb_im = self.discretize()
        x_re, x_im = state[..., 0], state[..., 1]
        u_m = u[:, :, None]
        new_re = ab_re * x_re - ab_im * x_im + bb_re * u_m
        new_im = ab_re * x_im + ab_im * x_re + bb_im * u_m
        y = 2.0 * (self.C[..., 0] * new_re - self.C[..., 1] * new_im).sum(-1) + self.D * u
        return y, torch.stack([new_re, new_im], dim=-1)


class ReluBlock(nn.Module):
    def __init__(self):
        super().__init__()
        self.s4d = S4D(H, MODES)
        self.mix = nn.Linear(H, H)

    def post(self, z, u):
        return u + self.mix(F.relu(z))

    def forward(self, u):
        return self.post(self.s4d(u), u)

    def step(self, u, state):
        z, state = self.s4d.step(u, state)
        return self.post(z, u), state


class FullBlock(nn.Module):
    def __init__(self):
        super().__init__()
        self.norm = nn.LayerNorm(H)
        self.s4d = S4D(H, MODES)
        self.out = nn.Linear(H, 2 * H)

    def post(self, z, u):
        return u + F.glu(self.out(F.gelu(z)), dim=-1)

    def forward(self, u):
        return self.post(self.s4d(self.norm(u)), u)

    def step(self, u, state):
        z, state = self.s4d.step(self.norm(u), state)
        return self.post(z, u), state


BLOCKS = {"relu": ReluBlock, "full": FullBlock}


class DigitsS4D(nn.Module):
    """Sequence form: x (B, L, 1) -> per-token logits (B, L, 10)."""

    def __init__(self, variant):
        super().__init__()
        self.variant = variant
        self.enc = nn.Linear(IN_FEATURES, H)
        self.layers = nn.ModuleList(BLOCKS[variant]() for _ in range(N_LAYERS))
        self.dec = nn.Linear(H, N_CLASSES)

    def forward(self, x):
        u = self.enc(x)
        for layer in self.layers:
            u = layer(u)
        return self.dec(u)


class StepModel(nn.Module):
    """One token in, per-layer state in -> that token's logits, per-layer state out."""

    def __init__(self, model):
        super().__init__()
        assert len(model.layers) == 2, "the export signature has exactly state0 and state1"
        self.model = model

    def forward(self, x, state0, state1):
        u = self.model.enc(x)
        u, state0_out = self.model.layers[0].step(u, state0)
        u, state1_out = self.model.layers[1].step(u, state1)
        return self.model.dec(u), state0_out, state1_out


class MeanLogits(nn.Module):
    """The classification head over a whole sequence: x (B, L, 1) -> mean logits (B, 10)."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, x):
        return self.model(x).mean(1)


def seed_everything():
    random.seed(0)
    np.random.seed(0)
    torch.manual_seed(0)


def load_data():
    digits = load_digits()
    x = (digits.data / 16.0).astype(np.float32).reshape(-1, SEQ_LEN, IN_FEATURES)
    y = digits.target.astype(np.int64)
    return train_test_split(x, y, test_size=0.25, random_state=0, stratify=y)


def accuracy(model, x, y):
    with torch.no_grad():
        pred = MeanLogits(model)(torch.from_numpy(x)).argmax(-1).numpy()
    return float((pred == y).mean())


def train(variant, x_tr, y_tr, epochs, lr, batch_size=64):
    seed_everything()
    model = DigitsS4D(variant)
    # Weight decay and label smoothing keep activations and logits small (a smaller range
    # to fit into fixed point later) and also generalize a little better here.
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.05)
    steps_per_epoch = math.ceil(len(x_tr) / batch_size)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=epochs * steps_per_epoch)
    x_all, y_all = torch.from_numpy(x_tr), torch.from_numpy(y_tr)
    gen = torch.Generator().manual_seed(0)
    t0 = time.time()
    for epoch in range(epochs):
        model.train()
        perm = torch.randperm(len(x_all), generator=gen)
        total = 0.0
        for i in range(0, len(perm), batch_size):
            idx = perm[i : i + batch_size]
            loss = F.cross_entropy(MeanLogits(model)(x_all[idx]), y_all[idx], label_smoothing=0.1)
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            total += loss.item() * len(idx)
        if (epoch + 1) % 10 == 0 or epoch == epochs - 1:
            print(f"  [{variant}] epoch {epoch + 1}/{epochs} loss {total / len(x_all):.4f} ({time.time() - t0:.0f}s)")
    model.eval()
    return model


def zero_states(batch, dtype=torch.float32):
    return [torch.zeros(batch, H, MODES, 2, dtype=dtype) for _ in range(N_LAYERS)]


def run_step_torch(step_model, x):
    """Run the step form over x (B, L, 1) from zero state; per-token logits (B, L, 10)."""
    states = zero_states(x.shape[0], x.dtype)
    out = []
    with torch.no_grad():
        for t in range(x.shape[1]):
            logits, *states = step_model(x[:, t], *states)
            out.append(logits)
    return torch.stack(out, 1)


def run_step_ort(path, x):
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    states = [s.numpy() for s in zero_states(x.shape[0])]
    out = []
    for t in range(x.shape[1]):
        logits, *states = sess.run(
            ["logits", "state0_out", "state1_out"],
            {"x": x[:, t], "state0": states[0], "state1": states[1]},
        )
        out.append(logits)
    return np.stack(out, 1)


def value_info(values):
    return [
        {
            "name": v.name,
            "shape": [d.dim_param if d.HasField("dim_param") else d.dim_value for d in v.type.tensor_type.shape.dim],
        }
        for v in values
    ]


def export(module, args, path, dynamo, form, input_names, output_names, dynamic):
    """Export, make the file self-contained, and return the facts for the sidecar."""
    if dynamo:
        dyn = None
        if dynamic:
            batch = torch.export.Dim("batch")
            dyn = {name: {0: batch} for name in input_names}
        program = torch.onnx.export(
            module,
            args,
            dynamo=True,
            opset_version=DYNAMO_OPSET,
            input_names=input_names,
            output_names=output_names,
            dynamic_shapes=dyn,
            optimize=False,
            verbose=False,
        )
        # The exporter's own optimize pass folds only ops with inputs under 8192
        # elements, which in the FFT form leaves the (H, M, L) kernel intermediates
        # stored as ~0.9 MB of constants. Fold everything constant instead (what the
        # default pass does, without the limit) so the file keeps just the kernel.
        onnxscript.optimizer.optimize_ir(program.model, input_size_limit=FOLD_LIMIT, output_size_limit=FOLD_LIMIT)
        # Stack traces carry this checkout's absolute path; drop them so the committed
        # files do not depend on where the script ran.
        for node in program.model.graph.all_nodes():
            node.metadata_props.pop("pkg.torch.onnx.stack_trace", None)
        program.save(str(path), external_data=False)
    else:
        torch.onnx.export(
            module,
            args,
            str(path),
            dynamo=False,
            opset_version=LEGACY_OPSET,
            input_names=input_names,
            output_names=output_names,
            dynamic_axes={name: {0: "batch"} for name in input_names + output_names},
            # Folding would bake the discretization into constants; the raw
            # parameters and the arithmetic on them are what this file is for.
            do_constant_folding=False,
        )
    proto = onnx.load(str(path))
    # Load everything into one proto and rewrite it, so no external data file survives.
    onnx.save(proto, str(path), save_as_external_data=False)
    for leftover in path.parent.glob(path.name + ".data"):
        leftover.unlink()
    onnx.checker.check_model(proto, full_check=True)
    opset = next(o.version for o in proto.opset_import if o.domain in ("", "ai.onnx"))
    return proto, opset


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--out",
        type=Path,
        default=Path(__file__).resolve().parent,
        help="output directory (default: this script's folder)",
    )
    parser.add_argument("--epochs", type=int, default=100, help="epochs per variant")
    parser.add_argument("--lr", type=float, default=1e-2, help="peak learning rate")
    args = parser.parse_args()
    torch.set_num_threads(2)
    args.out.mkdir(parents=True, exist_ok=True)

    seed_everything()
    x_tr, x_te, y_tr, y_te = load_data()
    np.savez_compressed(args.out / "digits_test.npz", x=x_te, y=y_te)
    calib = np.random.default_rng(0).choice(len(x_tr), N_CALIB, replace=False)
    np.savez_compressed(args.out / "digits_calib.npz", x=x_tr[calib])
    x_ref = x_te[:N_REF]
    x_ref_t = torch.from_numpy(x_ref)

    # (file stem, variant, form, dynamo)
    exports = [
        ("digits_s4d_step", "relu", "step", False),
        ("digits_s4d_step_dynamo", "relu", "step", True),
        ("digits_s4d_seq_fft", "relu", "sequence", True),
        ("digits_s4d_full_step", "full", "step", False),
        ("digits_s4d_full_step_dynamo", "full", "step", True),
    ]
    summary = {}
    for variant in ("relu", "full"):
        print(f"training {variant} ...")
        model = train(variant, x_tr, y_tr, args.epochs, args.lr)
        acc = accuracy(model, x_te, y_te)
        print(f"  [{variant}] float test accuracy {acc:.4f}")
        summary[variant] = acc

        model64 = copy.deepcopy(model).double()
        with torch.no_grad():
            seq64 = model64(x_ref_t.double()).numpy()
        step64 = run_step_torch(StepModel(model64), x_ref_t.double()).numpy()
        err = np.abs(step64 - seq64).max()
        print(f"  [{variant}] step vs convolution form (float64): max abs err {err:.2e}")
        assert err < FORMS_TOL, f"{variant}: step and convolution forms disagree ({err:.2e})"

        step_model = StepModel(model).eval()
        step_tokens = run_step_torch(step_model, x_ref_t).numpy()
        with torch.no_grad():
            seq_mean = MeanLogits(model)(x_ref_t).numpy()

        for stem, v, form, dynamo in exports:
            if v != variant:
                continue
            path = args.out / f"{stem}.onnx"
            ref_name = f"{stem}.ref.npz"
            if form == "step":
                # Batch 2 in the example inputs: torch.export specializes a size-1 dim.
                module, example = step_model, (x_ref_t[:2, 0], *zero_states(2))
                in_names, out_names = ["x", "state0", "state1"], ["logits", "state0_out", "state1_out"]
                ref_logits = step_tokens
            else:
                module, example = MeanLogits(model).eval(), (x_ref_t[:2],)
                in_names, out_names = ["x"], ["logits"]
                ref_logits = seq_mean
            proto, opset = export(module, example, path, dynamo, form, in_names, out_names, dynamic=True)

            if form == "step":
                got = run_step_ort(path, x_ref)
            else:
                sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
                got = sess.run(["logits"], {"x": x_ref})[0]
            err = float(np.abs(got - ref_logits).max())
            scale = max(1.0, float(np.abs(ref_logits).max()))
            print(f"  {path.name}: onnxruntime vs torch max abs err {err:.2e} (logits up to {scale:.1f})")
            if not err <= ORT_RTOL * scale:
                raise SystemExit(f"{path.name}: onnxruntime disagrees with torch ({err:.2e})")

            np.savez_compressed(args.out / ref_name, x=x_ref, logits=ref_logits)
            inputs = value_info(proto.graph.input)
            sidecar = {
                "torch_version": torch.__version__,
                "onnx_opset": opset,
                "onnx_ir_version": proto.ir_version,
                "export_mode": f"dynamo={dynamo}",
                "form": form,
                "variant": variant,
                "H": H,
                "N": 2 * MODES,
                "n_layers": N_LAYERS,
                "in_features": IN_FEATURES,
                "n_classes": N_CLASSES,
                "seq_len": SEQ_LEN,
                "float_test_accuracy": acc,
                "dynamic_batch": isinstance(inputs[0]["shape"][0], str),
                # False when the exporter folded the discretization (and, in the sequence
                # form, the kernel) into constants with generated names.
                "raw_ssm_parameters": any(i.name.endswith(".s4d.log_dt") for i in proto.graph.initializer),
                "inputs": inputs,
                "outputs": value_info(proto.graph.output),
                "reference": ref_name,
                "onnxruntime_max_abs_err": err,
            }
            with open(args.out / f"{stem}.json", "w") as f:
                json.dump(sidecar, f, indent=2)
                f.write("\n")

    print("float test accuracy: " + ", ".join(f"{k} {v:.4f}" for k, v in summary.items()))


if __name__ == "__main__":
    main()

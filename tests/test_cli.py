"""The command line: helpful help, one-line errors with exit code 1, never a traceback."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import onnx
import pytest

from tests.builders.onnx_models import (
    build_step_model,
    build_unsupported_op_model,
    build_wrong_rank_model,
    random_spec,
    truncated_bytes,
)


def ssmc(*args: str, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "ssmc.cli", *map(str, args)], capture_output=True, text=True, cwd=cwd, timeout=300
    )


def assert_one_line_error(proc: subprocess.CompletedProcess, *phrases: str) -> None:
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout
    lines = [line for line in proc.stderr.splitlines() if line.strip() and not line.startswith("[")]
    assert len(lines) == 1 and lines[0].startswith("ssmc: error: "), proc.stderr
    for phrase in phrases:
        assert phrase in lines[0], lines[0]


@pytest.mark.parametrize(
    "command", ["compile", "inspect", "run", "passes", "ops", "export-lava", "microcode", "profile"]
)
def test_every_subcommand_help_explains_its_options_with_an_example(command):
    proc = ssmc(command, "--help")
    assert proc.returncode == 0
    if command not in ("passes",):
        assert "example" in proc.stdout and "ssmc " + command in proc.stdout


def test_top_level_help_shows_a_typical_session():
    proc = ssmc("--help")
    assert proc.returncode == 0
    for command in ("ssmc inspect", "ssmc compile", "ssmc run"):
        assert command in proc.stdout


def test_no_command_prints_help_and_exits_2():
    proc = ssmc()
    assert proc.returncode == 2 and "usage:" in proc.stdout


def test_bad_usage_exits_2():
    assert ssmc("compile").returncode == 2


@pytest.fixture
def bad_models(tmp_path):
    good = build_step_model(random_spec(0)).SerializeToString()
    files = {
        "empty": b"",
        "not_onnx": b"this is a text file, not a model\n" * 10,
        "truncated": truncated_bytes(good),
        "unsupported_op": build_unsupported_op_model("TopK").SerializeToString(),
        "wrong_rank": build_wrong_rank_model().SerializeToString(),
    }
    paths = {}
    for name, data in files.items():
        paths[name] = tmp_path / f"{name}.onnx"
        paths[name].write_bytes(data)
    return paths


@pytest.mark.parametrize(
    "case, phrases",
    [
        ("empty", ["empty"]),
        ("not_onnx", ["not an ONNX model"]),
        ("truncated", ["truncated"]),
        ("unsupported_op", ["TopK", "Supported:"]),
        ("wrong_rank", ["rank 3", "step-form"]),
    ],
)
@pytest.mark.parametrize("command", ["compile", "inspect"])
def test_bad_models_give_a_one_line_cause(bad_models, tmp_path, command, case, phrases):
    out = tmp_path / "net.lava"
    args = [command, bad_models[case]] + (["-o", out] if command == "compile" else [])
    assert_one_line_error(ssmc(*args), *phrases)
    assert not out.exists()  # nothing half-written
    assert not list(tmp_path.glob(".net.lava.*"))


def test_missing_model_file(tmp_path):
    assert_one_line_error(ssmc("inspect", tmp_path / "nope.onnx"), "no such file")


def test_unsupported_op_error_names_the_node(bad_models):
    proc = ssmc("inspect", bad_models["unsupported_op"])
    assert_one_line_error(proc, "node '", "(TopK)")


def test_lstm_between_layers_is_refused(tmp_path):
    path = tmp_path / "lstm.onnx"
    onnx.save(build_unsupported_op_model("LSTM"), str(path))
    assert_one_line_error(ssmc("inspect", path), "LSTM")


def test_unknown_pass_is_rejected_before_importing(tmp_path, bad_models):
    # The model is broken too: the pipeline error must come first (fail fast, before slow work).
    proc = ssmc("compile", bad_models["empty"], "-o", tmp_path / "n.lava", "--passes", "no-such-pass")
    assert_one_line_error(proc, "unknown pass 'no-such-pass'")


def test_compile_run_round_trip_and_agreement_with_onnxruntime(tmp_path):
    spec = random_spec(2)
    model_path = tmp_path / "m.onnx"
    onnx.save(build_step_model(spec), str(model_path))
    net = tmp_path / "net.lava"
    proc = ssmc("compile", model_path, "-o", net, "--readout", "mean", "--passes", "canonicalize")
    assert proc.returncode == 0, proc.stderr
    x = np.random.default_rng(0).normal(size=(4, 12, spec.in_features)).astype(np.float32)
    np.savez(tmp_path / "in.npz", x=x, y=np.array([0, 1, 0, 1]))
    proc = ssmc(
        "run", net, "--input", tmp_path / "in.npz", "--compare-onnx", model_path, "--output", tmp_path / "y.npy"
    )
    assert proc.returncode == 0, proc.stderr
    assert "accuracy (float):" in proc.stdout and "vs onnxruntime" in proc.stdout
    rel = float(proc.stdout.split("of the output scale")[0].rsplit("(", 1)[1])
    assert rel <= 1e-5
    assert np.load(tmp_path / "y.npy").shape == (4, 12, spec.n_out)


def test_compile_is_byte_identical_across_processes(tmp_path):
    model_path = tmp_path / "m.onnx"
    onnx.save(build_step_model(random_spec(5, activation="relu", glu=False, norm=False)), str(model_path))
    for name in ("a.lava", "b.lava"):
        assert ssmc("compile", model_path, "-o", tmp_path / name, "-q").returncode == 0
    assert (tmp_path / "a.lava").read_bytes() == (tmp_path / "b.lava").read_bytes()


def test_run_rejects_input_of_the_wrong_shape(tmp_path):
    spec = random_spec(2)
    model_path = tmp_path / "m.onnx"
    onnx.save(build_step_model(spec), str(model_path))
    assert ssmc("compile", model_path, "-o", tmp_path / "n.lava", "--passes", "canonicalize").returncode == 0
    np.save(tmp_path / "bad.npy", np.zeros((2, 5, spec.in_features + 1), np.float32))
    assert_one_line_error(ssmc("run", tmp_path / "n.lava", "--input", tmp_path / "bad.npy"), "input must have shape")


def test_run_rejects_a_file_that_is_not_an_array(tmp_path):
    spec = random_spec(2)
    model_path = tmp_path / "m.onnx"
    onnx.save(build_step_model(spec), str(model_path))
    assert ssmc("compile", model_path, "-o", tmp_path / "n.lava", "--passes", "canonicalize").returncode == 0
    (tmp_path / "x.npy").write_text("hello")
    assert_one_line_error(ssmc("run", tmp_path / "n.lava", "--input", tmp_path / "x.npy"), "not a .npy")


def _relu_model(tmp_path, name="m.onnx"):
    spec = random_spec(0, activation="relu", glu=False, norm=False)
    path = tmp_path / name
    onnx.save(build_step_model(spec), str(path))
    return spec, path


def test_fixed_point_compile_and_run_reports_accuracy_saturation_and_sparsity(tmp_path):
    spec, model_path = _relu_model(tmp_path)
    x = np.random.default_rng(0).normal(size=(6, 10, spec.in_features)).astype(np.float32)
    np.savez(tmp_path / "cal.npz", x=x)
    np.savez(tmp_path / "in.npz", x=x, y=np.arange(6) % spec.n_out)
    net = tmp_path / "net.lava"
    proc = ssmc("compile", model_path, "-o", net, "--calibrate", tmp_path / "cal.npz", "--weight-bits", "7")
    assert proc.returncode == 0, proc.stderr
    assert "assign-bitwidths: " in proc.stderr and "weights 7 b" in proc.stderr
    proc = ssmc("run", net, "--input", tmp_path / "in.npz", "--compare-float")
    assert proc.returncode == 0, proc.stderr
    for phrase in (
        "engine numpy",
        "accuracy (numpy):",
        "saturation:",
        "message sparsity",
        "vs float reference",
        "accuracy (float):",
    ):
        assert phrase in proc.stdout


@pytest.fixture
def microcode_run(tmp_path):
    """A fixed-point net.lava and 3 input sequences, and the `ssmc run --engine microcode --compare-numpy`
    command line for them (run in-process, so that a test can tamper with the microcode engine)."""
    import ssmc as lib

    spec, model_path = _relu_model(tmp_path)
    lib.compile(model_path).save(tmp_path / "net.lava")
    np.save(tmp_path / "x.npy", np.random.default_rng(1).normal(size=(3, 6, spec.in_features)))
    return [
        "run",
        str(tmp_path / "net.lava"),
        "--input",
        str(tmp_path / "x.npy"),
        "--engine",
        "microcode",
        "--compare-numpy",
        "-q",
    ]


def test_compare_numpy_says_identical_and_exits_0_when_the_engines_agree(microcode_run, capsys):
    from ssmc.cli import main

    assert main(microcode_run) == 0
    out = capsys.readouterr().out
    assert "vs numpy engine: identical integers (" in out


def test_compare_numpy_fails_with_exit_1_when_one_output_integer_differs(microcode_run, capsys, monkeypatch):
    from ssmc.cli import main
    from ssmc.runtime import microcode_engine

    real = microcode_engine.run_net

    def off_by_one(net, x, **kwargs):
        res = real(net, x, **kwargs)
        name = next(iter(res.raw))
        res.raw[name][0, -1, 0] += 1
        return res

    monkeypatch.setattr(microcode_engine, "run_net", off_by_one)
    assert main(microcode_run) == 1
    captured = capsys.readouterr()
    assert "predictions (first 10):" in captured.out  # the normal report comes first
    assert "vs numpy engine: MISMATCH: 1 of " in captured.out
    errors = [line for line in captured.err.splitlines() if line.strip()]
    assert len(errors) == 1 and errors[0].startswith(
        "ssmc: error: the microcode engine disagrees with the numpy engine"
    ), captured.err
    assert "1 of " in errors[0] and "output values differ" in errors[0]


def test_calibration_of_the_wrong_shape_is_refused(tmp_path):
    spec, model_path = _relu_model(tmp_path)
    np.save(tmp_path / "cal.npy", np.zeros((4, 10, spec.in_features + 2), np.float32))
    proc = ssmc("compile", model_path, "-o", tmp_path / "n.lava", "--calibrate", tmp_path / "cal.npy")
    assert_one_line_error(proc, "calibration data must have shape")


def test_calibration_that_is_not_numbers_is_refused(tmp_path):
    spec, model_path = _relu_model(tmp_path)
    np.save(tmp_path / "cal.npy", np.array([["a"] * spec.in_features] * 3)[None])
    proc = ssmc("compile", model_path, "-o", tmp_path / "n.lava", "--calibrate", tmp_path / "cal.npy")
    assert_one_line_error(proc, "calibration data must be real numbers")


def test_widths_outside_the_target_are_refused(tmp_path):
    _, model_path = _relu_model(tmp_path)
    proc = ssmc("compile", model_path, "-o", tmp_path / "n.lava", "--weight-bits", "12")
    assert_one_line_error(proc, "weight_bits = 12 is outside what the target supports", "3..8")


def test_nan_parameters_are_refused_naming_the_initializer(tmp_path):
    from onnx import numpy_helper

    _, model_path = _relu_model(tmp_path)
    model = onnx.load(str(model_path))
    init = next(i for i in model.graph.initializer if i.name.endswith("s4d.log_dt"))
    values = numpy_helper.to_array(init).copy()
    values[0] = np.nan
    init.CopyFrom(numpy_helper.from_array(values, init.name))
    onnx.save(model, str(model_path))
    assert_one_line_error(ssmc("compile", model_path, "-o", tmp_path / "n.lava"), "layers.0.s4d.log_dt", "NaN")


def test_an_unstable_layer_is_refused_naming_it(tmp_path):
    from tests.frontend.test_recurrence import _rotation, _state_model

    path = tmp_path / "unstable.onnx"
    onnx.save(_state_model(2, _rotation(1.05, 0.3)), str(path))
    assert_one_line_error(ssmc("compile", path, "-o", tmp_path / "n.lava"), "%s4d0 (s4d): |A_bar| = 1.05")


def test_passes_lists_every_pass_of_the_default_pipeline_with_its_options():
    from ssmc.passes import DEFAULT_PIPELINE

    proc = ssmc("passes")
    assert proc.returncode == 0
    for name in DEFAULT_PIPELINE.split(","):
        assert any(line.startswith(name + " ") for line in proc.stdout.splitlines()), name
    assert "weight-bits: int = 8" in proc.stdout and "balance: str = input" in proc.stdout


def test_sigma_delta_messages_are_one_flag_and_need_the_fixed_point_passes(tmp_path):
    spec, model_path = _relu_model(tmp_path)
    net = tmp_path / "net.lava"
    proc = ssmc("compile", model_path, "-o", net, "--sigma-delta", "0.001")
    assert proc.returncode == 0, proc.stderr
    assert "sigma-delta thresholds (message LSBs)" in proc.stderr
    import ssmc as lib

    assert "assign-bitwidths,sigma-delta{threshold=0.001}" in lib.load(net).pipeline
    proc = ssmc("compile", model_path, "-o", tmp_path / "f.lava", "--stop-after", "fold-linear", "--sigma-delta", "0")
    assert_one_line_error(proc, "sigma-delta messages need assign-bitwidths")
    assert not (tmp_path / "f.lava").exists()


def test_verify_each_is_the_default_and_no_verify_turns_it_off_but_not_both():
    from ssmc.cli import build_parser

    parser = build_parser()
    assert parser.parse_args(["compile", "m.onnx", "-o", "n.lava"]).no_verify is False
    assert parser.parse_args(["compile", "m.onnx", "-o", "n.lava", "--verify-each"]).no_verify is False
    assert parser.parse_args(["compile", "m.onnx", "-o", "n.lava", "--no-verify"]).no_verify is True
    with pytest.raises(SystemExit) as e:
        parser.parse_args(["compile", "m.onnx", "-o", "n.lava", "--verify-each", "--no-verify"])
    assert e.value.code == 2


@pytest.mark.parametrize("flag", ["--chips", "--max-neurons-per-core"])
@pytest.mark.parametrize("value", ["0", "-5"])
def test_a_chip_or_core_count_below_one_is_refused_not_taken_as_the_default(flag, value, tmp_path, capsys):
    out = tmp_path / "n.lava"
    from ssmc.cli import main

    assert main(["compile", "examples/digits/digits_s4d_step.onnx", "-o", str(out), "-q", flag, value]) == 1
    err = capsys.readouterr().err
    key = flag.lstrip("-").replace("-", "_")  # the config key the flag sets
    assert f"{key} = {value}: a whole number of at least 1" in err and not out.exists()


def test_compile_shows_progress_as_each_layer_is_measured_and_before_each_pass_runs(tmp_path):
    import ssmc
    from ssmc.passes import DEFAULT_PIPELINE, parse_pipeline

    path = tmp_path / "m.onnx"
    onnx.save(build_step_model(random_spec(0, n_layers=2)), str(path))
    lines = []
    ssmc.compile(path, log=lines.append)
    recognised = next(i for i, line in enumerate(lines) if line.startswith("recognised"))
    measured = [i for i, line in enumerate(lines) if line.strip().startswith("measuring state 'state")]
    assert len(measured) == 2 and all(i < recognised for i in measured)
    starts = [line.strip()[:-4] for line in lines if line.strip().endswith(" ...")]
    # the output steps run as steps of the same driver, after the passes
    assert starts == [p.name for p in parse_pipeline(DEFAULT_PIPELINE)] + [
        "describe-target",
        "emit-microcode",
        "lava-processes",
    ]


def test_readout_last_classifies_from_the_last_token_with_split_weight_exponents(tmp_path):
    spec, model_path = _relu_model(tmp_path)
    x = np.random.default_rng(0).normal(size=(6, 10, spec.in_features)).astype(np.float32)
    np.savez(tmp_path / "in.npz", x=x, y=np.arange(6) % spec.n_out)
    net = tmp_path / "net.lava"
    proc = ssmc(
        "compile", model_path, "-o", net, "--calibrate", tmp_path / "in.npz", "--readout", "last", "--weight-exp", "row"
    )
    assert proc.returncode == 0, proc.stderr
    assert "weight-exp row: " in proc.stderr and "synapse groups added by per-row exponents" in proc.stderr
    proc = ssmc(
        "run", net, "--input", tmp_path / "in.npz", "--compare-onnx", model_path, "--output", tmp_path / "y.npy"
    )
    assert proc.returncode == 0, proc.stderr
    assert "compiled without --readout" not in proc.stdout
    y = np.load(tmp_path / "y.npy")
    assert f"predictions (first 10): {y[:, -1].argmax(-1).tolist()}" in proc.stdout
    rel = float(proc.stdout.split("of the output scale")[0].rsplit("(", 1)[1])
    assert rel < 0.1  # compared with the per-token ONNX outputs: no pool was applied


def test_run_refuses_inputs_the_float_reference_cannot_take_on_every_engine(tmp_path):
    spec, model_path = _relu_model(tmp_path)
    assert ssmc("compile", model_path, "-o", tmp_path / "n.lava", "-q").returncode == 0
    x = np.random.default_rng(0).normal(size=(2, 5, spec.in_features))
    x[1, 3, 0] = -1e308  # finite, but the float model's first layer turns it into inf
    np.save(tmp_path / "huge.npy", x)
    for engine in ("float", "numpy"):
        assert_one_line_error(
            ssmc("run", tmp_path / "n.lava", "--input", tmp_path / "huge.npy", "--engine", engine),
            f"{tmp_path / 'huge.npy'}: input has values up to 1e+308",
            "scale the data",
        )
    x[1, 3, 0] = np.inf
    np.save(tmp_path / "inf.npy", x)
    assert_one_line_error(
        ssmc("run", tmp_path / "n.lava", "--input", tmp_path / "inf.npy", "--engine", "float"),
        "inf.npy",
        "NaN or infinite",
    )

"""`ssmc config` writes a compile's whole configuration as a commented TOML file; `ssmc compile --config`
reads it (flags override it); `ssmc config net.lava` gives back exactly the configuration that built a net."""

import subprocess
import sys

import numpy as np
import onnx
import pytest

import ssmc
from ssmc.config import CompileConfig, FileRecord, LayerWidths, read_config_file
from tests.builders.onnx_models import build_step_model, random_spec


def cli(*args, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "ssmc.cli", *map(str, args)], capture_output=True, text=True, timeout=300, cwd=cwd
    )


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("config")
    spec = random_spec(1, H=4, M=2, n_layers=2, glu=False, norm=False)
    onnx.save(build_step_model(spec), str(tmp / "m.onnx"))
    np.savez(tmp / "cal.npz", x=np.random.default_rng(0).normal(size=(4, 8, spec.in_features)))
    return tmp / "m.onnx"


def edit(text: str, old: str, new: str) -> str:
    assert text.count(old) >= 1, old
    return text.replace(old, new, 1)


def test_config_of_a_model_lists_every_key_and_a_table_per_layer_and_reads_back_as_the_default(model, tmp_path):
    proc = cli("config", model)
    assert proc.returncode == 0, proc.stderr
    text = proc.stdout
    for key in ("passes", "skip", "readout", "plugins"):
        assert f"\n{key} = " in text
    for key in (
        "stop_after",
        "weight_bits",
        "coef_bits",
        "state_bits",
        "message_bits",
        "weight_exp",
        "sigma_delta",
        "target",
        "board",
        "chips",
        "max_neurons_per_core",
        "calibration",
    ):
        assert f"\n# {key} = " in text  # not set: written commented out, with an example value
    assert "# Allowed: one of none, sum, mean, last." in text and "# Allowed: 3..8; default: 8." in text
    inspected = cli("inspect", model, "--format", "json")
    layers = [layer["name"] for layer in __import__("json").loads(inspected.stdout)["layers"]]
    assert [line[len("[layers.") : -1] for line in text.splitlines() if line.startswith("[layers.")] == layers
    (tmp_path / "c.toml").write_text(text)
    assert read_config_file(tmp_path / "c.toml") == CompileConfig()


def test_config_compile_config_round_trips_identically_and_net_lava_records_the_config_used(model, tmp_path):
    text = cli("config", model).stdout
    text = edit(text, 'readout = "none"', 'readout = "mean"')
    text = edit(text, "# weight_bits = 8\n", "weight_bits = 7\n")
    text = edit(text, "# sigma_delta = 0.001", "sigma_delta = 0.002")
    text = edit(
        text,
        "[layers.s4d0]\n# weight_bits = 8  # 3..8\n# coef_bits = 16  # 4..24",
        "[layers.s4d0]\n# weight_bits = 8  # 3..8\ncoef_bits = 12",
    )
    (tmp_path / "ssmc.toml").write_text(text)
    proc = cli("compile", model, "-o", tmp_path / "net.lava", "-q", "--config", tmp_path / "ssmc.toml")
    assert proc.returncode == 0, proc.stderr
    back = cli("config", tmp_path / "net.lava")
    assert back.returncode == 0, back.stderr
    assert back.stdout == text
    used = ssmc.load(tmp_path / "net.lava").config
    assert used == read_config_file(tmp_path / "ssmc.toml")
    assert (used.readout, used.weight_bits, used.sigma_delta, used.layers) == (
        "mean",
        7,
        0.002,
        (LayerWidths("s4d0", coef_bits=12),),
    )


def test_flags_override_the_config_file_and_the_net_records_the_result(model, tmp_path):
    (tmp_path / "c.toml").write_text('readout = "mean"\nweight_bits = 7\nskip = ["rescale-states"]\n')
    cal = model.parent / "cal.npz"
    proc = cli(
        "compile",
        model,
        "-o",
        tmp_path / "n.lava",
        "-q",
        "--config",
        tmp_path / "c.toml",
        "--readout",
        "sum",
        "--calibrate",
        cal,
    )
    assert proc.returncode == 0, proc.stderr
    c = ssmc.load(tmp_path / "n.lava").config
    assert (c.readout, c.weight_bits, c.skip, c.calibration.file) == ("sum", 7, ("rescale-states",), "cal.npz")
    # the recorded config, given back with the same data, makes the same net
    (tmp_path / "back.toml").write_text(cli("config", tmp_path / "n.lava").stdout)
    proc = cli(
        "compile", model, "-o", tmp_path / "again.lava", "-q", "--config", tmp_path / "back.toml", "--calibrate", cal
    )
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "again.lava").read_bytes() == (tmp_path / "n.lava").read_bytes()
    # ... and without the data it names, it says what to pass instead of calibrating on random tokens
    proc = cli("compile", model, "-o", tmp_path / "x.lava", "-q", "--config", tmp_path / "back.toml")
    assert proc.returncode == 1 and "calibrated with cal.npz: pass that data with --calibrate" in proc.stderr


@pytest.mark.parametrize(
    "text,phrases",
    [
        ("speed = 3\n", ["unknown key 'speed'", "keys: passes, skip, stop_after, readout"]),
        ('readout = "max"\n', ["readout = 'max'", "one of none, sum, mean, last"]),
        ("weight_bits = 12\n", ["weight_bits = 12", "3..8"]),
        ("[layers.s4d0]\ncoef = 12\n", ["layer 's4d0': unknown key 'coef'", "keys: name, weight_bits, coef_bits"]),
        ("[layers.s4d0]\nstate_bits = 99\n", ["layers.s4d0.state_bits = 99", "8..32"]),
        ('target = "loihi2"\n', ['target must be a table {file = "name", sha256']),
        ("readout = \n", ["not valid TOML"]),
    ],
)
def test_an_unknown_key_or_bad_value_fails_in_one_line_with_the_file_key_and_allowed_values(
    model, tmp_path, text, phrases
):
    (tmp_path / "bad.toml").write_text(text)
    proc = cli("compile", model, "-o", tmp_path / "n.lava", "--config", tmp_path / "bad.toml")
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode == 1 and len(lines) == 1 and lines[0].startswith(f"ssmc: error: {tmp_path / 'bad.toml'}: ")
    for phrase in phrases:
        assert phrase in lines[0]
    assert not (tmp_path / "n.lava").exists()


def test_a_config_naming_a_plugin_never_runs_it_by_itself(model, tmp_path):
    (tmp_path / "c.toml").write_text('plugins = [{ file = "evil.py", sha256 = "" }]\n')
    proc = cli("compile", model, "-o", tmp_path / "n.lava", "-q", "--config", tmp_path / "c.toml")
    assert proc.returncode == 1 and "names plugin(s) evil.py: pass them with --plugin" in proc.stderr


def test_a_target_sha256_in_the_config_must_match_the_file(model, tmp_path):
    (tmp_path / "c.toml").write_text(f'target = {{ file = "loihi2", sha256 = "{"0" * 64}" }}\n')
    proc = cli("compile", model, "-o", tmp_path / "n.lava", "-q", "--config", tmp_path / "c.toml")
    assert proc.returncode == 1 and "target loihi2: sha256" in proc.stderr and "is not the config's" in proc.stderr
    assert FileRecord("loihi2").sha256 == ""  # an empty sha256 checks nothing: a hand-written config

"""Lava is archived upstream: a compiled net.lava must load, run and be inspected with Lava not installed.

Each check runs in a fresh interpreter where importing `lava` fails as it does when the package is absent.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

from tests.conftest import EXAMPLES

# A meta-path finder that refuses `lava` and its submodules, installed before anything else is imported.
BLOCK_LAVA = textwrap.dedent("""
    import importlib.abc, sys
    class NoLava(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name == "lava" or name.startswith("lava."):
                raise ModuleNotFoundError(f"No module named {name!r}", name=name)
    sys.meta_path.insert(0, NoLava())
""")


def run_without_lava(code: str, cwd) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", BLOCK_LAVA + textwrap.dedent(code)], cwd=cwd, capture_output=True, text=True, timeout=600
    )


@pytest.fixture(scope="module")
def compiled(tmp_path_factory):
    out = tmp_path_factory.mktemp("nolava") / "net.lava"
    done = run_without_lava(
        f"""
        import ssmc
        net = ssmc.compile({str(EXAMPLES / "digits_s4d_step.onnx")!r}, readout="mean",
                           calibration={str(EXAMPLES / "digits_calib.npz")!r})
        net.save({str(out)!r})
        assert "lava" not in sys.modules
    """,
        out.parent,
    )
    assert done.returncode == 0, done.stderr
    return out


def test_the_blocker_really_hides_lava(tmp_path):
    done = run_without_lava("import lava", tmp_path)
    assert done.returncode != 0 and "No module named 'lava'" in done.stderr


def test_a_net_compiles_loads_and_runs_bit_exactly_without_lava(compiled):
    done = run_without_lava(
        f"""
        import json, numpy as np, ssmc
        net = ssmc.load({str(compiled)!r})
        x = np.load({str(EXAMPLES / "digits_test.npz")!r})["x"][:4]
        a = net.run_detailed(x, engine="numpy")["result"]
        b = net.run_detailed(x, engine="microcode")["result"]
        same = all(np.array_equal(a.raw[k], b.raw[k]) for k in a.raw)
        y = net.run(x, engine="float")
        print(json.dumps({{"same": same, "lava_imported": "lava" in sys.modules, "float_shape": list(y.shape)}}))
    """,
        compiled.parent,
    )
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result == {"same": True, "lava_imported": False, "float_shape": [4, 64, 10]}


@pytest.mark.parametrize(
    "argv", [["report"], ["microcode"], ["run", "--input", str(EXAMPLES / "digits_test.npz"), "--limit", "3"]]
)
def test_the_cli_reports_and_runs_a_net_without_lava(compiled, argv):
    command, *rest = argv
    done = run_without_lava(
        f"""
        from ssmc.cli import main
        code = main({[command, str(compiled), *rest]!r})
        assert "lava" not in sys.modules, "lava was imported"
        raise SystemExit(code)
    """,
        compiled.parent,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip()


def test_the_lava_engine_without_lava_is_a_one_line_error(compiled):
    done = run_without_lava(
        f"""
        from ssmc.cli import main
        raise SystemExit(main(["run", {str(compiled)!r}, "--input", {str(EXAMPLES / "digits_test.npz")!r},
                               "--engine", "lava", "--limit", "1"]))
    """,
        compiled.parent,
    )
    assert done.returncode == 1, (done.returncode, done.stderr)
    errors = [line for line in done.stderr.splitlines() if line.startswith("ssmc:")]
    assert len(errors) == 1 and errors[0].startswith("ssmc: error: Lava is not installed"), done.stderr
    assert "Traceback" not in done.stderr

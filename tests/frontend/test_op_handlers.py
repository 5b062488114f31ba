"""Op handlers map ONNX nodes the frontend does not know (custom domains, or a
standard op done your way) onto IR ops; their failures name the node, the op
and the handler."""

from __future__ import annotations

import importlib.metadata
import pathlib
import subprocess
import sys

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from ssmc.errors import SsmcError, UnsupportedModelError
from ssmc.frontend import handlers, import_onnx, load_plugin_file, register_op_handler
from ssmc.runtime.float_ref import run_float
from tests.builders.onnx_models import build_step_model, random_spec, run_step_model_ort, step_model_parameters

ROOT = pathlib.Path(__file__).resolve().parents[2]
CUSTOM_OP = ROOT / "examples" / "custom_op"
HANDLER_FILE = CUSTOM_OP / "s4d_handler.py"


@pytest.fixture(autouse=True)
def clean_registry(monkeypatch):
    """Each test sees only the handlers it registers (and loads plugin files afresh)."""
    monkeypatch.setattr(handlers, "_REGISTRY", {})
    monkeypatch.setattr(handlers, "_loaded_files", {})
    monkeypatch.setattr(handlers, "_plugins_loaded", True)


def exporter():
    sys.path.insert(0, str(CUSTOM_OP))
    try:
        import export_fused_s4d
    finally:
        sys.path.remove(str(CUSTOM_OP))
    return export_fused_s4d


def fused_model_and_reference(seed: int):
    """The fused-node model and the equivalent torch-style step model (same parameters)."""
    spec = random_spec(seed, activation="relu", glu=False, norm=False, residual=True, linear_style="gemm")
    return exporter().build_fused_model(step_model_parameters(spec)), build_step_model(spec), spec


@pytest.mark.parametrize("seed", range(6))
def test_the_example_handler_maps_fused_s4d_nodes_to_what_onnxruntime_computes_unfused(seed, save_onnx):
    fused, reference, spec = fused_model_and_reference(seed)
    load_plugin_file(HANDLER_FILE)
    graph, report, _ = import_onnx(save_onnx(fused))
    assert [op.kind for op in graph.ops()].count("s4d") == spec.n_layers
    x = np.random.default_rng(seed).normal(size=(3, 20, spec.in_features)).astype(np.float32)
    want = run_step_model_ort(reference, x)  # the same network, unfused, run by onnxruntime
    got = run_float(graph, x)[graph.outputs()[0].name]
    assert np.abs(got - want).max() <= 1e-5 * np.abs(want).max()
    sources = [layer["source"] for layer in report.layers if layer["kind"] == "s4d"]
    assert all("com.example.S4D" in s and "s4d_handler.py" in s for s in sources)


def test_without_the_handler_the_error_names_the_node_and_says_how_to_add_one(save_onnx):
    fused, _, _ = fused_model_and_reference(0)
    with pytest.raises(UnsupportedModelError) as e:
        import_onnx(save_onnx(fused))
    msg = str(e.value)
    assert "'/layers.0/s4d/S4D' (com.example.S4D)" in msg and "register_op_handler" in msg
    assert "--plugin" in msg and "docs/extending.md" in msg and "\n" not in msg


def test_an_unsupported_standard_op_mentions_handlers(save_onnx):
    from tests.builders.onnx_models import build_unsupported_op_model

    with pytest.raises(UnsupportedModelError, match=r"handlers can be added: @register_op_handler\('TopK'\)"):
        import_onnx(save_onnx(build_unsupported_op_model("TopK")))


def _tiny_custom_model(op="Scale", domain="com.example", **attrs) -> onnx.ModelProto:
    """x [batch, 3] -> Gemm -> custom op -> Relu -> y, no states."""
    w = numpy_helper.from_array(np.arange(9, dtype=np.float32).reshape(3, 3) / 9, "W")
    nodes = [
        helper.make_node("Gemm", ["x", "W"], ["h"], name="lin"),
        helper.make_node(op, ["h"], ["z"], name="custom", domain=domain, **attrs),
        helper.make_node("Relu", ["z"], ["y"], name="relu"),
    ]
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["b", 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["b", 3])],
        [w],
    )
    opsets = [helper.make_opsetid("", 17)] + ([helper.make_opsetid(domain, 1)] if domain else [])
    return helper.make_model(graph, opset_imports=opsets)


def test_a_handler_sees_attributes_and_can_add_several_ops(save_onnx):
    @register_op_handler("Scale", domain="com.example")
    def scale(node, ctx):
        """Scale(x) = factor * x, then tanh."""
        h = ctx.value(node.inputs[0].name)
        n = ctx.ir_shape(h)[0]
        lin = ctx.add("linear", [h], params={"weight": np.eye(n, dtype=np.float32) * node.attrs["factor"]})
        return ctx.add("activation", [lin], attrs={"fn": "tanh"})

    graph, report, _ = import_onnx(save_onnx(_tiny_custom_model(factor=2.0)))
    assert [op.kind for op in graph.ops()] == ["input", "linear", "linear", "activation", "activation", "output"]
    x = np.random.default_rng(0).normal(size=(2, 4, 3))
    W = np.arange(9).reshape(3, 3) / 9
    want = np.maximum(np.tanh(2.0 * x @ W), 0)  # Gemm without transB: y = x W
    assert np.allclose(run_float(graph, x)[graph.outputs()[0].name], want, atol=1e-6)
    assert [layer["name"] for layer in report.layers if "custom" in layer["source"]] == ["linear1", "tanh0"]


@pytest.mark.parametrize(
    "body, phrase",
    [
        ("raise RuntimeError('boom')", "raised RuntimeError: boom"),
        ("return 42", "returned int"),
        ("return 'no_such_op'", "'no_such_op' for output 'z', which is not an IR value"),
        (
            "return ctx.add('linear', [ctx.value('h')], params={'weight': np.ones((3, 4), np.float32)})",
            "does not verify",
        ),
        ("return ctx.add('neurons', [ctx.value('h')])", "not an IR op a handler can add"),
        (
            "return ctx.add('linear', ['x_missing'], params={'weight': np.ones((3, 3), np.float32)})",
            "'x_missing' is not an IR value",
        ),
        ("return {'h': ctx.value('h')}", "mapped 'h', which is not an output of the node"),
        ("return []", "output 'z' is used but the handler returned no IR value"),
    ],
)
def test_a_failing_handler_is_reported_with_node_op_and_origin(body, phrase, save_onnx):
    namespace = {"np": np}
    exec(f"def bad(node, ctx):\n    {body}\n", namespace)
    register_op_handler("Scale", domain="com.example")(namespace["bad"])
    with pytest.raises(UnsupportedModelError) as e:
        import_onnx(save_onnx(_tiny_custom_model(factor=2.0)))
    msg = str(e.value)
    assert "node 'custom' (com.example.Scale)" in msg and "handler " in msg and ".bad" in msg
    assert phrase in msg and "\n" not in msg


def test_a_handler_for_a_standard_op_overrides_the_built_in_recognition(save_onnx):
    @register_op_handler("Relu")
    def relu_as_sigmoid(node, ctx):
        return ctx.add("activation", [ctx.value(node.inputs[0].name)], attrs={"fn": "sigmoid"})

    model = build_step_model(random_spec(1, activation="relu", glu=False, norm=False))
    graph, _, _ = import_onnx(save_onnx(model))
    fns = [op.attrs["fn"] for op in graph.ops_of_kind("activation")]
    assert fns and set(fns) == {"sigmoid"}


def test_registering_two_handlers_for_one_op_names_both():
    register_op_handler("S4D", domain="com.example")(lambda node, ctx: None)
    with pytest.raises(SsmcError, match="two handlers: .*<lambda>.* and .*<lambda>"):
        register_op_handler("S4D", domain="com.example")(lambda node, ctx: None)


def test_ai_onnx_and_the_empty_domain_are_one_domain():
    def h(node, ctx):
        return None

    register_op_handler("Relu", domain="ai.onnx")(h)
    assert handlers.find_handler("Relu", "").func is h


def test_installed_packages_register_handlers_through_the_entry_point_group(tmp_path, monkeypatch):
    (tmp_path / "my_ssmc_ops.py").write_text(
        "from ssmc.frontend import register_op_handler\n"
        "@register_op_handler('Fancy', domain='org.acme')\n"
        "def fancy(node, ctx):\n    '''Fancy: nothing yet.'''\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    ep = importlib.metadata.EntryPoint(name="acme", value="my_ssmc_ops", group=handlers.ENTRY_POINT_GROUP)
    monkeypatch.setattr(
        importlib.metadata, "entry_points", lambda group=None: [ep] if group == handlers.ENTRY_POINT_GROUP else []
    )
    monkeypatch.setattr(handlers, "_plugins_loaded", False)
    found = handlers.find_handler("Fancy", "org.acme")
    assert found is not None and found.summary == "Fancy: nothing yet."


def test_a_broken_entry_point_is_an_ssmc_error_naming_it(monkeypatch):
    ep = importlib.metadata.EntryPoint(name="broken", value="no_such_module_xyz", group=handlers.ENTRY_POINT_GROUP)
    monkeypatch.setattr(
        importlib.metadata, "entry_points", lambda group=None: [ep] if group == handlers.ENTRY_POINT_GROUP else []
    )
    monkeypatch.setattr(handlers, "_plugins_loaded", False)
    with pytest.raises(SsmcError, match="entry point broken = no_such_module_xyz.*failed to import"):
        handlers.find_handler("X")


@pytest.mark.parametrize(
    "content, phrase",
    [
        ("raise ValueError('bad config')", "failed to import: ValueError: bad config"),
        ("import sys; sys.exit(3)", "failed to import: SystemExit"),
        ("def (", "failed to import: SyntaxError"),
    ],
)
def test_a_plugin_file_that_fails_to_import_is_an_ssmc_error(content, phrase, tmp_path):
    path = tmp_path / "plugin.py"
    path.write_text(content)
    with pytest.raises(SsmcError, match=phrase):
        load_plugin_file(path)


def test_plugin_files_must_exist_and_be_python(tmp_path):
    with pytest.raises(SsmcError, match="no such file"):
        load_plugin_file(tmp_path / "missing.py")
    (tmp_path / "h.txt").write_text("")
    with pytest.raises(SsmcError, match=r"expected a Python file"):
        load_plugin_file(tmp_path / "h.txt")


def _ssmc(*args) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "ssmc.cli", *map(str, args)], capture_output=True, text=True, timeout=300
    )


def test_cli_ops_lists_plugin_handlers_and_compile_uses_them(tmp_path):
    fused, _, _ = fused_model_and_reference(2)
    onnx.save(fused, str(tmp_path / "fused.onnx"))
    proc = _ssmc("ops", "--plugin", HANDLER_FILE)
    assert proc.returncode == 0, proc.stderr
    assert "com.example.S4D" in proc.stdout and "s4d_handler.py" in proc.stdout and "built in:" in proc.stdout
    proc = _ssmc("compile", tmp_path / "fused.onnx", "-o", tmp_path / "n.lava", "-q")
    assert proc.returncode == 1 and "Traceback" not in proc.stderr and "--plugin" in proc.stderr
    assert not (tmp_path / "n.lava").exists()
    proc = _ssmc("compile", tmp_path / "fused.onnx", "-o", tmp_path / "n.lava", "-q", "--plugin", HANDLER_FILE)
    assert proc.returncode == 0, proc.stderr
    import ssmc

    plugin = ssmc.load(tmp_path / "n.lava").config.plugins[0]
    assert plugin.file == "s4d_handler.py" and len(plugin.sha256) == 64


def test_the_same_handler_file_loaded_twice_is_one_handler(tmp_path):
    load_plugin_file(HANDLER_FILE)
    copy = tmp_path / "other.py"
    copy.write_text(HANDLER_FILE.read_text())
    handlers._loaded_files.clear()
    load_plugin_file(HANDLER_FILE)  # imported again as a new module: same file, same function
    with pytest.raises(SsmcError, match="two handlers"):
        load_plugin_file(copy)  # another file defining the same op is a conflict


@pytest.fixture
def installed_custom_op_package():
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    subprocess.run(
        pip + ["install", "--no-deps", "--no-build-isolation", "-e", str(CUSTOM_OP)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    yield
    subprocess.run(pip + ["uninstall", "-y", "ssmc-custom-op-example"], check=True, capture_output=True, timeout=300)


def test_an_installed_package_provides_handlers_through_its_entry_point(installed_custom_op_package, tmp_path):
    fused, _, _ = fused_model_and_reference(3)
    onnx.save(fused, str(tmp_path / "fused.onnx"))
    proc = _ssmc("ops")
    assert proc.returncode == 0, proc.stderr
    assert "com.example.S4D" in proc.stdout and "s4d_handler.fused_s4d" in proc.stdout
    proc = _ssmc("compile", tmp_path / "fused.onnx", "-o", tmp_path / "n.lava", "-q")
    assert proc.returncode == 0, proc.stderr
    proc = _ssmc("compile", tmp_path / "fused.onnx", "-o", tmp_path / "m.lava", "-q", "--plugin", HANDLER_FILE)
    assert proc.returncode == 0, proc.stderr  # the package's module and the same file: one handler

"""CompileConfig: one typed record of what shapes a compile; it round-trips JSON exactly and refuses a bad
key or value naming the key and what it allows."""

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ssmc.config import (
    DEFAULT_PIPELINE,
    CompileConfig,
    ConfigError,
    FileRecord,
    LayerWidths,
    from_options,
    from_toml,
    to_toml,
)

HEX = st.text(alphabet="0123456789abcdef", min_size=64, max_size=64)
NAME = st.from_regex(r"[a-z][a-z0-9_]{0,8}", fullmatch=True)
RECORD = st.builds(FileRecord, NAME.map(lambda n: n + ".npz"), HEX)


def width(lo, hi):
    return st.none() | st.integers(lo, hi)


LAYER = st.builds(LayerWidths, NAME, width(3, 8), width(4, 24), width(8, 32), width(2, 32))
CONFIGS = st.builds(
    CompileConfig,
    passes=st.sampled_from([DEFAULT_PIPELINE, "canonicalize", "", 'sigma-delta{kinds="cpx,relu"}']),
    skip=st.lists(NAME, max_size=2).map(tuple),
    stop_after=st.none() | NAME,
    readout=st.sampled_from(["none", "sum", "mean", "last"]),
    calibration=st.none() | RECORD,
    weight_bits=width(3, 8),
    coef_bits=width(4, 24),
    state_bits=width(8, 32),
    message_bits=width(2, 32),
    layers=st.lists(LAYER, max_size=3, unique_by=lambda lw: lw.name).map(tuple),
    weight_exp=st.none() | st.sampled_from(["group", "row", "auto"]),
    sigma_delta=st.none() | st.floats(0.0, 0.999),
    target=st.none() | RECORD,
    board=st.none() | NAME,
    chips=st.none() | st.integers(1, 64),
    max_neurons_per_core=st.none() | st.integers(1, 8192),
    plugins=st.lists(RECORD, max_size=2).map(tuple),
)


@settings(max_examples=150, deadline=None)
@given(CONFIGS)
def test_every_config_round_trips_json_exactly(config):
    text = config.to_json()
    back = CompileConfig.from_json(text)
    assert back == config and back.to_json() == text
    assert CompileConfig.from_json(json.loads(text)) == config


def test_the_default_config_is_the_default_pipeline_with_nothing_overridden():
    c = CompileConfig()
    assert c.passes == DEFAULT_PIPELINE and c.readout == "none" and c.widths() == {} and c.mapping() == {}
    assert json.loads(c.to_json())["weight_bits"] is None


BAD = [  # key, value, what the one-line error must say (the key and the values allowed)
    ("readout", "max", "readout = 'max': one of none, sum, mean, last"),
    ("weight_bits", 12, "weight_bits = 12 is outside what the target supports: a whole number 3..8"),
    ("weight_bits", True, "weight_bits = True"),
    ("coef_bits", 2, "coef_bits = 2 is outside what the target supports: a whole number 4..24"),
    ("state_bits", "24", "state_bits = '24'"),
    ("message_bits", 40, "message_bits = 40 is outside what the target supports: a whole number 2..32"),
    ("weight_exp", "col", "weight_exp = 'col': one of group, row, auto"),
    ("sigma_delta", 1.5, "sigma_delta = 1.5: a number in [0, 1)"),
    ("sigma_delta", "0.1", "sigma_delta = '0.1': a number in [0, 1)"),
    ("chips", 0, "chips = 0: a whole number of at least 1"),
    ("max_neurons_per_core", -3, "max_neurons_per_core = -3: a whole number of at least 1"),
    ("board", "", "board = '': a board name"),
    ("passes", 5, "passes = 5: a pipeline string"),
    ("skip", "canonicalize", "skip must be a list of pass names"),
    ("stop_after", "", "stop_after = '': a pass name"),
    ("calibration", "cal.npz", 'calibration must be a table {file = "name", sha256'),
    ("target", {"file": "t.json", "sha256": "xyz"}, "target.sha256 = 'xyz': 64 lowercase hex digits"),
    ("target", {"file": "t.json", "size": 3}, "target must be a table"),
    ("plugins", [{"file": ""}], "plugins.file = '': a file or built-in name"),
    ("layers", [{"name": "s4d0", "weight_bits": 9}], "layers.s4d0.weight_bits = 9 is outside"),
    ("layers", [{"name": "s4d0", "bits": 9}], "layer 's4d0': unknown key 'bits'; keys: name, weight_bits, coef_bits"),
    ("layers", [{"name": "a b"}], "layers.name = 'a b': a layer name"),
    (
        "layers",
        [{"name": "s4d0", "coef_bits": 12}, {"name": "s4d0", "state_bits": 20}],
        "layers = 's4d0': each layer once",
    ),
]


@pytest.mark.parametrize("key,value,phrase", BAD, ids=[f"{k}={v!r}" for k, v, _ in BAD])
def test_a_bad_value_is_refused_in_one_line_naming_the_key_and_what_it_allows(key, value, phrase):
    with pytest.raises(ConfigError) as e:
        CompileConfig.from_json({key: value})
    assert phrase in str(e.value) and "\n" not in str(e.value)


def test_an_unknown_key_is_refused_with_the_keys_there_are():
    with pytest.raises(ConfigError, match=r"unknown key 'widths'; keys: passes, skip, stop_after, readout"):
        CompileConfig.from_json({"readout": "mean", "widths": 8})
    with pytest.raises(ConfigError, match="unknown compile option 'speed'; options: passes"):
        CompileConfig().with_options(speed=3)


def test_compile_keywords_set_fields_and_layer_bits_text_becomes_a_table_per_layer():
    c = CompileConfig(readout="mean").with_options(
        weight_bits=6,
        layer_bits="s4d0:coef=12/weight=5;linear1:weight=4",
        target="/some/folder/t.json",
        skip=["place"],
        chips=None,
    )
    assert c.readout == "mean" and c.weight_bits == 6 and c.skip == ("place",) and c.chips is None
    assert c.layers == (LayerWidths("s4d0", weight_bits=5, coef_bits=12), LayerWidths("linear1", weight_bits=4))
    assert c.layer_bits == "s4d0:weight=5/coef=12;linear1:weight=4"  # assign-bitwidths' option text
    assert c.target == FileRecord("/some/folder/t.json")  # as given; compile records the name and sha256
    with pytest.raises(ConfigError, match="layer_bits 'speed=3' for s4d0: write KEY=BITS with KEY one of weight"):
        CompileConfig().with_options(layer_bits="s4d0:speed=3")


def test_a_format_2_options_object_reads_into_the_same_config():
    old = {
        "readout": "sum",
        "calibration": f"cal.npz sha256:{'a' * 64}",
        "passes": "canonicalize",
        "skip": ["place"],
        "weight_bits": 6,
        "layer_bits": "s4d1:weight=5",
        "target": "C:\\t\\mine.json",
        "chips": 2,
        "plugins": [{"file": "h.py", "sha256": "b" * 64}],
    }
    assert from_options(old) == CompileConfig(
        passes="canonicalize",
        skip=("place",),
        readout="sum",
        calibration=FileRecord("cal.npz", "a" * 64),
        weight_bits=6,
        layers=(LayerWidths("s4d1", weight_bits=5),),
        target=FileRecord("mine.json"),
        chips=2,
        plugins=(FileRecord("h.py", "b" * 64),),
    )
    assert from_options({"calibration": "none"}).calibration is None


@settings(max_examples=100, deadline=None)
@given(CONFIGS, st.lists(NAME, max_size=3, unique=True))
def test_every_config_round_trips_its_toml_file_exactly(config, model_layers):
    # the model's layers as `ssmc inspect` lists them, in an order the config's own layers keep
    own = [lw.name for lw in config.layers]
    layer_names = own + [n for n in model_layers if n not in own]
    text = to_toml(config, layer_names)
    assert from_toml(text) == config and to_toml(from_toml(text), layer_names) == text

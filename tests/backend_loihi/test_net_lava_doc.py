"""docs/net_lava.md specifies every member a compiled net.lava holds and every manifest key: the spec
cannot fall behind the writer (the doc's marked tables are parsed here, not copied)."""

import dataclasses
import json
import re
import zipfile
from pathlib import Path

import numpy as np
import onnx
import pytest

import ssmc
from ssmc.config import CompileConfig
from tests.builders.onnx_models import build_step_model, random_spec

DOC = Path(__file__).resolve().parents[2] / "docs" / "net_lava.md"
NUMBER_PLACEHOLDERS = {"c", "k", "start"}  # the doc: `<c>`, `<k>`, `<start>` match decimal numbers
NAME = r"[A-Za-z0-9_.\-]+"  # any other `<placeholder>`: one or more op-name characters


def marked_table(marker: str) -> list[list[str]]:
    """The rows (cells, stripped) of the table between `<!-- <marker>: begin -->` and `... end -->`."""
    text = DOC.read_text()
    body = text.split(f"<!-- {marker}: begin -->", 1)[1].split(f"<!-- {marker}: end -->", 1)[0]
    rows = [
        [c.strip() for c in line.strip().strip("|").split("|")] for line in body.splitlines() if line.startswith("|")
    ]
    return rows[2:]  # past the header and its |---| line


def code(cell: str) -> str:
    m = re.fullmatch(r"`([^`]+)`", cell)
    assert m, f"first cell {cell!r} of a marked table in {DOC.name} is not one `code` span"
    return m.group(1)


def entry_regex(pattern: str) -> re.Pattern:
    out = ""
    for literal, placeholder in re.findall(r"([^<]*)(?:<([^>]+)>)?", pattern):
        out += re.escape(literal)
        if placeholder:
            out += r"\d+" if placeholder in NUMBER_PLACEHOLDERS else NAME
    return re.compile(out)


def documented_entries() -> list[re.Pattern]:
    return [entry_regex(code(row[0])) for row in marked_table("net.lava entries")]


def documented_keys() -> set[str]:
    return {code(row[0]) for row in marked_table("manifest keys")}


def key_paths(manifest: dict) -> set[str]:
    """Every top-level key, and every key one level inside the objects the doc breaks down
    (environment, source, config; `entries` is keyed by entry name, checked against the patterns)."""
    paths = set(manifest)
    for parent in ("environment", "source", "config"):
        paths |= {f"{parent}.{k}" for k in manifest.get(parent, {})}
    return paths


@pytest.fixture(scope="module")
def placed_net(tmp_path_factory):
    """A small placed, sigma-delta net with several options given: entries and keys of every kind."""
    tmp = tmp_path_factory.mktemp("net_lava_doc")
    spec = random_spec(3, H=4, M=2, n_layers=2, glu=False, norm=False)
    onnx.save(build_step_model(spec), str(tmp / "m.onnx"))
    np.savez(tmp / "cal.npz", x=np.random.default_rng(0).normal(size=(4, 8, spec.in_features)).astype(np.float32))
    net = ssmc.compile(
        tmp / "m.onnx",
        readout="mean",
        calibration=tmp / "cal.npz",
        sigma_delta=0.01,
        weight_bits=7,
        weight_exp="group",
        max_neurons_per_core=8,
    )
    net.save(tmp / "net.lava")
    with zipfile.ZipFile(tmp / "net.lava") as zf:
        return {"names": zf.namelist(), "manifest": json.loads(zf.read("manifest.json"))}


def test_the_marked_tables_parse_into_patterns_and_keys():
    patterns = documented_entries()
    assert any(p.fullmatch("extra/microcode/chip0.core12/s4d0.pairs@128.bin") for p in patterns)
    assert not any(p.fullmatch("extra/microcode/chip0.core12/s4d0.pairs@start.bin") for p in patterns)
    assert not any(p.fullmatch("notes.txt") for p in patterns)
    assert {"format", "format_version", "entries"} <= documented_keys()


def test_every_entry_of_a_compiled_net_matches_a_documented_pattern(placed_net):
    names = placed_net["names"]
    assert any("/chip" in n for n in names) and any(n.startswith("model/tensors/") for n in names)
    patterns = documented_entries()
    undocumented = [n for n in names if not any(p.fullmatch(n) for p in patterns)]
    assert undocumented == [], f"entries missing from {DOC.name}'s member table"


def test_every_manifest_key_of_a_compiled_net_is_documented(placed_net):
    assert sorted(key_paths(placed_net["manifest"]) - documented_keys()) == []


def test_every_config_field_the_manifest_records_is_documented():
    assert sorted({f"config.{f.name}" for f in dataclasses.fields(CompileConfig)} - documented_keys()) == []

"""ssmc report: text, JSON and HTML from net.lava alone; the HTML page's images exist and are referenced;
estimates are labelled as such."""

import json
import os
import re

import pytest

import ssmc
from ssmc.cli import main
from ssmc.report import build_report
from ssmc.report.render import to_json, to_text, write_html

EXAMPLE = "examples/digits/digits_s4d_step.onnx"
CALIB = "examples/digits/digits_calib.npz"


@pytest.fixture(scope="module")
def net_path(tmp_path_factory):
    path = tmp_path_factory.mktemp("report") / "net.lava"
    assert main(["compile", EXAMPLE, "-o", str(path), "--readout", "mean", "--calibrate", CALIB, "-q"]) == 0
    return path


def test_report_counts_every_neuron_once_and_labels_the_estimate(net_path):
    net = ssmc.load(net_path)
    rep = build_report(net)
    total = sum(int(op.attrs["size"]) for op in net.graph.ops_of_kind("neurons"))
    assert sum(c["use"]["neurons"] for c in rep["placement"]["cores"]) == total
    assert all(0 < c["utilisation"]["neurons"] <= 1 for c in rep["placement"]["cores"])
    assert "ESTIMATE" in rep["cost"]["label"]
    assert rep["target"]["provenance"]["neurons"]["sureness"] == "derived"
    assert "measured" in rep["rates"]["source"]
    text = to_text(rep)
    assert "ESTIMATE" in text and "binding capacity" in text and "s4d0.pairs" in text
    programs = rep["sections"]["microcode programs (sizes in words; cycles assumed)"]
    assert {r["group"] for r in programs} == {op.name for op in net.graph.ops_of_kind("neurons")}
    assert json.loads(to_json(rep))["placement"]["cores_used"] == rep["placement"]["cores_used"]


def test_html_report_writes_images_the_page_references(net_path, tmp_path):
    page = tmp_path / "out" / "report.html"
    page.parent.mkdir()
    assert main(["report", str(net_path), "--format", "html", "-o", str(page)]) == 0
    body = page.read_text()
    refs = re.findall(r"<img src='([^']+)'", body)
    assert len(refs) == 3
    for ref in refs:
        f = page.parent / ref
        assert f.is_file() and f.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "Estimated cost per token" in body


def test_html_report_is_byte_identical_when_repeated(net_path, tmp_path):
    rep = build_report(ssmc.load(net_path))
    outs = []
    for i in range(2):
        files = (
            write_html(rep, str(tmp_path / f"r{i}" / "page.html")) if os.makedirs(tmp_path / f"r{i}") is None else None
        )
        outs.append([open(f, "rb").read() for f in files])
    assert outs[0] == outs[1]


def test_cli_report_text_and_json(net_path, capsys):
    assert main(["report", str(net_path)]) == 0
    assert "per-core utilisation" in capsys.readouterr().out
    assert main(["report", str(net_path), "--format", "json"]) == 0
    assert "traffic" in json.loads(capsys.readouterr().out)


def test_html_needs_an_output_file(net_path, capsys):
    assert main(["report", str(net_path), "--format", "html"]) == 1
    assert "needs -o" in capsys.readouterr().err


def test_unplaced_net_reports_bit_widths_and_says_why_no_cores(tmp_path):
    path = tmp_path / "n.lava"
    assert (
        main(["compile", EXAMPLE, "-o", str(path), "--readout", "mean", "--skip", "partition", "--skip", "place", "-q"])
        == 0
    )
    rep = build_report(ssmc.load(path))
    assert rep["placement"] is None and "partition" in rep["note"] and rep["bitwidths"]


def test_compile_with_chips_and_an_impossible_target_gives_a_fit_error(tmp_path, capsys):
    bad = tmp_path / "tiny.json"
    data = json.loads(open("ssmc/targets/loihi2.json").read())
    data["core"]["neurons"]["value"] = 64
    data["chip"]["cores_per_chip"]["value"] = 4
    bad.write_text(json.dumps(data))
    assert main(["compile", EXAMPLE, "-o", str(tmp_path / "x.lava"), "--target", str(bad), "-q"]) == 1
    err = capsys.readouterr().err
    assert "needs" in err and "--chips" in err and "Traceback" not in err
    n_chips = int(re.search(r"--chips (\d+)", err).group(1))
    assert (
        main(["compile", EXAMPLE, "-o", str(tmp_path / "x.lava"), "--target", str(bad), "--chips", str(n_chips), "-q"])
        == 0
    )


def test_text_report_shows_stored_names_with_control_characters_escaped(net_path):
    # a hostile net.lava can store any string; the terminal must never receive an escape sequence
    net = ssmc.load(net_path)
    net.source = {**net.source, "file": "evil\x1b[2J\x07name.onnx"}
    text = to_text(build_report(net))
    assert "\x1b" not in text and "\x07" not in text and "evil\\x1b[2J\\x07name.onnx" in text

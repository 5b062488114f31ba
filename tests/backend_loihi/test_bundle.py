"""net.lava: deterministic bytes, atomic saves, exact round trips, and one-line refusals of damaged files."""

import hashlib
import io
import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

from ssmc.backend_loihi import bundle
from ssmc.backend_loihi.bundle import decode, encode, load, save
from ssmc.errors import BundleError, IRError, ResourceLimitError, SsmcError
from ssmc.ir.text import print_graph
from tests.backend_loihi.sample import make_bundle
from tests.test_fuzz_graphs import _compiled_net

ROOT = Path(__file__).resolve().parents[2]
TENSOR = "tensors/enc.weight.npy"


# -- helpers: take a net.lava apart and put it back together ----------------------
def unzip(data: bytes) -> dict[str, bytes]:
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        return {i.filename: zf.read(i.filename) for i in zf.infolist()}


def rezip(entries: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, blob in entries.items():
            zf.writestr(name, blob)
    return buf.getvalue()


def with_manifest(zip_entries: dict[str, bytes], /, **changes) -> dict[str, bytes]:
    """The entries with some manifest fields replaced (its entry checksums untouched, its own
    checksum in manifest.sha256 remade, so the change under test is what a reader meets)."""
    manifest = json.loads(zip_entries["manifest.json"])
    manifest.update(changes)
    blob = json.dumps(manifest).encode()
    return {
        **zip_entries,
        "manifest.json": blob,
        "manifest.sha256": f"{hashlib.sha256(blob).hexdigest()}  manifest.json\n".encode(),
    }


def rehashed(entries: dict[str, bytes]) -> dict[str, bytes]:
    """Entries with a manifest whose checksums match the (possibly edited) contents."""
    return with_manifest(
        entries,
        entries={
            k: hashlib.sha256(v).hexdigest()
            for k, v in entries.items()
            if k not in ("manifest.json", "manifest.sha256")
        },
    )


def data_offset(data: bytes, name: str) -> int:
    """Where the stored (compressed) bytes of entry `name` start in the zip."""
    info = zipfile.ZipFile(io.BytesIO(data)).getinfo(name)
    header = data[info.header_offset : info.header_offset + 30]
    assert header[:4] == b"PK\x03\x04"
    name_len = int.from_bytes(header[26:28], "little")
    extra_len = int.from_bytes(header[28:30], "little")
    return info.header_offset + 30 + name_len + extra_len


def central_record(data: bytes, name: str) -> int:
    """Offset of entry `name`'s record in the zip's central directory."""
    pos = data.find(b"PK\x01\x02")
    while pos >= 0:
        name_len = int.from_bytes(data[pos + 28 : pos + 30], "little")
        if data[pos + 46 : pos + 46 + name_len] == name.encode():
            return pos
        pos = data.find(b"PK\x01\x02", pos + 4)
    raise AssertionError(f"{name} not in the central directory")


@pytest.fixture(scope="module")
def good() -> bytes:
    return encode(make_bundle())


# -- determinism ----------------------------------------------------------------
def test_encoding_the_same_bundle_twice_gives_the_same_bytes():
    assert encode(make_bundle()) == encode(make_bundle())


def test_saving_twice_gives_byte_identical_files(tmp_path, good):
    save(make_bundle(), tmp_path / "a.lava")
    save(make_bundle(), tmp_path / "b.lava")
    assert (tmp_path / "a.lava").read_bytes() == (tmp_path / "b.lava").read_bytes() == good


SCRIPT = """
import hashlib, sys
sys.path.insert(0, {root!r})
from ssmc.backend_loihi.bundle import encode
from tests.backend_loihi.sample import make_bundle
print(hashlib.sha256(encode(make_bundle())).hexdigest())
"""


def test_separate_processes_encode_the_same_bytes(good):
    digests = []
    for seed in ("1", "2"):  # different hash seeds shake out any set or dict ordering
        env = {**os.environ, "PYTHONHASHSEED": seed}
        run = subprocess.run(
            [sys.executable, "-c", SCRIPT.format(root=str(ROOT))], capture_output=True, text=True, env=env, timeout=60
        )
        assert run.returncode == 0, run.stderr
        digests.append(run.stdout.strip())
    assert digests[0] == digests[1] == hashlib.sha256(good).hexdigest()


def test_entries_carry_no_wall_clock_time(good):
    with zipfile.ZipFile(io.BytesIO(good)) as zf:
        dates = {i.date_time for i in zf.infolist()}
    assert dates == {(1980, 1, 1, 0, 0, 0)}


# -- contents -------------------------------------------------------------------
def test_the_manifest_comes_first_and_lists_every_other_entry_with_its_sha256(good):
    entries = unzip(good)
    assert list(entries)[:2] == ["manifest.json", "manifest.sha256"]
    manifest_blob = entries.pop("manifest.json")
    assert entries.pop("manifest.sha256") == f"{hashlib.sha256(manifest_blob).hexdigest()}  manifest.json\n".encode()
    manifest = json.loads(manifest_blob)
    assert manifest["format"] == "ssmc.net" and manifest["format_version"] == 3
    assert manifest["entries"] == {k: hashlib.sha256(v).hexdigest() for k, v in entries.items()}
    assert set(entries) == {
        "ir.txt",
        "report.json",
        "tensors/enc.bias.npy",
        "tensors/enc.weight.npy",
        "tensors/ssm.A_bar.npy",
        "tensors/ssm.B_bar.npy",
        "tensors/ssm.C.npy",
        "tensors/ssm.D.npy",
    }


def test_tensors_are_plain_npy_files_readable_without_pickle(good):
    entries = unzip(good)
    g = make_bundle().graph
    for key, expected in [("enc.weight", g.op("enc").params["weight"]), ("ssm.C", g.op("ssm").params["C"])]:
        arr = np.load(io.BytesIO(entries[f"tensors/{key}.npy"]), allow_pickle=False)
        assert arr.dtype == expected.dtype and np.array_equal(arr, expected)


def test_save_then_load_round_trips_everything(tmp_path):
    original = make_bundle()
    save(original, tmp_path / "net.lava")
    back = load(tmp_path / "net.lava")
    assert print_graph(back.graph) == print_graph(original.graph)
    for op in original.graph.ops():
        for name, arr in op.params.items():
            got = back.graph.op(op.name).params[name]
            assert got.dtype == arr.dtype
            assert np.array_equal(got.view(np.uint8), arr.view(np.uint8)), f"{op.name}.{name}"
    assert back.source == original.source
    assert back.pipeline == "canonicalize"
    assert back.config == original.config and back.config.weight_bits == 6
    assert back.report == original.report
    assert back.ssmc_version == original.ssmc_version
    assert back.format_version == bundle.FORMAT_VERSION


def test_saved_files_are_readable_by_everyone(tmp_path):
    save(make_bundle(), tmp_path / "net.lava")
    assert (tmp_path / "net.lava").stat().st_mode & 0o777 == 0o644


# -- atomic saves ---------------------------------------------------------------
def test_a_bundle_that_does_not_verify_is_not_saved_and_the_old_file_stays(tmp_path, good):
    dest = tmp_path / "net.lava"
    dest.write_bytes(good)
    broken = make_bundle()
    broken.graph.op("enc").params["weight"] = np.zeros((2, 2), np.float32)
    with pytest.raises(IRError, match="%enc"):
        save(broken, dest)
    assert dest.read_bytes() == good
    assert os.listdir(tmp_path) == ["net.lava"]


def test_a_failure_while_replacing_keeps_the_old_file_and_removes_the_temp_file(tmp_path, monkeypatch):
    dest = tmp_path / "net.lava"
    dest.write_bytes(b"previous content")

    def disk_trouble(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", disk_trouble)
    with pytest.raises(SsmcError, match="cannot write .No space left on device"):
        save(make_bundle(), dest)
    assert dest.read_bytes() == b"previous content"
    assert os.listdir(tmp_path) == ["net.lava"]


def test_a_successful_save_leaves_no_temp_files(tmp_path):
    save(make_bundle(), tmp_path / "net.lava")
    save(make_bundle(), tmp_path / "net.lava")
    assert os.listdir(tmp_path) == ["net.lava"]


def test_saving_into_a_missing_folder_raises_ssmc_error(tmp_path):
    with pytest.raises(SsmcError, match="does not exist"):
        save(make_bundle(), tmp_path / "nope" / "net.lava")
    assert os.listdir(tmp_path) == []


def test_saving_onto_a_directory_raises_ssmc_error(tmp_path):
    (tmp_path / "out").mkdir()
    with pytest.raises(SsmcError):
        save(make_bundle(), tmp_path / "out")


# -- refusing damaged files -----------------------------------------------------
def _flip_tensor_byte(data):
    entries = unzip(data)
    blob = bytearray(entries[TENSOR])
    blob[-3] ^= 0x10  # inside the float data, after the .npy header
    return rezip({**entries, TENSOR: bytes(blob)})


def _drop(entry):
    def damage(data):
        entries = unzip(data)
        del entries[entry]
        return rezip(entries)

    return damage


def _replace_rehashed(entry, blob):
    def damage(data):
        return rezip(rehashed({**unzip(data), entry: blob}))

    return damage


def _npy(arr):
    buf = io.BytesIO()
    np.save(buf, arr)
    return buf.getvalue()


def _huge(entry, value):
    """Entry's tensor with one value set to `value`: finite, but beyond the 1e10 a net holds."""

    def damage(data):
        arr = np.load(io.BytesIO(unzip(data)[entry]))
        arr.flat[0] = value
        return _replace_rehashed(entry, _npy(arr))(data)

    return damage


DAMAGE = {
    "empty file": (lambda d: b"", "file is empty"),
    "random bytes": (lambda d: np.random.default_rng(0).bytes(len(d)), "not a net.lava file, or truncated"),
    "cut in half": (lambda d: d[: len(d) // 2], "not a net.lava file, or truncated"),
    "last byte missing": (lambda d: d[:-1], "not a net.lava file, or truncated"),
    "one byte flipped in a tensor": (_flip_tensor_byte, f"checksum mismatch in {TENSOR}"),
    "format version 4": (lambda d: rezip(with_manifest(unzip(d), format_version=4)), "upgrade ssmc"),
    "another format": (lambda d: rezip(with_manifest(unzip(d), format="other.thing")), "not a net.lava file"),
    "format version a string": (
        lambda d: rezip(with_manifest(unzip(d), format_version="1")),
        "format_version must be a whole number",
    ),
    "format version true": (
        lambda d: rezip(with_manifest(unzip(d), format_version=True)),
        "format_version must be a whole number of at least 1, not True",
    ),
    "format version -7": (
        lambda d: rezip(with_manifest(unzip(d), format_version=-7)),
        "format_version must be a whole number of at least 1, not -7",
    ),
    "format version 0": (lambda d: rezip(with_manifest(unzip(d), format_version=0)), "not 0"),
    "manifest edited, its checksum not": (
        lambda d: rezip({**unzip(d), "manifest.json": unzip(d)["manifest.json"].replace(b'"none"', b'"mean"')}),
        "checksum mismatch in manifest.json",
    ),
    "manifest checksum missing": (_drop("manifest.sha256"), "entry manifest.sha256 is missing"),
    "ssmc_version not a string": (
        lambda d: rezip(with_manifest(unzip(d), ssmc_version=[1])),
        "manifest.json: ssmc_version must be a str",
    ),
    "options not an object": (lambda d: rezip(with_manifest(unzip(d), options=[])), "options must be a dict"),
    "config not an object": (lambda d: rezip(with_manifest(unzip(d), config=[])), "config must be a dict"),
    "config with an unknown key": (
        lambda d: rezip(with_manifest(unzip(d), config={"speed": 9})),
        "config: unknown key 'speed'; keys: passes, skip",
    ),
    "config with a bad readout": (
        lambda d: rezip(with_manifest(unzip(d), config={"readout": "max"})),
        "config readout = 'max': one of none, sum, mean, last",
    ),
    "entry checksum not hex": (
        lambda d: rezip(with_manifest(unzip(d), entries={"ir.txt": 5})),
        "the checksum of ir.txt is not a sha256",
    ),
    "manifest nested 100,000 deep": (
        lambda d: rezip({**unzip(d), "manifest.json": b"[" * 100_000 + b"]" * 100_000}),
        "nested 100000 levels deep",
    ),
    "no entry list": (lambda d: rezip(with_manifest(unzip(d), entries=None)), "lists no entries"),
    "extra entry": (lambda d: rezip({**unzip(d), "notes.txt": b"hi"}), "unexpected entry notes.txt"),
    "listed tensor missing": (_drop("tensors/ssm.C.npy"), "entry tensors/ssm.C.npy is missing"),
    "manifest missing": (_drop("manifest.json"), "entry manifest.json is missing"),
    "manifest not JSON": (lambda d: rezip({**unzip(d), "manifest.json": b"{format: ssmc"}), "not valid JSON"),
    "manifest not an object": (lambda d: rezip({**unzip(d), "manifest.json": b"[1, 2]"}), "not a JSON object"),
    "tensor not a .npy": (_replace_rehashed(TENSOR, b"not numpy"), f"{TENSOR}: not a valid .npy"),
    "tensor of Python objects": (
        _replace_rehashed(TENSOR, _npy(np.array([{}, 1], dtype=object))),
        "holds Python objects",
    ),
    "tensor header declares 2^40 floats": (
        _replace_rehashed(TENSOR, _npy(np.zeros(1)).replace(b"(1,)", b"(1099511627776,)")),
        "over the limit",
    ),
    "tensor header declares more than it holds": (
        _replace_rehashed(TENSOR, _npy(np.zeros(1)).replace(b"(1,)", b"(9,)  ")),
        "truncated",
    ),
    "report nested 100,000 deep": (
        _replace_rehashed("report.json", b"[" * 100_000 + b"]" * 100_000),
        "report.json: JSON nested",
    ),
    "report passes not a list": (_replace_rehashed("report.json", b'{"passes": 3}'), "passes must be a list"),
    "tensor of another dtype": (_replace_rehashed(TENSOR, _npy(np.zeros((4, 3)))), "does not load"),
    "IR that does not verify": (_replace_rehashed("ir.txt", b"ssmc.graph @m\n%x = input() : [1]\n"), "does not load"),
    "report not JSON": (_replace_rehashed("report.json", b"{oops"), "damaged"),
    "a weight of 1e30": (
        _huge(TENSOR, 1e30),
        "ir.txt: tensor 'weight' of %enc has values up to 1e+30; a net holds |values| up to 1e+10",
    ),
    "a complex coefficient of 1e30": (
        _huge("tensors/ssm.C.npy", 1e30j),
        "ir.txt: tensor 'C' of %ssm has values up to 1e+30",
    ),
}


@pytest.mark.parametrize("damage,phrase", DAMAGE.values(), ids=DAMAGE.keys())
def test_a_damaged_file_is_refused_with_a_one_line_reason(tmp_path, good, damage, phrase):
    path = tmp_path / "net.lava"
    path.write_bytes(damage(good))
    with pytest.raises((BundleError, ResourceLimitError)) as e:  # a declared size over a limit says which
        load(path)
    msg = str(e.value)
    assert msg.startswith(("net.lava: ", f"{path}: ")), msg  # the file named first
    assert phrase in msg, msg
    assert "\n" not in msg or phrase == "does not load", msg  # the IR verifier lists problems on lines


def test_a_newer_format_names_both_versions(good):
    with pytest.raises(BundleError) as e:
        decode(rezip(with_manifest(unzip(good), format_version=4, ssmc_version="9.0.0")))
    assert "format 4 by ssmc 9.0.0" in str(e.value)
    assert "reads format 3" in str(e.value)


def test_a_format_2_file_records_options_and_loads_them_as_its_config(good):
    # format 2 recorded only the options given, a calibration as "<file> sha256:<hex>", a target as given
    old = with_manifest(
        unzip(good),
        format_version=2,
        options={
            "readout": "mean",
            "calibration": f"cal.npz sha256:{'c' * 64}",
            "passes": "canonicalize",
            "layer_bits": "s4d0:weight=6/coef=12",
            "target": "/home/me/targets/t.json",
            "sigma_delta": 0.01,
        },
    )
    old_manifest = json.loads(old["manifest.json"])
    del old_manifest["config"]
    b = decode(rezip(with_manifest({**old, "manifest.json": json.dumps(old_manifest).encode()})))
    c = b.config
    assert b.format_version == 2 and c.readout == "mean" and c.passes == "canonicalize"
    assert (c.calibration.file, c.calibration.sha256) == ("cal.npz", "c" * 64)
    assert [(lw.name, lw.weight_bits, lw.coef_bits) for lw in c.layers] == [("s4d0", 6, 12)]
    assert c.target.file == "t.json" and c.sigma_delta == 0.01 and c.weight_bits is None


def test_a_format_1_file_without_the_manifest_checksum_still_loads(good):
    entries = unzip(good)
    del entries["manifest.sha256"]
    old = with_manifest(entries, format_version=1)
    del old["manifest.sha256"]
    b = decode(rezip(old))
    assert b.format_version == 1 and b.graph.op("enc") is not None


def test_a_format_2_file_must_carry_the_manifest_checksum_it_lists_beside_it(good):
    entries = unzip(good)
    entries["manifest.sha256"] = entries["manifest.sha256"].replace(b"manifest.json", b"other.json")
    with pytest.raises(BundleError, match="checksum mismatch in manifest.json"):
        decode(rezip(entries))


def test_a_missing_file_is_refused(tmp_path):
    with pytest.raises(BundleError, match="no such net.lava file"):
        load(tmp_path / "absent.lava")


def test_a_directory_is_refused(tmp_path):
    with pytest.raises(BundleError, match="is a directory"):
        load(tmp_path)


def _corrupt_deflate(data):
    out = bytearray(data)
    out[data_offset(data, TENSOR)] = 0x07  # final block of reserved type 3: not a deflate stream
    return bytes(out)


def _set_encrypted_flag(data):
    out = bytearray(data)
    out[central_record(data, TENSOR) + 8] |= 0x01  # general-purpose flag bit 0: encrypted
    return bytes(out)


@pytest.mark.parametrize("damage", [_corrupt_deflate, _set_encrypted_flag], ids=["bad deflate", "encrypted"])
def test_damage_inside_the_zip_structure_is_refused_as_bundle_error(good, damage):
    with pytest.raises(BundleError):
        decode(damage(good))


# -- the command line -----------------------------------------------------------
def run_cli(net: Path, x: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "SSMC_DEBUG"}
    return subprocess.run(
        [sys.executable, "-m", "ssmc.cli", "run", str(net), "--input", str(x), "-q"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=env,
        timeout=120,
    )


@pytest.fixture
def x_npy(tmp_path) -> Path:
    path = tmp_path / "x.npy"
    np.save(path, np.linspace(-1, 1, 2 * 5 * 3, dtype=np.float32).reshape(2, 5, 3))
    return path


def test_cli_runs_an_intact_net(tmp_path, good, x_npy):
    net = tmp_path / "net.lava"
    net.write_bytes(good)
    run = run_cli(net, x_npy)
    assert run.returncode == 0, run.stderr
    assert "outputs: [2, 5, 4]" in run.stdout


@pytest.mark.parametrize("kind", ["cut in half", "one byte flipped in a tensor", "format version 4"])
def test_cli_reports_a_damaged_net_in_one_line_and_exits_1(tmp_path, good, x_npy, kind):
    damage, phrase = DAMAGE[kind]
    net = tmp_path / "net.lava"
    net.write_bytes(damage(good))
    run = run_cli(net, x_npy)
    assert run.returncode == 1, run.stderr
    lines = run.stderr.splitlines()
    assert len(lines) == 1, run.stderr
    assert lines[0].startswith("ssmc: error: ") and phrase in lines[0]
    assert "Traceback" not in run.stderr + run.stdout


def test_cli_reports_damaged_compressed_data_as_a_user_error(tmp_path, good, x_npy):
    net = tmp_path / "net.lava"
    net.write_bytes(_corrupt_deflate(good))
    run = run_cli(net, x_npy)
    assert run.returncode == 1
    assert run.stderr.startswith("ssmc: error: ")


def test_the_manifest_records_the_environment_needed_to_reproduce_the_file(tmp_path):
    import json
    import platform
    import zipfile
    from importlib.metadata import version

    save(make_bundle(), tmp_path / "net.lava")
    manifest = json.loads(zipfile.ZipFile(tmp_path / "net.lava").read("manifest.json"))
    env = manifest["environment"]
    assert env["python"] == platform.python_version()
    assert env["packages"]["onnxruntime"] == version("onnxruntime")
    assert env["packages"]["numpy"] == version("numpy")


def test_extra_entries_round_trip_byte_for_byte_in_name_order(tmp_path):
    b = make_bundle()
    b.extras = {"microcode/core1.bin": bytes(range(256)), "target.json": b'{"chips": 1}\n'}
    save(b, tmp_path / "net.lava")
    back = load(tmp_path / "net.lava")
    assert back.extras == b.extras
    names = zipfile.ZipFile(tmp_path / "net.lava").namelist()
    assert names.index("extra/microcode/core1.bin") < names.index("extra/target.json")


@pytest.mark.parametrize("name", ["../escape", "/abs", "a//b", "a/./b", ""])
def test_an_extra_entry_with_an_unsafe_name_is_refused(name):
    b = make_bundle()
    b.extras = {name: b"x"}
    with pytest.raises(SsmcError, match="bad extra entry name"):
        encode(b)


# -- hostile files: sizes, compression, JSON members (issue #12) --------------------
def set_declared_size(data: bytes, name: str, size: int) -> bytes:
    """The zip with entry `name`'s uncompressed size rewritten in both its headers (data untouched)."""
    out = bytearray(data)
    info = zipfile.ZipFile(io.BytesIO(data)).getinfo(name)
    out[info.header_offset + 22 : info.header_offset + 26] = size.to_bytes(4, "little")
    central = central_record(data, name)
    out[central + 24 : central + 28] = size.to_bytes(4, "little")
    return bytes(out)


def test_a_declared_size_over_the_limit_is_refused_before_anything_is_inflated(good, monkeypatch):
    import tracemalloc

    forged = set_declared_size(good, TENSOR, 3 << 30)  # 3 GiB claimed by a few bytes
    tracemalloc.start()
    try:
        with pytest.raises(ResourceLimitError, match="unpacking its .* entries needs .* SSMC_MAX_NET_BYTES"):
            decode(forged)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 4 * len(good) + (1 << 20)


def test_a_zip_bomb_is_refused_by_its_ratio_before_it_is_inflated(good, monkeypatch):
    from ssmc import data as data_module

    monkeypatch.setattr(data_module, "ZIP_RATIO_FLOOR", 1 << 20)  # the real floor is 256 MiB: too slow to build
    bomb = rezip(rehashed({**unzip(good), "extra/padding.bin": bytes(8 << 20)}))  # 8 MiB of zeros, ~8 KB stored
    with pytest.raises(BundleError, match=r"unpacked from .* \(over 200x\); refusing it as a zip bomb"):
        decode(bomb)


def test_an_entry_that_inflates_beyond_its_declared_size_is_cut_off_not_followed(good):
    import tracemalloc

    big = rezip(rehashed({**unzip(good), "extra/padding.bin": bytes(64 << 20)}))
    lying = set_declared_size(big, "extra/padding.bin", 1000)
    tracemalloc.start()
    try:
        with pytest.raises(BundleError, match="extra/padding.bin"):
            decode(lying)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 16 << 20, f"peak {peak >> 20} MiB while refusing a 1000-byte entry that inflates to 64 MiB"


@pytest.mark.parametrize("method", [zipfile.ZIP_BZIP2, zipfile.ZIP_LZMA], ids=["bzip2", "lzma"])
def test_entries_compressed_other_than_by_deflate_are_refused(good, method):
    # their decompressors inflate a whole block at once, unbounded
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, blob in unzip(good).items():
            zf.writestr(name, blob, compress_type=method if name == TENSOR else zipfile.ZIP_DEFLATED)
    with pytest.raises(BundleError, match=f"entry {TENSOR} uses zip compression method {method}"):
        decode(buf.getvalue())


def test_an_entry_twice_in_the_archive_is_refused(good):
    entries = unzip(good)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, blob in entries.items():
            zf.writestr(name, blob)
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # zipfile warns about the duplicate name it writes
            zf.writestr("ir.txt", b"ssmc.graph @other\n")
    with pytest.raises(BundleError, match="the entry ir.txt is in the archive twice"):
        decode(buf.getvalue())


INDEX = "extra/microcode/index.json"
BAD_EXTRAS = {
    "garbage target.json": ({"extra/target.json": b"\x00\xffgarbage"}, "extra/target.json: not valid JSON"),
    "target.json a list": ({"extra/target.json": b"[1]"}, "extra/target.json: must be an object"),
    "target provenance a string": (
        {"extra/target.json": b'{"provenance": "x"}'},
        "extra/target.json: must be an object whose provenance is an object",
    ),
    "an extra nested 100,000 deep": (
        {"extra/target.json": b'{"a":' * 100_000 + b"1" + b"}" * 100_000},
        "extra/target.json: JSON nested 100000 levels deep",
    ),
    "processes with a string core": (
        {"extra/lava/processes.json": b'[{"cores": [{"chip": 0, "core": "1"}]}]'},
        "extra/lava/processes.json: must be a list of processes",
    ),
    "index groups not a list": ({INDEX: b'{"groups": {}}'}, f"{INDEX}: must be an object with a list of groups"),
    "index naming a missing program": (
        {
            INDEX: b'{"groups": [{"group": "g", "units": [{"text": "microcode/g.s", "binary": "microcode/g.bin"}]}]}',
            "extra/microcode/g.s": b"nop\n",
        },
        f"{INDEX}: the binary of %g names 'microcode/g.bin', which is not in the net",
    ),
}


@pytest.mark.parametrize("added,phrase", BAD_EXTRAS.values(), ids=BAD_EXTRAS.keys())
def test_a_hand_edited_json_member_is_refused_naming_it(good, added, phrase):
    with pytest.raises(BundleError) as e:
        decode(rezip(rehashed({**unzip(good), **added})))
    assert phrase in str(e.value) and "\n" not in str(e.value), str(e.value)


def test_valid_json_extras_load(good):
    index = b'{"groups": [{"group": "g", "units": [{"text": "microcode/g.s", "binary": "microcode/g.bin"}]}]}'
    extras = {
        INDEX: index,
        "extra/microcode/g.s": b"nop\n",
        "extra/microcode/g.bin": b"\0" * 8,
        "extra/target.json": b'{"provenance": {}}',
        "extra/lava/processes.json": b'[{"cores": [{"chip": 0, "core": 1, "neurons": [0, 3]}]}]',
    }
    b = decode(rezip(rehashed({**unzip(good), **extras})))
    assert set(b.extras) == {k[len("extra/") :] for k in extras}


@pytest.mark.parametrize(
    "make",
    [
        pytest.param(lambda p: os.mkfifo(p), id="FIFO"),
        pytest.param(lambda p: os.symlink("/dev/zero", p), id="symlink to /dev/zero"),
        pytest.param(lambda p: p.mkdir(), id="directory"),
    ],
)
def test_only_regular_files_are_read(tmp_path, make):
    path = tmp_path / "net.lava"
    make(path)
    with pytest.raises(BundleError, match="not a regular file; give the net.lava file itself"):
        load(path)


def test_a_net_lava_over_its_file_limit_is_refused_before_it_is_read(tmp_path, good, monkeypatch):
    path = tmp_path / "net.lava"
    path.write_bytes(good)
    monkeypatch.setenv("SSMC_MAX_NET_BYTES", str(len(good) - 1))
    with pytest.raises(
        ResourceLimitError, match=f"the net.lava file \\({len(good)} bytes\\) needs .* SSMC_MAX_NET_BYTES"
    ):
        load(path)


def test_a_placed_net_over_its_targets_capacity_is_refused_on_load():
    # the engines skip the capacity check (a run does not depend on it), so loading is where it is made
    entries = unzip(encode(_compiled_net(1)))
    fits = b'\\"neurons\\":4096'
    assert fits in entries["ir.txt"]
    entries["ir.txt"] = entries["ir.txt"].replace(fits, b'\\"neurons\\":1')
    with pytest.raises(BundleError, match="neurons .* exceeds the target's 1"):
        decode(rezip(rehashed(entries)))


def test_a_huge_finite_weight_in_the_model_graph_is_refused_naming_it(tmp_path):
    b = make_bundle()
    b.model_graph = b.graph.copy()
    entries = unzip(encode(b))
    weight = np.load(io.BytesIO(entries["model/tensors/enc.weight.npy"]))
    weight[1, 2] = -3e37  # the float engine would run it to inf
    (tmp_path / "net.lava").write_bytes(rezip(rehashed({**entries, "model/tensors/enc.weight.npy": _npy(weight)})))
    with pytest.raises(BundleError) as e:
        load(tmp_path / "net.lava")
    assert str(e.value) == (
        "net.lava: model/ir.txt: tensor 'weight' of %enc has values up to 3e+37; a net holds "
        "|values| up to 1e+10, as ONNX weights are: recompile the net"
    )


def test_a_net_with_a_value_load_would_refuse_is_not_written(tmp_path):
    b = make_bundle()
    b.graph.op("ssm").params["D"][0] = 2e10
    with pytest.raises(BundleError, match="the compiled net: ir.txt: tensor 'D' of %ssm has values up to 2e"):
        save(b, tmp_path / "net.lava")
    assert list(tmp_path.iterdir()) == []

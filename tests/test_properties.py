"""Property-based tests (hypothesis): arbitrary input to the config loaders, the prompt-CSV reader, the gate-file
reader and the name slugging either works or fails with the project's one-line error, and never yields a path
outside its folder."""

from __future__ import annotations

import json
import os
import struct
from pathlib import Path

import pytest
import torch
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cpe.core.resag import ResAG, ResAGSpec
from cpe.core.weights import read_gate_file, save_gate_file
from cpe.generation.config import load_gen_config
from cpe.generation.prompt_csv import read_prompt_csv
from cpe.generation.run import image_name, slugify
from cpe.training.config import load_train_config
from cpe.training.prompts import load_concepts
from cpe.util.names import FOLDER_MAX_BYTES, check_relative_folder, folder_name

SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
TEXT = st.text(max_size=60)


def one_line_project_error(error: BaseException) -> None:
    """The project's errors are ValueError (ConfigError, GateFileError, ...) or OSError, with a one-line message."""
    assert isinstance(error, (ValueError, OSError)), f"{type(error).__name__}: {error}"
    message = str(error)
    assert message.strip() and "\n" not in message and "\r" not in message, repr(message)


def inside(folder: Path, name: str) -> bool:
    path = Path(os.path.normpath(folder / name))
    return path.parent == Path(os.path.normpath(folder))


def assert_safe_component(folder: Path, name: str, max_bytes: int) -> None:
    assert name and name not in (".", "..") and not name.startswith(".")
    assert "/" not in name and "\\" not in name and "\x00" not in name
    assert len(name.encode("utf-8")) <= max_bytes and inside(folder, name)


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("properties")


# -- name slugging ----------------------------------------------------------------------------------------------------


@SETTINGS
@given(text=st.text(max_size=300))
def test_folder_names_are_one_safe_component_that_the_file_system_accepts(folder, text):
    try:
        name = folder_name(text)
    except ValueError as e:
        one_line_project_error(e)
        return
    assert_safe_component(folder, name, FOLDER_MAX_BYTES)
    parent = folder / "names"
    parent.mkdir(exist_ok=True)
    (parent / name).mkdir()  # the file system takes it as one new folder directly inside
    assert [p.name for p in parent.iterdir()] == [name]
    (parent / name).rmdir()


@SETTINGS
@given(text=st.text(max_size=300), row=st.integers(0, 10**7), seed=st.integers(-(2**63), 2**64 - 1))
def test_image_names_are_safe_and_bounded_in_bytes(folder, text, row, seed):
    from cpe.generation.prompt_csv import PromptRow

    assert_safe_component(folder, slugify(text), 80)
    name = image_name(PromptRow(row, text, seed, None), 3)
    assert_safe_component(folder, name, 140)


@SETTINGS
@given(value=st.one_of(TEXT, st.lists(st.sampled_from(["..", ".", "a", "/", "\\", "C:", "~", "b c"]), max_size=6)
                       .map("".join)))
def test_accepted_relative_folders_stay_inside(folder, value):
    try:
        check_relative_folder(value, "experiment")
    except ValueError as e:
        one_line_project_error(e)
        return
    assert Path(os.path.normpath(folder / value)).is_relative_to(folder)


# -- config loaders ---------------------------------------------------------------------------------------------------

SECTIONS = ["model", "network", "prompts", "anchors", "train", "adversarial", "save", "logging"]
KEYS = ["path", "gate_rank", "iterations", "lr", "concepts", "sentences", "root", "experiment", "name", "every",
        "seed", "enabled", "device", "placeholder", "width", "prompt_path", "subset", "guidance_scale"]
SCALARS = st.one_of(st.none(), st.booleans(), st.integers(-(10**30), 10**30), st.floats(allow_nan=True), TEXT)
VALUES = st.recursive(SCALARS, lambda inner: st.one_of(st.lists(inner, max_size=3),
                                                       st.dictionaries(st.sampled_from(KEYS) | TEXT, inner,
                                                                       max_size=3)), max_leaves=8)
CONFIGS = st.dictionaries(st.sampled_from(SECTIONS + KEYS) | TEXT,
                          st.dictionaries(st.sampled_from(KEYS) | TEXT, VALUES, max_size=4) | VALUES, max_size=5)
FILE_BYTES = st.one_of(st.binary(max_size=300), CONFIGS.map(lambda d: yaml.safe_dump(d).encode("utf-8")),
                       st.text(max_size=200).map(lambda t: t.encode("utf-8", "surrogatepass")))


@SETTINGS
@given(data=FILE_BYTES)
def test_training_config_loader_accepts_or_fails_in_one_line(folder, data):
    path = folder / "train.yaml"
    path.write_bytes(data)
    try:
        cfg = load_train_config(path)
    except Exception as e:  # noqa: BLE001 - the property is about which errors escape
        one_line_project_error(e)
        return
    root = cfg.path(cfg.save.root)
    assert cfg.output_dir().parent == root or Path(os.path.normpath(cfg.output_dir())).is_relative_to(
        os.path.normpath(root))
    assert_safe_component(folder, cfg.save.name, 100)


@SETTINGS
@given(data=FILE_BYTES)
def test_generation_config_loader_accepts_or_fails_in_one_line(folder, data):
    path = folder / "gen.yaml"
    path.write_bytes(data)
    try:
        cfg = load_gen_config(path)
    except Exception as e:  # noqa: BLE001
        one_line_project_error(e)
        return
    assert Path(os.path.normpath(Path(cfg.save_root) / "x" / cfg.subset)).is_relative_to(
        os.path.normpath(Path(cfg.save_root) / "x"))


@SETTINGS
@given(data=st.one_of(st.binary(max_size=300),
                      st.lists(st.one_of(TEXT, st.dictionaries(st.sampled_from(["target", "neutral", "guidance"])
                                                               | TEXT, SCALARS, max_size=3)), max_size=5)
                      .map(lambda entries: yaml.safe_dump(entries).encode("utf-8"))))
def test_concept_lists_give_distinct_safe_folders_or_one_line_errors(folder, data):
    path = folder / "concepts.yaml"
    path.write_bytes(data)
    try:
        concepts = load_concepts(path, "a person", 0.3)
    except Exception as e:  # noqa: BLE001
        one_line_project_error(e)
        return
    folders = [c.folder for c in concepts]
    assert len(set(folders)) == len(folders)
    for name in folders:
        assert_safe_component(folder, name, FOLDER_MAX_BYTES)


# -- prompt CSV -------------------------------------------------------------------------------------------------------

CELLS = st.one_of(TEXT, st.integers(-(2**70), 2**70).map(str), st.floats().map(str), st.sampled_from(
    ["", "1.5", "1e400", "nan", "inf", "-0", "１２", "7.0"]))
COLUMNS = st.lists(st.sampled_from(["prompt", "evaluation_seed", "evaluation_guidance", "case_number", ""]) | TEXT,
                   min_size=1, max_size=5)


def _csv_text(columns: list[str], rows: list[list[str]]) -> bytes:
    import csv
    import io

    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(columns)
    writer.writerows(rows)
    return buffer.getvalue().encode("utf-8", "surrogatepass")


CSV_BYTES = st.one_of(
    st.binary(max_size=300),
    st.tuples(COLUMNS, st.lists(st.lists(CELLS, max_size=6), max_size=5)).map(lambda t: _csv_text(*t)),
)


@SETTINGS
@given(data=CSV_BYTES, first=st.none() | st.integers(0, 6), last=st.none() | st.integers(0, 6))
def test_prompt_csv_reader_accepts_or_fails_in_one_line(folder, data, first, last):
    path = folder / "prompts.csv"
    path.write_bytes(data)
    try:
        table = read_prompt_csv(path, first, last)
    except Exception as e:  # noqa: BLE001
        one_line_project_error(e)
        return
    for row in table.rows:
        assert isinstance(row.seed, int) and -(2**63) <= row.seed < 2**64
        assert row.guidance is None or abs(row.guidance) < float("inf")
        torch.Generator().manual_seed(row.seed)  # every accepted seed seeds a generator
        assert_safe_component(folder, image_name(row, 0), 140)


# -- gate files -------------------------------------------------------------------------------------------------------

DTYPES = ["F32", "F16", "BF16", "F64", "I64", "I32", "U8", "BOOL", "X9"]
TENSOR_NAMES = ["gate.w_query", "gate.w_key", "gate.vector", "a.down", "a.up", "b.down",
                "attention_gate.encoder_layer.slf_attn.attention_module1.w_qs.weight", "a.lora_down.weight"]
META_KEYS = ["format", "format_version", "concept", "alpha", "key_mode", "gate_rank", "lora_rank", "training_config",
             "rank", "prompts"]


@st.composite
def safetensors_files(draw) -> bytes:
    """Plausible and broken safetensors files: random header entries, offsets, metadata, data."""
    header, offset = {}, 0
    for name in draw(st.lists(st.sampled_from(TENSOR_NAMES) | TEXT, max_size=4, unique=True)):
        shape = draw(st.lists(st.integers(0, 3), max_size=3))
        size = draw(st.integers(0, 64))
        header[name] = {"dtype": draw(st.sampled_from(DTYPES)), "shape": shape, "data_offsets": [offset, offset + size]}
        offset += size
    header["__metadata__"] = draw(st.dictionaries(st.sampled_from(META_KEYS) | TEXT, TEXT, max_size=5))
    if draw(st.booleans()):
        header["__metadata__"]["format"] = "cpe-resag"
    text = json.dumps(header).encode()
    return struct.pack("<Q", len(text)) + text + draw(st.binary(min_size=0, max_size=offset + 8))


@pytest.fixture(scope="module")
def valid_gate(folder) -> tuple[dict, dict]:
    resag = ResAG(ResAGSpec(embed_dim=4, layer_dims={"a": 3, "b": 5}, gate_rank=2, lora_rank=1))
    path = save_gate_file(resag, folder / "valid_last.safetensors", concept="cat", training_config={"x": 1})
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        return {k: f.get_tensor(k) for k in f.keys()}, dict(f.metadata())


def _check_gate_read(path: Path) -> None:
    try:
        tensors, info = read_gate_file(path)
    except Exception as e:  # noqa: BLE001
        one_line_project_error(e)
        return
    assert all(bool(torch.isfinite(t.float()).all()) for t in tensors.values() if t.is_floating_point())
    assert info.spec.gate_rank >= 1 and info.spec.lora_rank >= 1 and abs(info.spec.alpha) < float("inf")


@SETTINGS
@given(data=st.one_of(st.binary(max_size=200), safetensors_files()))
def test_gate_file_reader_accepts_or_fails_in_one_line(folder, data):
    path = folder / "random_last.safetensors"
    path.write_bytes(data)
    _check_gate_read(path)


@SETTINGS
@given(metadata=st.dictionaries(st.sampled_from(META_KEYS), TEXT | st.sampled_from(["nan", "inf", "-1", "2", "1e9"]),
                                max_size=4),
       drop=st.sets(st.sampled_from(META_KEYS), max_size=3),
       poison=st.sampled_from([None, float("nan"), float("inf"), -float("inf"), 1e38]),
       which=st.sampled_from(["gate.w_query", "gate.vector", "a.down", "b.up"]))
def test_gate_files_with_changed_metadata_or_values_load_finite_or_fail_in_one_line(folder, valid_gate, metadata,
                                                                                     drop, poison, which):
    from safetensors.torch import save_file

    tensors, meta = valid_gate
    tensors = {k: v.clone() for k, v in tensors.items()}
    if poison is not None:
        tensors[which].view(-1)[0] = poison
    meta = {k: v for k, v in {**meta, **metadata}.items() if k not in drop}
    path = folder / "changed_last.safetensors"
    save_file(tensors, str(path), metadata=meta)
    _check_gate_read(path)

"""Image references: relative paths, lazy opening, checks."""

from __future__ import annotations

import io

import pytest
from PIL import Image

from data_adapters import check_image, load_samples, open_image, resolve_image, validate
from data_adapters.images import ImageRefError
from tests.data_adapters.conftest import make_png, write_jsonl

ROW = {"prompt": "What is it?", "chosen": "A box.", "rejected": "A cat."}


def test_relative_paths_resolve_against_the_data_file_not_the_cwd(tmp_path, monkeypatch):
    data_dir = tmp_path / "data"
    image = make_png(data_dir / "imgs" / "x.png")
    path = write_jsonl(data_dir / "d.jsonl", [dict(ROW, images=["imgs/x.png"])])
    monkeypatch.chdir(tmp_path)
    sample = load_samples(path, "trl").samples[0]
    assert sample.images == [str(image)]


def test_base_dir_overrides_the_data_files_folder(tmp_path):
    image = make_png(tmp_path / "elsewhere" / "x.png")
    path = write_jsonl(tmp_path / "d.jsonl", [dict(ROW, images=["x.png"])])
    sample = load_samples(path, "trl", base_dir=tmp_path / "elsewhere").samples[0]
    assert sample.images == [str(image)]


def test_images_are_not_opened_while_loading(tmp_path, png, monkeypatch):
    path = write_jsonl(tmp_path / "d.jsonl", [dict(ROW, images=["images/cat.png"])])

    def no_open(*args, **kwargs):
        raise AssertionError("an image was opened while loading")

    monkeypatch.setattr(Image, "open", no_open)
    assert len(load_samples(path, "trl").samples) == 1


def test_a_deleted_image_fails_only_when_opened_or_validated(tmp_path, png):
    path = write_jsonl(tmp_path / "d.jsonl", [dict(ROW, images=["images/cat.png"])])
    sample = load_samples(path, "trl").samples[0]
    assert open_image(sample.images[0]).size == (8, 6)
    png.unlink()
    with pytest.raises(FileNotFoundError, match="image not found: .*cat.png"):
        open_image(sample.images[0])
    report = validate(path, "trl")
    assert [str(p) for p in report.problems] == [f"{path}:1: images[0]: image not found: {png}"]


def test_open_image_from_path_bytes_and_pil(png):
    from_path = open_image(str(png))
    from_bytes = open_image(png.read_bytes())
    assert from_path.mode == from_bytes.mode == "RGB"
    assert from_path.tobytes() == from_bytes.tobytes()
    rgba = Image.new("RGBA", (2, 2))
    assert open_image(rgba).mode == "RGB"
    assert open_image(rgba, mode=None).mode == "RGBA"


def test_check_image_values(tmp_path, png):
    assert check_image(str(png)) is None
    assert check_image(str(png), full=True) is None
    assert check_image(png.read_bytes(), full=True) is None
    assert check_image(Image.new("L", (1, 1))) is None
    assert check_image(str(tmp_path / "no.png")) == f"image not found: {tmp_path / 'no.png'}"
    assert check_image(b"garbage") == "not an image: <7 bytes>"
    buffer = io.BytesIO()
    Image.new("RGB", (64, 64)).save(buffer, format="PNG")
    cut = buffer.getvalue()[:-30]
    problem = check_image(cut, full=True)
    assert problem is not None and problem.startswith(
        f"truncated or corrupt image: <{len(cut)} bytes>"
    )


def test_resolve_image_accepts_structs_and_rejects_the_rest(tmp_path):
    assert resolve_image({"bytes": b"abc", "path": "x.png"}, tmp_path) == b"abc"
    assert resolve_image({"bytes": None, "path": "x.png"}, tmp_path) == str(tmp_path / "x.png")
    assert resolve_image("/abs/x.png", tmp_path) == "/abs/x.png"
    with pytest.raises(ImageRefError, match="image URLs are not supported"):
        resolve_image("https://example.com/x.png", tmp_path)
    with pytest.raises(
        ImageRefError, match="expected an image path, bytes or a PIL image, got int"
    ):
        resolve_image(3, tmp_path)


def test_bad_image_entries_name_the_field(tmp_path):
    rows = [dict(ROW, images=["ok.png", 5]), dict(ROW, images=[""])]
    result = load_samples(rows, "trl", skip_invalid=True, check_images="none")
    assert [str(p) for p in result.problems] == [
        "<memory>:1: images[1]: expected an image path, bytes or a PIL image, got int",
        "<memory>:2: images[0]: empty image path",
    ]

"""The imagefolder plugin on a folder of PNGs the test writes: IDs, labels, splits, transforms (against
numpy by hand), in-memory vs streamed, and `auditkit train` + `forget` end to end."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from auditkit.errors import InputError
from auditkit.registry import Registry
from reliability_helpers import assert_clean_failure, fast_config, run_cli_here

CLASSES = ("circle", "square", "stripes")
PER_CLASS = 30


@pytest.fixture(scope="module")
def image_root(tmp_path_factory) -> Path:
    """30 PNGs per class (20×24 RGB, shape + noise), a nested sub-folder, and files that are no images."""
    root = tmp_path_factory.mktemp("images") / "root"
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:20, :24]
    for c, name in enumerate(CLASSES):
        for i in range(PER_CLASS):
            folder = root / name / ("more" if i >= 25 else "")
            folder.mkdir(parents=True, exist_ok=True)
            pixels = rng.integers(0, 60, (20, 24, 3)).astype(np.uint8)
            mask = [(yy - 10) ** 2 + (xx - 12) ** 2 < 40, (abs(yy - 10) < 5) & (abs(xx - 12) < 5), (xx // 3) % 2 == 0][c]
            pixels[mask] = [200, 40 + 80 * c, 250 - 100 * c]
            Image.fromarray(pixels).save(folder / f"{i:03d}.png")
    (root / "notes.txt").write_text("not an image")
    (root / "circle" / ".hidden.png").write_bytes(b"")
    (root / "stray.png").write_bytes(b"")  # directly in the root: belongs to no class
    return root


def load(**options):
    return Registry.default().create("datasets", "imagefolder", **options).load()


def test_ids_labels_and_transform_match_numpy_by_hand(image_root):
    data = load(root=str(image_root), size=16, resize=18)
    assert len(data) == 3 * PER_CLASS and data.num_classes == 3 and data.input_shape == (3, 16, 16)
    assert data.ids[0] == "circle/000.png" and "circle/more/025.png" in data.ids.tolist()
    assert data.labels[data.ids.tolist().index("stripes/004.png")] == 2 and not data.streamed
    # By hand: shorter side 20 → 18 (24 → 22 by rounding 21.6), bilinear; centre crop 16 at (3, 1); ImageNet norm.
    with Image.open(image_root / "square" / "004.png") as image:
        pixels = np.asarray(image.convert("RGB").resize((22, 18), Image.Resampling.BILINEAR), dtype=np.float32)
    crop = pixels[1:17, 3:19] / 255.0
    expected = (crop - np.array([0.485, 0.456, 0.406])) / np.array([0.229, 0.224, 0.225])
    row = data.features[data.ids.tolist().index("square/004.png")].numpy()
    np.testing.assert_allclose(row, expected.transpose(2, 0, 1), rtol=1e-6, atol=1e-6)
    gray = load(root=str(image_root), size=8, mode="L", in_memory="false")
    assert gray.streamed and gray.input_shape == (1, 8, 8)


def test_streamed_and_in_memory_rows_are_identical(image_root):
    in_memory = load(root=str(image_root), size=16)
    streamed = load(root=str(image_root), size=16, in_memory="false")
    assert streamed.streamed and (streamed.splits == in_memory.splits).all()
    features, labels = streamed.rows(np.arange(len(streamed))).materialize()
    assert torch.equal(features, in_memory.features) and torch.equal(labels, in_memory.labels)
    assert streamed.content_sha256() != in_memory.content_sha256()  # file metadata, not pixels: no decoding


def test_split_file_and_bad_folders(image_root, tmp_path):
    data = load(root=str(image_root))
    table = tmp_path / "splits.csv"
    chosen = np.where(np.arange(len(data)) % 3 == 0, "test", np.where(np.arange(len(data)) % 3 == 1, "train",
                                                                         "validation"))
    table.write_text("id,split\n" + "".join(f"{i},{s}\n" for i, s in zip(data.ids, chosen)))
    assert (load(root=str(image_root), split_file=str(table)).splits == chosen).all()
    table.write_text("id,split\n" + "".join(f"{i},{s}\n" for i, s in zip(data.ids[1:], chosen[1:])))
    with pytest.raises(InputError, match="does not list every image: circle/000.png"):
        load(root=str(image_root), split_file=str(table))
    (tmp_path / "one" / "cat").mkdir(parents=True)
    Image.new("RGB", (4, 4)).save(tmp_path / "one" / "cat" / "a.png")
    with pytest.raises(InputError, match="1 class folder"):
        load(root=str(tmp_path / "one"))


def test_train_and_forget_end_to_end_and_a_broken_image(image_root, tmp_path):
    options = ["--dataset", "imagefolder", "--dataset-option", f"root={image_root}", "--dataset-option", "size=16",
               "--dataset-option", "in_memory=false"]
    trained = run_cli_here(["-q", "train", *options, "--epochs", "8", "--out", "model.pt"], cwd=tmp_path)
    assert trained.code == 0, trained.err
    data = load(root=str(image_root), size=16, in_memory="false")
    request = data.ids[data.indices("train")][:12]
    (tmp_path / "request.csv").write_text("id\n" + "\n".join(request) + "\n")
    (tmp_path / "fast.toml").write_text(fast_config(seed=0, attacks=["loss"]))
    forget = ["forget", "--ids", "request.csv", "--checkpoint", "model.pt", "--config", "fast.toml"]
    result = run_cli_here(["-q", *forget, "--out", "runs/first"], cwd=tmp_path)
    assert result.code in (0, 1), result.err
    record = json.loads((tmp_path / "runs/first/record.json").read_text())
    assert record["dataset"]["name"] == "imagefolder" and record["request"]["count"] == 12
    assert record["audit"]["verdicts"] and len(record["history"]) == 2
    broken = image_root / "square" / "001.png"
    original = broken.read_bytes()
    try:
        broken.write_bytes(b"not a png")
        failed = run_cli_here([*forget, "--out", "runs/broken"], cwd=tmp_path)
    finally:
        broken.write_bytes(original)
    assert_clean_failure(failed, code=2, problem="reading sample 'square/001.png' failed: UnidentifiedImageError",
                         hint="fix or remove that sample")
    assert not (tmp_path / "runs" / "broken").exists()

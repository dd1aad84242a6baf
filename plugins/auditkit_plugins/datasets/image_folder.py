"""Real image data: one folder per class, each image a sample whose ID is its path under the root."""

from __future__ import annotations

import csv
import hashlib
from pathlib import Path

import numpy as np
from torch.utils.data import Dataset

from auditkit.data import SampleSet
from auditkit.errors import InputError
from auditkit.interfaces import DatasetPlugin
from auditkit.training import TrainRecipe
from auditkit_plugins.datasets._common import check_splits, split_for

#: ImageNet's channel statistics, the usual normalisation for RGB images (torchvision's ``Normalize``).
RGB_MEAN, RGB_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
#: Decoded images up to this size are held in memory (the fast path) unless ``in_memory=false``.
IN_MEMORY_LIMIT = 512 * 2**20


def _floats(text: str, name: str, count: int) -> tuple[float, ...]:
    try:
        values = tuple(float(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise InputError(f"imagefolder option {name}={text!r} is not a list of numbers",
                         hint=f"e.g. {name}=0.5,0.5,0.5 (one value per channel)") from None
    if len(values) != count or (name == "std" and min(values) <= 0):
        raise InputError(f"imagefolder option {name}={text!r} needs {count} value(s), one per channel"
                         + (", all positive" if name == "std" else ""), hint=f"e.g. {name}={','.join(['0.5'] * count)}")
    return values


class ImageRows(Dataset):
    """Item ``i`` is image ``paths[i]`` under ``root`` after the standard deterministic transforms:
    convert to ``mode``, resize the shorter side to ``resize`` (bilinear), centre-crop ``size × size``,
    scale to [0, 1] and normalise per channel: a float32 ``[channels, size, size]`` array."""

    def __init__(self, root: Path, paths: list[str], *, mode: str, resize: int, size: int,
                 mean: tuple[float, ...], std: tuple[float, ...]) -> None:
        self.root, self.paths, self.mode, self.resize, self.size = root, paths, mode, resize, size
        self.mean = np.asarray(mean, dtype=np.float32)[:, None, None]
        self.std = np.asarray(std, dtype=np.float32)[:, None, None]

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> np.ndarray:
        from PIL import Image

        with Image.open(self.root / self.paths[index]) as image:
            image = image.convert(self.mode)
            width, height = image.size
            scale = self.resize / min(width, height)
            image = image.resize((max(self.size, round(width * scale)), max(self.size, round(height * scale))),
                                 Image.Resampling.BILINEAR)
            width, height = image.size
            left, top = int(round((width - self.size) / 2.0)), int(round((height - self.size) / 2.0))
            pixels = np.asarray(image.crop((left, top, left + self.size, top + self.size)), dtype=np.float32)
        pixels = (pixels.reshape(self.size, self.size, -1) / 255.0).transpose(2, 0, 1)
        return np.ascontiguousarray((pixels - self.mean) / self.std, dtype=np.float32)

    def fingerprint(self) -> str:
        """SHA-256 of every file's path, size and modification time and of the transform: cheap, no decoding."""
        digest = hashlib.sha256(repr((self.mode, self.resize, self.size, self.mean.ravel().tolist(),
                                      self.std.ravel().tolist())).encode())
        for path in self.paths:
            stat = (self.root / path).stat()
            digest.update(f"{path}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
        return digest.hexdigest()


class ImageFolderDataset(DatasetPlugin):
    """Images in ``root/<class>/…/<file>``: the class is the top folder (sorted names → labels 0…C−1), the
    ID the file's path relative to ``root`` with ``/`` separators (e.g. ``cat/0001.png``).

    Splits come from ``split_file`` (a CSV with ``id`` and ``split`` columns listing every image) or else
    a seeded stratified split. Hidden files and folders and files without an image extension are skipped;
    files directly in ``root`` belong to no class and are skipped too. Images are decoded with Pillow and
    transformed deterministically (see :class:`ImageRows`; ``mean``/``std`` default to ImageNet's for RGB,
    0.5 for grayscale ``mode=L``). ``in_memory=auto`` decodes everything once into memory when that takes at
    most 512 MiB and otherwise streams images from disk batch by batch (``true``/``false`` force either).
    """

    PLUGIN_NAME = "imagefolder"
    DESCRIPTION = "your own images: one folder per class, ID = path under the root, optional split file (Pillow)"
    OPTIONS = {"root": "", "split_file": "", "split_seed": 0, "train_fraction": 0.6, "validation_fraction": 0.2,
               "size": 32, "resize": 0, "mode": "RGB", "mean": "", "std": "",
               "extensions": ".png,.jpg,.jpeg,.bmp,.gif,.webp,.tif,.tiff", "in_memory": "auto"}
    DEFAULT_MODEL = "cnn"
    DEFAULT_RECIPE = TrainRecipe(epochs=30, batch_size=32, lr=1e-3)

    def load(self) -> SampleSet:
        """``[N, channels, size, size]`` float32 images, in the order of their sorted IDs."""
        root = Path(self.options["root"])
        if not self.options["root"] or not root.is_dir():
            raise InputError(f"imagefolder root {self.options['root']!r} is not a folder",
                             hint="pass --dataset-option root=FOLDER holding one sub-folder per class")
        rows = self._rows(root)
        ids = np.asarray(rows.paths)
        classes = sorted({path.split("/", 1)[0] for path in rows.paths})
        if len(classes) < 2:
            raise InputError(f"imagefolder root {str(root)!r} has {len(classes)} class folder(s) with images",
                             hint="put each class's images in its own sub-folder: root/<class>/<image>")
        labels = np.searchsorted(np.asarray(classes), [path.split("/", 1)[0] for path in rows.paths]).astype(np.int64)
        splits = self._splits(ids, labels)
        name, options = self.PLUGIN_NAME, dict(self.options)
        data = SampleSet.from_dataset(rows, name=name, ids=ids, labels=labels, splits=splits,
                                      num_classes=len(classes), options=options)
        decoded = len(ids) * len(rows.mean) * rows.size * rows.size * 4
        wanted = str(self.options["in_memory"]).strip().lower()
        if wanted not in {"auto", "true", "false"}:
            raise InputError(f"imagefolder option in_memory={self.options['in_memory']!r} is not auto, true or false",
                             hint="in_memory=auto decodes into memory up to 512 MiB of pixels")
        if wanted == "true" or (wanted == "auto" and decoded <= IN_MEMORY_LIMIT):
            features, _ = data.rows(np.arange(len(ids))).materialize()
            data = SampleSet(name=name, ids=data.ids, features=features, labels=data.labels, splits=data.splits,
                             num_classes=data.num_classes, options=options)
        return data

    def _rows(self, root: Path) -> ImageRows:
        extensions = {e.strip().lower() for e in str(self.options["extensions"]).split(",") if e.strip()}
        paths = sorted(
            path.relative_to(root).as_posix() for path in root.rglob("*")
            if path.is_file() and path.suffix.lower() in extensions and len(path.relative_to(root).parts) > 1
            and not any(part.startswith(".") for part in path.relative_to(root).parts)
        )
        if not paths:
            raise InputError(f"imagefolder root {str(root)!r} holds no images in class folders",
                             hint=f"expected root/<class>/<image> files with one of {', '.join(sorted(extensions))}")
        mode = str(self.options["mode"])
        if mode not in {"RGB", "L"}:
            raise InputError(f"imagefolder option mode={mode!r} is not RGB or L", hint="use mode=RGB or mode=L (grayscale)")
        channels = 3 if mode == "RGB" else 1
        mean = _floats(self.options["mean"], "mean", channels) if self.options["mean"] else \
            (RGB_MEAN if mode == "RGB" else (0.5,))
        std = _floats(self.options["std"], "std", channels) if self.options["std"] else \
            (RGB_STD if mode == "RGB" else (0.5,))
        size = int(self.options["size"])
        resize = int(self.options["resize"]) or size
        if size < 1 or resize < size:
            raise InputError(f"imagefolder size={size} and resize={resize}: need size >= 1 and resize >= size",
                             hint="e.g. size=32 (the crop) and resize=36 (the shorter side before cropping)")
        return ImageRows(root, paths, mode=mode, resize=resize, size=size, mean=mean, std=std)

    def _splits(self, ids: np.ndarray, labels: np.ndarray) -> np.ndarray:
        if not self.options["split_file"]:
            return check_splits(split_for(labels, self.options), source="the seeded split of the images")
        path = Path(self.options["split_file"])
        source = f"split file {str(path)!r}"
        if not path.is_file():
            raise InputError(f"{source} does not exist", hint="pass a CSV with id,split columns, or drop split_file")
        with open(path, encoding="utf-8-sig", newline="") as handle:
            table = [row for row in csv.DictReader(handle)]
        if not table or not {"id", "split"} <= set(table[0]):
            raise InputError(f"{source} needs an id and a split column", hint="write a header line: id,split")
        given = {row["id"].strip(): row["split"] for row in table}
        unknown = sorted(set(given) - set(ids.tolist()))
        unlisted = sorted(set(ids.tolist()) - set(given))
        for what, values in (("names images that are not in the folder", unknown),
                             ("does not list every image", unlisted)):
            if values:
                shown = ", ".join(values[:5]) + (f" and {len(values) - 5} more" if len(values) > 5 else "")
                raise InputError(f"{source} {what}: {shown}",
                                 hint="list every image once, by its path under the root with / separators")
        return check_splits(np.asarray([given[i] for i in ids.tolist()]), source=source)


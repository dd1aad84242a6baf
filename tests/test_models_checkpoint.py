"""Model plugins, the checkpoint file format, and the default recipe's membership signal."""

from __future__ import annotations

import textwrap

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score
from torch.nn import functional as F

from auditkit.checkpoint import (
    CheckpointManifest,
    check_matches_dataset,
    ids_sha256,
    load_checkpoint,
    model_builder,
    save_checkpoint,
    train_checkpoint,
)
from auditkit.errors import InputError
from auditkit.fsutil import sha256_file
from auditkit.registry import Registry
from auditkit.training import TrainRecipe, predict_logits, train_model


@pytest.fixture(scope="module", autouse=True)
def single_thread():
    """These models are tiny: one thread trains them faster than two fighting over a busy CPU."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def registry() -> Registry:
    return Registry.default()


@pytest.fixture(scope="module")
def quick_checkpoint(registry, tmp_path_factory):
    """A digits MLP trained for 3 epochs: enough to test the file format quickly."""
    path = tmp_path_factory.mktemp("ckpt") / "model.pt"
    manifest, sha = train_checkpoint(registry=registry, dataset="digits", recipe={"epochs": 3}, seed=1, out=path)
    return path, manifest, sha


def test_default_digits_recipe_leaves_a_measurable_membership_signal(registry, tmp_path):
    manifest, _ = train_checkpoint(registry=registry, dataset="digits", seed=0, out=tmp_path / "m.pt")
    loaded = load_checkpoint(tmp_path / "m.pt", registry=registry)
    data = registry.create("datasets", "digits").load()
    losses = {}
    for split in ("train", "test"):
        features, labels = data.subset(data.indices(split))
        losses[split] = F.cross_entropy(predict_logits(loaded.model, features).double(), labels,
                                        reduction="none").numpy()
    members = np.r_[np.ones(len(losses["train"])), np.zeros(len(losses["test"]))]
    auc = roc_auc_score(members, -np.r_[losses["train"], losses["test"]])
    assert auc >= 0.60, f"loss-attack AUC {auc:.3f}: the demo model would have nothing to forget"
    assert manifest.metrics["test_accuracy"] >= 0.90 and manifest.metrics["train_accuracy"] == 1.0
    assert manifest.model == "mlp" and manifest.model_options == {"widths": [256]}
    assert manifest.recipe["epochs"] == 200 and manifest.train_count == 179


def test_checkpoint_round_trip_is_exact_and_deterministic(registry, quick_checkpoint, tmp_path):
    path, manifest, sha = quick_checkpoint
    assert sha == sha256_file(path)
    payload = torch.load(path, weights_only=True)
    assert payload["format"] == "auditkit-checkpoint" and payload["version"] == 1
    assert payload["manifest"] == manifest.to_dict()
    loaded = load_checkpoint(path, registry=registry)
    assert loaded.manifest == manifest and loaded.sha256 == sha and not loaded.model.training
    for key, value in loaded.model.state_dict().items():
        assert torch.equal(value, payload["state_dict"][key])
    data = registry.create("datasets", "digits").load()
    assert manifest.train_ids_sha256 == ids_sha256(data.ids[data.indices("train")])
    check_matches_dataset(manifest, data)
    _, again = train_checkpoint(registry=registry, dataset="digits", recipe={"epochs": 3}, seed=1,
                                out=tmp_path / "again.pt")
    assert again == sha
    _, other = train_checkpoint(registry=registry, dataset="digits", recipe={"epochs": 3}, seed=2,
                                out=tmp_path / "other.pt")
    assert other != sha
    assert not list(tmp_path.glob(".*.tmp"))


def test_manifest_json_round_trip(quick_checkpoint):
    _, manifest, _ = quick_checkpoint
    assert CheckpointManifest.from_dict(manifest.to_dict()) == manifest
    assert manifest.train_recipe == TrainRecipe(epochs=3, batch_size=32, lr=1e-3)
    broken = manifest.to_dict()
    del broken["train_ids_sha256"], broken["seed"]
    with pytest.raises(InputError, match="lacks train_ids_sha256, seed"):
        CheckpointManifest.from_dict(broken)


def test_model_builder_rebuilds_the_architecture(registry, quick_checkpoint):
    _, manifest, _ = quick_checkpoint
    build = model_builder(manifest, registry=registry)
    torch.manual_seed(0)
    first = build()
    torch.manual_seed(0)
    second = build()
    assert list(first.state_dict()) == list(load_checkpoint(quick_checkpoint[0], registry=registry).model.state_dict())
    assert all(torch.equal(a, b) for a, b in zip(first.state_dict().values(), second.state_dict().values()))


class Payload:
    """An arbitrary object: pickling it stores a reference to code, which weights_only refuses."""


def test_unreadable_checkpoints_are_clear_errors(registry, quick_checkpoint, tmp_path):
    path, manifest, _ = quick_checkpoint
    with pytest.raises(InputError, match="does not exist"):
        load_checkpoint(tmp_path / "missing.pt", registry=registry)
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(InputError, match="not a readable torch file") as caught:
        load_checkpoint(truncated, registry=registry)
    assert "truncated" in caught.value.hint
    text = tmp_path / "notes.pt"
    text.write_text("hello")
    with pytest.raises(InputError, match="not a readable torch file"):
        load_checkpoint(text, registry=registry)
    pickled = tmp_path / "pickled.pt"
    torch.save({"format": "auditkit-checkpoint", "version": 1, "manifest": manifest.to_dict(),
                "state_dict": {}, "extra": Payload()}, pickled)
    with pytest.raises(InputError, match="pickled code or objects, which auditkit refuses"):
        load_checkpoint(pickled, registry=registry)
    whole_model = tmp_path / "module.pt"
    torch.save(load_checkpoint(path, registry=registry).model, whole_model)
    with pytest.raises(InputError, match="pickled code"):
        load_checkpoint(whole_model, registry=registry)
    bare = tmp_path / "bare.pt"
    torch.save(load_checkpoint(path, registry=registry).model.state_dict(), bare)
    with pytest.raises(InputError, match="is a bare state dict") as caught:
        load_checkpoint(bare, registry=registry)
    assert "save_checkpoint" in caught.value.hint


def test_architecture_mismatch_names_the_model_and_the_differing_keys(registry, quick_checkpoint, tmp_path):
    path, manifest, _ = quick_checkpoint
    state = load_checkpoint(path, registry=registry).model.state_dict()
    narrower = CheckpointManifest.from_dict({**manifest.to_dict(), "model_options": {"widths": [128]}})
    save_checkpoint(tmp_path / "narrow.pt", state_dict=state, manifest=narrower)
    with pytest.raises(InputError) as caught:
        load_checkpoint(tmp_path / "narrow.pt", registry=registry)
    message = caught.value.message
    assert "mlp (widths=[128])" in message and "3 of another shape" in message
    assert "1.weight [256, 64] in the file, [128, 64] in the model" in message
    deeper = CheckpointManifest.from_dict({**manifest.to_dict(), "model_options": {"widths": [256, 256]}})
    save_checkpoint(tmp_path / "deep.pt", state_dict=state, manifest=deeper)
    with pytest.raises(InputError, match=r"2 missing: 5.weight, 5.bias") as caught:
        load_checkpoint(tmp_path / "deep.pt", registry=registry)
    assert "\n" not in caught.value.message


def test_checkpoint_for_other_data_is_refused(registry, quick_checkpoint):
    _, manifest, _ = quick_checkpoint
    with pytest.raises(InputError, match="trained on dataset 'digits', not 'breast-cancer'"):
        check_matches_dataset(manifest, registry.create("datasets", "breast-cancer").load())
    with pytest.raises(InputError, match="different training split"):
        check_matches_dataset(manifest, registry.create("datasets", "digits", split_seed=3).load())
    with pytest.raises(InputError, match=r"input \[64\].*\[1, 8, 8\]"):
        check_matches_dataset(manifest, registry.create("datasets", "digits", image=True).load())


def test_cnn_trains_on_digits_images(registry, tmp_path):
    manifest, _ = train_checkpoint(registry=registry, dataset="digits", dataset_options={"image": True},
                                   model="cnn", recipe={"epochs": 15}, seed=0, out=tmp_path / "cnn.pt")
    assert manifest.model == "cnn" and manifest.model_options == {"channels": [16, 32], "hidden": 64}
    assert manifest.input_shape == (1, 8, 8) and manifest.metrics["test_accuracy"] > 0.7
    loaded = load_checkpoint(tmp_path / "cnn.pt", registry=registry)
    assert predict_logits(loaded.model, torch.zeros(3, 1, 8, 8)).shape == (3, 10)
    with pytest.raises(InputError, match=r"square images \[C, H, H\] or sequences \[C, L\], but the data is \[64\]"):
        registry.create("models", "cnn").build(input_shape=(64,), num_classes=10)
    with pytest.raises(InputError, match="too small for 4 pooling stages"):
        registry.create("models", "cnn", channels="4,4,4,4").build(input_shape=(1, 8, 8), num_classes=10)


def test_cnn_convolves_mnist1d_sequences_in_one_dimension(registry):
    data = registry.create("datasets", "mnist1d", num_samples=500, sequence=True).load()
    assert data.input_shape == (1, 40)
    model = registry.create("models", "cnn").build(input_shape=data.input_shape, num_classes=data.num_classes)
    assert [type(m).__name__ for m in model][:3] == ["Conv1d", "ReLU", "MaxPool1d"]
    assert model[-3].in_features == 32 * 10  # 40 → 20 → 10 positions of 32 channels
    assert predict_logits(model, data.features[:3]).shape == (3, 10)
    with pytest.raises(InputError, match="too small for 4 pooling stages"):
        registry.create("models", "cnn", channels="4,4,4,4").build(input_shape=(1, 10), num_classes=10)


FACTORY = textwrap.dedent(
    """
    from torch import nn

    def build(input_shape, num_classes, hidden=16):
        return nn.Sequential(nn.Flatten(), nn.Linear(input_shape[0], hidden), nn.Tanh(), nn.Linear(hidden, num_classes))

    def wrong_width(hidden=8):
        return nn.Linear(64, hidden)

    def not_a_module():
        return 42
    """
)


def test_module_plugin_builds_a_users_own_architecture(registry, tmp_path, monkeypatch):
    (tmp_path / "user_nets.py").write_text(FACTORY)
    monkeypatch.syspath_prepend(str(tmp_path))
    model = registry.create("models", "module", factory="user_nets:build", kwargs='{"hidden": 32}')
    network = model.build(input_shape=(64,), num_classes=10)
    assert network[1].out_features == 32
    manifest, _ = train_checkpoint(registry=registry, dataset="digits", model="module",
                                   model_options={"factory": "user_nets:build", "kwargs": {"hidden": 8}},
                                   recipe={"epochs": 2}, seed=0, out=tmp_path / "user.pt")
    assert manifest.model_options == {"factory": "user_nets:build", "kwargs": {"hidden": 8}}
    assert load_checkpoint(tmp_path / "user.pt", registry=registry).model[1].out_features == 8
    cases = [
        ({"factory": "user_nets"}, "not of the form 'package.module:function'"),
        ({"factory": "no_such_pkg.nets:build"}, "cannot be imported"),
        ({"factory": "user_nets:missing"}, "has no callable 'missing'"),
        ({"factory": "user_nets:not_a_module"}, "returned a int, not a torch.nn.Module"),
        ({"factory": "user_nets:wrong_width"}, r"returns \[2, 8\] for 2 samples, expected logits \[2, 10\]"),
        ({"factory": "user_nets:build", "kwargs": '{"depth": 3}'}, "rejected its arguments"),
        ({"factory": "user_nets:build", "kwargs": "{hidden: 3}"}, "is not JSON"),
    ]
    for options, message in cases:
        with pytest.raises(InputError, match=message):
            registry.create("models", "module", **options).build(input_shape=(64,), num_classes=10)
    with pytest.raises(InputError, match=r"fails on a \[2, 30\] batch"):
        registry.create("models", "module", factory="user_nets:wrong_width").build(input_shape=(30,), num_classes=10)


def test_train_model_is_untouched_by_model_plugins(registry):
    """The cnn and mlp plugins only build; training is auditkit.training's (one seeded loop)."""
    torch.manual_seed(0)
    model = registry.create("models", "mlp", widths="32").build(input_shape=(4,), num_classes=2)
    features = torch.randn(16, 4, generator=torch.Generator().manual_seed(1))
    labels = (features[:, 0] > 0).long()
    train_model(model, features, labels, recipe=TrainRecipe(epochs=50, batch_size=8, lr=1e-2), seed=0)
    assert (predict_logits(model, features).argmax(1) == labels).float().mean() == 1.0


def test_a_users_csv_goes_from_training_to_a_resolved_request(registry, tmp_path):
    """The path a user with their own table takes: csv dataset → checkpoint → request → forget positions."""
    from auditkit.request import parse_request, resolve_request

    rng = np.random.default_rng(0)
    labels = rng.integers(0, 3, size=120)
    features = rng.normal(size=(120, 5)) + labels[:, None]
    lines = ["patient,diagnosis," + ",".join(f"m{j}" for j in range(5))]
    lines += [f"p{i:03d},{labels[i]}," + ",".join(f"{v:.4f}" for v in features[i]) for i in range(120)]
    table = tmp_path / "patients.csv"
    table.write_text("\n".join(lines) + "\n")
    options = {"path": str(table), "id_column": "patient", "label_column": "diagnosis"}
    manifest, _ = train_checkpoint(registry=registry, dataset="csv", dataset_options=options, recipe={"epochs": 20},
                                   seed=0, out=tmp_path / "patients.pt")
    assert manifest.dataset_options["path"] == str(table) and manifest.input_shape == (5,)
    assert manifest.metrics["test_accuracy"] > 0.6  # three shifted Gaussians are learnable
    loaded = load_checkpoint(tmp_path / "patients.pt", registry=registry)
    data = registry.create("datasets", "csv", **loaded.manifest.dataset_options).load()
    check_matches_dataset(loaded.manifest, data)
    wanted = data.ids[data.indices("train")][:5]
    request = tmp_path / "forget.csv"
    request.write_text("patient\n" + "\n".join(wanted) + "\n")
    positions = resolve_request(parse_request(request, id_column="patient"), data)
    assert sorted(data.ids[positions].tolist()) == sorted(wanted.tolist())

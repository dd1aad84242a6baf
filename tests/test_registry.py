"""Plugin discovery: entry points (broken and duplicated ones too), plugin files, and a real third-party package."""

from __future__ import annotations

import importlib
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score

from auditkit import registry as registry_module
from auditkit.audit.signals import compute_signals
from auditkit.checkpoint import load_checkpoint, train_checkpoint
from auditkit.errors import InputError, PluginError
from auditkit.interfaces import AttackInput, DatasetPlugin
from auditkit.registry import Registry, register

EXAMPLE_PACKAGE = Path(__file__).resolve().parents[1] / "examples" / "auditkit-example-attack"


def fake_distribution(site: Path, name: str, entry_points: str) -> None:
    """The metadata an installed distribution leaves behind: enough for importlib.metadata to list it."""
    info = site / f"{name.replace('-', '_')}-1.2.3.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.2.3\n")
    (info / "entry_points.txt").write_text(textwrap.dedent(entry_points))


@pytest.fixture
def site(tmp_path, monkeypatch) -> Path:
    folder = tmp_path / "site"
    folder.mkdir()
    monkeypatch.syspath_prepend(str(folder))
    return folder


def test_builtins_are_registered_through_entry_points():
    registry = Registry.default()
    assert {"digits", "breast-cancer", "mnist1d", "bbc-news", "csv", "tensors"} <= set(registry.names("datasets"))
    assert {"mlp", "cnn", "module"} <= set(registry.names("models"))
    info = next(i for i in registry.infos() if (i.kind, i.name) == ("datasets", "digits"))
    assert info.source.startswith("auditkit-unlearn (entry point auditkit_plugins.datasets.sklearn_data:DigitsDataset)")
    assert info.description and info.version


def test_a_broken_entry_point_is_kept_with_its_error(site):
    fake_distribution(site, "broken-plugin", """
        [auditkit.attacks]
        broken = no_such_module_for_auditkit:Attack
        """)
    registry = Registry.default()
    info = next(i for i in registry.infos() if i.name == "broken")
    assert info.error == "ModuleNotFoundError: No module named 'no_such_module_for_auditkit'"
    assert info.source.startswith("broken-plugin") and info.version == "1.2.3" and info.cls is None
    assert "broken" not in registry.names("attacks") and "loss" in registry.names("attacks")
    with pytest.raises(PluginError, match="attack plugin 'broken' is unusable: ModuleNotFoundError"):
        registry.get("attacks", "broken")


def test_a_duplicate_name_is_an_error_naming_both_sources(site):
    (site / "rival_models.py").write_text(textwrap.dedent("""
        from auditkit_plugins.models.mlp import MlpModel

        class RivalMlp(MlpModel):
            PLUGIN_NAME = "mlp"
        """))
    fake_distribution(site, "rival-models", """
        [auditkit.models]
        mlp = rival_models:RivalMlp
        """)
    registry = Registry.default()
    with pytest.raises(PluginError) as caught:
        registry.get("models", "mlp")
    message = caught.value.message
    assert "two models plugins are named 'mlp'" in message
    assert "auditkit-unlearn (entry point auditkit_plugins.models.mlp:MlpModel)" in message
    assert "rival-models (entry point rival_models:RivalMlp)" in message
    assert registry.get("models", "cnn")  # the rest still works


def test_a_non_plugin_entry_point_is_reported(site):
    fake_distribution(site, "odd-plugin", """
        [auditkit.datasets]
        odd = json:loads
        """)
    info = next(i for i in Registry.default().infos() if i.name == "odd")
    assert info.error == "is not a subclass of auditkit.interfaces.DatasetPlugin"


PLUGIN_FILE = textwrap.dedent("""
    import numpy as np
    from auditkit.interfaces import Attack, AttackOutput

    class NegativeEntropy(Attack):
        PLUGIN_NAME = "negative-entropy"

        def score(self, data):
            return AttackOutput(scores=-np.asarray(data.target.entropy, dtype=np.float64))
    """)


def test_plugin_files_register_their_classes_and_fail_clearly(tmp_path):
    good = tmp_path / "my_attack.py"
    good.write_text(PLUGIN_FILE)
    registry = Registry.default(plugin_files=[good])
    assert registry.get("attacks", "negative-entropy").__name__ == "NegativeEntropy"
    assert next(i for i in registry.infos() if i.name == "negative-entropy").source == f"file {good}"
    broken = tmp_path / "broken.py"
    broken.write_text("import no_such_module_for_auditkit\n")
    with pytest.raises(PluginError, match="failed to import: ModuleNotFoundError"):
        Registry.default(plugin_files=[broken])
    empty = tmp_path / "empty.py"
    empty.write_text("x = 1\n")
    with pytest.raises(PluginError, match="defines no plugin class"):
        Registry.default(plugin_files=[empty])
    with pytest.raises(InputError, match="does not exist"):
        Registry.default(plugin_files=[tmp_path / "missing.py"])
    clash = tmp_path / "clash.py"
    clash.write_text("from auditkit_plugins.datasets.sklearn_data import DigitsDataset\n\n"
                     "class MyDigits(DigitsDataset):\n    pass\n")
    with pytest.raises(PluginError, match=rf"named 'digits': auditkit-unlearn .* and file {clash}"):
        Registry.default(plugin_files=[clash]).get("datasets", "digits")


def test_register_decorator(monkeypatch):
    monkeypatch.setattr(registry_module, "_manual", [])

    @register("datasets")
    class Tiny(DatasetPlugin):
        PLUGIN_NAME = "tiny"

        def load(self):
            raise NotImplementedError

    assert Registry.default().get("datasets", "tiny") is Tiny
    with pytest.raises(ValueError, match="unknown plugin kind"):
        register("dataset")


def install(package: Path, target: Path) -> None:
    """pip-install ``package`` (a copy: an in-tree build would leave build/ and egg-info in the repo)."""
    source = target.parent / "source"
    shutil.copytree(package, source)
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
                    "--no-index", "--target", str(target), str(source)], check=True, capture_output=True)


def test_the_example_third_party_attack_installs_and_scores_real_signals(tmp_path, monkeypatch):
    target = tmp_path / "site"
    install(EXAMPLE_PACKAGE, target)
    monkeypatch.syspath_prepend(str(target))
    importlib.invalidate_caches()
    registry = Registry.default()
    info = next(i for i in registry.infos() if (i.kind, i.name) == ("attacks", "logit-margin"))
    assert info.error is None and info.version == "0.1.0"
    assert info.source == "auditkit-example-attack (entry point auditkit_example_attack:LogitMarginAttack)"
    assert str(target) in sys.modules[info.cls.__module__].__file__

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        train_checkpoint(registry=registry, dataset="digits", seed=0, out=tmp_path / "model.pt")
    finally:
        torch.set_num_threads(threads)
    model = load_checkpoint(tmp_path / "model.pt", registry=registry).model
    data = registry.create("datasets", "digits").load()
    train, test = data.indices("train"), data.indices("test")
    positions = np.concatenate([train, test])
    groups = np.array(["retain"] * len(train) + ["test"] * len(test))
    table = compute_signals(model, data, positions, groups, model_name="original", backend="reference")
    population = compute_signals(model, data, data.indices("validation"), np.array(["validation"] * 359),
                                 model_name="original", backend="reference")
    members = groups == "retain"
    attack = registry.create("attacks", "logit-margin")
    output = attack.score(AttackInput(target=table, members=members, population=population, seed=0))
    assert output.scores.dtype == np.float64 and output.scores.shape == (len(positions),)
    first = table.logits[0]
    assert output.scores[0] == pytest.approx(first[table.labels[0]] - np.delete(first, table.labels[0]).max())
    assert roc_auc_score(members, output.scores) > 0.55  # the default digits model leaks; the margin sees it

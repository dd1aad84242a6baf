"""auditkit.toml: parsing, path resolution, one error listing every problem, and CLI overrides."""

from __future__ import annotations

import textwrap
from dataclasses import replace
from pathlib import Path

import pytest

from auditkit.config import Config, check_config, discover_config, load_config, merge
from auditkit.errors import InputError
from auditkit.registry import Registry

FULL = textwrap.dedent(
    """
    seed = 7
    method = "nabla-tau"
    checkpoint = "runs/model.pt"
    output_dir = "runs/latest"
    audit_trail = "trail.jsonl"
    attacks = ["lr-loss", "loss"]
    plugins = ["my_attack.py"]
    backend = "reference"
    id_column = "sample"

    [dataset]
    name = "digits"
    options = { split_seed = 3, image = true }

    [model]
    name = "cnn"
    options = { channels = [8, 16] }

    [recipe]
    epochs = 5

    [policy]
    margin = 0.05
    """
)


def write(tmp_path: Path, text: str, name: str = "auditkit.toml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_full_config_is_parsed_with_paths_relative_to_the_file(tmp_path):
    (tmp_path / "my_attack.py").write_text("")
    config = load_config(write(tmp_path, FULL))
    assert config.seed == 7 and config.backend == "reference" and config.method == "nabla-tau"
    assert config.id_column == "sample"
    assert config.dataset == "digits" and config.dataset_options == {"split_seed": 3, "image": True}
    assert config.model == "cnn" and config.model_options == {"channels": [8, 16]}
    assert config.checkpoint == tmp_path.resolve() / "runs" / "model.pt"
    assert config.plugins == (tmp_path.resolve() / "my_attack.py",)
    assert config.attacks == ("lr-loss", "loss") and config.recipe == {"epochs": 5}
    assert config.policy == {"margin": 0.05} and config.source == tmp_path / "auditkit.toml"


def test_every_problem_is_listed_at_once(tmp_path):
    text = textwrap.dedent(
        """
        sead = 1
        seed = -2
        attacks = "loss"
        plugins = ["missing.py"]
        checkpoint = 3
        dataset = { options = { split_seed = 1 } }
        model = 5
        recipe = { epochs = 3, epocs = 4 }
        """
    )
    with pytest.raises(InputError) as caught:
        load_config(write(tmp_path, text))
    message, problems = caught.value.message, caught.value.problems
    assert "has 8 problems" in message and "\n" not in message and len(problems) == 8
    for expected in ("unknown key 'sead' (did you mean 'seed'?)", "seed must be an integer from 0 to 2**32 - 1",
                     "attacks must be a list", "plugin file 'missing.py' does not exist",
                     "checkpoint must be a path string", "[dataset] needs name", "model must be a plugin name",
                     "[recipe] has no field 'epocs' (did you mean 'epochs'?)"):
        assert sum(expected in problem for problem in problems) == 1, expected
    # One line holds as many as fit, in order, and counts the rest; --json carries them all (test_bad_input).
    listed = [p for p in problems if p in message]
    assert listed == problems[:len(listed)] and len(listed) >= 3
    assert message.endswith(f"… and {8 - len(listed)} more") and len(message) <= 293


def test_syntax_errors_and_missing_files(tmp_path):
    with pytest.raises(InputError, match="is not valid TOML.*line 1"):
        load_config(write(tmp_path, "seed = = 1\n"))
    with pytest.raises(InputError, match="does not exist"):
        load_config(tmp_path / "nope.toml")
    assert discover_config(tmp_path / "empty") is None
    assert discover_config(tmp_path) == tmp_path / "auditkit.toml"


def test_cli_flags_override_the_file(tmp_path):
    config = load_config(write(tmp_path, 'seed = 1\nattacks = ["loss"]\n[dataset]\nname = "digits"\n'
                                         "options = { split_seed = 3, image = true }\n"))
    same = merge(config, seed=None, dataset=None, dataset_options={"split_seed": 4})
    assert same.seed == 1 and same.dataset_options == {"split_seed": 4, "image": True}
    other = merge(config, seed=9, dataset="breast-cancer", attacks=["lr-loss"], plugins=["x.py"])
    assert other.seed == 9 and other.dataset == "breast-cancer" and other.dataset_options == {}
    assert other.attacks == ("lr-loss",) and other.plugins == (Path("x.py"),)
    twice = merge(replace(config, plugins=(tmp_path / "a.py", tmp_path / "b.py")), plugins=[tmp_path / "a.py"])
    assert twice.plugins == (tmp_path / "a.py", tmp_path / "b.py")  # a file given twice is loaded once
    assert merge(Config(), method="retrain").method == "retrain"
    with pytest.raises(TypeError, match="unknown settings"):
        merge(config, sed=1)


def test_check_config_resolves_plugins_and_options_before_any_work(tmp_path):
    registry = Registry.default()
    good = Config(dataset="digits", dataset_options={"split_seed": 2}, model="mlp", attacks=("loss",))
    check_config(good, registry=registry)
    bad = Config(dataset="digitz", model="mlp", model_options={"width": [3]}, attacks=("loss", "nope"),
                 recipe={"epochs": 1, "lr_decay": 2}, source=tmp_path / "auditkit.toml")
    with pytest.raises(InputError) as caught:
        check_config(bad, registry=registry)
    message, problems = caught.value.message, "; ".join(caught.value.problems)
    assert "has 4 problems" in message
    assert "unknown dataset 'digitz' (did you mean 'digits'?)" in problems
    assert "mlp has no option 'width' (did you mean 'widths'?)" in problems
    assert "unknown attack 'nope'" in problems and "lr_decay" in problems


def test_the_example_config_is_valid():
    example = Path(__file__).resolve().parents[1] / "examples" / "auditkit.toml"
    config = load_config(example)
    check_config(config, registry=Registry.default())
    assert config.dataset == "digits" and config.checkpoint == example.parent.parent / "runs" / "digits-mlp.pt"

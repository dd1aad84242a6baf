"""Every registered attack scores members higher, on synthetic signals with a known member effect."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from auditkit.audit.metrics import lr_mia_accuracies, lr_mia_draws
from auditkit.audit.signals import SignalTable, compute_signals
from auditkit.errors import InputError
from auditkit.interfaces import AttackInput
from auditkit.registry import Registry
from test_signals import CountingIdentity, logit_set

GROUP_SIZES = {"forget": 120, "test": 200, "validation": 150, "retain": 160}


def synthetic_input(*, seed: int, references: int = 0, member_effect: float = 2.0, pairs: int = 0) -> AttackInput:
    """Rows whose true-class margin is ``difficulty + member_effect·[trained on it]`` under every model.

    Each row has its own difficulty, shared by the target and the reference models, as real samples do;
    the target trained on the forget rows, reference model k on a random half of the retain rows. With
    ``pairs``, u-lira's shadow pairs: never-seen ones, and unlearned ones that kept half the member effect.
    """
    rng = np.random.default_rng(seed)
    groups = np.repeat(list(GROUP_SIZES), list(GROUP_SIZES.values()))
    n, classes = len(groups), 4
    labels = rng.integers(0, classes, n)
    difficulty = rng.normal(2.0, 1.0, n)

    def logits(in_training: np.ndarray) -> np.ndarray:
        values = rng.normal(0, 0.3, (n, classes))
        values[np.arange(n), labels] += difficulty + member_effect * in_training + rng.normal(0, 0.3, n)
        return values

    target_logits = logits(groups == "forget")
    members = np.zeros((references, n), dtype=bool)
    members[:, groups == "retain"] = rng.random((references, GROUP_SIZES["retain"])) < 0.5
    table = compute_signals(CountingIdentity(), logit_set(target_logits, labels), np.arange(n), groups,
                            model_name="unlearned", backend="reference")
    if references:
        table = dataclasses.replace(table, reference_logits=np.stack([logits(m) for m in members]),
                                    reference_members=members)
    if pairs:
        table = dataclasses.replace(table, never_seen_logits=np.stack([logits(groups == "") for _ in range(pairs)]),
                                    unlearned_logits=np.stack([logits(0.5 * (groups == "forget")) for _ in range(pairs)]))
    target = table.take((groups == "forget") | (groups == "test"))
    return AttackInput(target=target, members=target.groups == "forget", population=table.group("validation"),
                       seed=seed, calibration=table.group("retain") if references else None)


def reference_options(registry: Registry, name: str) -> dict:
    # The reference-model attacks run here with few (synthetic) reference models to stay fast.
    options = registry.get("attacks", name).OPTIONS
    return {"references": 4} if "references" in options else {"shadows": 8} if "shadows" in options else {}


REGISTRY = Registry.default()


def test_every_builtin_attack_is_registered():
    expected = {"lr-loss", "lr-entropy", "loss", "entropy", "modified-entropy", "confidence", "grad-norm",
                "lira-offline", "rmia", "u-lira"}
    assert expected <= set(REGISTRY.names("attacks"))


@pytest.mark.parametrize("name", REGISTRY.names("attacks"))
def test_higher_score_means_member(name):
    attack = REGISTRY.create("attacks", name, **reference_options(REGISTRY, name))
    data = synthetic_input(seed=1, references=attack.reference_models(), pairs=attack.shadow_pairs())
    output = attack.score(data)
    assert output.scores.shape == (len(data.target),) and np.isfinite(output.scores).all()
    assert roc_auc_score(data.members, output.scores) > 0.8


def test_threshold_scores_are_the_signals_themselves():
    data = synthetic_input(seed=2)
    signs = {"loss": ("loss", -1), "entropy": ("entropy", -1), "modified-entropy": ("modified_entropy", -1),
             "confidence": ("confidence", 1), "grad-norm": ("grad_norm", -1)}
    for name, (column, sign) in signs.items():
        scores = REGISTRY.create("attacks", name).score(data).scores
        np.testing.assert_array_equal(scores, sign * getattr(data.target, column))


@pytest.mark.parametrize("name,column", [("lr-loss", "loss"), ("lr-entropy", "entropy")])
def test_lr_statistic_averages_the_papers_mia_over_draws(name, column):
    data = synthetic_input(seed=3, member_effect=0.7)
    output = REGISTRY.create("attacks", name).score(data)
    values = getattr(data.target, column)
    draws = lr_mia_draws(values[data.members], values[~data.members], seed=3, draws=5).accuracies
    statistic = output.statistic
    assert statistic.name == "lr_accuracy" and statistic.chance == 0.5
    assert statistic.value == pytest.approx(draws.mean()) and statistic.spread == pytest.approx(draws.mean(1).std(ddof=1))
    # Draw 0 is the paper's single-draw MIA.
    assert output.parameters["draw_accuracies"][0] == pytest.approx(
        lr_mia_accuracies(values[data.members], values[~data.members], seed=3).mean())
    assert statistic.ci_low < statistic.value < statistic.ci_high and statistic.df == 49
    # A reversed signal (forget rows *less* confident) still gives higher scores to the forget rows:
    # the logistic model learns the direction.
    flipped = dataclasses.replace(data, members=~data.members)
    assert roc_auc_score(flipped.members, REGISTRY.create("attacks", name).score(flipped).scores) > 0.5


def test_lr_attack_abstains_below_its_split_count():
    data = synthetic_input(seed=4)
    small = dataclasses.replace(data, target=data.target.take(np.arange(len(data.target)) >= 115),
                                members=data.members[115:])
    output = REGISTRY.create("attacks", "lr-loss").score(small)
    assert output.scores is None and "needs at least 10 members" in output.abstained
    attack = REGISTRY.create("attacks", "lr-loss")
    assert attack.minimum_detectable_statistic(n_members=5, n_nonmembers=500, level=0.99) is None
    assert 0.5 < attack.minimum_detectable_statistic(n_members=100, n_nonmembers=500, level=0.99) < 0.75


def test_reference_attacks_need_reference_signals():
    data = synthetic_input(seed=5)
    with pytest.raises(InputError, match="no reference models"):
        REGISTRY.create("attacks", "lira-offline").score(data)
    with pytest.raises(InputError, match="tune a"):
        REGISTRY.create("attacks", "rmia").score(data)


def test_rmia_fixed_a_and_lira_fixed_variance_also_separate():
    data = synthetic_input(seed=6, references=3)
    for name, options in (("rmia", {"a": "0.3", "references": 3}),
                          ("lira-offline", {"fixed_variance": "true", "references": 3})):
        output = REGISTRY.create("attacks", name, **options).score(data)
        assert roc_auc_score(data.members, output.scores) > 0.8
    assert output.parameters["fixed_variance"] is True and output.parameters["pooled_sigma"] > 0
    fixed = REGISTRY.create("attacks", "rmia", a="0.3", references=3).score(data).parameters
    tuned = REGISTRY.create("attacks", "rmia", references=3).score(data).parameters
    assert fixed["a"] == 0.3 and "fixed" in fixed["a_source"]
    # The tuned a is the grid point with the best AUC on reference model 0, and every grid AUC is recorded.
    assert len(tuned["tuning_auc"]) == 11 and tuned["tuning_auc"][f"{tuned['a']:g}"] == max(tuned["tuning_auc"].values())
    with pytest.raises(InputError, match="must be 'tune' or a number"):
        REGISTRY.create("attacks", "rmia", a="1.5").score(data)


README = Path(__file__).resolve().parents[1] / "README.md"


def readme_custom_attack_example() -> str:
    """The custom-attack example exactly as the README shows it (between its marker comments)."""
    text = README.read_text(encoding="utf-8")
    block = text.split("<!-- custom-attack-example -->", 1)[1].split("<!-- /custom-attack-example -->", 1)[0]
    return block.strip().removeprefix("```python").removesuffix("```")


def test_readme_custom_attack_example_runs(tmp_path):
    path = tmp_path / "my_attacks.py"
    path.write_text(readme_custom_attack_example())
    registry = Registry.default(plugin_files=[path])
    attack = registry.create("attacks", "margin", temperature="2")
    assert attack.options["temperature"] == 2.0
    data = synthetic_input(seed=7)
    logits_before = data.target.logits.copy()
    scores = attack.score(data).scores
    assert roc_auc_score(data.members, scores) > 0.8
    np.testing.assert_array_equal(data.target.logits, logits_before)  # the example must not edit the table


def test_signal_table_columns_are_what_attacks_read():
    assert {f.name for f in dataclasses.fields(SignalTable)} >= {"loss", "entropy", "modified_entropy", "confidence",
                                                                  "scaled_confidence", "grad_norm", "logits"}


def test_u_lira_abstains_when_shadows_of_one_kind_are_identical():
    """Identical shadows (a spread of exactly 0) leave nothing to test against: abstain, not NaN scores."""
    data = synthetic_input(seed=4, pairs=4)
    table = data.target
    copies = np.repeat(table.never_seen_logits[:1], len(table.never_seen_logits), axis=0)
    data = dataclasses.replace(data, target=dataclasses.replace(table, never_seen_logits=copies))
    output = REGISTRY.create("attacks", "u-lira", shadows=8).score(data)
    assert output.scores is None and "spread 0" in output.abstained

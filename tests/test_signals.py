"""compute_signals: one forward pass, every score in float64 and equal to its textbook definition."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn
from torch.nn import functional as F

from auditkit.audit.signals import compute_signals, mean_over_out, true_class_log_odds
from auditkit.data import SampleSet
from auditkit.errors import InputError


class CountingIdentity(nn.Module):
    """Returns its input as logits and counts forward calls (one per batch)."""

    def __init__(self) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.ones(()))
        self.calls = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        return x * self.scale


def logit_set(logits: np.ndarray, labels: np.ndarray) -> SampleSet:
    n = len(labels)
    return SampleSet(name="synthetic", ids=np.asarray([f"s{i}" for i in range(n)]),
                     features=torch.as_tensor(logits, dtype=torch.float32),
                     labels=torch.as_tensor(labels, dtype=torch.int64),
                     splits=np.asarray(["train"] * n), num_classes=logits.shape[1])


@pytest.fixture
def moderate():
    rng = np.random.default_rng(0)
    logits = rng.normal(0, 3, (64, 5)).astype(np.float32)
    labels = rng.integers(0, 5, 64)
    return logit_set(logits, labels)


def test_every_signal_matches_its_definition(moderate):
    model = CountingIdentity()
    positions = np.arange(64)[::-1].copy()
    groups = np.asarray(["forget", "retain", "test", "validation"] * 16)
    table = compute_signals(model, moderate, positions, groups, model_name="original", backend="reference")
    assert model.calls == 1
    z = moderate.features[positions].double()
    y = moderate.labels[positions]
    p = z.softmax(1)
    p_y = p.gather(1, y[:, None]).squeeze(1)
    onehot = F.one_hot(y, 5).double()
    np.testing.assert_allclose(table.loss, F.cross_entropy(z, y, reduction="none").numpy(), rtol=1e-12)
    np.testing.assert_allclose(table.entropy, (-(p * p.log()).sum(1)).numpy(), rtol=1e-10)
    expected_me = -(1 - p_y) * p_y.log() - ((1 - onehot) * p * (1 - p).log()).sum(1)
    np.testing.assert_allclose(table.modified_entropy, expected_me.numpy(), rtol=1e-9)
    np.testing.assert_allclose(table.confidence, p.max(1).values.numpy(), rtol=1e-12)
    np.testing.assert_allclose(table.scaled_confidence, (p_y.log() - (1 - p_y).log()).numpy(), rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(table.grad_norm, (p - onehot).norm(dim=1).numpy(), rtol=1e-10)
    assert table.ids.tolist() == moderate.ids[positions].tolist()
    assert table.groups.tolist() == groups.tolist()
    assert all(getattr(table, c).dtype == np.float64 for c in ("loss", "entropy", "scaled_confidence", "grad_norm"))


def test_well_fit_samples_do_not_tie_and_log_odds_stay_exact():
    # In float32 both losses round to exactly 0 (a tie that distorts AUCs); in float64 they differ.
    logits = np.asarray([[40.0, 0.0, 0.0], [41.0, 0.0, 0.0], [0.0, 60.0, 1.0]], dtype=np.float32)
    labels = np.asarray([0, 0, 1])
    data = logit_set(logits, labels)
    assert F.cross_entropy(data.features, data.labels, reduction="none")[:2].tolist() == [0.0, 0.0]
    table = compute_signals(CountingIdentity(), data, np.arange(3), np.asarray(["forget"] * 3),
                            model_name="m", backend="reference")
    assert 0 < table.loss[1] < table.loss[0]
    # p_y rounds to 1 in float64, yet log(p/(1−p)) = z_y − logsumexp(others) exactly.
    np.testing.assert_allclose(table.scaled_confidence, [40 - np.log(2), 41 - np.log(2), 59 - np.log1p(np.exp(-1.0))],
                               rtol=1e-12)
    assert np.isfinite(table.modified_entropy).all() and (table.modified_entropy >= 0).all()


def test_reference_models_fill_reference_logits_and_take_slices_them(moderate):
    target, refs = CountingIdentity(), [CountingIdentity(), CountingIdentity()]
    with torch.no_grad():
        refs[1].scale.fill_(2.0)
    members = np.zeros((2, 64), dtype=bool)
    members[0, :5] = True
    table = compute_signals(target, moderate, np.arange(64), np.asarray(["retain"] * 64), model_name="m",
                            backend="reference", reference_models=refs, reference_members=members)
    assert target.calls == 1 and [r.calls for r in refs] == [1, 1]
    assert table.reference_logits.shape == (2, 64, 5)
    np.testing.assert_allclose(table.reference_logits[1], 2 * moderate.features.double().numpy())
    part = table.take(np.arange(3, 8))
    assert part.reference_logits.shape == (2, 5, 5) and part.reference_members[0].tolist() == [1, 1, 0, 0, 0]
    np.testing.assert_allclose(part.reference_log_odds(), true_class_log_odds(part.reference_logits, part.labels))


def test_mean_over_out_skips_in_values_and_fills_rows_without_out():
    values = np.asarray([[1.0, 5.0, 9.0], [3.0, 7.0, 100.0]])
    out = np.asarray([[True, True, False], [True, False, False]])
    np.testing.assert_allclose(mean_over_out(values, out), [2.0, 5.0, 3.5])


def test_mismatched_groups_are_an_input_error(moderate):
    with pytest.raises(InputError, match="differ in length"):
        compute_signals(CountingIdentity(), moderate, np.arange(4), np.asarray(["forget"] * 3), model_name="m",
                        backend="reference")


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_a_model_on_the_gpu_gives_the_same_signals_as_on_the_cpu(moderate):
    positions, groups = np.arange(64), np.asarray(["test"] * 64)
    on_cpu = compute_signals(CountingIdentity(), moderate, positions, groups, model_name="m", backend="reference")
    on_gpu = compute_signals(CountingIdentity().cuda(), moderate, positions, groups, model_name="m", backend="auto",
                             reference_models=[CountingIdentity().cuda()])
    for column in ("loss", "entropy", "modified_entropy", "confidence", "scaled_confidence", "grad_norm"):
        np.testing.assert_allclose(getattr(on_gpu, column), getattr(on_cpu, column), rtol=1e-9, atol=1e-12)
    assert on_gpu.reference_logits.shape == (1, 64, 5)

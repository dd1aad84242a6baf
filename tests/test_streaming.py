"""Streamed datasets: rows generated on demand give the same models as the same rows in memory, for any
number of DataLoader workers, and are never all held at once; the eager optimisers equal torch's."""

from __future__ import annotations

import copy
import subprocess
import sys
import weakref

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import Dataset

from auditkit.audit.signals import compute_signals
from auditkit.data import SampleSet, loader_workers_set_to, seeded_split, stream
from auditkit.errors import InputError
from auditkit.interfaces import UnlearningTask
from auditkit.registry import Registry
from auditkit.training import TrainRecipe, eager_optimizer, train_model

N, FEATURES, CLASSES = 400, 12, 3
CENTRES = np.random.default_rng(0).normal(size=(CLASSES, FEATURES)).astype(np.float32)


def _label(index: int) -> int:
    return index % CLASSES


class GeneratedRows(Dataset):
    """Row ``i`` is computed when asked for (a class centre plus noise seeded by ``i``); counts the rows alive."""

    def __init__(self, *, as_pairs: bool = False) -> None:
        self.as_pairs, self.alive, self.most_alive, self.reads = as_pairs, 0, 0, 0

    def __len__(self) -> int:
        return N

    def _freed(self) -> None:
        self.alive -= 1

    def __getitem__(self, index: int):
        noise = np.random.default_rng(index).normal(scale=1.5, size=FEATURES).astype(np.float32)
        row = torch.from_numpy(CENTRES[_label(index)] + noise)
        self.reads += 1
        self.alive += 1
        self.most_alive = max(self.most_alive, self.alive)
        weakref.finalize(row, self._freed)
        return (row, _label(index)) if self.as_pairs else row


def _datasets(**rows_options) -> tuple[SampleSet, SampleSet, GeneratedRows]:
    rows = GeneratedRows(**rows_options)
    labels = np.asarray([_label(i) for i in range(N)])
    splits = seeded_split(N, seed=0, train=0.5, validation=0.2, stratify=labels)
    ids = np.asarray([f"gen-{i:04d}" for i in range(N)])
    streamed = SampleSet.from_dataset(rows, name="generated", ids=ids, labels=labels, splits=splits, num_classes=CLASSES)
    features = torch.stack([GeneratedRows()[i] for i in range(N)])
    in_memory = SampleSet(name="generated", ids=ids, features=features, labels=torch.as_tensor(labels), splits=splits,
                          num_classes=CLASSES)
    return streamed, in_memory, rows


def _model() -> nn.Module:
    torch.manual_seed(5)
    return nn.Sequential(nn.Linear(FEATURES, 32), nn.ReLU(), nn.Dropout(0.2), nn.Linear(32, CLASSES))


def _states_equal(a: nn.Module, b: nn.Module) -> bool:
    return all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))


RECIPE = TrainRecipe(epochs=3, batch_size=16, lr=1e-2)


def test_streamed_training_equals_in_memory_and_holds_few_rows():
    streamed, in_memory, rows = _datasets()
    train = streamed.indices("train")
    reference = train_model(_model(), in_memory.rows(train), recipe=RECIPE, seed=1)
    model = train_model(_model(), streamed.rows(train), recipe=RECIPE, seed=1)
    assert _states_equal(model, reference)  # dropout too: the DataLoader never draws from the global RNG
    assert rows.reads == RECIPE.epochs * len(train)
    # Rows are read batch by batch and freed once collated: never the 200 training rows at once.
    assert rows.most_alive <= RECIPE.batch_size
    signals = compute_signals(model, streamed, np.arange(N), np.full(N, "test"), model_name="m", backend="reference",
                              reference_models=[reference, copy.deepcopy(reference)])
    expected = compute_signals(reference, in_memory, np.arange(N), np.full(N, "test"), model_name="m",
                               backend="reference", reference_models=[reference, copy.deepcopy(reference)])
    np.testing.assert_array_equal(signals.loss, expected.loss)
    np.testing.assert_array_equal(signals.reference_logits, expected.reference_logits)
    # One read per row for the model and both references, plus row 0 once for the input shape.
    assert rows.reads == RECIPE.epochs * len(train) + N + 1


@pytest.mark.slow
def test_forget_loop_and_training_are_identical_for_any_number_of_workers():
    streamed, in_memory, _ = _datasets(as_pairs=True)
    train = streamed.indices("train")
    original = train_model(_model(), in_memory.rows(train), recipe=RECIPE, seed=1)
    forget, retain = train[:20], train[20:]

    def unlearn(data: SampleSet) -> dict:
        task = UnlearningTask(model=copy.deepcopy(original), build_model=_model, recipe=RECIPE, data=data,
                              forget=forget, retain=retain, validation=data.indices("validation"),
                              test=data.indices("test"), seed=2, backend="reference")
        method = Registry.default().create("methods", "nabla-tau", epochs=2, min_retain_batches=4, history_mia=False)
        return method.unlearn(task).state_dict

    expected = unlearn(in_memory)
    for count in (0, 2):
        with loader_workers_set_to(count):
            assert all(torch.equal(a, b) for a, b in zip(unlearn(streamed).values(), expected.values())), count
            retrained = train_model(_model(), streamed.rows(train), recipe=RECIPE, seed=1)
            assert _states_equal(retrained, original), count


def test_a_broken_row_names_its_sample_and_a_wrong_label_is_caught():
    class Broken(GeneratedRows):
        def __getitem__(self, index):
            if index == 7:
                raise OSError("disk read failed")
            return super().__getitem__(index)

    class Mislabelled(GeneratedRows):
        def __getitem__(self, index):
            return super().__getitem__(index)[0], 0

    labels = [_label(i) for i in range(N)]
    ids = [f"gen-{i:04d}" for i in range(N)]
    for rows, message in ((Broken(), "reading sample 'gen-0007' failed: OSError: disk read failed"),
                          (Mislabelled(), "sample 'gen-0001' has label 0 in the dataset but 1")):
        data = SampleSet.from_dataset(rows, name="generated", ids=ids, labels=labels, splits=["train"] * N,
                                      num_classes=CLASSES)
        with pytest.raises(InputError, match=message):
            list(data.rows(np.arange(10)).batches(device=torch.device("cpu")))


def test_stream_concatenates_parts_in_plan_order():
    streamed, in_memory, _ = _datasets()
    plan = [(torch.tensor([2, 0]), torch.tensor([1])), (torch.tensor([], dtype=torch.int64), torch.tensor([0, 2]))]
    parts = [np.asarray([10, 11, 12]), np.asarray([20, 21, 22])]
    for data in (streamed, in_memory):
        batches = list(stream([data.rows(p) for p in parts], plan, device=torch.device("cpu")))
        assert [b.sizes for b in batches] == [(2, 1), (0, 2)]
        torch.testing.assert_close(batches[0].features, in_memory.features[[12, 10, 21]], rtol=0, atol=0)
        assert batches[1].labels.tolist() == [_label(20), _label(22)]


def test_content_hash_uses_a_fingerprint_when_the_dataset_has_one():
    streamed, in_memory, rows = _datasets()
    assert streamed.content_sha256() == in_memory.content_sha256() and rows.reads == N + 1  # + the shape probe
    rows.fingerprint = lambda: "v1"
    assert streamed.content_sha256() != in_memory.content_sha256() and rows.reads == N + 1  # no second pass


@pytest.mark.parametrize("kind, options", [(torch.optim.Adam, {"lr": 1e-2, "weight_decay": 0.1}),
                                           (torch.optim.AdamW, {"lr": 1e-2, "weight_decay": 0.01}),
                                           (torch.optim.SGD, {"lr": 0.1, "momentum": 0.9, "weight_decay": 0.01})])
def test_eager_optimizers_make_exactly_torchs_updates(kind, options):
    torch.manual_seed(0)
    ours, theirs = nn.Linear(6, 4), nn.Linear(6, 4)
    theirs.load_state_dict(ours.state_dict())
    pairs = [(ours, eager_optimizer(kind, ours.parameters(), **options)), (theirs, kind(theirs.parameters(), **options))]
    schedulers = [torch.optim.lr_scheduler.LinearLR(o, start_factor=1.0, end_factor=0.1, total_iters=4) for _, o in pairs]
    for step in range(4):
        x = torch.randn(9, 6, generator=torch.Generator().manual_seed(step))
        for (model, optimizer), scheduler in zip(pairs, schedulers):
            optimizer.zero_grad(set_to_none=True)
            model(x).square().mean().backward()
            optimizer.step()
            scheduler.step()
    assert _states_equal(ours, theirs) and isinstance(pairs[0][1], kind)


def test_a_training_step_does_not_import_dynamo():
    script = ("import sys, torch; from auditkit.training import TrainRecipe, train_model; "
              "train_model(torch.nn.Linear(3, 2), torch.randn(8, 3), torch.arange(8) % 2, "
              "recipe=TrainRecipe(epochs=1, batch_size=4, optimizer='adamw'), seed=0); "
              "assert 'torch._dynamo' not in sys.modules, 'dynamo was imported'")
    subprocess.run([sys.executable, "-c", script], check=True, timeout=120)

"""Regenerate examples/request.csv: 15 % of the default digits training split, drawn with seed 0.

Run from the repository root: ``python examples/make_request.py``.
"""

from pathlib import Path

import numpy as np

from auditkit.fsutil import atomic_write_text
from auditkit.registry import Registry

FRACTION = 0.15
SEED = 0

data = Registry.default().create("datasets", "digits").load()
train_ids = np.sort(data.ids[data.indices("train")])
chosen = np.random.default_rng(SEED).choice(train_ids, size=round(FRACTION * len(train_ids)), replace=False)
atomic_write_text(Path(__file__).with_name("request.csv"), "id\n" + "".join(f"{i}\n" for i in sorted(chosen)))

"""A multi-layer perceptron over flattened features."""

from __future__ import annotations

import math

from torch import nn

from auditkit.errors import InputError
from auditkit.interfaces import ModelPlugin


class MlpModel(ModelPlugin):
    """Flatten → (Linear → ReLU) per hidden width → Linear to the classes."""

    PLUGIN_NAME = "mlp"
    DESCRIPTION = "multi-layer perceptron with configurable hidden widths"
    OPTIONS = {"widths": (256,)}

    def build(self, *, input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
        if any(int(hidden) < 1 for hidden in self.options["widths"]):  # torch builds 0-wide layers, fails on < 0
            raise InputError(f"mlp widths must be positive, not {list(self.options['widths'])}",
                             hint="pass hidden sizes like widths=256 or widths=128,64")
        layers: list[nn.Module] = [nn.Flatten()]
        width = math.prod(input_shape)
        for hidden in self.options["widths"]:
            layers += [nn.Linear(width, int(hidden)), nn.ReLU()]
            width = int(hidden)
        layers.append(nn.Linear(width, num_classes))
        return nn.Sequential(*layers)

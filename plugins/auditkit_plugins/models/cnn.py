"""A small convolutional network for square images ``[channels, side, side]``."""

from __future__ import annotations

from torch import nn

from auditkit.errors import InputError
from auditkit.interfaces import ModelPlugin


class CnnModel(ModelPlugin):
    """Per entry of ``channels``: 3×3 conv (padding 1) → ReLU → 2×2 max-pool; then a hidden layer.

    For digits (``--dataset-option image=true``, ``[1, 8, 8]``) the defaults give 8×8 → 4×4 → 2×2
    feature maps of 32 channels, a 64-unit hidden layer and 10 logits.
    """

    PLUGIN_NAME = "cnn"
    DESCRIPTION = "small conv net for square images [C, H, W] (e.g. digits with image=true)"
    OPTIONS = {"channels": (16, 32), "hidden": 64}

    def build(self, *, input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
        if len(input_shape) != 3 or input_shape[1] != input_shape[2]:
            raise InputError(f"the cnn model needs square images [C, H, H], but the data is {list(input_shape)}",
                             hint="use --dataset-option image=true (digits) or the mlp model")
        channels, side = input_shape[0], input_shape[1]
        if side < 2 ** len(self.options["channels"]):
            raise InputError(f"{side}×{side} images are too small for {len(self.options['channels'])} pooling stages",
                             hint=f"use fewer entries in channels (at most {max(side.bit_length() - 1, 0)})")
        layers: list[nn.Module] = []
        for width in self.options["channels"]:
            layers += [nn.Conv2d(channels, int(width), kernel_size=3, padding=1), nn.ReLU(), nn.MaxPool2d(2)]
            channels, side = int(width), side // 2
        hidden = int(self.options["hidden"])
        layers += [nn.Flatten(), nn.Linear(channels * side * side, hidden), nn.ReLU(), nn.Linear(hidden, num_classes)]
        return nn.Sequential(*layers)

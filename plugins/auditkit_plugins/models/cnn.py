"""A small convolutional network for square images ``[channels, side, side]`` or sequences ``[channels, length]``."""

from __future__ import annotations

from torch import nn

from auditkit.errors import InputError
from auditkit.interfaces import ModelPlugin


class CnnModel(ModelPlugin):
    """Per entry of ``channels``: 3×3 conv (padding 1) → ReLU → 2×2 max-pool; then a hidden layer.

    For digits (``--dataset-option image=true``, ``[1, 8, 8]``) the defaults give 8×8 → 4×4 → 2×2
    feature maps of 32 channels, a 64-unit hidden layer and 10 logits. Sequences ``[C, L]`` (MNIST-1D with
    ``--dataset-option sequence=true``, ``[1, 40]``) get the same layers in 1-D: kernel 3, pool 2.
    """

    PLUGIN_NAME = "cnn"
    DESCRIPTION = "small conv net for square images [C, H, W] (digits with image=true) or sequences [C, L]"
    OPTIONS = {"channels": (16, 32), "hidden": 64}

    def build(self, *, input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
        if not (len(input_shape) == 2 or (len(input_shape) == 3 and input_shape[1] == input_shape[2])):
            raise InputError(f"the cnn model needs square images [C, H, H] or sequences [C, L], but the data is "
                             f"{list(input_shape)}",
                             hint="use --dataset-option image=true (digits), sequence=true (mnist1d) or the mlp model")
        conv, pool = (nn.Conv1d, nn.MaxPool1d) if len(input_shape) == 2 else (nn.Conv2d, nn.MaxPool2d)
        channels, side = input_shape[0], input_shape[1]
        if side < 2 ** len(self.options["channels"]):
            raise InputError(f"{'×'.join(map(str, input_shape[1:]))} inputs are too small for "
                             f"{len(self.options['channels'])} pooling stages",
                             hint=f"use fewer entries in channels (at most {max(side.bit_length() - 1, 0)})")
        layers: list[nn.Module] = []
        for width in self.options["channels"]:
            layers += [conv(channels, int(width), kernel_size=3, padding=1), nn.ReLU(), pool(2)]
            channels, side = int(width), side // 2
        hidden = int(self.options["hidden"])
        layers += [nn.Flatten(), nn.Linear(channels * side ** (len(input_shape) - 1), hidden), nn.ReLU(),
                   nn.Linear(hidden, num_classes)]
        return nn.Sequential(*layers)

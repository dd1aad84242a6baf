"""A user's own architecture, built by a factory function named ``package.module:function``."""

from __future__ import annotations

import importlib
import inspect
import json
from typing import Any

import torch
from torch import nn

from auditkit.errors import InputError
from auditkit.interfaces import ModelPlugin


def _kwargs(value: Any) -> dict[str, Any]:
    """Factory keyword arguments: a dict (from auditkit.toml or code) or a JSON object string (CLI)."""
    if isinstance(value, dict):
        return dict(value)
    try:
        parsed = json.loads(value or "{}")
    except json.JSONDecodeError as exc:
        raise InputError(f"module option kwargs={value!r} is not JSON ({exc.msg})",
                         hint='pass a JSON object, e.g. kwargs=\'{"hidden": 128}\'') from None
    if not isinstance(parsed, dict):
        raise InputError(f"module option kwargs={value!r} is not a JSON object", hint='e.g. kwargs=\'{"hidden": 128}\'')
    return parsed


class ModuleFactoryModel(ModelPlugin):
    """Calls ``factory(**kwargs)`` and returns its ``nn.Module``.

    The factory also receives ``input_shape`` and ``num_classes`` when its signature names them, so one
    function can adapt to the data. The module must map ``[B, *input_shape]`` to logits ``[B, C]``;
    a dry forward pass checks that before any training. The factory string and kwargs are stored in
    the checkpoint manifest, so the package must be importable wherever the checkpoint is loaded.
    """

    PLUGIN_NAME = "module"
    DESCRIPTION = "your own architecture: factory='package.module:function' plus JSON kwargs"
    OPTIONS = {"factory": "", "kwargs": "{}"}

    def build(self, *, input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
        factory = self._factory()
        kwargs = _kwargs(self.options["kwargs"])
        parameters = inspect.signature(factory).parameters
        for name, value in (("input_shape", tuple(input_shape)), ("num_classes", num_classes)):
            if name in parameters:
                kwargs.setdefault(name, value)
        try:
            model = factory(**kwargs)
        except TypeError as exc:
            raise InputError(f"model factory {self.options['factory']!r} rejected its arguments: {exc}",
                             hint="check the kwargs option against the factory's signature") from None
        if not isinstance(model, nn.Module):
            raise InputError(f"model factory {self.options['factory']!r} returned a {type(model).__name__}, "
                             "not a torch.nn.Module", hint="return the model instance from the factory")
        self._check_output(model, input_shape, num_classes)
        return model

    def _factory(self):
        spec = self.options["factory"]
        module_name, _, attribute = spec.partition(":")
        if not module_name or not attribute:
            raise InputError(f"model factory {spec!r} is not of the form 'package.module:function'",
                             hint="e.g. --model-option factory=mypkg.nets:build_net")
        try:
            module = importlib.import_module(module_name)
        except ImportError as exc:
            raise InputError(f"model factory module {module_name!r} cannot be imported: {exc}",
                             hint="install the package or add its folder to PYTHONPATH") from None
        factory = getattr(module, attribute, None)
        if not callable(factory):
            raise InputError(f"module {module_name!r} has no callable {attribute!r}",
                             hint="name a function or class defined in that module")
        return factory

    def _check_output(self, model: nn.Module, input_shape: tuple[int, ...], num_classes: int) -> None:
        was_training = model.training
        model.eval()
        try:
            with torch.no_grad():
                logits = model(torch.zeros(2, *input_shape))
        except Exception as exc:  # any failure of user code on a well-formed batch is the user's to fix
            raise InputError(f"model from {self.options['factory']!r} fails on a [2, {', '.join(map(str, input_shape))}] "
                             f"batch: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}",
                             hint="the model must accept [B, *input_shape] features") from None
        finally:
            model.train(was_training)
        if not isinstance(logits, torch.Tensor) or tuple(logits.shape) != (2, num_classes):
            shape = list(logits.shape) if isinstance(logits, torch.Tensor) else type(logits).__name__
            raise InputError(f"model from {self.options['factory']!r} returns {shape} for 2 samples, "
                             f"expected logits [2, {num_classes}]", hint="the last layer must output one logit per class")

"""A user's own architecture, built by a factory function named ``package.module:function``."""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import inspect
import json
import sys
from pathlib import Path
from types import ModuleType
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


def _import(name: str) -> ModuleType:
    try:
        return importlib.import_module(name)
    except ImportError as exc:
        raise InputError(f"model factory module {name!r} cannot be imported: {exc}",
                         hint="install the package, add its folder to PYTHONPATH, or name the file: factory=path/file.py:name") from None


def _module_from_file(path: str) -> ModuleType:
    """The Python file at ``path``, imported once per process under a name derived from its resolved path."""
    file = Path(path)
    if not file.is_file():
        raise InputError(f"model factory file {path!r} does not exist",
                         hint="give the path of the .py file that defines the model (absolute, or from this folder)")
    name = "auditkit_user_model_" + hashlib.sha256(str(file.resolve()).encode()).hexdigest()[:12]
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, file)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # before running it: classes defined there must find their module
    try:
        spec.loader.exec_module(module)
    except Exception as exc:  # the user's file, run as a module: any failure is theirs to fix
        del sys.modules[name]
        raise InputError(f"model factory file {path!r} failed to import: {type(exc).__name__}: {exc}",
                         hint="run the file with python to see the error; code that trains belongs under "
                              "if __name__ == '__main__':") from None
    return module


class ModuleFactoryModel(ModelPlugin):
    """Calls ``factory(**kwargs)`` and returns its ``nn.Module``.

    ``factory`` is ``package.module:name`` (an importable module) or ``path/to/file.py:name`` (a file,
    imported by path, e.g. the script that defines and trains the model); ``name`` is a function or an
    ``nn.Module`` class. The factory also receives ``input_shape`` and ``num_classes`` when its signature
    names them, so one function can adapt to the data. The module must map ``[B, *input_shape]`` to
    logits ``[B, C]``; a dry forward pass checks that before any training. The factory string and kwargs
    are stored in the checkpoint manifest, so the module (or file, at the same path) must be there
    wherever the checkpoint is loaded.
    """

    PLUGIN_NAME = "module"
    DESCRIPTION = "your own architecture: factory='package.module:function' or 'file.py:Class', plus JSON kwargs"
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
        module_name, _, attribute = spec.rpartition(":")
        if not module_name or not attribute:
            raise InputError(f"model factory {spec!r} is not of the form 'package.module:function' or 'file.py:name'",
                             hint="e.g. --model-option factory=mypkg.nets:build_net or factory=nets.py:Net")
        module = _module_from_file(module_name) if module_name.endswith(".py") else _import(module_name)
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

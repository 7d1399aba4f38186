"""The networks: each family a `Network` subclass, built from its `conf/model/<name>.yaml`.

The YAML's `_target_` names the class and its other keys are the constructor's arguments, so a new
family is one Python module and one YAML file; nothing here lists the families.
"""

from __future__ import annotations

import torch

from cnnlab.errors import UserError
from cnnlab.models.base import Network
from cnnlab.targets import arguments, check_arguments, one_line, target_of

__all__ = ["Network", "build_network", "check_model_config", "count_parameters", "family_of"]


def family_of(model_cfg) -> str:
    """The family's name, from its class: `cnnlab.models.cnn.CNN` -> 'cnn'."""
    return str(model_cfg["_target_"]).rsplit(".", 1)[-1].lower()


def network_class(model_cfg) -> type[Network]:
    cls = target_of(model_cfg, "model")
    if not (isinstance(cls, type) and issubclass(cls, Network)):
        raise UserError(
            f"model._target_ '{model_cfg['_target_']}' is not a cnnlab.models.Network subclass; "
            "derive the class from it."
        )
    return cls


def check_model_config(model_cfg) -> None:
    """Raise UserError, one sentence, if the network cannot be built from model_cfg."""
    cls = network_class(model_cfg)
    check_arguments(model_cfg, "model", supplied=("num_classes",))
    try:
        with torch.device("meta"):  # builds the layers without allocating their weights
            cls(**arguments(model_cfg))
    except (ValueError, TypeError) as e:
        raise UserError(f"Bad model config for {cls.__name__}: {one_line(e)}") from None


def build_network(model_cfg, num_classes: int = 10) -> Network:
    return network_class(model_cfg)(**arguments(model_cfg), num_classes=num_classes)


def count_parameters(net: torch.nn.Module) -> int:
    return sum(p.numel() for p in net.parameters())

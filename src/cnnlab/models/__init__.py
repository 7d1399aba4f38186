"""The networks: plain nn.Modules built from the `model` config group."""

from __future__ import annotations

from torch import nn

from cnnlab.models.cnn import CNN
from cnnlab.models.fastcnn import FastCNN
from cnnlab.models.mlp import MLP


def build_network(model_cfg, num_classes: int = 10) -> nn.Module:
    family = model_cfg.family
    if family == "mlp":
        return MLP(model_cfg.hidden, model_cfg.activation, model_cfg.batch_norm, model_cfg.dropout, num_classes)
    if family == "cnn":
        return CNN(
            channels=list(model_cfg.channels),
            kernel_size=model_cfg.kernel_size,
            stride=model_cfg.stride,
            padding=model_cfg.padding,
            padding_mode=model_cfg.padding_mode,
            pool=model_cfg.pool,
            pool_size=model_cfg.pool_size,
            pool_stride=model_cfg.pool_stride,
            hidden=list(model_cfg.hidden),
            activation=model_cfg.activation,
            batch_norm=model_cfg.batch_norm,
            dropout=model_cfg.dropout,
            num_classes=num_classes,
        )
    if family == "fastcnn":
        return FastCNN(width=model_cfg.width, num_classes=num_classes)
    raise ValueError(f"unknown model family {family!r}")


def count_parameters(net: nn.Module) -> int:
    return sum(p.numel() for p in net.parameters())


def first_layer_weight(net: nn.Module):
    """The first Linear or Conv2d weight: MLP templates (out, 3072) or CNN kernels (out, 3, k, k)."""
    for m in net.modules():
        if isinstance(m, (nn.Linear, nn.Conv2d)):
            return m.weight
    raise ValueError("network has no Linear or Conv2d layer")

"""What the trainer and the report ask of a network, whatever its family.

A family is a `Network` subclass plus a YAML file under `conf/model/` whose `_target_` names the
class; every other key of that file is a constructor argument. What differs between families is
answered by the object (the attributes and methods below), never decided by the family's name.
"""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import nn


class Network(nn.Module):
    # Which side of the lecture's comparison the network stands on: "dense" (an MLP on raw pixels)
    # or "convolutional". The report pairs the best network of each side, and convolutional
    # networks train in channels-last memory format.
    architecture: ClassVar[str] = "dense"

    def first_layer(self) -> nn.Linear | nn.Conv2d:
        """The layer that sees the pixels: its weights are the report's filters and templates."""
        for m in self.modules():
            if isinstance(m, (nn.Linear, nn.Conv2d)):
                return m
        raise ValueError(f"{type(self).__name__} has no Linear or Conv2d layer")

    def first_layer_images(self, max_filters: int = 64) -> torch.Tensor:
        """The first layer's weights as images (n, 3, H, W): conv kernels as they are, dense rows
        reshaped to the 3x32x32 image they are matched against (the lecture's 'templates')."""
        w = self.first_layer().weight.detach().float().cpu()[:max_filters]
        return w.reshape(len(w), 3, 32, 32) if w.dim() == 2 else w[:, :3]

    def fit_to_data(self, x_train: torch.Tensor) -> None:
        """Set any weights derived from the training images (x_train: (N, 3, H, W), normalized)
        before the first step of a new run; most networks have none."""

    def trains_channels_last(self, setting: str) -> bool:
        """Whether to train in channels-last memory format under `trainer.channels_last`.

        auto: convolutional networks do, on a GPU and on the CPU alike: oneDNN's convolutions are
        faster in it, or no slower (docs/dev/notes.md); a dense network gains nothing from it."""
        if setting != "auto":
            return setting == "true"
        return self.architecture == "convolutional"

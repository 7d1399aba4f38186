"""A multilayer perceptron on raw pixels: every pixel of every channel is one input (3 * 32 * 32)."""

from torch import nn

from cnnlab.models.base import Network
from cnnlab.models.common import dense_stack


class MLP(Network):
    architecture = "dense"

    def __init__(
        self,
        hidden: list[int] = (512, 256),
        activation: str = "relu",
        batch_norm: bool = False,
        dropout: float = 0.0,
        num_classes: int = 10,
        in_features: int = 3 * 32 * 32,
    ):
        super().__init__()
        sizes = [in_features, *hidden]
        self.net = nn.Sequential(
            nn.Flatten(),
            *dense_stack(sizes, activation, batch_norm, dropout),
            nn.Linear(sizes[-1], num_classes),
        )

    def forward(self, x):  # (B, 3, 32, 32) -> (B, classes)
        return self.net(x)

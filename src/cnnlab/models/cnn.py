"""The lecture's CNN: convolution blocks (conv, activation, pooling) then fully connected layers.

Output size of a convolution or pooling along one axis, the lecture's formula:
    out = floor((in + 2 * padding - kernel) / stride) + 1
"""

from torch import nn

from cnnlab.models.common import activation as make_activation
from cnnlab.models.common import dense_stack


def conv_output_size(size: int, kernel: int, stride: int = 1, padding: int = 0) -> int:
    return (size + 2 * padding - kernel) // stride + 1


class CNN(nn.Module):
    def __init__(
        self,
        channels,
        kernel_size=3,
        stride=1,
        padding=1,
        padding_mode="zeros",
        pool="max",
        pool_size=2,
        pool_stride=2,
        hidden=(256,),
        activation="relu",
        batch_norm=False,
        dropout=0.0,
        num_classes=10,
        in_channels=3,
        image_size=32,
    ):
        super().__init__()
        blocks: list[nn.Module] = []
        size, c_in = image_size, in_channels
        for c_out in channels:
            blocks.append(
                nn.Conv2d(c_in, c_out, kernel_size, stride, padding, padding_mode=padding_mode, bias=not batch_norm)
            )
            size = conv_output_size(size, kernel_size, stride, padding)
            if batch_norm:
                blocks.append(nn.BatchNorm2d(c_out))
            blocks.append(make_activation(activation))
            if pool != "none":
                pool_cls = nn.MaxPool2d if pool == "max" else nn.AvgPool2d
                blocks.append(pool_cls(pool_size, pool_stride))
                size = conv_output_size(size, pool_size, pool_stride)
            if dropout > 0:
                blocks.append(nn.Dropout2d(dropout))
            if size < 1:
                raise ValueError(f"the feature map shrinks to nothing after {len(channels)} blocks; use fewer blocks or less pooling")
            c_in = c_out
        self.features = nn.Sequential(*blocks)
        sizes = [c_in * size * size, *hidden]
        self.classifier = nn.Sequential(
            nn.Flatten(),
            *dense_stack(sizes, activation, batch_norm, dropout),
            nn.Linear(sizes[-1], num_classes),
        )
        self.feature_size = size

    def forward(self, x):  # (B, 3, 32, 32) -> (B, classes)
        return self.classifier(self.features(x))


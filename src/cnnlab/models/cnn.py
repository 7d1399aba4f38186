"""The lecture's CNN: convolution blocks (conv, activation, pooling) then a classifier head.

Output size of a convolution or pooling along one axis, the lecture's formula:
    out = floor((in + 2 * padding - kernel) / stride) + 1

Max pooling runs before ReLU (and leaky ReLU) instead of after it: the two commute exactly
(max(f(a), f(b)) = f(max(a, b)) for these f, to the bit, gradient included), and the activation
then touches a quarter of the values. Parameters keep their places, so checkpoints do not change.

The head is the lecture's (`flatten`: every position of the last feature map feeds the fully
connected `hidden` layers) or `global_average`: each channel of the last feature map averaged
over all positions first, so where in the image a feature fired no longer matters to the head.

Dropout, as the lecture describes it (each unit of a layer ignored at random, element-wise) and
where the usual CIFAR-10 recipe puts it: `dropout` after each hidden layer of the dense head, so
before the final dense layer; `conv_dropout` after each block's pooling. Whole channels are never
dropped: on a first block of 16 channels that removes capacity rather than co-adaptation.
"""

from torch import nn

from cnnlab.models.base import Network
from cnnlab.models.common import POOL_COMMUTES, check_dropout, choose, dense_stack
from cnnlab.models.common import activation as make_activation
from cnnlab.padding import PADDING_MODES

POOLS = {"max": nn.MaxPool2d, "avg": nn.AvgPool2d, "none": None}
HEADS = ("flatten", "global_average")


def conv_output_size(size: int, kernel: int, stride: int = 1, padding: int = 0) -> int:
    return (size + 2 * padding - kernel) // stride + 1


class CNN(Network):
    architecture = "convolutional"

    def __init__(
        self,
        channels=(32, 64, 128),
        kernel_size=3,
        stride=1,
        padding=1,
        padding_mode="zeros",
        pool="max",
        pool_size=2,
        pool_stride=2,
        head="flatten",
        hidden=(256,),
        activation="relu",
        batch_norm=False,
        dropout=0.0,
        conv_dropout=0.0,
        num_classes=10,
        in_channels=3,
        image_size=32,
    ):
        super().__init__()
        choose("padding_mode", padding_mode, PADDING_MODES)
        choose("pool", pool, POOLS)
        choose("head", head, HEADS)
        check_dropout(dropout)
        check_dropout(conv_dropout, "conv_dropout")
        if not channels:
            raise ValueError("'channels' lists no convolution block; give at least one, e.g. [32, 64].")
        blocks: list[nn.Module] = []
        size, c_in = image_size, in_channels
        for c_out in channels:
            blocks.append(
                nn.Conv2d(c_in, c_out, kernel_size, stride, padding, padding_mode=padding_mode, bias=not batch_norm)
            )
            size = conv_output_size(size, kernel_size, stride, padding)
            if batch_norm:
                blocks.append(nn.BatchNorm2d(c_out))
            stage = [make_activation(activation)]
            if POOLS[pool] is not None:
                pooling = POOLS[pool](pool_size, pool_stride)
                stage = [pooling, *stage] if pool == "max" and activation in POOL_COMMUTES else [*stage, pooling]
                size = conv_output_size(size, pool_size, pool_stride)
            blocks.extend(stage)
            if conv_dropout > 0:
                blocks.append(nn.Dropout(conv_dropout))
            if size < 1:
                raise ValueError(
                    f"the feature map shrinks to nothing after {len(channels)} blocks; use fewer blocks or less pooling"
                )
            c_in = c_out
        self.features = nn.Sequential(*blocks)
        if head == "global_average":
            pooled = [nn.AdaptiveAvgPool2d(1), nn.Flatten()]
            sizes = [c_in, *hidden]
        else:
            pooled = [nn.Flatten()]
            sizes = [c_in * size * size, *hidden]
        self.classifier = nn.Sequential(
            *pooled,
            *dense_stack(sizes, activation, batch_norm, dropout),
            nn.Linear(sizes[-1], num_classes),
        )
        self.feature_size = size

    def forward(self, x):  # (B, 3, 32, 32) -> (B, classes)
        return self.classifier(self.features(x))

"""A CNN for time-to-accuracy, after the CIFAR-10 speed records (KellerJordan/cifar10-airbench).

A frozen 2x2 patch-whitening convolution first (its filters are the eigenvectors of the training
patches' covariance, scaled to unit variance), then three groups conv -> pool -> BN -> GELU ->
conv -> BN -> GELU, a global max pool and a linear head scaled down so early logits stay small.
"""

import torch
from torch import nn

from cnnlab.models.base import Network

WHITEN_KERNEL = 2


class ConvGroup(nn.Module):
    def __init__(self, c_in: int, c_out: int):
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, padding=1, bias=False)
        self.pool = nn.MaxPool2d(2)
        self.bn1 = nn.BatchNorm2d(c_out, momentum=0.4, eps=1e-12)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out, momentum=0.4, eps=1e-12)
        self.act = nn.GELU()

    def forward(self, x):
        x = self.act(self.bn1(self.pool(self.conv1(x))))
        return self.act(self.bn2(self.conv2(x)))


class FastCNN(Network):
    architecture = "convolutional"

    def __init__(self, width: int = 64, num_classes: int = 10):
        super().__init__()
        whiten_out = 2 * 3 * WHITEN_KERNEL**2  # each eigenvector and its negative
        self.whiten = nn.Conv2d(3, whiten_out, WHITEN_KERNEL, padding=0, bias=True)
        self.whiten.weight.requires_grad_(False)
        widths = (width, 4 * width, 4 * width)
        self.layers = nn.Sequential(
            nn.GELU(),
            ConvGroup(whiten_out, widths[0]),
            ConvGroup(widths[0], widths[1]),
            ConvGroup(widths[1], widths[2]),
            nn.AdaptiveMaxPool2d(1),
            nn.Flatten(),
        )
        self.head = nn.Linear(widths[2], num_classes, bias=False)
        self.head_scale = 1 / 9

    def fit_to_data(self, x_train: torch.Tensor) -> None:
        # 5,000 images give a stable 12x12 patch covariance; more only cost time.
        self.init_whitening(x_train[:5000])

    @torch.no_grad()
    def init_whitening(self, x: torch.Tensor, eps: float = 5e-4) -> None:
        """Set the first layer from training images x (N, 3, 32, 32), already normalized."""
        k = WHITEN_KERNEL
        patches = x.unfold(2, k, 1).unfold(3, k, 1).transpose(1, 3).reshape(-1, 3 * k * k).double()
        patches = patches - patches.mean(0)
        cov = patches.T @ patches / len(patches)
        eigval, eigvec = torch.linalg.eigh(cov)
        filters = (eigvec.T / torch.sqrt(eigval + eps)[:, None]).reshape(-1, 3, k, k)  # (c, h, w) order
        filters = filters.transpose(2, 3)  # undo the transpose(1, 3) of the patch layout
        self.whiten.weight.copy_(torch.cat([filters, -filters]).to(self.whiten.weight.dtype))

    def forward(self, x):  # (B, 3, 32, 32) -> (B, classes)
        return self.head(self.layers(self.whiten(x))) * self.head_scale

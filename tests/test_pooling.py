"""Max pooling without indices at evaluation: the same bits as nn.MaxPool2d, and training untouched."""

import copy

import pytest
import torch
from torch import nn

from cnnlab.models import pooling
from cnnlab.models.cnn import CNN
from cnnlab.models.pooling import MaxPool2d, max_pool_2x2


def bits(t: torch.Tensor) -> torch.Tensor:
    """The raw bits, so -0.0 and 0.0 (and NaN payloads) count as different."""
    return t.contiguous().view(torch.int32)


def images(n=64, size=32, seed=0) -> torch.Tensor:
    """Random images with flat patches (ties inside pooling windows) and signed zeros."""
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 3, size, size, generator=g)
    x[: n // 2, :, :12, :12] = 0.25  # a flat region: every window there is a four-way tie
    x[:, :, -4:, -4:] = -0.0
    return x.contiguous(memory_format=torch.channels_last)


def stock_copy(net: nn.Module) -> nn.Module:
    """The same network with torch's own nn.MaxPool2d modules (the same weights)."""
    twin = copy.deepcopy(net)
    for m in twin.modules():
        if isinstance(m, MaxPool2d):
            m.__class__ = nn.MaxPool2d
    return twin


@pytest.mark.parametrize("shape", [(2, 5, 8, 8), (3, 16, 32, 32), (1, 1, 2, 2), (4, 64, 2, 6)])
def test_view_pooling_gives_max_pool2d_values_and_bits_of_nonzero_maxima(shape):
    g = torch.Generator().manual_seed(1)
    x = torch.randn(shape, generator=g)
    x[..., :2, :2] = 0.0
    x[..., 0, 1] = -0.0  # a window of +0 and -0: equal values, the sign may differ
    x = x.contiguous(memory_format=torch.channels_last)
    want = nn.functional.max_pool2d(x, 2, 2)
    got = max_pool_2x2(x)
    assert got.shape == want.shape and got.stride() == want.stride()
    assert torch.equal(got, want)
    nonzero = want != 0
    assert torch.equal(bits(got)[nonzero], bits(want)[nonzero])


@pytest.mark.parametrize("batch_norm", [False, True])
@pytest.mark.parametrize("head", ["flatten", "global_average"])
def test_an_evaluated_cnn_gives_the_same_logits_bit_for_bit(batch_norm, head, monkeypatch):
    calls = []
    monkeypatch.setattr(pooling, "max_pool_2x2", lambda x: calls.append(x.shape) or max_pool_2x2(x))
    torch.manual_seed(0)
    net = CNN(channels=(8, 16, 32), batch_norm=batch_norm, head=head).to(memory_format=torch.channels_last)
    assert sum(isinstance(m, MaxPool2d) for m in net.modules()) == 3
    stock = stock_copy(net)
    for n in (net, stock):
        n.eval()
    x = images()
    with torch.inference_mode():
        got, want = net(x), stock(x)
    assert torch.equal(bits(got), bits(want))
    assert len(calls) == 3  # each block's pooling took the views
    with torch.no_grad():
        assert torch.equal(bits(net(x)), bits(want))
    assert len(calls) == 6


def test_training_takes_max_pool2d_and_its_gradients(monkeypatch):
    monkeypatch.setattr(pooling, "max_pool_2x2", None)  # would fail if called
    torch.manual_seed(0)
    net = CNN(channels=(8, 16), hidden=(32,)).to(memory_format=torch.channels_last)
    stock = stock_copy(net)
    x = images(16)
    y = torch.arange(16) % 10
    for n in (net, stock):
        nn.functional.cross_entropy(n(x), y).backward()
    for (name, p), q in zip(net.named_parameters(), stock.parameters(), strict=True):
        assert torch.equal(bits(p.grad), bits(q.grad)), name


def test_other_windows_and_layouts_take_max_pool2d(monkeypatch):
    monkeypatch.setattr(pooling, "max_pool_2x2", None)  # would fail if called
    x = images(4, size=9)  # odd size: floor mode drops the last row and column
    assert torch.equal(MaxPool2d(2, 2)(x), nn.functional.max_pool2d(x, 2, 2))
    plain = images(4).contiguous()  # NCHW memory
    assert torch.equal(MaxPool2d(2, 2)(plain), nn.functional.max_pool2d(plain, 2, 2))
    assert torch.equal(MaxPool2d(3, 2)(images(4)), nn.functional.max_pool2d(images(4), 3, 2))


def test_a_window_given_per_axis_takes_the_views(monkeypatch):
    calls = []
    monkeypatch.setattr(pooling, "max_pool_2x2", lambda x: calls.append(x.shape) or max_pool_2x2(x))
    x = images(4)
    assert torch.equal(MaxPool2d((2, 2), stride=[2, 2])(x), nn.functional.max_pool2d(x, 2, 2))
    assert len(calls) == 1

"""Layer output sizes, the lecture's L1/L2 penalties, and that each family learns."""

import pytest
import pytorch_lightning as pl
import torch
from torch import nn

from cnnlab.data.batches import TrainBatches
from cnnlab.models import build_network
from cnnlab.models.cnn import CNN, conv_output_size
from cnnlab.models.common import activation as build_activation
from cnnlab.optim.regularization import l1_penalty, l2_penalty, penalized_weights
from cnnlab.study.studies import compose_config
from cnnlab.training.module import Classifier


@pytest.mark.parametrize("mode", ["zeros", "replicate", "circular"])
@pytest.mark.parametrize("kernel, stride, padding", [(3, 1, 1), (3, 2, 1), (5, 1, 2), (5, 2, 0), (3, 1, 0), (7, 3, 3)])
def test_conv_output_size_follows_the_lecture_formula(mode, kernel, stride, padding):
    conv = nn.Conv2d(3, 4, kernel, stride, padding, padding_mode=mode)
    out = conv(torch.zeros(1, 3, 32, 32))
    expected = (32 + 2 * padding - kernel) // stride + 1
    assert out.shape[-1] == out.shape[-2] == expected == conv_output_size(32, kernel, stride, padding)


@pytest.mark.parametrize("mode", ["zeros", "replicate", "circular"])
def test_cnn_feature_size_matches_formula_for_each_padding_mode(mode):
    net = CNN(channels=[4, 8], kernel_size=5, stride=1, padding=2, padding_mode=mode, hidden=[16])
    size = conv_output_size(conv_output_size(32, 5, 1, 2), 2, 2)  # conv then 2x2 pool
    size = conv_output_size(conv_output_size(size, 5, 1, 2), 2, 2)
    assert net.feature_size == size == 8
    assert net.features(torch.zeros(1, 3, 32, 32)).shape == (1, 8, 8, 8)
    assert {m.padding_mode for m in net.modules() if isinstance(m, nn.Conv2d)} == {mode}


@pytest.mark.parametrize("activation, batch_norm", [("relu", False), ("relu", True), ("leaky_relu", False),
                                                     ("leaky_relu", True)])
def test_pooling_before_a_piecewise_linear_activation_computes_the_lecture_order_exactly(activation, batch_norm):
    torch.manual_seed(0)
    net = CNN(channels=[4, 8], hidden=[16], activation=activation, batch_norm=batch_norm).train()
    act = type(build_activation(activation))
    pools = [i for i, m in enumerate(net.features) if isinstance(m, nn.MaxPool2d)]
    assert len(pools) == 2 and all(isinstance(net.features[i + 1], act) for i in pools)
    # The lecture's order, conv -> (BN) -> activation -> pool, with the very same modules.
    lecture = []
    for m in net.features:
        if isinstance(m, nn.MaxPool2d):
            pool = m
        else:
            lecture.append(m)
            if isinstance(m, act):
                lecture.append(pool)
    lecture = nn.Sequential(*lecture)
    assert [type(m) for m in lecture] != [type(m) for m in net.features]
    x = torch.randn(16, 3, 32, 32)
    ours, theirs = net.features(x), lecture(x)
    assert torch.equal(ours, theirs)
    grads = []
    for out in (ours, theirs):
        net.zero_grad()
        (out * torch.linspace(-1, 1, out.numel()).view_as(out)).sum().backward(retain_graph=True)
        grads.append([p.grad.clone() for p in net.features.parameters()])
    assert all(torch.equal(a, b) for a, b in zip(*grads, strict=True))


def test_average_pooling_and_other_activations_keep_the_lecture_order():
    # tanh and sigmoid are monotonic, but their kernels may round an element differently in a
    # tensor of another size, so pooling first would not be the same function to the last bit.
    for kw in (dict(pool="avg"), dict(activation="gelu"), dict(activation="tanh"), dict(activation="sigmoid")):
        kinds = [type(m).__name__ for m in CNN(channels=[4], hidden=[8], **kw).features]
        assert kinds[0] == "Conv2d" and kinds[2].endswith("Pool2d"), (kw, kinds)


def test_padding_modes_differ_only_at_the_border():
    torch.manual_seed(0)
    x = torch.rand(1, 1, 8, 8)
    outs = {}
    for mode in ("zeros", "replicate", "circular"):
        conv = nn.Conv2d(1, 1, 3, padding=1, padding_mode=mode, bias=False)
        conv.weight.data.fill_(1.0)
        outs[mode] = conv(x)[0, 0]
    for a in outs.values():
        assert torch.allclose(a[1:-1, 1:-1], outs["zeros"][1:-1, 1:-1])
    assert not torch.allclose(outs["zeros"][0], outs["circular"][0])
    # Circular padding at the top-left corner sees the opposite corners.
    corner = x[0, 0][[-1, 0, 1]][:, [-1, 0, 1]].sum()
    assert torch.isclose(outs["circular"][0, 0], corner)


def test_l1_l2_penalties_equal_hand_computation_and_skip_biases_and_norms():
    net = nn.Sequential(nn.Conv2d(1, 2, 2), nn.BatchNorm2d(2), nn.Flatten(), nn.Linear(2, 1))
    with torch.no_grad():
        net[0].weight.copy_(torch.tensor([[[[1.0, -2.0], [0.5, 0.0]]], [[[0.0, 1.0], [-1.0, 3.0]]]]))
        net[0].bias.fill_(100.0)
        net[1].weight.fill_(50.0)
        net[1].bias.fill_(-50.0)
        net[3].weight.copy_(torch.tensor([[2.0, -4.0]]))
        net[3].bias.fill_(7.0)
    weights = penalized_weights(net)
    assert len(weights) == 2  # conv kernel and linear matrix only
    assert l1_penalty(weights).item() == pytest.approx(1 + 2 + 0.5 + 0 + 0 + 1 + 1 + 3 + 2 + 4)
    assert l2_penalty(weights).item() == pytest.approx(1 + 4 + 0.25 + 0 + 0 + 1 + 1 + 9 + 4 + 16)


def test_penalties_enter_the_training_loss(tmp_path):
    cfg = compose_config(["model=mlp", "model.hidden=[8]", "regularization.l1=0.01", "regularization.l2=0.1"])
    net = build_network(cfg.model)
    module = Classifier(net, cfg)
    x, y = torch.randn(4, 3, 32, 32), torch.tensor([0, 1, 2, 3])
    loss = module.training_loss(x, y)
    ce = nn.functional.cross_entropy(net(x), y)
    w = penalized_weights(net)
    assert loss.item() == pytest.approx((ce + 0.01 * l1_penalty(w) + 0.1 * l2_penalty(w)).item(), rel=1e-5)


@pytest.mark.parametrize("l1, l2", [(1e-3, 0.0), (0.0, 1e-2), (1e-3, 1e-2)])
def test_the_penalties_add_the_lectures_gradients_to_the_weights_only(l1, l2):
    torch.manual_seed(0)
    net = CNN(channels=[4, 8], hidden=[16], batch_norm=True).train()
    x, y = torch.randn(8, 3, 32, 32), torch.arange(8) % 10
    weights = penalized_weights(net)
    nn.functional.cross_entropy(net(x), y).backward()
    ce_grads = [p.grad.clone() for p in net.parameters()]
    net.zero_grad()
    loss = nn.functional.cross_entropy(net(x), y) + l1 * l1_penalty(weights) + l2 * l2_penalty(weights)
    loss.backward()
    for p, ce in zip(net.parameters(), ce_grads, strict=True):
        penalty = l1 * torch.sign(p) + l2 * 2 * p if any(p is w for w in weights) else torch.zeros_like(p)
        assert torch.allclose(p.grad, ce + penalty, rtol=1e-5, atol=1e-7)


class _LossHistory(pl.Callback):
    def __init__(self):
        self.losses = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.losses.append(float(outputs["loss"]))


@pytest.mark.parametrize("family", ["mlp", "cnn", "fastcnn"])
def test_a_short_run_lowers_the_loss_on_a_small_batch(family):
    torch.manual_seed(0)
    overrides = [f"model={family}", "optimizer=adam", "optimizer.lr=0.003"]
    if family == "mlp":
        overrides.append("model.hidden=[64]")
    if family == "cnn":
        overrides += ["model.channels=[8,16]", "model.hidden=[64]"]
    if family == "fastcnn":
        overrides += ["model.width=8", "optimizer.lr=0.01"]  # its head is scaled down 9x
    cfg = compose_config(overrides)
    x, y = torch.randn(32, 3, 32, 32), torch.arange(32) % 10
    batches = TrainBatches(x, y, batch_size=32, seed=0, augment=cfg.augment)
    module = Classifier(build_network(cfg.model), cfg)
    history = _LossHistory()
    trainer = pl.Trainer(max_epochs=25, accelerator="cpu", logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, callbacks=[history])
    trainer.datamodule = None
    module.on_train_epoch_start = lambda: None  # no datamodule here to seed epochs from
    trainer.fit(module, train_dataloaders=batches)
    assert history.losses[-1] < 0.6 * history.losses[0], history.losses


def test_auto_memory_format_is_channels_last_for_convolutional_networks_only():
    cnn, mlp = build_network(compose_config(["model=cnn"]).model), build_network(compose_config(["model=mlp"]).model)
    assert cnn.trains_channels_last("auto") and not mlp.trains_channels_last("auto")
    assert mlp.trains_channels_last("true") and not cnn.trains_channels_last("false")

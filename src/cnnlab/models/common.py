"""Building blocks shared by the networks."""

from torch import nn

ACTIVATIONS = {"relu": nn.ReLU, "gelu": nn.GELU, "tanh": nn.Tanh, "sigmoid": nn.Sigmoid, "leaky_relu": nn.LeakyReLU}


def activation(name: str) -> nn.Module:
    return ACTIVATIONS[name]()


def dense_stack(sizes: list[int], act: str, batch_norm: bool, dropout: float) -> list[nn.Module]:
    """[Linear -> (BatchNorm1d) -> activation -> (Dropout)] for each consecutive pair in sizes."""
    layers: list[nn.Module] = []
    for n_in, n_out in zip(sizes[:-1], sizes[1:]):
        # A bias before batch norm is cancelled by its mean subtraction: leave it out.
        layers.append(nn.Linear(n_in, n_out, bias=not batch_norm))
        if batch_norm:
            layers.append(nn.BatchNorm1d(n_out))
        layers.append(activation(act))
        if dropout > 0:
            layers.append(nn.Dropout(dropout))
    return layers

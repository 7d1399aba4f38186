"""Building blocks shared by the networks, and the checks of their settings."""

from torch import nn

ACTIVATIONS = {"relu": nn.ReLU, "gelu": nn.GELU, "tanh": nn.Tanh, "sigmoid": nn.Sigmoid, "leaky_relu": nn.LeakyReLU}
# Non-decreasing, and each value at most one correctly rounded operation (max(0, x); x or x times
# a slope), so max pooling may run before them and give the same bits as after. tanh and sigmoid
# are non-decreasing too, but their library kernels do not give an element the same last bit in
# every call (it varies with the tensor's size and how it is split across threads), so they keep
# the lecture's order; GELU dips below zero and does not commute at all.
POOL_COMMUTES = ("relu", "leaky_relu")


def choose(setting: str, value: str, allowed) -> str:
    """value if it is one of allowed; else a ValueError that names the setting and the choices."""
    if value not in allowed:
        raise ValueError(f"Unknown value '{value}' for '{setting}'; valid choices: {', '.join(allowed)}.")
    return value


def check_dropout(p: float, setting: str = "dropout") -> float:
    if not 0.0 <= p < 1.0:
        raise ValueError(
            f"'{setting}' must be at least 0 and below 1, not {p}; it is the probability of zeroing a unit."
        )
    return p


def activation(name: str) -> nn.Module:
    return ACTIVATIONS[choose("activation", name, ACTIVATIONS)]()


def dense_stack(sizes: list[int], act: str, batch_norm: bool, dropout: float) -> list[nn.Module]:
    """[Linear -> (BatchNorm1d) -> activation -> (Dropout)] for each consecutive pair in sizes."""
    check_dropout(dropout)
    layers: list[nn.Module] = []
    for n_in, n_out in zip(sizes[:-1], sizes[1:], strict=True):
        # A bias before batch norm is cancelled by its mean subtraction: leave it out.
        layers.append(nn.Linear(n_in, n_out, bias=not batch_norm))
        if batch_norm:
            layers.append(nn.BatchNorm1d(n_out))
        layers.append(activation(act))
        if dropout > 0:
            layers.append(nn.Dropout(dropout))
    return layers

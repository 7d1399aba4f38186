"""cnnlab: the MLP-versus-CNN study of a convolutional-networks course, as a reproducible pipeline."""

__version__ = "0.1.0"

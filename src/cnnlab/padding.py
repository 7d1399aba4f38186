"""The padding modes: what fills the border that a shift or a convolution uncovers.

Written once here and shared by the augmentation (`augment.padding_mode`), the CNN
(`model.padding_mode`), the config's checks and the report's shift tests. The names are those of
`nn.Conv2d`'s `padding_mode`; torch's fourth, `reflect`, is left out because the whole-batch
shift (`cnnlab.data.augment`) does not implement it.
"""

PADDING_MODES = ("zeros", "replicate", "circular")

"""The U-Net backbone factory shared by every method.

``build_unet`` wraps segmentation-models-pytorch's ``Unet`` with any smp/timm encoder
(``resnet34`` as in the D-Persona comparison; small encoders such as ``resnet18`` for smoke runs).
``encoder_weights=None`` by default: nothing downloads. ``headless=True`` drops the segmentation
head and returns the decoder's feature map ``[B, decoder_channels[-1], H, W]`` (16 channels with
the default decoder), which is what D-Persona and the Probabilistic U-Net decode from.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

DEFAULT_DECODER_CHANNELS = (256, 128, 64, 32, 16)


class HeadlessUnet(nn.Module):
    """smp U-Net encoder + decoder without the segmentation head: image -> features."""

    def __init__(self, encoder: nn.Module, decoder: nn.Module, out_channels: int) -> None:
        super().__init__()
        self.encoder = encoder
        self.decoder = decoder
        self.out_channels = out_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feats = self.encoder(x)
        try:  # smp >= 0.4 takes the feature list, older versions unpack it
            return self.decoder(feats)
        except TypeError:
            return self.decoder(*feats)


def build_unet(
    in_channels: int,
    classes: int = 1,
    encoder_name: str = "resnet34",
    encoder_weights: str | None = None,
    headless: bool = False,
    decoder_channels: Sequence[int] = DEFAULT_DECODER_CHANNELS,
    encoder_depth: int = 5,
) -> nn.Module:
    """An smp ``Unet``; with ``headless=True`` a ``HeadlessUnet`` returning decoder features."""
    import segmentation_models_pytorch as smp

    net = smp.Unet(
        encoder_name=encoder_name,
        encoder_weights=encoder_weights,
        in_channels=in_channels,
        classes=classes,
        encoder_depth=encoder_depth,
        decoder_channels=tuple(decoder_channels),
        decoder_use_batchnorm=True,
    )
    if not headless:
        return net
    return HeadlessUnet(net.encoder, net.decoder, int(decoder_channels[-1]))

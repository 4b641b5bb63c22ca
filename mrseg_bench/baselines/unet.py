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
    import inspect

    import segmentation_models_pytorch as smp

    # smp >= 0.5 names the decoder norm ``decoder_use_norm``; older versions use a bool flag
    norm = ({"decoder_use_norm": "batchnorm"}
            if "decoder_use_norm" in inspect.signature(smp.Unet.__init__).parameters
            else {"decoder_use_batchnorm": True})
    net = smp.Unet(
        encoder_name=encoder_name,
        encoder_weights=encoder_weights,
        in_channels=in_channels,
        classes=classes,
        encoder_depth=encoder_depth,
        decoder_channels=tuple(decoder_channels),
        **norm,
    )
    if not headless:
        return net
    return HeadlessUnet(net.encoder, net.decoder, int(decoder_channels[-1]))


def _conv_block(in_ch: int, out_ch: int, n_convs: int) -> list[nn.Module]:
    """``n_convs`` x (conv3x3, padding 1, ReLU)."""
    layers: list[nn.Module] = []
    for i in range(n_convs):
        layers += [nn.Conv2d(in_ch if i == 0 else out_ch, out_ch, 3, padding=1), nn.ReLU(inplace=True)]
    return layers


class KohlUNet(nn.Module):
    """The classic Probabilistic U-Net backbone (Kohl et al. 2018, popular PyTorch port).

    Encoder: ``len(filters)`` levels, each ``convs_per_block`` x (conv3x3 + ReLU), AvgPool2d(2)
    before every level but the first. Decoder: bilinear upsampling to the skip's size, concat
    with the skip, ``convs_per_block`` x (conv3x3 + ReLU). No normalisation, no final layer:
    ``forward`` returns the feature map ``[B, filters[0], H, W]`` (``out_channels``).
    Any H, W work (upsampling targets the skip's exact size).
    """

    def __init__(self, in_channels: int, filters: Sequence[int] = (32, 64, 128, 192),
                 convs_per_block: int = 3) -> None:
        super().__init__()
        filters = tuple(int(f) for f in filters)
        if in_channels < 1 or len(filters) < 2 or min(filters) < 1 or convs_per_block < 1:
            raise ValueError(f"KohlUNet: need in_channels >= 1, >= 2 positive filters and "
                             f"convs_per_block >= 1; got {in_channels}, {filters}, {convs_per_block}")
        self.filters = filters
        self.out_channels = filters[0]
        self.down = nn.ModuleList()
        prev = in_channels
        for i, f in enumerate(filters):
            pool = [nn.AvgPool2d(2, stride=2, ceil_mode=True)] if i > 0 else []
            self.down.append(nn.Sequential(*pool, *_conv_block(prev, f, convs_per_block)))
            prev = f
        self.up = nn.ModuleList(
            nn.Sequential(*_conv_block(filters[i + 1] + filters[i], filters[i], convs_per_block))
            for i in reversed(range(len(filters) - 1))
        )
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_in", nonlinearity="relu")
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = []
        for block in self.down:
            x = block(x)
            skips.append(x)
        skips.pop()  # the bottleneck is x itself
        for block in self.up:
            skip = skips.pop()
            x = nn.functional.interpolate(x, size=skip.shape[-2:], mode="bilinear", align_corners=False)
            x = block(torch.cat([x, skip], dim=1))
        return x


def build_backbone(
    kind: str,
    in_channels: int,
    encoder_name: str = "resnet34",
    encoder_weights: str | None = None,
    decoder_channels: Sequence[int] = DEFAULT_DECODER_CHANNELS,
    kohl_filters: Sequence[int] = (32, 64, 128, 192),
) -> nn.Module:
    """A feature extractor image ``[B,C,H,W]`` -> ``[B, out_channels, H, W]``.

    ``kind="smp"``: headless smp U-Net (``build_unet(..., headless=True)``);
    ``kind="kohl"``: ``KohlUNet(in_channels, kohl_filters)``. Both expose ``out_channels``.
    """
    if kind == "smp":
        return build_unet(in_channels, encoder_name=encoder_name, encoder_weights=encoder_weights,
                          headless=True, decoder_channels=decoder_channels)
    if kind == "kohl":
        return KohlUNet(in_channels, kohl_filters)
    raise ValueError(f"backbone must be 'smp' or 'kohl', got {kind!r}")

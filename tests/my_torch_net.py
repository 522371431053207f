"""A small PyTorch module of one's own, named on the command line as ``my_torch_net:small``."""

from __future__ import annotations

import torch
from torch import nn


class Small(nn.Module):
    """Two convolutions with an in-place ReLU shared between them (called twice), and a classifier."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.norm = nn.BatchNorm2d(8)
        self.act = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(8, 6, 3, stride=2, padding=1)
        self.head = nn.Linear(6, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act(self.norm(self.conv1(x)))
        x = self.act(self.conv2(x))
        return self.head(x.mean((2, 3)))


def small() -> Small:
    """The factory ``--model my_torch_net:small`` calls: seeded weights, batch norm statistics set."""
    torch.manual_seed(0)
    module = Small()
    module.norm.running_mean.uniform_(-0.5, 0.5)
    module.norm.running_var.uniform_(0.5, 2.0)
    return module

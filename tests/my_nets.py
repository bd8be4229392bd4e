"""A user's own models, as the CLI instantiates them from ``models=[{_target_:tests.my_nets.build,...}]``."""

from __future__ import annotations

from torch import nn


class Small(nn.Module):
    """Two convs and a classifier head: a user's fine-tuned net in miniature."""

    def __init__(self, num_classes: int = 10, width: int = 8):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(3, width, 3, stride=2, padding=1),
            nn.BatchNorm2d(width),
            nn.ReLU(inplace=True),
            nn.Conv2d(width, 2 * width, 3, stride=2, padding=1),
            nn.ReLU(inplace=True),
        )
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(2 * width, num_classes))

    def forward(self, x):
        return self.head(self.body(x))


def build(num_classes: int = 10, width: int = 8) -> nn.Module:
    return Small(num_classes, width)

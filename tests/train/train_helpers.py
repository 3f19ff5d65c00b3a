"""Shared pieces of the training-engine tests (a stand-in model and a tiny config)."""
import torch.nn as nn


class Tiny(nn.Module):
    """A stand-in classifier: one conv, BN, pooled linear head (fast and deterministic on CPU)."""

    def __init__(self, in_chans: int, num_classes: int, width: int = 8):
        super().__init__()
        self.conv = nn.Conv2d(in_chans, width, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(width)
        self.fc = nn.Linear(width, num_classes)

    def forward(self, x):
        x = self.bn(self.conv(x)).relu()
        return self.fc(x.mean((2, 3)))


def tiny_model_fn(cfg, num_classes, in_chans, input_size):
    return Tiny(in_chans, num_classes)


# A small synthetic config: 128 training images in 4 batches of 32, 128 held-out validation images.
TINY = {"dataset": "synthetic", "train_subset": 128, "val_split": 0.0625, "batch_size": 32, "epochs": 1, "lr": 0.05, "seed": 3,
        "device": "cpu"}

"""attnrepro.analysis.figures: the kernels and feature sizes the report's figures draw."""
from __future__ import annotations


import numpy as np
import pytest

from attnrepro.analysis import figures


pytestmark = pytest.mark.usefixtures("one_thread")   # tests/conftest.py


def test_kernel_formulas_match_the_module():
    functional = pytest.importorskip("attnrepro.modules.functional")
    import torch

    H = W = 7
    yy, xx = np.mgrid[0:H, 0:W]
    d = np.hypot(yy - 3, xx - 3)
    for kernel in figures.KERNELS:
        k = figures.kernel_value(d, 1.7, kernel)
        mod = functional.explicit_attention_map(H, W, torch.tensor([1.7], dtype=torch.float64), kernel)[0, 24]
        assert np.allclose(k / k.sum(), mod.reshape(H, W).numpy(), atol=1e-9), kernel
    with pytest.raises(ValueError, match="gaussian"):
        figures.kernel_value(d, 1.0, "box")


def test_feature_size():
    assert figures.feature_size({"dataset": "fashion_mnist", "model": "resnet20"}, "layer3.0.conv1") == (7, 7)
    assert figures.feature_size({"dataset": "cifar10", "model": "resnet20"}, "layer2.1.conv1") == (16, 16)
    assert figures.feature_size({"dataset": "imagefolder", "image_size": 224, "model": "resnet50"},
                                "layer4.0.conv2") == (7, 7)

"""ResNet backbones (torchvision's ImageNet ResNets, CIFAR ResNets, WRN-28-10) with attention placed by stage."""
from .cifar import CifarResNet, WideResNet
from .init import init_backbone
from .placement import (CIFAR_NAMES, IMAGENET_NAMES, MODEL_NAMES, default_stages, num_stages, part_stages,
                        stage_sides)
from .resnet import (build_model, default_input_size, expatt_layers, model_from_config, radii,
                     resolve_stages)

__all__ = ["MODEL_NAMES", "IMAGENET_NAMES", "CIFAR_NAMES", "build_model", "model_from_config", "expatt_layers",
           "radii", "default_stages", "part_stages", "resolve_stages", "init_backbone", "num_stages", "stage_sides",
           "default_input_size", "CifarResNet", "WideResNet"]

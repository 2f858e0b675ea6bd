"""Transfer learning for ImageNet-pretrained ResNets with PyTorch Lightning and Hydra."""

__version__ = "0.1.0"

"""The backbone families ``model.name`` is looked up in when ``model.backbone`` is not given."""

from transfer_lightning.models.convnext import ConvNeXt
from transfer_lightning.models.efficientnet import EfficientNet
from transfer_lightning.models.mobilenet import MobileNetV3
from transfer_lightning.models.regnet import RegNet
from transfer_lightning.models.resnet import ResNet
from transfer_lightning.models.swin import SwinTransformer
from transfer_lightning.models.vit import VisionTransformer

TORCHVISION_FAMILIES = (ResNet, ConvNeXt, EfficientNet, MobileNetV3, RegNet, VisionTransformer, SwinTransformer)

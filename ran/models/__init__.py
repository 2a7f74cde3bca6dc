"""The RAN model family and its backbones, registered in timm on import."""

from ran.models import iresnet  # noqa: F401  (registers iresnet18/34/50/100)
from ran.models.iresnet import IResNet
from ran.models.ran import RAN_VARIANTS, RANOutput, RegionAttentionNet

__all__ = ["RAN_VARIANTS", "IResNet", "RANOutput", "RegionAttentionNet"]

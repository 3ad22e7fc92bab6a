from .sam_package import defer_package_init

defer_package_init()  # segment_anything's predictor (and torchvision) only when asked for: sam_package.py

from .tiny_vit import TinyViT  # noqa: E402
from .vit_encoder import ViTFeatureEncoder
from .wsi_decoder import WSI_PARAM_PREFIXES, DecoderOutput, WsiMaskDecoder
from .wsisam import EncodedImages, FastOutput, WsiSam, WsiSamOutput

__all__ = ["TinyViT", "ViTFeatureEncoder", "WsiMaskDecoder", "DecoderOutput", "WSI_PARAM_PREFIXES",
           "WsiSam", "WsiSamOutput", "FastOutput", "EncodedImages"]

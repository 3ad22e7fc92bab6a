from .tiny_vit import TinyViT
from .vit_encoder import ViTFeatureEncoder
from .wsi_decoder import WSI_PARAM_PREFIXES, DecoderOutput, WsiMaskDecoder
from .wsisam import EncodedImages, WsiSam, WsiSamOutput

__all__ = ["TinyViT", "ViTFeatureEncoder", "WsiMaskDecoder", "DecoderOutput", "WSI_PARAM_PREFIXES",
           "WsiSam", "WsiSamOutput", "EncodedImages"]

"""WSI-SAM: multi-resolution Segment Anything for whole-slide images (the model package).

``wsisam`` never imports ``engine``.
"""
from .build import build_wsisam, wsisam_model_registry
from .checkpoint import CheckpointError, load_reference_decoder, load_sam_checkpoint, load_wsisam, save_wsisam
from .config import CONFIGS, EncoderConfig, WsiSamConfig, get_config
from .model_files import check_model_files, infer_backbone
from .modeling import WsiSam, WsiSamOutput
from .predictor import MaskCrop, WsiSamPrediction, WsiSamPredictor, stability_scores
from .prompts import PromptBatch

__all__ = [
    "build_wsisam", "wsisam_model_registry", "CheckpointError", "load_reference_decoder", "load_sam_checkpoint",
    "load_wsisam", "save_wsisam", "check_model_files", "infer_backbone", "CONFIGS", "EncoderConfig", "WsiSamConfig", "get_config", "WsiSam",
    "WsiSamOutput", "MaskCrop", "WsiSamPrediction", "WsiSamPredictor", "PromptBatch", "stability_scores",
]

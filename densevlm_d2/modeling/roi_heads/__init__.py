from .open_vocab_roi_heads import OpenVocabROIHeads, set_vocabulary
from .text_classifier import TextClassifierOutputLayers, fuse_scores

__all__ = ["OpenVocabROIHeads", "TextClassifierOutputLayers", "fuse_scores", "set_vocabulary"]

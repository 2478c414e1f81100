"""RFSQ action tokenizer (DESIGN 2.1)."""

from rsdvla.tokenizer.quantizer import ResidualFSQ
from rsdvla.tokenizer.rfsq import RFSQTokenizer, TokenizerConfig, codes_to_layers, layers_to_codes

__all__ = ["ResidualFSQ", "RFSQTokenizer", "TokenizerConfig", "codes_to_layers", "layers_to_codes"]

"""Action tokenizers (DESIGN 2.1, 2.1b): RFSQ per timestep and dimension, residual VQ per chunk."""

from rsdvla.tokenizer.loading import FAMILIES, load_tokenizer
from rsdvla.tokenizer.quantizer import ResidualFSQ
from rsdvla.tokenizer.rfsq import RFSQTokenizer, TokenizerConfig, codes_to_layers, layers_to_codes
from rsdvla.tokenizer.rvq import ChunkRVQTokenizer, RVQConfig

__all__ = [
    "FAMILIES",
    "ChunkRVQTokenizer",
    "RFSQTokenizer",
    "RVQConfig",
    "ResidualFSQ",
    "TokenizerConfig",
    "codes_to_layers",
    "layers_to_codes",
    "load_tokenizer",
]

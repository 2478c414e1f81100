"""Backbones: observations -> hidden state ``[B, H]`` (see ``base.Backbone``).

``state`` (privileged low-dim state, CPU), ``tiny`` (seeded tiny VLM on OpenVLA's code path, CPU),
``openvla_oft`` (OpenVLA-OFT 7B: a GPU, or ``device=cpu`` slowly for checks). transformers is imported only when a VLM is built.
"""

from rsdvla.backbones.base import Backbone
from rsdvla.backbones.openvla_oft import OpenVLAOFTBackbone, PrismaticVLABackbone
from rsdvla.backbones.state import StateBackbone
from rsdvla.backbones.tiny import TinyVLABackbone

__all__ = [
    "Backbone",
    "OpenVLAOFTBackbone",
    "PrismaticVLABackbone",
    "StateBackbone",
    "TinyVLABackbone",
]

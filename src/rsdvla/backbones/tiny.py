"""A tiny OpenVLA-shaped vision-language model with seeded random weights (no download, CPU).

Built the way OpenVLA (Prismatic) is: a ViT encodes each image (3 channels per image,
stacked on the channel axis), an MLP projects the patches to the language width, and the
patches are inserted right after BOS of a ``LlamaForCausalLM``. The tokenizer is a byte-level
BPE with no merges, built in memory with ``tokenizers`` (one token per UTF-8 byte, plus BOS /
EOS / PAD / UNK). ``TinyVLABackbone`` runs through ``PrismaticVLABackbone.encode``: the same
prompt, image preprocessing and last-prompt-token hidden state as ``openvla_oft``.
"""

from __future__ import annotations

import torch
from torch import nn

from rsdvla.backbones.openvla_oft import PrismaticVLABackbone
from rsdvla.backbones.preprocessing import OPENVLA_IMAGE_SIZE


def build_byte_tokenizer():
    """Byte-level ``PreTrainedTokenizerFast`` (BOS added to every text), vocabulary 260."""
    from tokenizers import Tokenizer, decoders, models, processors
    from tokenizers.pre_tokenizers import ByteLevel
    from transformers import PreTrainedTokenizerFast

    specials = ["<unk>", "<s>", "</s>", "<pad>"]
    vocab = {token: i for i, token in enumerate(specials)}
    for char in sorted(ByteLevel.alphabet()):
        vocab[char] = len(vocab)
    tokenizer = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token="<unk>"))
    tokenizer.pre_tokenizer = ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.post_processor = processors.TemplateProcessing(
        single="<s> $A", special_tokens=[("<s>", 1)]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        bos_token="<s>",
        eos_token="</s>",
        pad_token="<pad>",
        unk_token="<unk>",
    )


def build_image_processor(image_size: int):
    """transformers ViT image processor (PIL backend when torchvision is absent): resize + [-1, 1] scaling."""
    import transformers

    cls = getattr(transformers, "ViTImageProcessorPil", None) or transformers.ViTImageProcessor
    return cls(
        size={"height": image_size, "width": image_size}, image_mean=[0.5] * 3, image_std=[0.5] * 3
    )


class TinyProcessor:
    """Processor stand-in with the two parts the shared path uses: ``tokenizer`` and ``image_processor``."""

    def __init__(self, image_size: int):
        self.tokenizer = build_byte_tokenizer()
        self.image_processor = build_image_processor(image_size)


class TinyPrismaticVLM(nn.Module):
    """ViT + projector + Llama, patches inserted after BOS. Output: the Llama output (``hidden_states``)."""

    def __init__(
        self,
        vocab_size: int,
        hidden_dim: int = 64,
        num_layers: int = 2,
        num_heads: int = 4,
        vision_dim: int = 32,
        vision_layers: int = 1,
        image_size: int = OPENVLA_IMAGE_SIZE,
        patch_size: int = 32,
    ):
        super().__init__()
        from transformers import LlamaConfig, LlamaForCausalLM, ViTConfig, ViTModel

        vit = ViTConfig(
            image_size=image_size,
            patch_size=patch_size,
            num_channels=3,
            hidden_size=vision_dim,
            num_hidden_layers=vision_layers,
            num_attention_heads=max(1, vision_dim // 16),
            intermediate_size=2 * vision_dim,
        )
        llama = LlamaConfig(
            vocab_size=vocab_size,
            hidden_size=hidden_dim,
            intermediate_size=2 * hidden_dim,
            num_hidden_layers=num_layers,
            num_attention_heads=num_heads,
            num_key_value_heads=num_heads,
            max_position_embeddings=1024,
            bos_token_id=1,
            eos_token_id=2,
            pad_token_id=3,
        )
        self.vision = ViTModel(vit, add_pooling_layer=False)
        self.projector = nn.Sequential(
            nn.Linear(vision_dim, hidden_dim), nn.GELU(), nn.Linear(hidden_dim, hidden_dim)
        )
        self.language_model = LlamaForCausalLM(llama)
        self.config = llama

    def patch_embeddings(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """``[B, 3 * n, S, S]`` -> projected patches ``[B, n * P, H]`` (CLS dropped)."""
        images = pixel_values.split(3, dim=1)
        patches = [self.vision(pixel_values=img).last_hidden_state[:, 1:] for img in images]
        return self.projector(torch.cat(patches, dim=1))

    def forward(
        self,
        input_ids,
        attention_mask,
        pixel_values,
        labels=None,
        output_hidden_states=True,
        return_dict=True,
    ):
        """As OpenVLA's multimodal forward; ``labels`` is accepted for signature parity and ignored."""
        text = self.language_model.get_input_embeddings()(input_ids)
        patches = self.patch_embeddings(pixel_values.to(text.dtype))
        embeddings = torch.cat([text[:, :1], patches, text[:, 1:]], dim=1)
        patch_mask = torch.ones(
            patches.shape[:2], dtype=attention_mask.dtype, device=attention_mask.device
        )
        mask = torch.cat([attention_mask[:, :1], patch_mask, attention_mask[:, 1:]], dim=1)
        return self.language_model(
            inputs_embeds=embeddings,
            attention_mask=mask,
            output_hidden_states=output_hidden_states,
            return_dict=True,
        )


class TinyVLABackbone(PrismaticVLABackbone):
    """Tiny seeded VLM on the OpenVLA code path; H = ``hidden_dim`` (default 64), CPU.

    Args:
        hidden_dim, num_layers, num_heads: language model size.
        vision_dim, vision_layers, patch_size, image_size: ViT size (224 / 32 -> 49 patches per image).
        use_wrist, center_crop, pooling: as ``PrismaticVLABackbone``.
        seed: fixes all weights (built under ``torch.random.fork_rng``, global RNG untouched).
    """

    def __init__(
        self,
        hidden_dim: int = 64,
        num_layers: int = 2,
        num_heads: int = 4,
        vision_dim: int = 32,
        vision_layers: int = 1,
        patch_size: int = 32,
        image_size: int = OPENVLA_IMAGE_SIZE,
        use_wrist: bool = True,
        center_crop: bool = False,
        pooling: str = "last",
        seed: int = 0,
    ):
        processor = TinyProcessor(image_size)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = TinyPrismaticVLM(
                len(processor.tokenizer),
                hidden_dim,
                num_layers,
                num_heads,
                vision_dim,
                vision_layers,
                image_size,
                patch_size,
            ).eval()
        super().__init__(
            model,
            processor,
            backbone_id=f"tiny-prismatic-h{hidden_dim}-l{num_layers}-seed{seed}",
            hidden_dim=hidden_dim,
            image_size=image_size,
            use_wrist=use_wrist,
            center_crop=center_crop,
            pooling=pooling,
        )

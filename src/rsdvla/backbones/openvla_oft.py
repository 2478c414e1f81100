"""OpenVLA-OFT as a backbone, and the code path it shares with the tiny backbone.

``PrismaticVLABackbone`` runs any model built the way OpenVLA (Prismatic) is: the processor
tokenizes the prompt (with BOS) and turns images into ``pixel_values``; the model embeds the
patches and inserts them right after BOS, so its hidden sequence is
``[BOS, patches (P), prompt tokens...]``. The hidden state we keep is the last layer at the last
prompt token (or the mean over all attended positions, ``pooling=mean``).

Per sample: ``primary`` (and ``wrist`` when ``use_wrist``) go through
``preprocessing.prepare_libero_image`` (180 degree rotation, resize to 224, optional center
crop); the wrist ``pixel_values`` are concatenated to the primary ones along the channel axis,
as OpenVLA-OFT's ``get_vla_action`` does for ``num_images_in_input=2``. Proprio is not fed to the
VLM (OpenVLA-OFT adds it through a separately saved projector that this backbone does not load).

``OpenVLAOFTBackbone`` loads the checkpoint with transformers (``trust_remote_code``, bf16,
GPU only). It appends OpenVLA's empty token (id 29871) after ``Out:`` as ``predict_action``
does, and passes all-ignored ``labels`` because OpenVLA-OFT's ``forward`` derives its action
mask from them (no action tokens are present, so nothing is masked).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import torch
from PIL import Image
from torch import nn

from rsdvla.backbones.base import Backbone, as_uint8_images
from rsdvla.backbones.preprocessing import OPENVLA_IMAGE_SIZE, openvla_prompt, prepare_libero_image

IGNORE_INDEX = -100
OPENVLA_EMPTY_TOKEN_ID = 29871  # "▁" after "Out:", appended by OpenVLA's predict_action
POOLINGS = ("last", "mean")


class PrismaticVLABackbone(Backbone):
    """Shared encode path for OpenVLA-style VLMs (patches inserted after BOS).

    Args:
        model: callable as ``model(input_ids, attention_mask, pixel_values, [labels],
            output_hidden_states=True, return_dict=True)`` returning ``hidden_states``.
        processor: has ``.tokenizer`` (adds BOS) and ``.image_processor`` (PIL list -> ``pixel_values``).
        backbone_id, hidden_dim: recorded in stores.
        image_size: side the frames are resized to (224 for OpenVLA).
        use_wrist: also feed the wrist camera (OpenVLA-OFT LIBERO checkpoints use 2 images).
        center_crop: OpenVLA's 90%-area center crop (the LIBERO checkpoints were trained with it).
        jpeg: JPEG round trip before resizing, as OpenVLA's data pipeline.
        pooling: ``last`` (last prompt token) or ``mean`` (all attended positions).
        append_token_id: token appended to every prompt unless already last (OpenVLA: 29871).
        pass_ignore_labels: pass ``labels`` full of -100 (OpenVLA-OFT's forward needs them).
        device, dtype: where and in which precision the model runs.
    """

    def __init__(
        self,
        model: nn.Module,
        processor,
        backbone_id: str,
        hidden_dim: int,
        image_size: int = OPENVLA_IMAGE_SIZE,
        use_wrist: bool = True,
        center_crop: bool = False,
        jpeg: bool = True,
        pooling: str = "last",
        append_token_id: int | None = None,
        pass_ignore_labels: bool = False,
        device: str | torch.device = "cpu",
        dtype: torch.dtype = torch.float32,
    ):
        super().__init__()
        if pooling not in POOLINGS:
            raise ValueError(f"backbone.pooling is {pooling!r}; choose one of {list(POOLINGS)}")
        self.model = model
        self.processor = processor
        self.backbone_id = f"{backbone_id}|pool={pooling},wrist={int(use_wrist)},crop={int(center_crop)},jpeg={int(jpeg)}"
        self.hidden_dim = int(hidden_dim)
        self.image_size = int(image_size)
        self.use_wrist = bool(use_wrist)
        self.center_crop = bool(center_crop)
        self.jpeg = bool(jpeg)
        self.pooling = pooling
        self.append_token_id = append_token_id
        self.pass_ignore_labels = bool(pass_ignore_labels)
        self.device = torch.device(device)
        self.dtype = dtype
        self.required_obs = ("primary", "wrist") if self.use_wrist else ("primary",)

    # ------------------------------------------------------------------ inputs
    def prepare_images(self, images) -> list[Image.Image]:
        """``[B, h, w, 3]`` uint8 as stored in the demos -> B PIL images as OpenVLA-OFT feeds its processor."""
        return [
            Image.fromarray(
                prepare_libero_image(
                    img, self.image_size, rotate=True, jpeg=self.jpeg, crop=self.center_crop
                )
            )
            for img in as_uint8_images(images)
        ]

    def pixel_values(self, batch: Mapping) -> torch.Tensor:
        """``[B, 3 * num_images, S, S]``: primary then wrist, concatenated on the channel axis."""
        keys = ("primary", "wrist") if self.use_wrist else ("primary",)
        values = [
            torch.as_tensor(
                np.asarray(
                    self.processor.image_processor(
                        self.prepare_images(batch[k]), return_tensors="pt"
                    )["pixel_values"]
                )
            )
            for k in keys
        ]
        return torch.cat(values, dim=1)

    def tokenize(self, instructions: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Prompts -> right-padded ``input_ids [B, T]`` and ``attention_mask [B, T]``."""
        tokenizer = self.processor.tokenizer
        rows = []
        for text in instructions:
            ids = list(tokenizer(openvla_prompt(str(text)))["input_ids"])
            if self.append_token_id is not None and ids[-1] != self.append_token_id:
                ids.append(int(self.append_token_id))
            rows.append(ids)
        width = max(len(r) for r in rows)
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        input_ids = torch.full((len(rows), width), pad, dtype=torch.long)
        attention_mask = torch.zeros((len(rows), width), dtype=torch.long)
        for i, ids in enumerate(rows):
            input_ids[i, : len(ids)] = torch.tensor(ids, dtype=torch.long)
            attention_mask[i, : len(ids)] = 1
        return input_ids, attention_mask

    # ------------------------------------------------------------------ encode
    @torch.no_grad()
    def encode(self, batch: Mapping) -> torch.Tensor:
        """Batch -> ``[B, H]`` float32 on CPU (last layer, last prompt token or mean)."""
        self.check_batch(batch)
        input_ids, attention_mask = self.tokenize(batch["instruction"])
        kwargs = {
            "input_ids": input_ids.to(self.device),
            "attention_mask": attention_mask.to(self.device),
            "pixel_values": self.pixel_values(batch).to(self.device, self.dtype),
            "output_hidden_states": True,
            "return_dict": True,
        }
        if self.pass_ignore_labels:
            kwargs["labels"] = torch.full_like(kwargs["input_ids"], IGNORE_INDEX)
        hidden = self.model(**kwargs).hidden_states[-1]  # [B, P + T, H]
        return (
            pool_prompt_hidden(hidden, attention_mask.to(hidden.device), self.pooling).float().cpu()
        )


def pool_prompt_hidden(
    hidden: torch.Tensor, attention_mask: torch.Tensor, pooling: str = "last"
) -> torch.Tensor:
    """Pick the prompt representation from ``hidden [B, P + T, H]`` of a model that inserted P patches after BOS.

    ``attention_mask [B, T]`` is the (right-padded) text mask. ``last``: the position of each row's last
    text token, shifted by P. ``mean``: average over BOS, all patches and the valid text tokens.
    """
    num_patches = hidden.shape[1] - attention_mask.shape[1]
    if pooling == "last":
        positions = torch.arange(attention_mask.shape[1], device=hidden.device)
        last = (attention_mask * positions).argmax(dim=1) + num_patches
        return hidden[torch.arange(hidden.shape[0], device=hidden.device), last]
    patches = torch.ones(
        attention_mask.shape[0], num_patches, dtype=attention_mask.dtype, device=hidden.device
    )
    mask = torch.cat([attention_mask[:, :1], patches, attention_mask[:, 1:]], dim=1).to(
        hidden.dtype
    )
    return (hidden * mask[..., None]).sum(1) / mask.sum(1, keepdim=True)


# ---------------------------------------------------------------------------------- OpenVLA-OFT
def auto_model_class():
    """transformers' vision-to-text auto class: ``AutoModelForVision2Seq`` (4.x) or ``AutoModelForImageTextToText`` (5.x)."""
    import transformers

    for name in ("AutoModelForVision2Seq", "AutoModelForImageTextToText"):
        cls = getattr(transformers, name, None)
        if cls is not None:
            return cls
    raise ImportError(
        "transformers has neither AutoModelForVision2Seq nor AutoModelForImageTextToText; install transformers>=4.40"
    )


def _remote_model_class(config, checkpoint: str, local_files_only: bool):
    """The class the checkpoint's ``auto_map`` names (OpenVLA maps ``AutoModelForVision2Seq``), or None."""
    from transformers.dynamic_module_utils import get_class_from_dynamic_module

    auto_map = getattr(config, "auto_map", None) or {}
    for key in ("AutoModelForVision2Seq", "AutoModelForImageTextToText"):
        if key in auto_map:
            return get_class_from_dynamic_module(
                auto_map[key], checkpoint, local_files_only=local_files_only
            )
    return None


class OpenVLAOFTBackbone(PrismaticVLABackbone):
    """OpenVLA-OFT (7B, Llama-2 + DINOv2/SigLIP) from a local path or hub id; needs a CUDA GPU.

    Args:
        checkpoint: local directory or hub id, e.g. ``moojink/openvla-7b-oft-finetuned-libero-spatial``.
        allow_download: False (default) loads with ``local_files_only=True``: nothing is downloaded.
        hidden_dim: expected H (4096); checked against the loaded config.
        dtype: ``bfloat16`` (default) or ``float16`` / ``float32``.
        device: CUDA device string.
        attn_implementation: passed to ``from_pretrained`` when set (e.g. ``flash_attention_2``).
        Other arguments as ``PrismaticVLABackbone``.
    """

    def __init__(
        self,
        checkpoint: str = "moojink/openvla-7b-oft-finetuned-libero-spatial",
        allow_download: bool = False,
        hidden_dim: int = 4096,
        dtype: str = "bfloat16",
        device: str = "cuda",
        use_wrist: bool = True,
        center_crop: bool = True,
        jpeg: bool = True,
        pooling: str = "last",
        append_empty_token: bool = True,
        attn_implementation: str | None = None,
    ):
        if not torch.cuda.is_available():
            raise RuntimeError(
                "openvla_oft backbone needs a CUDA GPU (7B model in bf16) and none is visible; "
                "on this machine use backbone=tiny (same code path, random weights) or backbone=state"
            )
        torch_dtype = getattr(torch, str(dtype))
        model, processor = self._load(
            str(checkpoint), not allow_download, torch_dtype, attn_implementation
        )
        model_dim = int(
            getattr(getattr(model.config, "text_config", model.config), "hidden_size", hidden_dim)
        )
        if model_dim != int(hidden_dim):
            raise ValueError(
                f"{checkpoint}: language model width is {model_dim}, config says backbone.hidden_dim={hidden_dim}; set backbone.hidden_dim={model_dim}"
            )
        if (
            use_wrist
            and hasattr(model, "vision_backbone")
            and hasattr(model.vision_backbone, "set_num_images_in_input")
        ):
            model.vision_backbone.set_num_images_in_input(2)
        model = model.to(device).eval()
        super().__init__(
            model,
            processor,
            backbone_id=f"openvla_oft:{checkpoint}",
            hidden_dim=model_dim,
            use_wrist=use_wrist,
            center_crop=center_crop,
            jpeg=jpeg,
            pooling=pooling,
            append_token_id=OPENVLA_EMPTY_TOKEN_ID if append_empty_token else None,
            pass_ignore_labels=True,
            device=device,
            dtype=torch_dtype,
        )

    @staticmethod
    def _load(
        checkpoint: str,
        local_files_only: bool,
        torch_dtype: torch.dtype,
        attn_implementation: str | None,
    ):
        import transformers
        from transformers import AutoConfig, AutoProcessor

        options = {"trust_remote_code": True, "local_files_only": local_files_only}
        try:
            config = AutoConfig.from_pretrained(checkpoint, **options)
            processor = AutoProcessor.from_pretrained(checkpoint, **options)
            model_class = (
                _remote_model_class(config, checkpoint, local_files_only) or auto_model_class()
            )
            dtype_key = (
                "dtype" if int(transformers.__version__.split(".")[0]) >= 5 else "torch_dtype"
            )
            kwargs = {
                dtype_key: torch_dtype,
                "low_cpu_mem_usage": True,
                "config": config,
                **options,
            }
            if attn_implementation:
                kwargs["attn_implementation"] = attn_implementation
            model = model_class.from_pretrained(checkpoint, **kwargs)
        except OSError as err:
            first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            raise OSError(
                f"{checkpoint}: OpenVLA-OFT checkpoint not loadable offline ({first}); download it first "
                f"(huggingface-cli download {checkpoint}) or set backbone.allow_download=true"
            ) from err
        return model, processor

"""OpenVLA-OFT as a backbone, and the code path it shares with the tiny backbone.

``PrismaticVLABackbone`` runs any model built the way OpenVLA (Prismatic) is: the processor
tokenizes the prompt (with BOS) and turns images into ``pixel_values``; the model embeds the
patches and inserts them right after BOS, so its hidden sequence is
``[BOS, patches (P), prompt tokens...]``. The hidden state we keep is the last layer at the last
prompt token (or the mean over all attended positions, ``pooling=mean``).

Per sample: ``primary`` (and ``wrist`` when ``use_wrist``) arrive as policy images (the env
wrapper and the demo reader ran ``preprocessing.policy_image``: one 180 degree rotation, JPEG,
resize to 224); here they only get the optional center crop (``preprocessing.model_image``).
The wrist ``pixel_values`` are concatenated to the primary ones along the channel axis, as
OpenVLA-OFT's ``get_vla_action`` does for ``num_images_in_input=2``. The shared path feeds no
proprio; ``OpenVLAOFTBackbone`` adds OFT's proprio token when given its projector.

``OpenVLAOFTBackbone`` loads an OpenVLA-OFT checkpoint with its own remote code
(``trust_remote_code``; transformers 4.40, see ``oft_loading``) and builds the language model's
input as OFT's ``predict_action`` does (``oft_inputs``): prompt, 29871, 56 zeroed action
placeholders, the stop token, optionally the proprio token after the patches, run with
bidirectional attention (``attention=bidirectional``, a 4-D key-padding mask) as the fine-tuned
models were trained. ``pooling=action`` returns the mean of the 56 action-slot states OFT's
action head reads (``action_first``: the first of them); ``last`` / ``mean`` run the prompt alone.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import nn

from rsdvla.backbones.base import Backbone, as_uint8_images
from rsdvla.backbones.oft_inputs import (
    ActionSlotInputs,
    action_slot_states,
    attention_mask_4d,
    build_action_inputs,
    normalize_proprio,
)
from rsdvla.backbones.oft_loading import (
    AUTO_MODEL_KEYS,
    check_not_film,
    check_oft_model,
    check_remote_code,
    check_versions,
    ensure_prismatic,
    load_proprio_projector,
    resolve_checkpoint,
    resolve_proprio_projector,
)
from rsdvla.backbones.preprocessing import (
    OPENVLA_IMAGE_SIZE,
    PIXEL_PIPELINE,
    model_image,
    openvla_prompt,
)

log = logging.getLogger(__name__)

IGNORE_INDEX = -100
OPENVLA_EMPTY_TOKEN_ID = 29871  # "▁" after "Out:", appended by OpenVLA's predict_action
POOLINGS = ("last", "mean")
ATTENTIONS = ("causal",)


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
        pooling: ``last`` (last prompt token) or ``mean`` (all attended positions).
        attention: recorded in the id (``attn=``); this shared path runs the model's own causal mask.
        append_token_id: token appended to every prompt unless already last (OpenVLA: 29871).
        pass_ignore_labels: pass ``labels`` full of -100 (OpenVLA-OFT's forward needs them).
        device, dtype: where and in which precision the model runs.
    """

    poolings: tuple[str, ...] = POOLINGS
    attentions: tuple[str, ...] = ATTENTIONS

    def __init__(
        self,
        model: nn.Module,
        processor,
        backbone_id: str,
        hidden_dim: int,
        image_size: int = OPENVLA_IMAGE_SIZE,
        use_wrist: bool = True,
        center_crop: bool = False,
        pooling: str = "last",
        attention: str = "causal",
        append_token_id: int | None = None,
        pass_ignore_labels: bool = False,
        device: str | torch.device = "cpu",
        dtype: torch.dtype = torch.float32,
    ):
        super().__init__()
        if pooling not in self.poolings:
            raise ValueError(
                f"backbone.pooling is {pooling!r}; choose one of {list(self.poolings)}"
            )
        if attention not in self.attentions:
            raise ValueError(
                f"backbone.attention is {attention!r}; choose one of {list(self.attentions)}"
            )
        self.model = model
        self.processor = processor
        self.backbone_id = (
            f"{backbone_id}|pool={pooling},attn={attention},wrist={int(use_wrist)},"
            f"crop={int(center_crop)},pixels={PIXEL_PIPELINE}"
        )
        self.hidden_dim = int(hidden_dim)
        self.image_size = int(image_size)
        self.use_wrist = bool(use_wrist)
        self.center_crop = bool(center_crop)
        self.pooling = pooling
        self.attention = attention
        self.append_token_id = append_token_id
        self.pass_ignore_labels = bool(pass_ignore_labels)
        self.device = torch.device(device)
        self.dtype = dtype
        self.required_obs = ("primary", "wrist") if self.use_wrist else ("primary",)

    # ------------------------------------------------------------------ inputs
    def prepare_images(self, images) -> list[Image.Image]:
        """``[B, S, S, 3]`` uint8 policy images (``preprocessing.policy_image``: already rotated,
        JPEG round-tripped, resized) -> B PIL images for the processor. Only the model-specific
        part happens here: OpenVLA-OFT's center crop (``preprocessing.model_image``)."""
        return [
            Image.fromarray(model_image(img, self.image_size, crop=self.center_crop))
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

    def prompt_ids(self, instructions: Sequence[str]) -> list[list[int]]:
        """One token-id list per instruction: BOS, the OpenVLA prompt, ``append_token_id`` unless already last."""
        rows = []
        for text in instructions:
            ids = [int(i) for i in self.processor.tokenizer(openvla_prompt(str(text)))["input_ids"]]
            if self.append_token_id is not None and ids[-1] != self.append_token_id:
                ids.append(int(self.append_token_id))
            rows.append(ids)
        return rows

    def tokenize(self, instructions: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Prompts -> right-padded ``input_ids [B, T]`` and ``attention_mask [B, T]``."""
        tokenizer = self.processor.tokenizer
        rows = self.prompt_ids(instructions)
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
ACTION_POOLINGS = ("action", "action_first")
DTYPES = ("auto", "bfloat16", "float16", "float32")
_cpu_warned = False


def _remote_model_class(config, checkpoint: str):
    """The class the checkpoint's ``auto_map`` names (OpenVLA maps ``AutoModelForVision2Seq``)."""
    from transformers.dynamic_module_utils import get_class_from_dynamic_module

    auto_map = getattr(config, "auto_map", None) or {}
    for key in AUTO_MODEL_KEYS:
        if key in auto_map:
            return get_class_from_dynamic_module(auto_map[key], checkpoint, local_files_only=True)
    raise OSError(f"{checkpoint}/config.json: no auto_map entry among {list(AUTO_MODEL_KEYS)}")


def _warn_cpu_once() -> None:
    global _cpu_warned
    if not _cpu_warned:
        _cpu_warned = True
        log.warning(
            "backbone=openvla_oft on CPU: slow (the 7B model needs ~30 GB of RAM in fp32 and about a minute "
            "per sample), for checks only; "
            "extract and evaluate with backbone.device=cuda"
        )


class OpenVLAOFTBackbone(PrismaticVLABackbone):
    """OpenVLA-OFT (7B, Llama-2 + DINOv2/SigLIP) from a local path or hub id; what its action head reads.

    Args:
        checkpoint: local directory or hub id, e.g. ``moojink/openvla-7b-oft-finetuned-libero-spatial``.
        allow_download: False (default): hub ids must already be in the Hugging Face cache.
        hidden_dim: expected H (4096); checked against the loaded config.
        dtype: ``auto`` (bf16 on CUDA, fp32 on CPU), ``bfloat16``, ``float16`` or ``float32``.
        device: ``cuda`` (default) or ``cpu`` (slow; for checks only).
        pooling: ``action`` (mean of the 56 action-slot states), ``action_first``, ``last``, ``mean``.
        attention: ``bidirectional`` (as the fine-tuned models were trained) or ``causal``.
        proprio_projector: OFT's ``proprio_projector--*_checkpoint.pt``: ``auto`` (the checkpoint's one such
            file), a path or a file name in the checkpoint directory; adds the proprio token after the
            patches. None: no proprio token.
        unnorm_key: dataset statistics entry that normalizes proprio (null: the only one).
        Other arguments as ``PrismaticVLABackbone``.
    """

    poolings = (*ACTION_POOLINGS, *POOLINGS)
    attentions = ("bidirectional", "causal")

    def __init__(
        self,
        checkpoint: str = "moojink/openvla-7b-oft-finetuned-libero-spatial",
        allow_download: bool = False,
        hidden_dim: int = 4096,
        dtype: str = "auto",
        device: str = "cuda",
        use_wrist: bool = True,
        center_crop: bool = True,
        pooling: str = "action",
        attention: str = "bidirectional",
        proprio_projector: str | None = "auto",
        unnorm_key: str | None = None,
        append_empty_token: bool = True,
    ):
        for field, value, choices in (
            ("pooling", pooling, self.poolings),
            ("attention", attention, self.attentions),
            ("dtype", str(dtype), DTYPES),
        ):
            if value not in choices:
                raise ValueError(f"backbone.{field} is {value!r}; choose one of {list(choices)}")
        device = torch.device(device)
        if device.type == "cuda" and not torch.cuda.is_available():
            raise RuntimeError(
                f"backbone.device={device} needs a CUDA GPU and none is visible; set backbone.device=cpu "
                "(slow, for checks only), or use backbone=tiny (same code path, random weights) or backbone=state"
            )
        if device.type == "cpu":
            _warn_cpu_once()
        torch_dtype = (
            (torch.bfloat16 if device.type == "cuda" else torch.float32)
            if str(dtype) == "auto"
            else getattr(torch, str(dtype))
        )
        check_versions()
        directory = resolve_checkpoint(str(checkpoint), allow_download)
        check_remote_code(directory)
        check_not_film(directory)
        projector_file = (
            resolve_proprio_projector(str(proprio_projector), directory)
            if proprio_projector
            else None
        )
        ensure_prismatic()
        model, processor = self._load(directory, torch_dtype)
        check_oft_model(model, directory)
        model_dim = int(model.config.text_config.hidden_size)
        if model_dim != int(hidden_dim):
            raise ValueError(
                f"{directory / 'config.json'}: language model width is {model_dim}, config says "
                f"backbone.hidden_dim={hidden_dim}; set backbone.hidden_dim={model_dim}"
            )
        model.vision_backbone.set_num_images_in_input(2 if use_wrist else 1)
        model = model.to(device).eval()
        super().__init__(
            model,
            processor,
            backbone_id=f"openvla_oft:{checkpoint}",
            hidden_dim=model_dim,
            use_wrist=use_wrist,
            center_crop=center_crop,
            pooling=pooling,
            attention=attention,
            append_token_id=OPENVLA_EMPTY_TOKEN_ID if append_empty_token else None,
            device=device,
            dtype=torch_dtype,
        )
        self.backbone_id += f",proprio={projector_file.name if projector_file else 0}"
        constants = sys.modules[type(model).__module__]  # the checkpoint code's own constants
        self.num_action_tokens = int(constants.ACTION_DIM) * int(constants.NUM_ACTIONS_CHUNK)
        self.stop_token_id = int(constants.STOP_INDEX)
        self.action_label_id = int(constants.ACTION_TOKEN_BEGIN_IDX) + 1
        self.proprio_projector = None
        self.proprio_stats = None
        if projector_file is not None:
            self.proprio_projector = load_proprio_projector(projector_file, model_dim).to(
                device, torch_dtype
            )
            self.proprio_stats = _proprio_stats(model, directory, unnorm_key)
            self.required_obs = (*self.required_obs, "proprio")

    @staticmethod
    def _load(directory: Path, torch_dtype: torch.dtype):
        """Config, processor and model from the checkpoint's own code (transformers 4.40, offline)."""
        from transformers import AutoConfig, AutoProcessor

        options = {"trust_remote_code": True, "local_files_only": True}
        config = AutoConfig.from_pretrained(str(directory), **options)
        processor = AutoProcessor.from_pretrained(str(directory), **options)
        model_class = _remote_model_class(config, str(directory))  # auto_map checked before
        model = model_class.from_pretrained(
            str(directory),
            config=config,
            torch_dtype=torch_dtype,
            low_cpu_mem_usage=True,
            local_files_only=True,
        )
        return model, processor

    # ------------------------------------------------------------------ encode
    def proprio_tensor(self, batch: Mapping) -> torch.Tensor | None:
        """``proprio [B, 8]`` normalized as OFT's ``normalize_proprio`` -> ``[B, 8]`` in the model dtype; None without a projector."""
        if self.proprio_projector is None:
            return None
        proprio = normalize_proprio(
            np.asarray(batch["proprio"], dtype=np.float64), self.proprio_stats
        )
        return torch.tensor(proprio, dtype=torch.float32).to(self.device, self.dtype)

    def last_hidden(
        self, inputs: ActionSlotInputs, pixel_values: torch.Tensor, proprio: torch.Tensor | None
    ) -> tuple[torch.Tensor, int]:
        """OFT's multimodal forward -> last-layer states ``[B, 1 + P + L - 1, H]`` and P (patches + proprio token).

        The steps of ``predict_action`` / ``_regression_or_discrete_prediction`` with the model's own
        methods, then the Llama under ``attention_mask_4d`` (only padding masked when bidirectional).
        """
        model = self.model
        input_ids = inputs.input_ids.to(self.device)
        embeddings = model.get_input_embeddings()(input_ids)
        action_mask = model._process_action_masks(inputs.labels.to(self.device))  # [B, L]
        embeddings = embeddings * ~action_mask.unsqueeze(-1)
        patches = model._process_vision_features(pixel_values, None, False)
        if proprio is not None:
            patches = model._process_proprio_features(patches, proprio, self.proprio_projector)
        multimodal, text_and_patch_mask = model._build_multimodal_attention(
            embeddings, patches, inputs.attention_mask.to(self.device)
        )
        mask = attention_mask_4d(text_and_patch_mask, causal=self.attention == "causal")
        output = model.get_decoder()(
            inputs_embeds=multimodal, attention_mask=mask, use_cache=False, return_dict=True
        )
        return output.last_hidden_state, patches.shape[1]

    @torch.no_grad()
    def encode(self, batch: Mapping) -> torch.Tensor:
        """Batch -> ``[B, H]`` float32 on CPU: the pooled last-layer state (``pooling``)."""
        self.check_batch(batch)
        with_actions = self.pooling in ACTION_POOLINGS
        inputs = build_action_inputs(
            self.prompt_ids(batch["instruction"]),
            self.processor.tokenizer.pad_token_id,
            self.num_action_tokens if with_actions else 0,
            self.stop_token_id,
            self.action_label_id,
        )
        pixel_values = self.pixel_values(batch).to(self.device, self.dtype)
        hidden, num_patches = self.last_hidden(inputs, pixel_values, self.proprio_tensor(batch))
        if with_actions:
            slots = action_slot_states(
                hidden, num_patches, inputs.prompt_tokens, self.num_action_tokens
            )
            pooled = slots.mean(dim=1) if self.pooling == "action" else slots[:, 0]
        else:
            pooled = pool_prompt_hidden(
                hidden, inputs.attention_mask.to(hidden.device), self.pooling
            )
        return pooled.float().cpu()


def _proprio_stats(model: nn.Module, directory: Path, unnorm_key: str | None) -> dict:
    """The ``proprio`` statistics OFT normalizes with: dataset_statistics.json (else the config's), entry ``unnorm_key``."""
    stats_file = directory / "dataset_statistics.json"
    norm_stats = (
        json.loads(stats_file.read_text()) if stats_file.is_file() else dict(model.norm_stats)
    )
    if unnorm_key is None:
        if len(norm_stats) != 1:
            raise ValueError(
                f"{stats_file}: {len(norm_stats)} dataset entries {sorted(norm_stats)}; set backbone.unnorm_key "
                "to the suite's (e.g. libero_spatial_no_noops)"
            )
        unnorm_key = next(iter(norm_stats))
    if unnorm_key not in norm_stats or "proprio" not in norm_stats[unnorm_key]:
        raise ValueError(
            f"{stats_file}: no proprio statistics under backbone.unnorm_key={unnorm_key}; choose one of "
            f"{sorted(norm_stats)}"
        )
    return norm_stats[unnorm_key]["proprio"]

"""Loading OpenVLA-OFT checkpoints: version gate, remote-code check, ``prismatic`` shim, proprio projector.

Everything here runs before (or right after) ``from_pretrained`` and turns what would be a deep
traceback inside the checkpoint's own code into one line naming the file, the field and the fix.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import sys
from pathlib import Path

import torch
from torch import nn

OPENVLA_EXTRA_FIX = 'pip install -e ".[openvla]"'
# OpenVLA-OFT's modeling_prismatic.py raises for any other timm; it was written for transformers 4.40.1
# (and fails in several places under 5.x; see docs/extraction.md).
SUPPORTED_TRANSFORMERS = ">=4.40.1,<4.41"
SUPPORTED_TIMM = ("0.9.10", "0.9.11", "0.9.12", "0.9.16")
REQUIRED_DISTRIBUTIONS = ("transformers", "tokenizers", "timm", "accelerate", "sentencepiece")
REMOTE_MODEL_FILE = "modeling_prismatic.py"
AUTO_MODEL_KEYS = ("AutoModelForVision2Seq", "AutoModelForImageTextToText")
SHIM_DIR = Path(__file__).resolve().parent / "oft_shim"
# Methods of OpenVLA-OFT's model class that the action-slot path calls (moojink/openvla-oft@213c5ff8).
OFT_METHODS = (
    "_process_action_masks",
    "_process_vision_features",
    "_process_proprio_features",
    "_build_multimodal_attention",
)


def _version(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def version_problems() -> list[str]:
    """What keeps OpenVLA-OFT's model code from loading here (empty when the installed versions fit)."""
    from packaging.specifiers import SpecifierSet

    problems = [
        f"{name} is not installed" for name in REQUIRED_DISTRIBUTIONS if _version(name) is None
    ]
    transformers_version = _version("transformers")
    if transformers_version and transformers_version not in SpecifierSet(SUPPORTED_TRANSFORMERS):
        problems.append(f"transformers {transformers_version} is outside {SUPPORTED_TRANSFORMERS}")
    timm_version = _version("timm")
    if timm_version and timm_version not in SUPPORTED_TIMM:
        problems.append(f"timm {timm_version} is not one of {', '.join(SUPPORTED_TIMM)}")
    return problems


def check_versions() -> None:
    """Raise one line (ImportError) naming every version problem and the fix, before anything loads."""
    problems = version_problems()
    if problems:
        raise ImportError(
            f"backbone=openvla_oft: {'; '.join(problems)} (OpenVLA-OFT's published model code needs "
            f"transformers{SUPPORTED_TRANSFORMERS}, tokenizers 0.19, timm 0.9.10-0.9.16); install them with "
            f"{OPENVLA_EXTRA_FIX}, best in its own environment"
        )
    try:
        import torchvision  # noqa: F401  (the checkpoint's processing_prismatic.py imports it)
    except Exception as err:  # a torchvision wheel built for another torch fails at import
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ImportError(
            f"backbone=openvla_oft: torchvision does not import ({first}); install the torchvision "
            f"build that matches torch {torch.__version__}"
        ) from err


def ensure_prismatic() -> None:
    """Make ``import prismatic`` work for the checkpoint's model code: the installed package, else ``oft_shim``."""
    if importlib.util.find_spec("prismatic") is None and str(SHIM_DIR) not in sys.path:
        sys.path.append(str(SHIM_DIR))


def resolve_checkpoint(checkpoint: str, allow_download: bool) -> Path:
    """Local directory or hub id -> the local checkpoint directory (hub ids: the HF cache, or a download)."""
    path = Path(checkpoint).expanduser()
    if path.is_dir():
        return path
    if path.exists() or checkpoint.startswith((".", "/", "~")) or checkpoint.count("/") != 1:
        raise OSError(
            f"backbone.checkpoint={checkpoint}: no such directory; set backbone.checkpoint to an "
            "OpenVLA-OFT checkpoint directory or hub id (e.g. moojink/openvla-7b-oft-finetuned-libero-spatial)"
        )
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(checkpoint, local_files_only=not allow_download))
    except Exception as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise OSError(
            f"backbone.checkpoint={checkpoint}: not in the Hugging Face cache ({first}); download it first "
            f"(huggingface-cli download {checkpoint}) or set backbone.allow_download=true"
        ) from err


def check_remote_code(directory: Path) -> None:
    """The directory must carry OpenVLA-OFT's remote code: config.json ``auto_map`` and ``modeling_prismatic.py``."""
    config_file = directory / "config.json"
    if not config_file.is_file():
        raise OSError(
            f"{config_file}: missing; backbone.checkpoint must be an OpenVLA-OFT checkpoint directory "
            "(config.json, model.safetensors, modeling_prismatic.py, ...)"
        )
    auto_map = json.loads(config_file.read_text()).get("auto_map") or {}
    fix = (
        "copy configuration_prismatic.py, modeling_prismatic.py and processing_prismatic.py from "
        "moojink/openvla-oft (prismatic/extern/hf/) next to it and add their auto_map to config.json, "
        "as OpenVLA-OFT's update_auto_map does"
    )
    if not any(key in auto_map for key in AUTO_MODEL_KEYS):
        raise OSError(
            f"{config_file}: no `auto_map` entry for AutoModelForVision2Seq, so the checkpoint carries no "
            f"model code; {fix}"
        )
    if not (directory / REMOTE_MODEL_FILE).is_file():
        raise OSError(
            f"{directory / REMOTE_MODEL_FILE}: missing (config.json's auto_map needs it); {fix}"
        )


FILM_VISION_FILES = "vision_backbone--*_checkpoint.pt"


def check_not_film(directory: Path) -> None:
    """Refuse a FiLM checkpoint: this backbone runs ``predict_action`` with ``use_film=False``.

    OpenVLA-OFT's FiLM runs (its ALOHA models) save the FiLM-wrapped vision backbone apart, as
    ``vision_backbone--<step>_checkpoint.pt``, and are loaded with ``use_film=True``; a
    ``use_film`` entry in config.json says the same. Either stops here instead of silently running
    the plain vision backbone.
    """
    config_file = directory / "config.json"
    config = json.loads(config_file.read_text()) if config_file.is_file() else {}
    film_files = sorted(p.name for p in directory.glob(FILM_VISION_FILES))
    if config.get("use_film") or film_files:
        where = (
            f"{config_file}: use_film is true"
            if config.get("use_film")
            else (f"{directory / film_files[0]}: a FiLM vision backbone")
        )
        raise ValueError(
            f"{where}; FiLM checkpoints are not supported (backbone=openvla_oft runs predict_action "
            "with use_film=False): use a LIBERO checkpoint without FiLM"
        )


def check_oft_model(model: nn.Module, directory: Path) -> None:
    """The loaded class must be OpenVLA-OFT's (the action-slot path calls its input-building methods)."""
    missing = [name for name in OFT_METHODS if not hasattr(model, name)]
    if missing:
        raise ValueError(
            f"{directory / REMOTE_MODEL_FILE}: {type(model).__name__} lacks {missing}: not OpenVLA-OFT's model "
            "code; use the files of moojink/openvla-oft (prismatic/extern/hf/) or set backbone.pooling=last"
        )


class ProprioProjector(nn.Module):
    """OpenVLA-OFT's ``prismatic.models.projectors.ProprioProjector``: proprio ``[B, D]`` -> ``[B, H]``."""

    def __init__(self, llm_dim: int, proprio_dim: int) -> None:
        super().__init__()
        self.llm_dim = llm_dim
        self.proprio_dim = proprio_dim
        self.fc1 = nn.Linear(self.proprio_dim, self.llm_dim, bias=True)
        self.fc2 = nn.Linear(self.llm_dim, self.llm_dim, bias=True)
        self.act_fn1 = nn.GELU()

    def forward(self, proprio: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act_fn1(self.fc1(proprio)))


def resolve_proprio_projector(path: str, checkpoint_dir: Path) -> Path:
    """``backbone.proprio_projector``: ``auto`` (the checkpoint's one ``proprio_projector*checkpoint*`` file,
    as OFT's ``find_checkpoint_file``), a path, or a file name in the checkpoint directory."""
    found = sorted(
        p
        for p in checkpoint_dir.glob("proprio_projector*")
        if "checkpoint" in p.name and p.is_file()
    )
    if path == "auto":
        if len(found) == 1:
            return found[0]
        raise FileNotFoundError(
            f"backbone.proprio_projector=auto: {len(found)} proprio_projector--*_checkpoint.pt files in "
            f"{checkpoint_dir} {[p.name for p in found]}; download the checkpoint with its projector, name one "
            "file, or set backbone.proprio_projector=null to run without the proprio token"
        )
    for candidate in (Path(path).expanduser(), checkpoint_dir / path):
        if candidate.is_file():
            return candidate
    hint = f"the checkpoint has {[p.name for p in found]}" if found else "the checkpoint has none"
    raise FileNotFoundError(
        f"backbone.proprio_projector={path}: no such file (nor in {checkpoint_dir}; {hint}); set it to "
        "the checkpoint's proprio_projector--*_checkpoint.pt, or set backbone.proprio_projector=null to run "
        "without the proprio token"
    )


def load_proprio_projector(path: Path, llm_dim: int) -> ProprioProjector:
    """OpenVLA-OFT's ``get_proprio_projector``: the state dict (DDP ``module.`` prefix removed) into a ProprioProjector."""
    state = torch.load(path, map_location="cpu", weights_only=True)
    state = {(k[7:] if k.startswith("module.") else k): v for k, v in state.items()}
    if "fc1.weight" not in state:
        raise ValueError(
            f"{path}: not a ProprioProjector state dict (keys {sorted(state)[:4]}); set backbone.proprio_projector "
            "to the checkpoint's proprio_projector--*_checkpoint.pt"
        )
    out_dim, proprio_dim = state["fc1.weight"].shape
    if out_dim != llm_dim:
        raise ValueError(
            f"{path}: projects to {out_dim} but the language model width is {llm_dim}; use the projector "
            "saved with this checkpoint"
        )
    projector = ProprioProjector(llm_dim, int(proprio_dim))
    projector.load_state_dict(state)
    return projector.eval()

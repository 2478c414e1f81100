"""Shared fixtures: tiny hidden-state stores written in the real format, and Hydra composition."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig, open_dict

from rsdvla.data import ActionNormalizer, HiddenStateStoreWriter

CONF_DIR = str(Path(__file__).resolve().parents[1] / "conf")
BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def load_benchmark(name: str):
    """``benchmarks/<name>.py`` as a module (the scripts are not a package)."""
    spec = importlib.util.spec_from_file_location(name, BENCHMARKS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def write_synthetic_store(
    path: Path, episodes: int = 12, steps: int = 24, hidden_dim: int = 32, seed: int = 0
) -> Path:
    """A store whose hidden states determine the actions (smooth per-episode trajectories)."""
    rng = np.random.default_rng(seed)
    raw = []
    for _ in range(episodes):
        phase = rng.uniform(0, 2 * np.pi, size=7)
        t = np.arange(steps + 7)[:, None] * 0.2
        a = 0.5 * np.sin(t + phase)
        a[:, 6] = np.where(np.sin(t[:, 0] + phase[6]) > 0, 1.0, -1.0)
        raw.append(a.astype(np.float32))
    norm = ActionNormalizer.fit(np.concatenate(raw))
    proj = rng.normal(size=(7 * 8, hidden_dim)).astype(np.float32)
    writer = HiddenStateStoreWriter(
        path, hidden_dim, "synthetic", norm.to_dict(), ["task zero", "task one"]
    )
    for e, a in enumerate(raw):
        chunks = np.stack([norm.normalize(a[i : i + 8]) for i in range(steps)])
        hidden = chunks.reshape(steps, -1) @ proj
        writer.append_episode(e, hidden, chunks, task_id=e % 2)
    return writer.finalize()


def tiny_decoding_models(hidden_dim: int = 32, draft_k: int = 3):
    """``(main, projected draft, tokenizer)``, seeded and tiny (d_model 32, N = 32 tokens a layer),
    reading ``hidden_dim``-d hidden states (the synthetic store's by default); eval mode."""
    from rsdvla.models import DraftModel, MainModel
    from rsdvla.tokenizer import RFSQTokenizer

    torch.manual_seed(0)
    main = MainModel(hidden_dim=hidden_dim, d_model=32, n_layers=2, n_heads=4, tokens_per_layer=32)
    draft = DraftModel(
        hidden_dim=hidden_dim, d_model=32, n_heads=4, num_draft_layers=draft_k, tokens_per_layer=32
    )
    tokenizer = RFSQTokenizer(chunk_size=8, latent_dim=4, hidden=16)
    return main.eval(), draft.eval(), tokenizer.eval()


@pytest.fixture
def tiny_stack_models():
    return tiny_decoding_models()


@pytest.fixture(scope="module")
def one_torch_thread():
    """Tiny models run fastest (and steadiest on a shared machine) on one thread; restored after."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def synthetic_store(tmp_path: Path) -> Path:
    return write_synthetic_store(tmp_path / "store.h5")


def compose_config(name: str, overrides: list[str], output_dir: Path) -> DictConfig:
    """Compose ``conf/<name>.yaml`` as Hydra would, with ``paths.output_dir`` set (no Hydra runtime in tests)."""
    with initialize_config_dir(version_base="1.3", config_dir=CONF_DIR):
        cfg = compose(config_name=name, overrides=overrides, return_hydra_config=False)
    with open_dict(cfg):
        cfg.paths.output_dir = str(output_dir)
    return cfg


def train_on_store(
    tmp_path: Path,
    store: Path,
    *extra: str,
    model: str = "tokenizer",
    run: str = "run",
    train_batches: int = 2,
) -> dict:
    """``train.py data=libero_hidden`` on a synthetic store (width 32), one short epoch on the CPU,
    into ``tmp_path / run``; returns ``rsdvla.train.run``'s metrics."""
    import rsdvla.train

    overrides = [
        "data=libero_hidden",
        f"data.path={store}",
        "data.hidden_dim=32",
        "data.batch_size=32",
        f"paths.root_dir={tmp_path}",
        f"model={model}",
        *(["model.module.tokenizer.hidden=32"] if model == "tokenizer" else []),
        "logger=none",
        "trainer.accelerator=cpu",
        "trainer.max_epochs=1",
        f"trainer.limit_train_batches={train_batches}",
        *extra,
    ]
    return rsdvla.train.run(compose_config("train", overrides, tmp_path / run))


def offline_eval_config(tmp_path: Path, store: Path, ckpts: dict) -> DictConfig:
    """``evaluate.py env=offline`` (state backbone, RSD, CPU) on ``store`` with the checkpoint
    paths ``ckpts`` (``{"tokenizer"|"main"|"draft": path}``)."""
    cfg = compose_config(
        "evaluate",
        ["backbone=state", "decoder=rsd", "device=cpu", "env=offline", f"data.path={store}"],
        tmp_path / "run",
    )
    with open_dict(cfg):
        cfg.ckpt = {kind: str(p) for kind, p in ckpts.items()}
    return cfg

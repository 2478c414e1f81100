"""Which action-slot pooling do heads learn better from: mean of the 56 slots or the first one?

    (cd ../shared/oft && PYTHONPATH=harness python build_oft_tiny.py /tmp/oft_tiny)
    PYTHONPATH=../shared/oft/harness python benchmarks/oft_pooling_probe.py /tmp/oft_tiny --seeded-projector

CHECKPOINT: an OpenVLA-OFT checkpoint directory. ``--seeded-projector`` first writes the seeded
random ``proprio_projector--1_checkpoint.pt`` that tests/test_openvla_oft.py writes (seed 1) into
it; ``--no-proprio`` runs without the proprio token. Needs the ``openvla`` extra's pins.

Synthetic episodes whose actions are a fixed function of what the model sees: proprio follows a
smooth per-episode trajectory, the instruction picks one of 4 tasks, and the 7-d action is
``tanh(W proprio + b_task)``. The two camera images are one fixed random pair for every sample: with
random weights, noise images that change per sample drown proprio and instruction in every pooling
(a first run with per-sample noise images gave held-out R^2 < 0 for all three). Since the images are
fixed, their projected patches are computed once and reused (the model's own
``_process_vision_features``, cached). One forward per batch gives OFT's 56 action-slot
states (bidirectional attention, proprio token, 2 images), pooled both ways (and ``last`` for
reference). Two heads per pooling, fitted on 3/4 of the episodes and scored on the held-out
quarter (R^2 of the actions, averaged over dimensions):
  - ridge regression (closed form, lambda picked on the training episodes by 3-fold CV);
  - a 2-layer MLP (256 hidden, AdamW 1e-3, 600 full-batch steps), inputs standardized.
Each pooling is scored with 3 random projector/action seeds; prints a markdown table.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

TASKS = [
    "open the middle drawer of the cabinet",
    "put the bowl on the stove",
    "pick up the alphabet soup and place it in the basket",
    "push the plate to the front of the stove",
]


def synthetic_episodes(episodes: int, steps: int, seed: int) -> dict:
    """Observations for ``episodes * steps`` samples: noise images, smooth proprio, task per episode."""
    rng = np.random.default_rng(seed)
    n = episodes * steps
    scene = rng.integers(0, 256, (2, 224, 224, 3), dtype=np.uint8)
    start = rng.uniform(-0.8, 0.8, (episodes, 1, 8))
    drift = rng.uniform(-0.05, 0.05, (episodes, 1, 8))
    proprio = (start + drift * np.arange(steps)[None, :, None]).reshape(n, 8)
    task = np.repeat(rng.integers(0, len(TASKS), episodes), steps)
    return {
        "primary": np.repeat(scene[:1], n, axis=0),
        "wrist": np.repeat(scene[1:], n, axis=0),
        "proprio": proprio.astype(np.float32),
        "instruction": [TASKS[t] for t in task],
        "task": task,
        "episode": np.repeat(np.arange(episodes), steps),
    }


@torch.no_grad()
def pooled_features(backbone, obs: dict, batch_size: int) -> dict[str, np.ndarray]:
    """``{"action_mean", "action_first"}`` -> ``[N, H]``: OFT's 56 action-slot states, one forward per batch."""
    from rsdvla.backbones.oft_inputs import action_slot_states, build_action_inputs

    out = {"action_mean": [], "action_first": []}
    for start in range(0, len(obs["instruction"]), batch_size):
        batch = {k: v[start : start + batch_size] for k, v in obs.items()}
        inputs = build_action_inputs(
            backbone.prompt_ids(batch["instruction"]),
            backbone.processor.tokenizer.pad_token_id,
            backbone.num_action_tokens,
            backbone.stop_token_id,
            backbone.action_label_id,
        )
        pixels = backbone.pixel_values(batch).to(backbone.device, backbone.dtype)
        hidden, patches = backbone.last_hidden(inputs, pixels, backbone.proprio_tensor(batch))
        slots = action_slot_states(
            hidden, patches, inputs.prompt_tokens, backbone.num_action_tokens
        )
        out["action_mean"].append(slots.mean(1).float().numpy())
        out["action_first"].append(slots[:, 0].float().numpy())
    return {k: np.concatenate(v) for k, v in out.items()}


@torch.no_grad()
def last_token_features(backbone, obs: dict, batch_size: int) -> np.ndarray:
    """``pooling=last`` as the backbone runs it (prompt alone, same attention)."""
    backbone.pooling = "last"
    try:
        parts = [
            backbone.encode({k: v[s : s + batch_size] for k, v in obs.items()}).numpy()
            for s in range(0, len(obs["instruction"]), batch_size)
        ]
    finally:
        backbone.pooling = "action"
    return np.concatenate(parts)


def r2(pred: np.ndarray, target: np.ndarray) -> float:
    """Mean over dimensions of 1 - SSE / SST (held-out)."""
    sse = ((pred - target) ** 2).sum(0)
    sst = ((target - target.mean(0)) ** 2).sum(0)
    return float(np.mean(1 - sse / sst))


def ridge_r2(x_train, y_train, x_test, y_test, groups) -> float:
    mu, sd = x_train.mean(0), x_train.std(0) + 1e-6
    x_train, x_test = (x_train - mu) / sd, (x_test - mu) / sd

    def fit(x, y, lam):
        x1 = np.hstack([x, np.ones((len(x), 1))])
        return np.linalg.solve(x1.T @ x1 + lam * np.eye(x1.shape[1]), x1.T @ y)

    def predict(w, x):
        return np.hstack([x, np.ones((len(x), 1))]) @ w

    def cv_score(lam: float) -> float:
        scores = []
        for fold in range(3):
            held = groups % 3 == fold
            w = fit(x_train[~held], y_train[~held], lam)
            scores.append(r2(predict(w, x_train[held]), y_train[held]))
        return float(np.mean(scores))

    best = max((10.0**p for p in range(-3, 5)), key=cv_score)
    return r2(predict(fit(x_train, y_train, best), x_test), y_test)


def mlp_r2(x_train, y_train, x_test, y_test, seed: int) -> float:
    torch.manual_seed(seed)
    mu, sd = x_train.mean(0), x_train.std(0) + 1e-6
    xt = torch.tensor((x_train - mu) / sd, dtype=torch.float32)
    xv = torch.tensor((x_test - mu) / sd, dtype=torch.float32)
    yt = torch.tensor(y_train, dtype=torch.float32)
    head = nn.Sequential(nn.Linear(xt.shape[1], 256), nn.GELU(), nn.Linear(256, yt.shape[1]))
    opt = torch.optim.AdamW(head.parameters(), lr=1e-3, weight_decay=1e-2)
    for _ in range(600):
        opt.zero_grad()
        nn.functional.mse_loss(head(xt), yt).backward()
        opt.step()
    with torch.no_grad():
        return r2(head(xv).numpy(), y_test)


def write_seeded_projector(checkpoint: Path, hidden: int) -> None:
    """A seeded random proprio projector as OFT saves it (seed 1, bf16, DDP ``module.`` prefix);
    tests/test_openvla_oft.py's tiny checkpoint uses this one too."""
    generator = torch.Generator().manual_seed(1)
    state = {
        "module.fc1.weight": torch.randn(hidden, 8, generator=generator) * 0.3,
        "module.fc1.bias": torch.randn(hidden, generator=generator) * 0.1,
        "module.fc2.weight": torch.randn(hidden, hidden, generator=generator) * 0.1,
        "module.fc2.bias": torch.randn(hidden, generator=generator) * 0.1,
    }
    torch.save(
        {k: v.to(torch.bfloat16) for k, v in state.items()},
        checkpoint / "proprio_projector--1_checkpoint.pt",
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint")
    parser.add_argument("--samples", type=int, default=960, help="episodes x 8 steps")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--no-proprio", action="store_true")
    parser.add_argument("--seeded-projector", action="store_true")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    from rsdvla.backbones import OpenVLAOFTBackbone

    config = json.loads((Path(args.checkpoint) / "config.json").read_text())
    if args.seeded_projector:
        write_seeded_projector(Path(args.checkpoint), config["text_config"]["hidden_size"])
    backbone = OpenVLAOFTBackbone(
        args.checkpoint,
        hidden_dim=config["text_config"]["hidden_size"],
        device="cpu",
        proprio_projector=None if args.no_proprio else "auto",
    )
    steps = 8
    obs = synthetic_episodes(args.samples // steps, steps, seed=0)
    model = backbone.model
    with torch.no_grad():
        pixels = backbone.pixel_values({k: v[:1] for k, v in obs.items()}).to(backbone.dtype)
        patches = model._process_vision_features(pixels, None, False)  # the fixed scene, once
    model._process_vision_features = lambda pv, *rest: patches.expand(pv.shape[0], -1, -1)
    backbone.pixel_values = lambda batch: torch.zeros(len(batch["instruction"]), 1)  # not read
    started = time.perf_counter()
    features = pooled_features(backbone, obs, args.batch_size)
    features["last"] = last_token_features(backbone, obs, args.batch_size)
    seconds = time.perf_counter() - started

    episode = obs["episode"]
    test = episode % 4 == 3
    rows = {name: {"ridge": [], "mlp": []} for name in features}
    for seed in range(3):
        rng = np.random.default_rng(100 + seed)
        weights = rng.normal(0, 1.0, (8, 7))
        bias = rng.normal(0, 0.7, (len(TASKS), 7))
        actions = np.tanh(obs["proprio"].astype(np.float64) @ weights + bias[obs["task"]])
        for name, x in features.items():
            x = x.astype(np.float64)
            rows[name]["ridge"].append(
                ridge_r2(x[~test], actions[~test], x[test], actions[test], episode[~test])
            )
            rows[name]["mlp"].append(mlp_r2(x[~test], actions[~test], x[test], actions[test], seed))

    print(
        f"backbone: {backbone.backbone_id}; {len(episode)} samples ({test.sum()} held out), features in {seconds:.0f} s"
    )
    print("\n| pooling | ridge R^2 (held out) | MLP R^2 (held out) |\n| --- | --- | --- |")
    for name, scores in rows.items():
        cells = [f"{np.mean(v):.3f} ± {np.std(v):.3f}" for v in (scores["ridge"], scores["mlp"])]
        print(f"| {name} | {cells[0]} | {cells[1]} |")
    sys.stdout.flush()


if __name__ == "__main__":
    main()

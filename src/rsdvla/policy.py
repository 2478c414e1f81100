"""``RSDPolicy``: backbone + decoder + normalizer behind LeRobot's policy contract.

    reset()                                   clear the action queue and the chunk log
    predict_action_chunk(obs_batch, slots=None) -> [B, chunk_size, 7]   env-ready actions (float64)
    select_action(obs) -> [7]                 pop from a queue refilled by one decoder call
    select_actions(observations, slots) -> B x [7]   the same for B episodes, one batched call

One chunk: ``obs -> backbone.encode -> h [B, H] -> decoder(h) -> normalized actions [B, T, 7]
-> un-normalize (the checkpoint's statistics) -> gripper conversion -> [B, chunk_size, 7]``.
Every decoder call appends one :class:`ChunkStats` per row to that row's episode slot
(:class:`EpisodeSlot`: accepted layers, per-layer acceptance, latency per stage of the call)
that the LIBERO runner writes to its episode records.

Gripper (last dim). Our tokenizer/heads are trained on LIBERO-native actions (-1 = open,
+1 = close), so by default the gripper is binarized at 0 (``> 0 -> +1``, else ``-1``).
``invert_gripper=True`` is OpenVLA-OFT's conversion for policies that output the RLDS
convention (gripper in [0, 1], 1 = open): ``sign(2 * g - 1)``, then flip the sign.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from rsdvla.decoding.divergence import divergence_rows, hidden_shift
from rsdvla.decoding.rows import RowState, call_decoder
from rsdvla.decoding.stats import row_stats, speculated_acceptance, synchronize
from rsdvla.decoding.timing import rotated, speed_clock, timed_cpu_wall
from rsdvla.envs.conversions import (
    binarize_gripper,
    invert_gripper_action,
    normalize_gripper_action,
)

__all__ = [
    "RSDPolicy",
    "EpisodeSlot",
    "Decoded",
    "ChunkStats",
    "to_env_actions",
    "read_decode_stats",
    "row_decode_stats",
    "batch_observation",
    "stack_observations",
]


def to_env_actions(actions: np.ndarray, invert_gripper: bool = False) -> np.ndarray:
    """Un-normalized actions ``[..., 7]`` -> actions LIBERO's ``env.step`` takes (float64 copy).

    ``invert_gripper=False``: gripper already in LIBERO's convention, binarized at 0 (-1 open /
    +1 close). ``True``: OpenVLA-OFT's conversion of RLDS-convention outputs (``[0, 1]``, 1 = open):
    ``-sign(2 * g - 1)``.
    """
    if invert_gripper:
        return invert_gripper_action(normalize_gripper_action(actions, binarize=True))
    return binarize_gripper(actions)


def batch_observation(obs: Mapping[str, Any]) -> dict[str, Any]:
    """One observation (``proprio [8]``, images ``[h, w, 3]``, ``instruction: str``, ...) -> a batch of 1."""
    batch: dict[str, Any] = {}
    for key, value in obs.items():
        if key == "instruction":
            batch[key] = [value] if isinstance(value, str) else list(value)
        elif isinstance(value, torch.Tensor):
            batch[key] = value.unsqueeze(0)
        else:
            batch[key] = np.asarray(value)[None]
    if "instruction" not in batch:
        raise KeyError(
            "RSDPolicy.select_action: observation lacks `instruction` (the task's language instruction)"
        )
    return batch


@dataclass
class ChunkStats:
    """What one decoder call cost and accepted (B samples decoded together).

    ``accepted_layers``: drafted layers accepted per sample ``[B]`` (0 for main-only; None without stats).
    ``layer_acceptance``: per drafted layer, the fraction of the B samples that accepted it ``[k]``.
    ``latency_s``: seconds per stage: ``backbone``, the decoder's own stages (``draft``, ``verify``,
    ``main_steps``, ``detokenize``), ``decode`` (decoder wall time), ``total`` (backbone + decode)
    and, with a baseline, ``baseline_decode`` (main-only on the same hidden state).
    """

    accepted_layers: list[int] | None
    layer_acceptance: list[float] | None
    latency_s: dict[str, float] = field(default_factory=dict)
    # rsdvla.decoding.divergence: this row vs main-only (only with a baseline), and the
    # relative move of h since the previous chunk (None for an episode's first chunk)
    divergence: dict | None = None
    hidden_shift: float | None = None


def _as_list(value: Any) -> list | None:
    if value is None:
        return None
    if isinstance(value, torch.Tensor):
        return value.detach().cpu().tolist()
    return np.asarray(value).tolist()


def read_decode_stats(
    result: Any, num_draft_layers: int | None = None
) -> tuple[list[int] | None, list[float] | None, dict[str, float]]:
    """``DecodeResult.stats`` (``rsdvla.decoding.DecodeStats``) -> (accepted layers ``[B]``,
    per-layer acceptance ``[k]`` = share of the B samples that accepted drafted layer j,
    seconds per decoder stage).

    Acceptance is read through :func:`rsdvla.decoding.stats.speculated_acceptance`, the same
    function the offline evaluation uses: a call that drafted nothing (main-only, or RSD's
    ``skip_below`` fallback) gives ``(None, None)``, never a rejection. Without ``layer_accepted``
    the per-layer acceptance follows from the prefix lengths (layer j accepted iff
    ``accepted > j``) when ``num_draft_layers`` is known.
    """
    stats = getattr(result, "stats", None)
    if stats is None:
        return None, None, {}
    accepted_t, flags_t = speculated_acceptance(stats)
    accepted = _as_list(accepted_t)
    if accepted is not None:
        accepted = [int(a) for a in np.ravel(accepted)]
    per_layer = None
    if flags_t is not None:
        flags = np.asarray(_as_list(flags_t), dtype=np.float64)
        per_layer = flags.mean(0).tolist() if flags.ndim == 2 and flags.shape[1] else None
    elif accepted is not None and num_draft_layers:
        per_layer = [
            float(np.mean([a > layer for a in accepted])) for layer in range(num_draft_layers)
        ]
    seconds = getattr(stats, "seconds", None) or {}
    return accepted, per_layer, {str(stage): float(s) for stage, s in seconds.items()}


@dataclass
class EpisodeSlot:
    """One episode's state inside a (possibly batched) policy: its action queue, its chunk log
    (one :class:`ChunkStats` per decoder call it joined) and the decoders' per-row states
    (``rsdvla.decoding.rows.RowState``: sampling streams, RSD's ``skip_below`` average)."""

    episode_seed: int = 0
    queue: deque = field(default_factory=deque)
    chunk_log: list[ChunkStats] = field(default_factory=list)
    decoder_row: RowState = field(default_factory=RowState)
    baseline_row: RowState = field(default_factory=RowState)
    depth_baseline_row: RowState = field(default_factory=RowState)
    previous_h: torch.Tensor | None = None  # h of the episode's last chunk [1, H]

    @classmethod
    def for_episode(cls, episode_seed: int = 0) -> EpisodeSlot:
        seed = int(episode_seed)
        return cls(
            seed,
            decoder_row=RowState(seed),
            baseline_row=RowState(seed),
            depth_baseline_row=RowState(seed),
        )


@dataclass
class Decoded:
    """One decoder call (and the baselines' on the same ``h``): the decoder's result, the
    baseline's result (None without a baseline) and ``latency_s``: ``decode``, ``baseline_decode``
    and ``baseline_decode_m<depth>`` (wall seconds), each with its ``*_cpu`` CPU seconds
    (``rsdvla.decoding.timing``)."""

    result: Any
    latency_s: dict
    baseline: Any = None


class RSDPolicy:
    """A VLA policy whose actions are decoded from backbone hidden states by ``decoder``.

    Args:
        backbone: ``encode(batch) -> Tensor[B, H]`` (``rsdvla.backbones.Backbone``).
        decoder: ``decoder(h[B, H]) -> DecodeResult(codes, actions[B, T, 7] normalized, stats)``
            (``decoder(h, rows)`` for decoders with per-row state, ``rsdvla.decoding.rows``).
        normalizer: ``ActionNormalizer`` holding the checkpoint's statistics.
        chunk_size: actions executed open loop per decoder call (``<= T``).
        baseline: optional main-only decoder; it decodes the same ``h`` every call (in an order
            rotating with ``decoder``'s, ``rsdvla.decoding.timing``) to time it and to record how
            far the decoder's codes and actions depart from it (``ChunkStats.divergence``); its
            actions are not executed.
        depth_baseline: optional main-only decoder at the decoder's truncated depth m, timed the
            same way (latency ``baseline_decode_m<m>``): the reference of a depth-m setting.
        invert_gripper: see :func:`to_env_actions`.
        device: where ``h`` goes before decoding (None: leave it where the backbone put it).

    Episodes live in :class:`EpisodeSlot` s. The single-episode API (``reset``, ``seed_episode``,
    ``select_action``, ``chunk_log``) works on one slot of its own; the batched API
    (:meth:`select_actions`) takes one slot per episode and makes one backbone + decoder call
    for the episodes whose queue is empty.
    """

    def __init__(
        self,
        backbone,
        decoder,
        normalizer,
        chunk_size: int = 8,
        baseline=None,
        *,
        depth_baseline=None,
        invert_gripper: bool = False,
        device: torch.device | str | None = None,
    ):
        if chunk_size < 1:
            raise ValueError(f"RSDPolicy: chunk_size={chunk_size} must be >= 1")
        self.backbone = backbone
        self.decoder = decoder
        self.normalizer = normalizer
        self.chunk_size = int(chunk_size)
        self.baseline = baseline
        self.depth_baseline = depth_baseline
        self.invert_gripper = bool(invert_gripper)
        self.device = None if device is None else torch.device(device)
        self.num_draft_layers = _num_draft_layers(decoder)
        self.slot = EpisodeSlot.for_episode(0)
        self._calls = 0

    @property
    def required_obs(self) -> tuple[str, ...]:
        """Observation keys the backbone reads (besides ``instruction``)."""
        return tuple(getattr(self.backbone, "required_obs", ()))

    @property
    def chunk_log(self) -> list[ChunkStats]:
        """The chunk log of the single-episode slot."""
        return self.slot.chunk_log

    def reset(self) -> None:
        """Start a new episode (single-episode API): empty the action queue and the chunk log."""
        self.slot = EpisodeSlot.for_episode(self.slot.episode_seed)

    def seed_episode(self, episode_seed: int) -> None:
        """Start the single-episode slot over for the episode of seed ``episode_seed``.

        ``episode_seed`` comes from the evaluation seed and the episode's identity (task, trial);
        the decoders' per-row state (sampling streams, RSD's ``skip_below`` average) starts from
        it, so an episode's actions do not depend on which episodes ran before it nor beside it.
        """
        self.slot = EpisodeSlot.for_episode(episode_seed)

    def new_slot(self, episode_seed: int) -> EpisodeSlot:
        """A fresh slot for one episode of the batched API."""
        return EpisodeSlot.for_episode(episode_seed)

    @torch.inference_mode()
    def predict_action_chunk(
        self, obs_batch: Mapping[str, Any], slots: Sequence[EpisodeSlot] | None = None
    ) -> np.ndarray:
        """Observations of B samples (backbone batch format) -> env-ready actions ``[B, chunk_size, 7]``.

        ``slots``: the B episodes' slots (each gets this call's :class:`ChunkStats` for its row);
        None: the single-episode slot when B = 1, else B throwaway slots.
        """
        batch = _batch_size(obs_batch)
        if slots is None:
            slots = [self.slot] if batch == 1 else [EpisodeSlot() for _ in range(batch)]
        if len(slots) != batch:
            raise ValueError(f"RSDPolicy: {len(slots)} episode slots for a batch of {batch}")
        h, backbone_cpu, backbone_s = timed_cpu_wall(self.backbone.encode, obs_batch)
        if self.device is not None:
            h = h.to(self.device)
        decoded = self._decode(h, slots)
        actions = decoded.result.actions
        actions = (
            actions.detach().float().cpu().numpy()
            if isinstance(actions, torch.Tensor)
            else np.asarray(actions, np.float32)
        )
        if actions.ndim != 3 or actions.shape[1] < self.chunk_size:
            raise ValueError(
                f"RSDPolicy: decoder returned actions of shape {tuple(actions.shape)}; expected [B, T>={self.chunk_size}, 7] "
                "(lower chunk_size or use a tokenizer with a longer chunk)"
            )
        _, _, stage_s = read_decode_stats(decoded.result, self.num_draft_layers)
        latency = {
            "backbone": backbone_s,
            **({"backbone_cpu": backbone_cpu} if speed_clock(h.device) == "cpu" else {}),
            **stage_s,
            **decoded.latency_s,
            "total": backbone_s + decoded.latency_s["decode"],
        }
        env_actions = self._env_actions(actions)
        divergence, shift = self._chunk_diagnostics(h, decoded, actions, env_actions, slots)
        for row, slot in enumerate(slots):
            accepted, flags = row_decode_stats(decoded.result, row, self.num_draft_layers)
            slot.chunk_log.append(
                ChunkStats(
                    None if accepted is None else [accepted],
                    flags,
                    dict(latency),
                    divergence[row],
                    shift[row],
                )
            )
        return env_actions

    def _env_actions(self, normalized: np.ndarray) -> np.ndarray:
        """Normalized ``[B, T, 7]`` -> the executed chunk as the env takes it ``[B, chunk_size, 7]``."""
        raw = self.normalizer.unnormalize(normalized[:, : self.chunk_size])
        return to_env_actions(raw, self.invert_gripper)

    def _chunk_diagnostics(
        self,
        h: torch.Tensor,
        decoded: Decoded,
        actions: np.ndarray,
        env_actions: np.ndarray,
        slots: Sequence[EpisodeSlot],
    ) -> tuple[list[dict | None], list[float | None]]:
        """Per row: divergence from main-only (None without a baseline) and the hidden-state shift
        since the row's episode's previous chunk (``rsdvla.decoding.divergence``); untimed, and
        no extra model call."""
        shift = []
        for row, slot in enumerate(slots):
            shift.extend(hidden_shift(h[row : row + 1], slot.previous_h))
            slot.previous_h = h[row : row + 1].detach().clone()
        if decoded.baseline is None:
            return [None] * len(slots), shift
        base = decoded.baseline.actions.detach().float().cpu().numpy()
        rows = divergence_rows(
            decoded.result.codes,
            decoded.baseline.codes,
            actions[:, : self.chunk_size],
            base[:, : self.chunk_size],
            env_actions,
            self._env_actions(base),
            getattr(getattr(decoded.result, "stats", None), "decoded_layers", None),
        )
        return rows, shift

    def _decode(self, h: torch.Tensor, slots: Sequence[EpisodeSlot]) -> Decoded:
        """Decode ``h`` with the decoder and the baselines (in an order rotating call by call),
        each with the slots' own row states; returns the results and their times."""
        self._calls += 1
        calls = {"decode": (self.decoder, [slot.decoder_row for slot in slots])}
        if self.baseline is not None:
            calls["baseline_decode"] = (self.baseline, [slot.baseline_row for slot in slots])
        if self.depth_baseline is not None:
            name = f"baseline_decode_m{self.depth_baseline.depth}"
            calls[name] = (self.depth_baseline, [slot.depth_baseline_row for slot in slots])
        results, latency = {}, {}
        for name in rotated(list(calls), self._calls - 1):
            decoder, rows = calls[name]
            results[name], cpu, wall = timed_cpu_wall(call_decoder, decoder, h, rows)
            latency[name] = wall
            if speed_clock(h.device) == "cpu":  # on a GPU: wall (GPU time is not CPU time)
                latency[f"{name}_cpu"] = cpu
        return Decoded(results["decode"], latency, results.get("baseline_decode"))

    @torch.inference_mode()
    def warmup(self, calls: int = 2) -> None:
        """Run the decoder (and baseline) ``calls`` times on a zero hidden state, untimed, so that
        one-off costs (allocator, kernel selection, CUDA init) stay out of the measured chunks.
        Draws no random numbers from the global generators in greedy decoding and touches no
        episode's state (throwaway row states)."""
        width = getattr(self.backbone, "hidden_dim", None)
        if width is None:
            return
        h = torch.zeros(1, int(width), device=self.device)
        for _ in range(calls):
            for decoder in (self.decoder, self.baseline, self.depth_baseline):
                if decoder is not None:
                    call_decoder(decoder, h, [RowState()])
        synchronize()

    def select_action(self, obs: Mapping[str, Any]) -> np.ndarray:
        """One observation (unbatched, with ``instruction``) -> the next action ``[7]``.

        Calls the decoder once every ``chunk_size`` steps; the chunk is executed open loop.
        """
        return self.select_actions([obs], [self.slot])[0]

    def select_actions(
        self, observations: Sequence[Mapping[str, Any]], slots: Sequence[EpisodeSlot]
    ) -> list[np.ndarray]:
        """The next action ``[7]`` of each of B episodes (unbatched observations with
        ``instruction``, one slot each): the episodes whose queue is empty are refilled by ONE
        backbone + decoder call over them (mixed tasks and instructions); the others pop."""
        if len(observations) != len(slots):
            raise ValueError(f"RSDPolicy: {len(observations)} observations for {len(slots)} slots")
        need = [i for i, slot in enumerate(slots) if not slot.queue]
        if need:
            chunks = self.predict_action_chunk(
                stack_observations([observations[i] for i in need]), [slots[i] for i in need]
            )
            for i, chunk in zip(need, chunks, strict=True):
                slots[i].queue.extend(chunk)
        return [slot.queue.popleft() for slot in slots]


def stack_observations(observations: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """B unbatched observations (same keys) -> one backbone batch (``instruction``: a list of B)."""
    batches = [batch_observation(obs) for obs in observations]
    out: dict[str, Any] = {}
    for key in batches[0]:
        values = [b[key] for b in batches]
        if key == "instruction":
            out[key] = [text for value in values for text in value]
        elif isinstance(values[0], torch.Tensor):
            out[key] = torch.cat(values)
        else:
            out[key] = np.concatenate(values)
    return out


def _batch_size(obs_batch: Mapping[str, Any]) -> int:
    for key, value in obs_batch.items():
        if key != "instruction":
            return len(value)
    return len(obs_batch["instruction"])


def row_decode_stats(
    result: Any, row: int, num_draft_layers: int | None = None
) -> tuple[int | None, list[float] | None]:
    """One row's ``(accepted layers, per-layer accepted flags [k])`` of a decoder call, read like
    :func:`read_decode_stats` reads a batch (for one row the flags are its per-layer acceptance)."""
    stats = getattr(result, "stats", None)
    accepted, flags = row_stats(stats, row)
    if accepted is not None and flags is None and num_draft_layers:
        flags = [float(accepted > layer) for layer in range(num_draft_layers)]
    return accepted, flags


def _num_draft_layers(decoder) -> int | None:
    """Layers the decoder drafts (``SpeculativeDecoder.k``, else its draft's k), None for main-only."""
    k = getattr(decoder, "k", None)
    if k is None:
        k = getattr(getattr(decoder, "draft", None), "num_draft_layers", None)
    return int(k) if k is not None else None

"""The speed-success frontier of decoding strategies on one stack: ``python evaluate.py experiment=frontier``.

Stages (each skipped when its output exists, so a rerun of the same command resumes; an output
computed with other overrides or checkpoints than this run's is refused in one line, or set aside
as ``*.replaced-<time>`` and recomputed with ``frontier.restart=true``):

1. ``train_context_draft``: ``train.py`` with ``frontier.context_draft_train`` (the context
   draft of the stack's main checkpoint), unless ``frontier.context_draft`` exists.
2. Offline, in this process: every setting of ``frontier.settings`` (a list of ``evaluate.py``
   overrides each) against greedy main-only on the store's held-out rows, at batch
   ``env.batch_size`` (1 = LIBERO's). Writes ``<work_dir>/<name>/offline/summary.json``.
3. LIBERO: the settings on or near the offline frontier (``frontier.libero``), each as
   ``frontier.libero.shards`` parallel ``evaluate.py env=libero`` shards (each with
   ``frontier.libero.num_envs`` simulator workers; null: the cores shared by the shards) into
   ``<work_dir>/<name>/libero``, merged into its ``summary.json``. The LIBERO runner resumes a
   shard from its episode file.
4. ``frontier.csv``, ``frontier.png`` (LIBERO success with 95% CI bars, and offline action error,
   against decoder speedup) and ``frontier.md`` (the table; also written into
   ``frontier.docs`` under ``## Frontier`` when set).

The offline frontier: a setting is on it when no other is at least as fast with a lower
action error; it is near it when no other is at least as fast with an error lower by more
than the factor ``1 + frontier.libero.near``.
"""

from __future__ import annotations

import csv
import json
import logging
import math
import shutil
import subprocess
import sys
import time
from pathlib import Path

from omegaconf import DictConfig, OmegaConf, open_dict

from rsdvla.decoding.timing import DEFAULT_REFERENCE, format_columns, speed_columns
from rsdvla.evaluation.libero.workers import default_num_envs
from rsdvla.evaluation.reports.aggregate import write_json_atomic, write_markdown_section
from rsdvla.evaluation.reports.plots import save_figure

log = logging.getLogger(__name__)
ROOT = Path(__file__).resolve().parents[3]
SECTION = "## Frontier"
REFERENCE = DEFAULT_REFERENCE
"""The setting every point is compared against: timed beside it (offline on the same rows, in
LIBERO on the same hidden states) and paired on the same episodes."""
PREDICTED_ON = "H100"
"""The GPU of the roofline column (``rsdvla.decoding.roofline.DEVICES``)."""


# ------------------------------------------------------------------------------------ selection


def frontier_flags(points: list[dict], near: float = 0.0) -> list[bool]:
    """Per point (``speedup``, ``error``): on (``near=0``) or near the frontier of speed vs error.

    A point is dominated when another is at least as fast and its error times ``1 + near`` is
    still lower. Points with a missing value are never on it.
    """
    flags = []
    for p in points:
        ok = _finite(p.get("speedup")) and _finite(p.get("error"))
        for q in points:
            if not ok or q is p or not (_finite(q.get("speedup")) and _finite(q.get("error"))):
                continue
            if q["speedup"] >= p["speedup"] and q["error"] * (1 + near) < p["error"]:
                ok = False
        flags.append(ok)
    return flags


def _finite(value) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value)


def choose_libero_points(rows: list[dict], cfg: DictConfig) -> list[str]:
    """Names to evaluate in LIBERO, at most ``cfg.max_points``: ``cfg.always`` first, then the
    settings on the offline frontier, then those near it (``cfg.near``), each group from the
    lowest action error up (the most accurate fast settings are the ones success can confirm)."""
    points = [{"speedup": r.get("offline_speedup"), "error": r.get("action_mse")} for r in rows]
    on, near = frontier_flags(points), frontier_flags(points, float(cfg.near))
    names = {r["name"] for r in rows}  # `always` entries left out by frontier.only are skipped
    chosen = [str(n) for n in cfg.always if str(n) in names]
    for group in (on, near):
        ranked = sorted(
            (r for r, flag in zip(rows, group, strict=True) if flag),
            key=lambda r: (float(r["action_mse"]), -float(r["offline_speedup"])),
        )
        for row in ranked:
            if len(chosen) >= int(cfg.max_points):
                return chosen
            if row["name"] not in chosen and row["name"] not in list(cfg.exclude or []):
                chosen.append(row["name"])
    return chosen


# ------------------------------------------------------------------------------------ stages


def setting_overrides(cfg: DictConfig, name: str) -> list[str]:
    settings = cfg.frontier.settings
    if name not in settings:
        raise ValueError(
            f"frontier setting {name!r} is not in frontier.settings ({', '.join(settings)}); "
            "fix frontier.libero.always in conf/experiment/frontier.yaml"
        )
    return [str(o) for o in settings[name]]


def chosen_settings(cfg: DictConfig) -> list[str]:
    """The settings this run evaluates: ``frontier.only`` (names, in that order) or all of
    ``frontier.settings``. Hydra merges ``frontier.settings={...}`` into the defaults; to replace
    them, delete then add: ``~frontier.settings '+frontier.settings={a:[decoder=main_only]}'``.
    ``frontier.only=[a,b]`` cuts a run down to some (new settings: ``+frontier.settings.x=[...]``)."""
    fr = cfg.frontier
    only = fr.get("only")
    if only is None:
        return [str(n) for n in fr.settings]
    names = [str(n) for n in only]
    for name in names:
        if name not in fr.settings:
            raise ValueError(
                f"frontier.only: {name!r} is not in frontier.settings ({', '.join(map(str, fr.settings))}); "
                "fix frontier.only, or add the setting with +frontier.settings.<name>=[...]"
            )
    return names


def needs_context_draft(cfg: DictConfig, names: list[str]) -> bool:
    """Whether a chosen setting loads ``frontier.context_draft`` (one of its overrides names it)."""
    target = str(cfg.frontier.context_draft)
    return any(
        str(o).partition("=")[2] == target for name in names for o in setting_overrides(cfg, name)
    )


def train_context_draft(cfg: DictConfig, names: list[str] | None = None) -> None:
    fr = cfg.frontier
    target = Path(fr.context_draft)
    if names is not None and not needs_context_draft(cfg, names):
        log.info("no chosen setting uses the context draft %s: training skipped", target)
        return
    if target.exists():
        log.info("context draft %s exists: training skipped", target)
        return
    cmd = [sys.executable, str(ROOT / "train.py"), *map(str, fr.context_draft_train)]
    cmd.append(f"hydra.run.dir={Path(fr.work_dir) / 'train_context_draft'}")
    log.info("[train_context_draft] %s", " ".join(cmd[1:]))
    if subprocess.run(cmd).returncode != 0 or not target.exists():
        raise RuntimeError(
            f"training the context draft failed (it should write {target}); see the log above, "
            "fix it and rerun the same command to resume"
        )


# ------------------------------------------------------------------------------------ tokenizer stacks

STACK_ROLES = ("tokenizer", "main", "draft")
"""What a stack trains, in order: each role reads the checkpoints of the roles before it."""


def stack_dir(cfg: DictConfig, stack: str) -> Path:
    """Where a stack of ``frontier.stacks`` publishes: ``<frontier.artifacts>/<stack>/<role>.ckpt``."""
    return Path(cfg.frontier.artifacts) / stack


def stack_ckpt_overrides(cfg: DictConfig, stack: str) -> list[str]:
    """``evaluate.py`` overrides loading the stack's tokenizer, main and draft."""
    folder = stack_dir(cfg, stack)
    return [f"ckpt.{role}={folder / f'{role}.ckpt'}" for role in STACK_ROLES]


def expand_stack_settings(cfg: DictConfig) -> None:
    """Add ``<stack>_<setting>`` to ``frontier.settings`` for every stack of ``frontier.stacks``
    and setting of ``frontier.stack_settings``: the setting's overrides plus the stack's checkpoints.

    A stack is another tokenizer (family, tokens per layer, vocabulary) on the same store, with
    its own main and draft; each of its settings is timed against its own main-only.
    """
    fr = cfg.frontier
    stacks, settings = fr.get("stacks") or {}, fr.get("stack_settings") or {}
    with open_dict(fr):
        for stack in stacks:
            for name, overrides in settings.items():
                key = f"{stack}_{name}"
                expanded = [*map(str, overrides), *stack_ckpt_overrides(cfg, stack)]
                if key in fr.settings and list(map(str, fr.settings[key])) != expanded:
                    raise ValueError(
                        f"frontier.settings.{key} is also a stack setting ({stack} x "
                        f"frontier.stack_settings.{name}); rename one of them"
                    )
                fr.settings[key] = expanded


def stack_of(cfg: DictConfig, name: str) -> str | None:
    """The stack of ``frontier.stacks`` a setting belongs to (None: the quickstart's RFSQ stack)."""
    settings = cfg.frontier.get("stack_settings") or {}
    for stack in cfg.frontier.get("stacks") or {}:
        rest = name.removeprefix(f"{stack}_")
        if rest != name and rest in settings:
            return str(stack)
    return None


def train_stacks(cfg: DictConfig, names: list[str]) -> None:
    """Train the missing checkpoints of every stack a chosen setting uses (tokenizer, then main on
    its codes, then the draft distilled from that main), each an ordinary ``train.py`` run."""
    fr = cfg.frontier
    for stack in dict.fromkeys(s for s in map(lambda n: stack_of(cfg, n), names) if s):
        folder = stack_dir(cfg, stack)
        for role in STACK_ROLES:
            target = folder / f"{role}.ckpt"
            if target.exists():
                log.info("[%s] %s exists: training skipped", stack, target)
                continue
            overrides = [
                *map(str, fr.stack_train_common),
                *map(str, fr.stacks[stack][role]),
                f"paths.artifacts_dir={folder}",
                f"export={target}",
                f"tokenizer.ckpt={folder / 'tokenizer.ckpt'}",
            ]
            if role == "draft":
                overrides.append(f"model.module.teacher_ckpt={folder / 'main.ckpt'}")
            cmd = [sys.executable, str(ROOT / "train.py"), *overrides]
            cmd.append(f"hydra.run.dir={Path(fr.work_dir) / f'train_{stack}_{role}'}")
            log.info("[train %s %s] %s", stack, role, " ".join(cmd[1:]))
            if subprocess.run(cmd).returncode != 0 or not target.exists():
                raise RuntimeError(
                    f"training the {role} of stack {stack} failed (it should write {target}); see "
                    "the log above, fix it and rerun the same command to resume"
                )


class StaleResultError(ValueError):
    """A finished point of the work dir was computed with other settings or checkpoints."""


def point_identity(cfg: DictConfig, name: str, stack) -> dict:
    """What a point's numbers depend on: its ``evaluate.py`` overrides (common + setting) and the
    content hashes of the checkpoints it loaded. The LIBERO point of a setting has this identity;
    its offline point adds ``offline`` (the offline overrides)."""
    from rsdvla.data.store import HiddenStateStore
    from rsdvla.evaluation.stack import content_hashes

    return {
        "overrides": [*map(str, cfg.frontier.common), *setting_overrides(cfg, name)],
        "checkpoints": content_hashes(stack),
        "store": HiddenStateStore(cfg.frontier.store).fingerprint(),  # content, not path
    }


def libero_identity(offline_summary: dict) -> dict:
    """The identity of a setting's LIBERO point, from its offline summary's."""
    return {k: v for k, v in offline_summary["identity"].items() if k != "offline"}


def reusable(path: Path, found: dict | None, identity: dict, restart: bool) -> bool:
    """Whether ``found`` (the summary at ``path``, or None) can stand for a point of ``identity``.

    A summary of another identity (or of none: written before identities were recorded) is
    refused in one line, or with ``restart`` its folder is renamed to ``*.replaced-<time>``.
    """
    if found is None:
        return False
    recorded = found.get("identity") or {}
    if recorded == identity:
        return True
    differs = sorted(k for k in {*identity, *recorded} if recorded.get(k) != identity.get(k))
    if not restart:
        raise StaleResultError(
            f"{path}: computed with other {', '.join(differs)} than this run's; rerun with "
            "frontier.restart=true to set it aside and recompute it (or use another frontier.work_dir)"
        )
    folder = path.parent
    aside = folder.with_name(f"{folder.name}.replaced-{time.strftime('%Y%m%d-%H%M%S')}")
    folder.replace(aside)
    log.warning(
        "frontier.restart=true: %s (other %s) set aside as %s", folder, ", ".join(differs), aside
    )
    return False


def load_point(cfg: DictConfig, name: str, out: Path):
    """The ``evaluate.py env=offline`` config of setting ``name`` (output in ``out``) and its stack."""
    from hydra import compose

    from rsdvla.evaluation.stack import load_stack

    overrides = [*map(str, cfg.frontier.common), "env=offline", *map(str, cfg.frontier.offline)]
    point = compose(config_name="evaluate", overrides=[*overrides, *setting_overrides(cfg, name)])
    with open_dict(point):
        point.paths.output_dir = str(out)
    return point, load_stack(point)


def run_offline_point(cfg: DictConfig, name: str) -> dict:
    """Offline summary of one setting (loaded when it exists with this run's identity)."""
    from rsdvla.evaluation.libero.split import use_trained_split
    from rsdvla.evaluation.offline import run_offline

    out = Path(cfg.frontier.work_dir) / name / "offline"
    path = out / "summary.json"
    point, stack = load_point(cfg, name, out)
    identity = {**point_identity(cfg, name, stack), "offline": list(map(str, cfg.frontier.offline))}
    found = _read(path)
    if reusable(path, found, identity, bool(cfg.frontier.get("restart", False))):
        return found
    log.info("[offline %s] %s", name, " ".join(setting_overrides(cfg, name)))
    use_trained_split(point, stack)  # the held-out split main was trained with
    summary = run_offline(point, stack)
    summary["overrides"] = setting_overrides(cfg, name)
    summary["identity"] = identity
    write_json_atomic(path, summary)
    return summary


QUALITY_SETTING = "rsd_exact"
"""The quickstart stack's setting whose models :func:`run_stack_quality` reads (a stack's own:
its first stack setting with a draft)."""


def quality_settings(cfg: DictConfig, names: list[str]) -> dict[str, str]:
    """``{stack label: setting}``: one setting with a draft per stack the chosen settings use
    (label ``rfsq`` for the quickstart's stack)."""
    out = {}
    for name in names:
        stack = stack_of(cfg, name) or "rfsq"
        if stack in out:
            continue
        if stack == "rfsq":
            if QUALITY_SETTING in cfg.frontier.settings:
                out[stack] = QUALITY_SETTING
            continue
        with_draft = [
            f"{stack}_{n}"
            for n, o in cfg.frontier.stack_settings.items()
            if "decoder=rsd" in map(str, o)
        ]
        if with_draft:
            out[stack] = with_draft[0]
    return out


def run_stack_quality(cfg: DictConfig, stack_label: str, name: str, max_rows: int = 4096) -> dict:
    """:func:`rsdvla.evaluation.stack_quality.stack_quality` of the models of setting ``name`` on
    main's held-out rows; written to ``<work_dir>/<stack_label>/quality.json`` and reused while
    the checkpoints and the store are the same."""
    import torch

    from rsdvla.evaluation.libero.split import use_trained_split
    from rsdvla.evaluation.offline import load_split_rows
    from rsdvla.evaluation.stack_quality import stack_quality

    out = Path(cfg.frontier.work_dir) / stack_label
    path = out / "quality.json"
    point, stack = load_point(cfg, name, out)
    identity = {**point_identity(cfg, name, stack), "rows": max_rows}
    identity.pop("overrides")  # the models and the store, whichever decoder setting loaded them
    found = _read(path)
    if found and found.get("identity") == identity:
        return found
    use_trained_split(point, stack)
    hidden, actions = load_split_rows(
        point.data.path, "val", float(point.data.val_fraction), int(point.data.seed), True, max_rows
    )
    log.info("[quality %s] %d held-out rows through %s", stack_label, len(hidden), name)
    quality = stack_quality(stack, torch.from_numpy(hidden), torch.from_numpy(actions))
    quality["identity"] = identity
    write_json_atomic(path, quality)
    return quality


def quality_table(qualities: dict[str, dict], rows: list[dict]) -> str:
    """One row per stack: tokenizer shape, reconstruction error, main accuracy and draft agreement
    per layer, and its main-only's LIBERO success (when run)."""
    success = {r["name"]: r for r in rows}
    head = (
        "| stack | family | tokens/layer G | vocab C | layers | recon MSE L0 / L0-2 / all | "
        "main token acc L0 / L1 / L2 | draft layer agreement L0 / L1 / L2 | draft top-2 / top-4 L0 | "
        "main-only LIBERO success |"
    )
    lines = [head, "|" + "---|" * 10]
    for label, q in qualities.items():
        mse, acc = q["recon_mse"], q["main_token_accuracy"]
        agree = q.get("draft_layer_agreement") or []
        main_only = success.get("main_only" if label == "rfsq" else f"{label}_main_only") or {}
        rate = main_only.get("success_rate")
        libero = "-" if rate is None else f"{100 * rate:.0f}% (n={main_only['libero_episodes']})"
        lines.append(
            f"| {label} | {q['family']} | {q['tokens_per_layer']} | {q['vocab_size']} "
            f"| {q['num_layers']} | {mse[0]:.4f} / {mse[min(2, len(mse) - 1)]:.4f} / {mse[-1]:.5f} "
            f"| {' / '.join(f'{100 * v:.0f}%' for v in acc[:3])} "
            f"| {' / '.join(f'{100 * v:.0f}%' for v in agree[:3]) or '-'} "
            f"| {_pct(q.get('draft_top2_layer_agreement'))} / {_pct(q.get('draft_top4_layer_agreement'))} "
            f"| {libero} |"
        )
    return "\n".join(lines)


def _pct(value) -> str:
    return "-" if not _finite(value) else f"{100 * value:.0f}%"


def libero_summary_path(cfg: DictConfig, name: str) -> Path:
    return Path(cfg.frontier.work_dir) / name / "libero" / "summary.json"


def planned_episodes(cfg: DictConfig) -> int:
    lib = cfg.frontier.libero
    return len(list(lib.task_ids)) * int(lib.trials)


def run_libero_point(cfg: DictConfig, name: str, identity: dict) -> dict:
    """Run (or resume) the sharded LIBERO evaluation of one setting; returns the merged summary.

    ``identity``: the setting's (:func:`libero_identity`); a run dir of another is refused, or set
    aside with ``frontier.restart=true``."""
    lib = cfg.frontier.libero
    path = libero_summary_path(cfg, name)
    run_dir = path.parent
    done = _read(path)
    if reusable(path, done, identity, bool(cfg.frontier.get("restart", False))):
        if done.get("episodes") == planned_episodes(cfg):
            return done
    shards = int(lib.shards)
    base = [
        sys.executable,
        str(ROOT / "evaluate.py"),
        *map(str, cfg.frontier.common),
        "env=libero",
        f"env.suite={lib.suite}",
        f"env.task_ids=[{','.join(str(int(t)) for t in lib.task_ids)}]",
        f"env.first_trial={int(lib.first_trial)}",
        f"trials={int(lib.trials)}",
        *setting_overrides(cfg, name),
        f"eval.num_shards={shards}",
        f"env.num_envs={default_num_envs(lib.get('num_envs'), shards)}",
        f"env.diagnostics={str(bool(lib.get('diagnostics', True))).lower()}",  # not in its identity
        f"hydra.run.dir={run_dir}",
    ]
    log.info("[libero %s] %d shards: %s", name, shards, " ".join(base[1:]))
    procs = [
        subprocess.Popen([*base, f"eval.shard_id={i}"], stdout=subprocess.DEVNULL)
        for i in range(shards)
    ]
    codes = [p.wait() for p in procs]
    if any(codes):
        raise RuntimeError(
            f"LIBERO shards of frontier setting {name} exited with {codes}; see {run_dir}, fix the "
            "cause and rerun the same command (finished episodes are kept)"
        )
    summary = merge_planned(cfg, run_dir, identity)
    if summary["episodes"] != planned_episodes(cfg):
        raise RuntimeError(
            f"{run_dir}: {summary['episodes']} of {planned_episodes(cfg)} planned episodes after the "
            "shards finished; rerun the same command to run the missing ones"
        )
    return summary


def merge_planned(cfg: DictConfig, run_dir: Path, identity: dict | None = None) -> dict:
    """One summary of the planned episodes in every episode file of ``run_dir`` (written to
    ``summary.json``), merged as ``python -m rsdvla.evaluation.reports.merge`` merges (shards of mixed
    settings are refused). Episodes of other plans in the same files (e.g. more trials from an
    earlier, larger run) are kept on disk and left out of this point's numbers."""
    from rsdvla.evaluation.libero.episodes import plan_episodes
    from rsdvla.evaluation.reports.merge import find_episode_files, merge_episode_files

    lib = cfg.frontier.libero
    plan = plan_episodes(
        str(lib.suite), [int(t) for t in lib.task_ids], int(lib.trials), int(lib.first_trial)
    )
    summary = merge_episode_files(find_episode_files([run_dir]), only={spec.key for spec in plan})
    summary["plan"] = {
        "suite": str(lib.suite),
        "task_ids": list(lib.task_ids),
        "trials": int(lib.trials),
        "first_trial": int(lib.first_trial),
    }
    summary["identity"] = identity
    write_json_atomic(run_dir / "summary.json", summary)
    return summary


def _read(path: Path) -> dict | None:
    return json.loads(path.read_text()) if path.exists() else None


# ------------------------------------------------------------------------------------ report


def row_for(
    name: str,
    offline: dict,
    libero: dict | None,
    on_frontier: bool,
    paired: dict | None = None,
    own: dict | None = None,
) -> dict:
    """One table row; ``paired``: the LIBERO point against main-only's on the same episodes
    (``rsdvla.evaluation.reports.paired.paired_comparison``), None when either was not run;
    ``own``: the same against its own stack's main-only (settings of ``frontier.stacks``)."""
    ci = (libero or {}).get("success_ci95") or [None, None]
    paired_ci = (paired or {}).get("delta_ci95") or [None, None]
    own_ci = (own or {}).get("delta_ci95") or [None, None]
    speed = offline.get("speed") or {}
    depth_ref = next((ref for ref in speed if ref != REFERENCE), None)
    cost = (offline.get("cost_per_chunk") or {}).get("decoder") or {}
    predicted = ((offline.get("gpu_prediction") or {}).get(PREDICTED_ON) or {}).get("speedup") or {}
    at_size = offline.get("gpu_prediction_openvla_size") or {}  # the same calls, OFT-sized models
    predicted_at_size = (at_size.get(PREDICTED_ON) or {}).get("speedup") or {}
    lib_speed = (libero or {}).get("speed") or {}
    oft = (at_size.get("A100") or {}).get("oft_step_speedup") or {}
    return {
        "name": name,
        "decoder": offline.get("decoder"),
        **speed_columns("offline_speedup", speed.get(REFERENCE)),
        **speed_columns("offline_speedup_vs_depth", speed.get(depth_ref)),
        "passes_per_chunk": cost.get("passes"),
        "positions_per_chunk": cost.get("positions"),
        "gflops_per_chunk": cost.get("gflops"),
        "weight_mb_per_chunk": cost.get("weight_mb"),
        "predicted_gpu": PREDICTED_ON,
        "predicted_gpu_speedup": predicted.get(REFERENCE),
        "predicted_gpu_speedup_vs_depth": predicted.get(depth_ref),
        "predicted_gpu_speedup_openvla_size": predicted_at_size.get(REFERENCE),
        "predicted_gpu_speedup_openvla_size_vs_depth": predicted_at_size.get(depth_ref),
        "predicted_oft_step_speedup_a100": oft.get(REFERENCE),
        "action_mse": offline.get("action_mse"),
        "action_mse_vs_main_only": offline.get("action_mse_vs_main_only"),
        "token_agreement": offline.get("token_agreement"),
        "mean_accepted_layers": offline.get("mean_accepted_layers"),
        "mean_decoded_layers": offline.get("mean_decoded_layers"),
        "mean_main_steps": offline.get("mean_main_steps"),
        "latency_p50_ms": offline.get("latency_p50_ms"),
        "main_only_latency_p50_ms": offline.get("main_only_latency_p50_ms"),
        "offline_frontier": on_frontier,
        "libero_episodes": (libero or {}).get("episodes"),
        "success_rate": (libero or {}).get("success_rate"),
        "success_ci_low": ci[0],
        "success_ci_high": ci[1],
        **speed_columns("libero_speedup", lib_speed.get(REFERENCE)),
        **speed_columns("libero_speedup_vs_depth", lib_speed.get(depth_ref)),
        **speed_columns(
            "libero_step_speedup", ((libero or {}).get("end_to_end") or {}).get(REFERENCE)
        ),
        "libero_decode_p50_ms": (libero or {}).get("latency_p50_ms"),
        "libero_main_only_p50_ms": (libero or {}).get("main_only_latency_p50_ms"),
        "libero_mean_accepted_layers": (libero or {}).get("mean_accepted_layers"),
        "paired_episodes": (paired or {}).get("n"),
        "paired_delta_vs_main_only": (paired or {}).get("delta"),
        "paired_ci_low": paired_ci[0],
        "paired_ci_high": paired_ci[1],
        "paired_p_mcnemar": (paired or {}).get("p_mcnemar"),
        "paired_delta_vs_own_main_only": (own or {}).get("delta"),
        "own_ci_low": own_ci[0],
        "own_ci_high": own_ci[1],
        "own_p_mcnemar": (own or {}).get("p_mcnemar"),
    }


def write_csv(rows: list[dict], path: Path) -> None:
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def _fmt(value, spec: str = ".2f", suffix: str = "") -> str:
    return "-" if not _finite(value) else f"{value:{spec}}{suffix}"


def markdown(rows: list[dict]) -> str:
    head = (
        "| setting | offline speedup vs main_only [95% CI] | vs main_only at its depth [95% CI] "
        f"| passes / GFLOPs per chunk | predicted {PREDICTED_ON} speedup (roofline, not measured) "
        f"| predicted {PREDICTED_ON} speedup at OpenVLA size (roofline, not measured) "
        "| action MSE | MSE vs main-only | decoded layers | accepted layers | offline frontier "
        "| LIBERO success [95% CI] | LIBERO speedup vs main_only [95% CI] "
        "| Δ success vs main-only, paired [95% CI] | McNemar p | Δ vs own main-only [95% CI] | McNemar p |"
    )
    lines = [head, "|" + "---|" * 17]
    for r in rows:
        success = (
            "-"
            if r["success_rate"] is None
            else f"{100 * r['success_rate']:.0f}% [{100 * r['success_ci_low']:.0f}, "
            f"{100 * r['success_ci_high']:.0f}] (n={r['libero_episodes']})"
        )
        depth = format_columns(r, "offline_speedup_vs_depth")
        if r["offline_speedup_vs_depth_reference"]:
            depth += f" vs {r['offline_speedup_vs_depth_reference']}"
        predicted, at_size = (
            _predicted(r, "predicted_gpu_speedup"),
            _predicted(r, "predicted_gpu_speedup_openvla_size"),
        )
        lines.append(
            f"| {r['name']} | {format_columns(r, 'offline_speedup')} | {depth} "
            f"| {_fmt(r['passes_per_chunk'], '.1f')} / {_fmt(r['gflops_per_chunk'], '.3f')} | {predicted} "
            f"| {at_size} "
            f"| {_fmt(r['action_mse'], '.4f')} "
            f"| {_fmt(r['action_mse_vs_main_only'], '.4f')} | {_fmt(r['mean_decoded_layers'], '.1f')} "
            f"| {_accepted(r)} | {'yes' if r['offline_frontier'] else ''} "
            f"| {success} | {format_columns(r, 'libero_speedup')} | {' | '.join(_paired(r))} "
            f"| {' | '.join(_paired(r, 'own'))} |"
        )
    return "\n".join(lines)


def _accepted(row: dict) -> str:
    """Mean accepted layers offline, and ``/ LIBERO`` beside when the point ran in LIBERO."""
    cell = _fmt(row["mean_accepted_layers"], ".2f")
    if _finite(row.get("libero_mean_accepted_layers")):
        cell += f" / {row['libero_mean_accepted_layers']:.2f}"
    return cell


def _predicted(row: dict, key: str) -> str:
    """A predicted speedup cell: against main-only, and against main-only at its depth when timed."""
    cell = _fmt(row[key], ".2f", "x")
    if _finite(row[f"{key}_vs_depth"]):
        cell += f" ({row[f'{key}_vs_depth']:.2f}x vs its depth)"
    return cell


def _paired(row: dict, against: str = "paired") -> tuple[str, str]:
    """(Δ [CI], McNemar p) of a row: ``paired`` (vs main-only) or ``own`` (vs its stack's)."""
    from rsdvla.evaluation.reports.paired import format_paired

    delta = "paired_delta_vs_main_only" if against == "paired" else "paired_delta_vs_own_main_only"
    if row.get(delta) is None:
        return "-", "-"
    entry = {
        "delta": row[delta],
        "delta_ci95": [row[f"{against}_ci_low"], row[f"{against}_ci_high"]],
        "p_mcnemar": row[f"{against}_p_mcnemar"],
    }
    return format_paired(entry)


def own_reference(cfg: DictConfig, name: str) -> str | None:
    """A stack setting's own main-only (``<stack>_main_only``), None for the quickstart stack's."""
    stack = stack_of(cfg, name)
    return None if stack is None else f"{stack}_main_only"


def paired_vs_main_only(
    cfg: DictConfig, name: str, libero: dict, reference: str | None = REFERENCE
) -> dict | None:
    """The LIBERO point ``name`` against ``reference``'s (default ``main_only``) on their shared
    planned episodes (None for the reference itself or when either point is missing; a refusal
    is logged and left out)."""
    from rsdvla.evaluation.libero.episodes import plan_episodes
    from rsdvla.evaluation.reports.compare import paired_against

    if reference is None or name == reference or name not in libero or reference not in libero:
        return None
    lib = cfg.frontier.libero
    plan = plan_episodes(
        str(lib.suite), [int(t) for t in lib.task_ids], int(lib.trials), int(lib.first_trial)
    )
    try:
        return paired_against(
            libero_summary_path(cfg, reference).parent,
            libero_summary_path(cfg, name).parent,
            only={spec.key for spec in plan},
        )
    except ValueError as err:
        log.warning("paired comparison of %s with %s left out: %s", name, reference, err)
        return None


def plot(rows: list[dict], path: Path) -> Path:
    """Two panels: LIBERO success (95% CI bars) vs LIBERO decoder speedup; offline action MSE vs speedup."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_s, ax_e) = plt.subplots(1, 2, figsize=(13, 5))
    for r in rows:
        if _finite(r["success_rate"]) and _finite(r["libero_speedup"]):
            low, high = (
                r["success_rate"] - r["success_ci_low"],
                r["success_ci_high"] - r["success_rate"],
            )
            ax_s.errorbar(
                r["libero_speedup"], r["success_rate"], yerr=[[low], [high]], fmt="o", capsize=3
            )
            ax_s.annotate(
                r["name"],
                (r["libero_speedup"], r["success_rate"]),
                textcoords="offset points",
                xytext=(4, 4),
                fontsize=7,
            )
        if _finite(r["offline_speedup"]) and _finite(r["action_mse"]):
            color = "tab:red" if r["offline_frontier"] else "tab:blue"
            ax_e.scatter(r["offline_speedup"], r["action_mse"], color=color)
            ax_e.annotate(
                r["name"],
                (r["offline_speedup"], r["action_mse"]),
                textcoords="offset points",
                xytext=(4, 4),
                fontsize=6,
            )
    ax_s.set_xlabel("decoder speedup vs main-only (LIBERO, batch 1, same inputs)")
    ax_s.set_ylabel("LIBERO success rate (95% Wilson CI)")
    ax_s.set_title("success vs speed")
    ax_e.set_xlabel("decoder speedup vs main-only (offline, held-out rows)")
    ax_e.set_ylabel("action MSE vs ground truth (normalized)")
    ax_e.set_yscale("log")
    ax_e.set_title("action error vs speed (red: offline frontier)")
    for ax in (ax_s, ax_e):
        ax.axvline(1.0, color="grey", lw=0.8, ls="--")
        ax.grid(alpha=0.3)
    fig.tight_layout()
    return save_figure(fig, path)


# ------------------------------------------------------------------------------------ run


def run_frontier(cfg: DictConfig) -> dict:
    """All stages; returns ``{"rows": [...], "csv": ..., "png": ..., "md": ...}``."""
    fr = cfg.frontier
    work = Path(fr.work_dir)
    work.mkdir(parents=True, exist_ok=True)
    OmegaConf.save(fr, work / "frontier.yaml")
    expand_stack_settings(cfg)
    names = chosen_settings(cfg)
    train_context_draft(cfg, names)
    train_stacks(cfg, names)
    offline = {name: run_offline_point(cfg, name) for name in names}
    rows = [row_for(n, offline[n], None, False) for n in names]
    on = frontier_flags([{"speedup": r["offline_speedup"], "error": r["action_mse"]} for r in rows])
    libero_names = choose_libero_points(rows, fr.libero) if fr.libero.enabled else []
    log.info("LIBERO points: %s", ", ".join(libero_names) or "none")
    qualities = {
        label: run_stack_quality(cfg, label, setting)
        for label, setting in quality_settings(cfg, names).items()
    }
    libero = {}
    for name in libero_names:
        libero[name] = run_libero_point(cfg, name, libero_identity(offline[name]))
        report(cfg, names, offline, libero, on, qualities)  # the table grows as points finish
    return report(cfg, names, offline, libero, on, qualities)


def report(cfg, names, offline, libero, on, qualities: dict | None = None) -> dict:
    fr = cfg.frontier
    work = Path(fr.work_dir)
    # LIBERO points from earlier runs of the same work_dir count too, when of this run's identity
    for name in names:
        if name not in libero:
            found = _read(libero_summary_path(cfg, name))
            if found and found.get("identity") == libero_identity(offline[name]):
                libero[name] = found
            elif found:
                log.warning(
                    "%s: of other settings or checkpoints, left out", libero_summary_path(cfg, name)
                )
    rows = [
        row_for(
            n,
            offline[n],
            libero.get(n),
            flag,
            paired_vs_main_only(cfg, n, libero),
            paired_vs_main_only(cfg, n, libero, own_reference(cfg, n)),
        )
        for n, flag in zip(names, on, strict=True)
    ]
    write_csv(rows, work / "frontier.csv")
    plot(rows, work / "frontier.png")
    table = markdown(rows)
    if qualities:
        table += "\n\n" + TOKENIZER_NOTE + "\n" + quality_table(qualities, rows)
    (work / "frontier.md").write_text(table + "\n")
    if fr.get("docs"):  # the figure and the CSV go beside the docs page, which links them
        docs = Path(fr.docs)
        for name in ("frontier.csv", "frontier.png"):
            shutil.copyfile(work / name, docs.parent / name)
        figure = "\n![speedup vs success and action error](frontier.png) (data: [frontier.csv](frontier.csv))\n"
        body = FRONTIER_NOTE.format(command=fr.command) + "\n" + table + "\n" + figure
        write_markdown_section(docs, SECTION, body, title="# Results")
    return {
        "rows": rows,
        "csv": str(work / "frontier.csv"),
        "png": str(work / "frontier.png"),
        "md": str(work / "frontier.md"),
    }


TOKENIZER_NOTE = """Per stack (tokenizer and its main and draft, `frontier.stacks`; `rfsq` is the
quickstart's), on 4096 of main's held-out rows: reconstruction MSE of the tokenizer from its first
layers; main's token accuracy teacher forced on the ground-truth codes; the share of rows where
the draft's whole layer equals main's greedy layer (what `exact` accepts), and for layer 0 the
share where main's layer is among the draft's 2 or 4 most probable layers (a draft tree).
"""

FRONTIER_NOTE = """Written by `{command}` (a rerun skips finished points). Offline: held-out rows of the
quickstart store at batch 1, one torch thread; each setting is timed in the same process as
greedy main-only, and a setting of truncated depth m also as `main_only_m<m>`, call by call on
the same rows in a rotating order (`rsdvla.decoding.timing`). Speedup = median reference call /
median call on the calling thread's CPU time (load on other cores moves it far less than wall
time), with a 95% percentile bootstrap interval that resamples 10 contiguous blocks of the
calls (1000 resamples, seeded): the drift of the machine between blocks is in the interval
(docs/benchmarks.md, "Speed under load"); wall-clock ratios are in frontier.csv beside them. `passes / GFLOPs per chunk`: sequential model passes and arithmetic
counted from the models' shapes and each call's acceptance (`rsdvla.decoding.cost`). The
predicted columns are roofline estimates for a GPU at batch 1, not measurements (formula in
docs/benchmarks.md): of the stack's own models in its precision, and of the same calls (the
measured acceptance) counted at the OpenVLA-OFT sizes of the models in bfloat16 (H = 4096, a
512-wide 6-layer main; `rsdvla.decoding.cost.at_openvla_size`). LIBERO: libero_object, all 10 tasks, initial states from
`frontier.libero.first_trial` on, success with 95% Wilson intervals; speedup measured on the
same hidden states as main-only, chunk by chunk, with its bootstrap interval over episodes.
`accepted layers`: offline / in LIBERO (closed loop, the policy's own states).
`offline frontier`: no other setting is at least as fast with a lower action error. Paired
columns: the same episodes (task, initial state, seed) under the setting and under main-only;
the success difference with Newcombe's paired 95% interval and McNemar's exact p
(`python -m rsdvla.evaluation.reports.compare <main_only> <setting>` prints the per-task table
and, when both runs timed main-only, the speed ratio beside it).
"""

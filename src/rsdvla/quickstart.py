"""``python quickstart.py``: the whole experiment on a CPU, stage by stage, resumable.

Each stage is the same command a user would type (``extract.py``, ``train.py``, ``evaluate.py``),
run as a subprocess with its own Hydra run directory under ``work_dir``. A stage whose output
already exists is skipped, so a killed quickstart continues where it stopped (the LIBERO runner
itself resumes inside a stage). The final table reads each evaluation's ``summary.json``.
"""

from __future__ import annotations

import hashlib
import logging
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from omegaconf import DictConfig

from rsdvla.evaluation.libero.workers import default_num_envs

log = logging.getLogger(__name__)
ROOT = Path(__file__).resolve().parents[2]


@dataclass
class Stage:
    name: str
    script: str
    overrides: list[str]
    reads_demos: bool = True  # its output depends on the demos' content (all but collect)


def plan(cfg: DictConfig) -> list[Stage]:
    """The quickstart's stages in order."""
    # published where evaluate.py looks by default; lineage (content hashes) refuses a mixed set
    data = [
        f"data.path={cfg.store}",
        f"data.name={cfg.data_name}",
        f"paths.artifacts_dir={cfg.artifacts_dir}",
    ]
    extra = cfg.get("extra") or {}
    decoders = active_decoders(cfg)
    stages = (
        [Stage("collect", "collect.py", list(cfg.collect), reads_demos=False)]
        if cfg.get("collect")
        else []
    )
    # overwrite=true: the stage runs only when its command or the demos changed (or force), and
    # then a finished store of other demos must be replaced, not refused
    extract = [f"demos={cfg.demos}", f"out={cfg.store}", "overwrite=true"]
    stages.append(Stage("extract", "extract.py", [*extract, *extra.get("extract", [])]))
    for model, overrides in cfg.train.items():
        stages.append(Stage(f"train_{model}", "train.py", [*overrides, *data]))
    for name, decoder in decoders.items():
        stages.append(Stage(f"offline_{name}", "evaluate.py", ["env=offline", *data, *decoder]))
    lib = cfg.libero
    libero = [
        f"env.suite={lib.suite}",
        f"env.task_ids=[{','.join(map(str, lib.task_ids))}]",
        f"trials={lib.trials}",
        f"env.first_trial={lib.first_trial}",
        f"env.num_envs={default_num_envs(lib.get('num_envs'))}",
    ]
    for name, decoder in decoders.items():
        stages.append(
            # eval.restart: a stage rerun with other settings (a changed command) starts over
            Stage(
                f"libero_{name}",
                "evaluate.py",
                [
                    "env=libero",
                    *data,
                    *libero,
                    *decoder,
                    *extra.get("libero", []),
                    "eval.restart=true",
                ],
            )
        )
    return stages


def active_decoders(cfg: DictConfig) -> dict:
    """``cfg.decoders`` without the ones an experiment switched off (set to null)."""
    return {name: overrides for name, overrides in cfg.decoders.items() if overrides is not None}


def demos_fingerprint(demos: str | Path) -> str:
    """SHA-256 over the demo files' names and bytes (a file or a folder of them); "" when absent."""
    root = Path(demos)
    files = sorted(p for p in root.rglob("*") if p.is_file()) if root.is_dir() else [root]
    digest = hashlib.sha256()
    for path in (p for p in files if p.exists()):
        digest.update(str(path.relative_to(root) if root.is_dir() else path.name).encode())
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest() if files and any(p.exists() for p in files) else ""


def run_stage(stage: Stage, work: Path, force: bool, demos: str = "") -> float:
    """Run one stage as a subprocess (output streamed); returns seconds spent (0 when skipped).

    A stage is done when its run directory holds the ``.done`` marker written after it succeeded
    with the same command and, for a stage that reads the demos, the same ``demos`` fingerprint
    (:func:`demos_fingerprint`); a stage whose command or demos changed runs again (recollected
    demos re-extract and retrain everything after them).
    """
    run_dir = work / stage.name
    marker = run_dir / ".done"
    cmd = [sys.executable, str(ROOT / stage.script), *stage.overrides, f"hydra.run.dir={run_dir}"]
    record = " ".join(cmd[1:]) + (f"\ndemos sha256 {demos}" if demos else "")
    if marker.exists() and not force:
        if marker.read_text().strip() == record:
            log.info("[%s] done already (%s): skipped", stage.name, marker)
            return 0.0
        log.info(
            "[%s] its command or demos changed since it ran (%s): running it again",
            stage.name,
            marker,
        )
    log.info("[%s] %s", stage.name, " ".join(cmd[1:]))
    start = time.perf_counter()
    result = subprocess.run(cmd, cwd=Path.cwd())
    if result.returncode != 0:
        raise RuntimeError(
            f"quickstart stage `{stage.name}` failed (exit {result.returncode}); rerun `python quickstart.py` to resume after fixing it"
        )
    run_dir.mkdir(parents=True, exist_ok=True)
    marker.write_text(record + "\n")
    return time.perf_counter() - start


def run(cfg: DictConfig) -> dict:
    work = Path(cfg.work_dir)
    work.mkdir(parents=True, exist_ok=True)
    timings = {}
    demos = None  # hashed once, at the first stage that reads the demos (after collect wrote them)
    for stage in plan(cfg):
        if stage.reads_demos and demos is None:
            demos = demos_fingerprint(cfg.demos)
        timings[stage.name] = run_stage(stage, work, cfg.force, demos if stage.reads_demos else "")
    from rsdvla.evaluation.reports.aggregate import write_json_atomic
    from rsdvla.evaluation.reports.quickstart_report import report

    results = report(work, list(active_decoders(cfg)), timings)
    if cfg.get("smoke"):
        from rsdvla.evaluation.reports.quickstart_report import smoke_report

        results["smoke"] = smoke_report(work, cfg.store, timings)
    write_json_atomic(work / "results.json", results)
    return results

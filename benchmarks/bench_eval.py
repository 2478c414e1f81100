"""LIBERO evaluation throughput: episodes per hour and where the time goes, at N simulator workers.

    python benchmarks/bench_eval.py                                   # state and tiny, N = 1 2
    python benchmarks/bench_eval.py --num-envs 1 2 4 --trials 4       # more workers, more episodes
    python benchmarks/bench_eval.py --artifacts state=outputs/quickstart/artifacts   # trained stack
    python benchmarks/bench_eval.py --backbones openvla_oft --oft-checkpoint DIR --oft-hidden-dim 64 \
        --device cuda --num-envs 1 8 16 --section "## Evaluation throughput (GPU, tiny OpenVLA-OFT)"

For every backbone (``state``: no cameras; ``tiny``: two cameras; ``openvla_oft``: a local
checkpoint directory) and every ``N`` of ``--num-envs``, the same planned episodes (suite, task
ids, trials, ``max_steps``) run through ``LiberoRunner`` with ``env.num_envs=N`` and RSD into a
fresh directory, in this one process, one after the other. Per run: wall time, episodes per
hour, success with its 95% Wilson CI, and per-stage time: ``sim step`` (a worker's ``env.step``:
physics, and render + image pipeline with cameras), ``queue wait`` (per worker-step, the wait
for the slowest worker of the lockstep), ``policy`` (the batched backbone + decoder call, per
step of the run), ``backbone`` and ``decode`` (per chunk, from the episode records). ``same as
N=1``: the share of episodes whose record (success, steps, accepted layers per chunk) equals
the N=1 run's. Without ``--artifacts`` each backbone gets tiny untrained checkpoints of its
width (written by the tests' checkpoint helper), so success is ~0 and only time is meaningful.
Results go to stdout (markdown), ``--json`` and the ``## Evaluation throughput`` section of
docs/benchmarks.md (``--no-docs`` to leave it).
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
SECTION = "## Evaluation throughput"
JSON = ROOT / "benchmarks" / "results" / "bench_eval.json"
DOCS = ROOT / "docs" / "benchmarks.md"
CAMERAS = {"state": False, "tiny": True, "openvla_oft": True}


def compose(overrides: list[str], output_dir: Path):
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from omegaconf import open_dict

    with initialize_config_dir(version_base="1.3", config_dir=str(ROOT / "conf")):
        cfg = hydra_compose(config_name="evaluate", overrides=overrides)
    with open_dict(cfg):
        cfg.paths.output_dir = str(output_dir)
    return cfg


def checkpoints(args, backbone_name: str, backbone, work: Path) -> dict[str, str]:
    """``--artifacts NAME=DIR`` (tokenizer/main/draft.ckpt), else tiny untrained ones of the
    backbone's width and id."""
    given = dict(a.split("=", 1) for a in args.artifacts)
    if backbone_name in given:
        folder = Path(given[backbone_name])
        return {kind: str(folder / f"{kind}.ckpt") for kind in ("tokenizer", "main", "draft")}
    sys.path.insert(0, str(ROOT / "tests"))
    from helpers_ckpt import write_tiny_checkpoints

    paths = write_tiny_checkpoints(
        work / f"ckpt_{backbone_name}",
        int(backbone.hidden_dim),
        backbone=str(getattr(backbone, "backbone_id", backbone_name)),
    )
    return {kind: str(path) for kind, path in paths.items()}


def backbone_overrides(args, name: str) -> list[str]:
    out = [f"backbone={name}"]
    if name == "openvla_oft":
        if not args.oft_checkpoint:
            raise SystemExit(
                "--backbones openvla_oft needs --oft-checkpoint DIR (a local checkpoint)"
            )
        out += [f"backbone.checkpoint={args.oft_checkpoint}", f"backbone.device={args.device}"]
        if args.oft_hidden_dim:
            out.append(f"backbone.hidden_dim={args.oft_hidden_dim}")
    return out


def run_once(args, name: str, ckpts: dict, num_envs: int, work: Path) -> tuple[dict, list[dict]]:
    """One evaluation at ``num_envs`` workers -> (figures, its episode records)."""
    from omegaconf import open_dict

    from rsdvla.evaluation.libero.episodes import read_episode_file
    from rsdvla.evaluation.libero.runner import prepare_libero
    from rsdvla.evaluation.stack import load_stack

    out = work / f"{name}_n{num_envs}"
    overrides = [
        "env=libero",
        *backbone_overrides(args, name),
        f"decoder={args.decoder}",
        f"device={args.device}",
        f"env.suite={args.suite}",
        f"env.task_ids=[{','.join(map(str, args.task_ids))}]",
        f"env.max_steps={args.max_steps}",
        f"env.first_trial={args.first_trial}",
        f"env.cameras={str(CAMERAS[name]).lower()}",
        f"env.num_envs={num_envs}",
        f"trials={args.trials}",
    ]
    cfg = compose(overrides, out)
    with open_dict(cfg):
        cfg.ckpt = dict(ckpts)
    runner, policy, metadata, identity = prepare_libero(cfg, load_stack(cfg))
    start = time.perf_counter()
    summary = runner.run(policy, metadata, identity=identity)
    wall = time.perf_counter() - start
    records = read_episode_file(runner.episode_path)
    times = runner.stage_times

    def per(stage: str, count_stage: str | None = None) -> float | None:
        count = times.counts[count_stage or stage]
        return 1000.0 * times.seconds[stage] / count if count else None

    def chunk_ms(stage: str) -> float | None:
        values = [v for r in records for v in r["latency_ms"].get(stage, [])]
        return float(np.mean(values)) if values else None

    steps = sum(r["steps"] for r in records)
    figures = {
        "backbone": name,
        "num_envs": num_envs,
        "episodes": summary["episodes"],
        "errors": summary["errors"],
        "steps": steps,
        "wall_s": wall,
        "episodes_per_hour": 3600.0 * summary["episodes"] / wall,
        "success_rate": summary["success_rate"],
        "success_ci95": summary["success_ci95"],
        "sim_step_ms": per("sim_step"),
        "queue_wait_ms": per("queue_wait"),
        "policy_ms_per_step": 1000.0 * times.seconds["policy"] / max(steps, 1),
        "reset_ms": per("reset"),
        "backbone_ms_per_chunk": chunk_ms("backbone"),
        "decode_ms_per_chunk": chunk_ms("decode"),
        "chunks": sum(len(r["latency_ms"].get("decode", [])) for r in records),
    }
    return figures, records


def fingerprint(record: dict) -> tuple:
    return (record["success"], record["steps"], tuple(record.get("accepted_layers") or ()))


def markdown(rows: list[dict]) -> str:
    head = (
        "| backbone | N | episodes | wall (s) | episodes/h | vs N=1 | success [95% CI] | same as N=1 "
        "| sim step (ms) | queue wait (ms) | policy / step (ms) | backbone / chunk (ms) "
        "| decode / chunk (ms) |\n|---|---|---|---|---|---|---|---|---|---|---|---|---|"
    )

    def f(value, digits=1):
        return "-" if value is None else f"{value:.{digits}f}"

    lines = [head]
    for r in rows:
        low, high = r["success_ci95"]
        lines.append(
            f"| {r['backbone']} | {r['num_envs']} | {r['episodes']} | {f(r['wall_s'])} | "
            f"{f(r['episodes_per_hour'], 0)} | {f(r['speedup_vs_n1'], 2)}x | "
            f"{100 * (r['success_rate'] or 0):.0f}% [{100 * low:.0f}, {100 * high:.0f}] | "
            f"{100 * r['same_as_n1']:.0f}% | {f(r['sim_step_ms'], 2)} | {f(r['queue_wait_ms'], 2)} | "
            f"{f(r['policy_ms_per_step'], 2)} | {f(r['backbone_ms_per_chunk'], 2)} | "
            f"{f(r['decode_ms_per_chunk'], 2)} |"
        )
    return "\n".join(lines)


def main(argv=None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbones", nargs="+", default=["state", "tiny"], choices=list(CAMERAS))
    parser.add_argument("--num-envs", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--suite", default="libero_object")
    parser.add_argument("--task-ids", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--trials", type=int, default=2)
    parser.add_argument("--first-trial", type=int, default=25)
    parser.add_argument("--max-steps", type=int, default=80)
    parser.add_argument("--decoder", default="rsd")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument(
        "--artifacts", nargs="*", default=[], help="NAME=DIR of trained checkpoints"
    )
    parser.add_argument("--oft-checkpoint", help="local OpenVLA-OFT checkpoint dir (openvla_oft)")
    parser.add_argument("--oft-hidden-dim", type=int, help="its width (the tiny one: 64)")
    parser.add_argument("--work-dir", type=Path, help="run dirs (default: a temporary folder)")
    parser.add_argument("--docs", type=Path, default=DOCS)
    parser.add_argument("--section", default=SECTION)
    parser.add_argument("--json", type=Path, default=JSON)
    parser.add_argument("--no-docs", action="store_true")
    args = parser.parse_args(argv)
    if 1 not in args.num_envs:
        args.num_envs = [1, *args.num_envs]  # the reference every ratio is read against
    from rsdvla.evaluation.reports.aggregate import command_line

    command = command_line("benchmarks/bench_eval.py", argv)

    from rsdvla.cli import build

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        work = args.work_dir or Path(tmp)
        for name in args.backbones:
            cfg = compose(["env=libero", *backbone_overrides(args, name)], work / "probe")
            ckpts = checkpoints(args, name, build(cfg.backbone), work)
            reference = None
            for num_envs in sorted(set(args.num_envs)):
                figures, records = run_once(args, name, ckpts, num_envs, work)
                by_key = {(r["task_id"], r["trial"]): fingerprint(r) for r in records}
                if reference is None:
                    reference = (figures["episodes_per_hour"], by_key)
                same = [by_key.get(k) == v for k, v in reference[1].items()]
                figures["speedup_vs_n1"] = figures["episodes_per_hour"] / reference[0]
                figures["same_as_n1"] = float(np.mean(same)) if same else 0.0
                rows.append(figures)
                print(json.dumps(figures), flush=True)
    where = (
        f"{platform.machine()}, {torch.get_num_threads()} torch thread(s), torch {torch.__version__}, "
        f"device {args.device}"
        + (f" ({torch.cuda.get_device_name(0)})" if args.device == "cuda" else "")
    )
    table = markdown(rows)
    body = f"""Measured with `{command}` on {where}, {time.strftime("%Y-%m-%d")}.
{args.suite} tasks {args.task_ids}, {args.trials} trials each from initial state {args.first_trial},
at most {args.max_steps} policy steps, decoder `{args.decoder}`; checkpoints: {", ".join(args.artifacts) or "tiny untrained (time only)"}.
`sim step`: one worker's `env.step` (physics; with cameras also render and the image pipeline);
`queue wait`: per worker-step, the wait for the slowest worker; `policy / step`: the batched
backbone + decoder calls over the run's episode-steps; `backbone`/`decode`: per chunk (a batched
call). `same as N=1`: episodes whose success, steps and accepted layers per chunk equal N=1's.

{table}
"""
    print(body)
    if not args.no_docs:
        from rsdvla.evaluation.reports.aggregate import write_markdown_section

        write_markdown_section(args.docs, args.section, body, title="# Benchmarks")
        print(f"wrote the '{args.section}' section of {args.docs}")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(
        json.dumps({"command": command, "where": where, "rows": rows}, indent=2) + "\n"
    )
    return rows


if __name__ == "__main__":
    main()

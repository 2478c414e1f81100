"""Evaluate a decoder: ``python evaluate.py env=libero decoder=rsd trials=50`` or ``env=offline``."""

import sys

import hydra
from omegaconf import DictConfig

import rsdvla.evaluate
from rsdvla.cli import check_run_dir, one_line_errors


@hydra.main(version_base="1.3", config_path="conf", config_name="evaluate")
@one_line_errors
def main(cfg: DictConfig) -> float | None:
    metrics = rsdvla.evaluate.run(cfg)
    return metrics.get(cfg.get("optimized_metric"))


if __name__ == "__main__":
    check_run_dir(sys.argv[1:])  # a read-only hydra.run.dir: one line, not a Hydra traceback
    main()

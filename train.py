"""Train a tokenizer, main or draft model: ``python train.py model=main data=libero_hidden``."""

import sys

import hydra
from omegaconf import DictConfig

import rsdvla.train
from rsdvla.cli import check_run_dir, one_line_errors


@hydra.main(version_base="1.3", config_path="conf", config_name="train")
@one_line_errors
def main(cfg: DictConfig) -> float | None:
    metrics = rsdvla.train.run(cfg)
    return metrics.get(cfg.get("optimized_metric"))


if __name__ == "__main__":
    check_run_dir(sys.argv[1:])  # a read-only hydra.run.dir: one line, not a Hydra traceback
    main()

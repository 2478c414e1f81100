"""Train a tokenizer, main or draft model: ``python train.py model=main data=libero_hidden``."""

import hydra
from omegaconf import DictConfig

import rsdvla.train
from rsdvla.cli import one_line_errors


@hydra.main(version_base="1.3", config_path="conf", config_name="train")
@one_line_errors
def main(cfg: DictConfig) -> float | None:
    metrics = rsdvla.train.run(cfg)
    return metrics.get(cfg.get("optimized_metric"))


if __name__ == "__main__":
    main()

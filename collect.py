"""Collect scripted-expert demonstrations in LIBERO (config: conf/collect.yaml).

python collect.py suite=libero_object tasks=[0,1] episodes_per_task=5 cameras=false out=data/collected/libero_object
"""

import sys

import hydra
from omegaconf import DictConfig

from rsdvla.cli import check_run_dir, one_line_errors
from rsdvla.collect import run


@hydra.main(version_base="1.3", config_path="conf", config_name="collect")
@one_line_errors  # a bad setting: `error: <one line>` and exit 2, as the other entry points
def main(cfg: DictConfig):
    metrics = run(cfg)
    return metrics.get(cfg.optimized_metric) if cfg.get("optimized_metric") else None


if __name__ == "__main__":
    check_run_dir(sys.argv[1:])  # a read-only hydra.run.dir: one line, not a Hydra traceback
    main()

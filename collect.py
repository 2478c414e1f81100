"""Collect scripted-expert demonstrations in LIBERO (config: conf/collect.yaml).

python collect.py suite=libero_object tasks=[0,1] episodes_per_task=5 cameras=false out=data/collected/libero_object
"""

import hydra
from omegaconf import DictConfig

from rsdvla.collect import CollectConfigError, run


@hydra.main(version_base="1.3", config_path="conf", config_name="collect")
def main(cfg: DictConfig):
    try:
        metrics = run(cfg)
    except CollectConfigError as err:
        raise SystemExit(f"collect.py: {err}") from None
    return metrics.get(cfg.optimized_metric) if cfg.get("optimized_metric") else None


if __name__ == "__main__":
    main()

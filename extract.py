"""Extract backbone hidden states from LIBERO demos into a hidden-state store.

python extract.py backbone=state demos=data/sample/libero_object out=outputs/stores/libero_object_state.h5
python extract.py backbone=openvla_oft demos=/path/to/libero_spatial_no_noops out=/path/store.h5 batch_size=32
"""

import sys

import hydra
from omegaconf import DictConfig

from rsdvla.cli import check_run_dir, one_line_errors
from rsdvla.extract import run


@hydra.main(version_base="1.3", config_path="conf", config_name="extract")
@one_line_errors
def main(cfg: DictConfig):
    metrics = run(cfg)
    return metrics.get(cfg.optimized_metric) if cfg.get("optimized_metric") else None


if __name__ == "__main__":
    check_run_dir(sys.argv[1:])  # a read-only hydra.run.dir: one line, not a Hydra traceback
    main()

"""The whole loop on a CPU: ``python quickstart.py`` (see conf/quickstart.yaml)."""

import sys

import hydra
from omegaconf import DictConfig

import rsdvla.quickstart
from rsdvla.cli import check_run_dir, one_line_errors


@hydra.main(version_base="1.3", config_path="conf", config_name="quickstart")
@one_line_errors
def main(cfg: DictConfig) -> None:
    rsdvla.quickstart.run(cfg)


if __name__ == "__main__":
    check_run_dir(sys.argv[1:])  # a read-only hydra.run.dir: one line, not a Hydra traceback
    main()

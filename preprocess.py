"""Preprocess faces:  python preprocess.py input=<images or videos> output=<store dir> [template=<name>]"""

import hydra
from omegaconf import DictConfig

from swaplab.tasks.preprocess import preprocess


@hydra.main(version_base="1.3", config_path="conf", config_name="preprocess")
def main(cfg: DictConfig) -> None:
    preprocess(cfg)


if __name__ == "__main__":
    main()

"""Swap faces with a trained checkpoint:  python swap.py ckpt=<path> source=<img> target=<img or folder>"""

import hydra
from omegaconf import DictConfig

from swaplab.tasks.swap import swap


@hydra.main(version_base="1.3", config_path="conf", config_name="swap")
def main(cfg: DictConfig) -> None:
    swap(cfg)


if __name__ == "__main__":
    main()

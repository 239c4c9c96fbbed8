"""HEAR-Net's hard samples:  python hard_samples.py aei_ckpt=<FaceShifter checkpoint> output=<file> [data=...]"""

import hydra
from omegaconf import DictConfig

from swaplab.tasks.hard_samples import hard_samples


@hydra.main(version_base="1.3", config_path="conf", config_name="hard_samples")
def main(cfg: DictConfig) -> None:
    hard_samples(cfg)


if __name__ == "__main__":
    main()

"""Evaluate checkpoints:  python eval.py ckpt=<path> | ckpt=[a.ckpt,b.ckpt] evaluation=ffpp|synthetic"""

import hydra
from omegaconf import DictConfig

from swaplab.tasks.evaluate import evaluate


@hydra.main(version_base="1.3", config_path="conf", config_name="eval")
def main(cfg: DictConfig) -> None:
    evaluate(cfg)


if __name__ == "__main__":
    main()

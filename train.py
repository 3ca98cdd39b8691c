"""Train the two-stage pipeline with cross-validation: ``python train.py [overrides]``."""

import hydra
from omegaconf import DictConfig

from landslide.cli import run_command, train


@hydra.main(version_base="1.3", config_path="configs", config_name="train")
def main(cfg: DictConfig) -> float | None:
    return train(cfg)


if __name__ == "__main__":
    run_command(main, "train")

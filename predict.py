"""Predict a test set with a training run: ``python predict.py run_dir=<run> [data.root=...] [out=...]``."""

import hydra
from omegaconf import DictConfig

from landslide.cli import predict, run_command


@hydra.main(version_base="1.3", config_path="configs", config_name="predict")
def main(cfg: DictConfig) -> dict:
    return predict(cfg)


if __name__ == "__main__":
    run_command(main, "predict")

"""Map a scene with a training run: ``python map.py run_dir=<run> scene=<stack.tif> out=<map.tif> [...]``."""

import hydra
from omegaconf import DictConfig

from landslide.cli import make_map, run_command


@hydra.main(version_base="1.3", config_path="configs", config_name="map")
def main(cfg: DictConfig) -> dict:
    return make_map(cfg)


if __name__ == "__main__":
    run_command(main, "map")

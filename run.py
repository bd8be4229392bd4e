"""Filter-Map-Insights: visualise filters, feature maps and guided backprop of torchvision CNNs."""

import sys

import hydra
from omegaconf import DictConfig

from pipeline.config import register_configs

register_configs()  # every method's parameter defaults, from its Params dataclass, under its own key


@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def main(cfg: DictConfig) -> None:
    from pipeline.main import main as run_pipeline

    run_pipeline(cfg)


if __name__ == "__main__":
    main()
    from pipeline.main import exit_code

    sys.exit(exit_code())

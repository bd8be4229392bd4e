"""Filter-Map-Insights: visualise filters, feature maps and guided backprop of torchvision CNNs."""

import signal
import sys

import hydra
from omegaconf import DictConfig

from pipeline.config import listing_overrides, register_configs

register_configs()  # every method's parameter defaults, from its Params dataclass, under its own key


@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def main(cfg: DictConfig) -> int:
    from pipeline.main import main as run_pipeline

    return run_pipeline(cfg)


if __name__ == "__main__":
    from pipeline import door
    from pipeline.errors import UserError
    from pipeline.status import Interrupted, exit_code, keep_stop_handlers, late_stop

    listing = listing_overrides(sys.argv[1:])
    sys.argv += listing  # list_layers=true writes no output folder
    keep_stop_handlers()  # once a job starts, a stop during its report is noted too, and the report finished
    try:  # what Hydra would answer with a traceback or five lines and exit 1: one line, exit 2
        door.check_keys(sys.argv[1:])
        if not listing and not door.informational(sys.argv[1:]):
            door.check_folder(sys.argv[1:])
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
    try:
        main()
    except Interrupted as exc:  # a sweep stopped by a signal (the stopped job has said so in one line)
        if late_stop() is not None:  # the job had ended and said nothing of it (report=false)
            print(f"warning: stopped by {exc.name} after the job's work had ended", file=sys.stderr)
        sys.exit(exc.code)
    except KeyboardInterrupt:  # Ctrl-C before or between jobs: nothing was being written
        print("stopped by SIGINT", file=sys.stderr)
        sys.exit(130)
    signum = late_stop()
    if signum is not None:  # a stop after the job had ended, with no report callback to record it
        print(f"warning: stopped by {signal.Signals(signum).name} after the job's work had ended", file=sys.stderr)
        sys.exit(128 + signum)
    sys.exit(exit_code())

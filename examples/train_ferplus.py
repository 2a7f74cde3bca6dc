"""Train RAN-ResNet18 on FERPlus with the original recipe (examples/ferplus_resnet18.yaml).

    ran data ferplus --out data/ferplus ...
    accelerate launch examples/train_ferplus.py --data data/ferplus --output-dir runs/ferplus-ran18
    ran evaluate --model runs/ferplus-ran18/best --data data/ferplus --output-dir runs/ferplus-ran18/eval

Any `ran train` flag works here and overrides the YAML (e.g. --epochs 1 --region-size 112 for a try-out).
"""

from __future__ import annotations

import sys
from pathlib import Path

from ran.cli import run_main
from ran.cli.train import main

RECIPE = Path(__file__).resolve().with_name("ferplus_resnet18.yaml")

if __name__ == "__main__":
    argv = sys.argv[1:]
    if "--config" not in argv:
        argv = ["--config", str(RECIPE), *argv]
    sys.exit(run_main(main, argv, prog="train_ferplus.py"))

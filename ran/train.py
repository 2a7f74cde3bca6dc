"""``python -m ran.train`` / ``accelerate launch -m ran.train`` / ``torchrun -m ran.train``: ``ran train``
started by a launcher, which needs a module to run (see ``ran.cli.train``)."""

if __name__ == "__main__":
    from ran.cli import run_module
    from ran.cli.train import main

    run_module(main, "ran train")

"""Train the built-in PINN problem 'burgers'; print the relative L2 error and training time, write JSON + plot.

Usage: nice -n 10 python experiments/pinn_burgers.py [--steps N] [--seed S] [--out DIR] [--no-progress]
"""

import sys

from jaxhep.theory.pinn.cli import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:], problem="burgers"))

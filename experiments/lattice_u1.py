"""Reproduce the tutorial's u1 setup (Albergo et al., arXiv:2101.08176): flow + exact Metropolis vs HMC.

Usage: nice -n 10 python experiments/lattice_u1.py [--steps N] [--seed S] [--out DIR] [--no-progress] ...
Prints the flow-vs-HMC table and writes DIR/lattice_u1.json and DIR/lattice_u1.png
(options as for `jaxhep lattice u1`, see jaxhep/theory/lattice/cli.py).
"""

import sys

from jaxhep.theory.lattice.cli import main

if __name__ == "__main__":
    sys.exit(main(theory="u1"))

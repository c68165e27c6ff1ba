"""`python -m ulbench` (also what torchrun launches: `torchrun -m ulbench ...`)."""

from ulbench.cli import main

main()

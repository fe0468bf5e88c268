"""Whole commands as library functions: what a command does besides parsing and printing, so that the Python API
can do it too (``infer`` with its review page, ``bench`` with its FLOP count and this machine's description).

The layer sits under the command line and over everything else."""

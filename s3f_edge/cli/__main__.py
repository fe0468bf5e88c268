"""``python -m s3f_edge.cli``: the s3f-edge command."""
from s3f_edge.cli import main

main()

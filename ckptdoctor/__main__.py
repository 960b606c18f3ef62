"""``python -m ckptdoctor`` runs the command line."""

from ckptdoctor.cli import run

run()

"""qw-toyfile: an example qw backend storing each store in one locked JSON file."""

from qw_toyfile.backend import ToyFileBackend

__all__ = ["ToyFileBackend"]

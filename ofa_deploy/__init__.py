"""ofa-deploy: train, profile, search, export and benchmark Once-for-All subnets."""

__version__ = "0.1.0"

"""The `make bench` benchmark: see run.py for the method."""

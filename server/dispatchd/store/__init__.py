"""Durability behind a small interface: today the drain snapshot."""

"""Flower side of the histofed P2 round-overhead benchmark."""

"""Turning method results into pictures a person can read: normalisation, colour, tiles, labels, header."""

"""Tests of the ereps package."""

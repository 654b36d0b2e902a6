"""Tests of the workspace packages (one subpackage per package, plus typing contracts)."""

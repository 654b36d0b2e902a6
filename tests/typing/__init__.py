"""Typing contracts: what users of escnn, ereps, elayers and eregressors see under mypy --strict."""

"""Tests of the eregressors package."""

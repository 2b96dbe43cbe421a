"""Prompt text files and their loader."""

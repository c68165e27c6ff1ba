"""ulbench tests."""

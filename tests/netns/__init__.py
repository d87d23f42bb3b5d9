"""Network-namespace helpers for the deployment tests."""

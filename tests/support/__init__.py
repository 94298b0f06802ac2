"""Test support: real servers on real ports and real databases."""

"""Concepts: a dictionary learned over a layer's activations, each concept drawn beside its dataset
examples."""

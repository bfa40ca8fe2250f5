"""The node agent: each lifecycle step of a software release or partition in its own module."""

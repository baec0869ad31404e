"""Tools for the model: the Python sandbox (sandbox.py); the ReAct agent builds on it."""

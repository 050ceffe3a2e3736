"""The ``edge-ad`` command line.

Each ``*_cmd`` module registers a group of commands and imports only typer at import time: a command's
real modules (torch for ``train``, onnxruntime for ``run``) are imported inside its body, so ``edge-ad run``
on an edge box never loads the training stack.
"""

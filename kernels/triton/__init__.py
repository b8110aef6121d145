"""Triton kernels (primary GPU path), one file per kernel family: ``<family>.py``.

Imported lazily by ``gmcore.dispatch`` loaders; set ``TRITON_INTERPRET=1`` before import to
run them on the CPU (tests).
"""

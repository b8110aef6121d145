"""Python-DSL kernels of gmcore, shipped inside the wheel as ``gmcore.kernels``.

``gmcore.kernels.triton.<family>`` holds the Triton (GPU) kernels, ``gmcore.kernels.numba.<family>``
the numba (CPU) kernels. Each file has private kernels and plain launchers that take and return
arrays; ``gmcore.dispatch`` loads them lazily, so importing gmcore never imports triton or numba.
"""

"""ssmc: compile diagonal state-space models (S4D) from ONNX to Intel Loihi 2.

import ssmc
net = ssmc.compile("model.onnx")       # same pipeline as `ssmc compile`
net.save("net.lava"); net = ssmc.load("net.lava")
y = net.run(x)                          # x [batch, time, features]
"""

__version__ = "0.1.0"

from ssmc.errors import SsmcError  # noqa: E402

_API = {"Net", "compile", "load"}


def __getattr__(name):
    # The API pulls in onnx and onnxruntime; load it on first use so `ssmc --help` starts fast.
    if name in _API:
        from ssmc import api

        return getattr(api, name)
    raise AttributeError(f"module 'ssmc' has no attribute {name!r}")


__all__ = ["Net", "compile", "load", "SsmcError", "__version__"]

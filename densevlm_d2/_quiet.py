"""Imported first by ``densevlm_d2`` (and so by every tool, which imports it before detectron2).

fvcore, which detectron2's layers import, scripts its losses with ``torch.jit.script`` when it is
first imported; today's torch answers each with a ``FutureWarning`` that nobody running this project
can act on. Only that warning, raised from ``torch.jit`` for fvcore's import, is silenced.
"""

import warnings

warnings.filterwarnings(
    "ignore",
    message=r"`torch\.jit\.script` is deprecated",
    category=FutureWarning,
    module=r"torch\.jit\._script",
)

"""Categories of the datasets this project generates itself.

``DEMO_WORLD_CATEGORIES``: the small world that ``make demo`` writes (``demo/world.py``): six
"thing" shapes and five "stuff" textures, in the COCO panoptic ``categories`` format. Its
open-vocabulary detection split trains on four things and treats ``DEMO_WORLD_NOVEL_THINGS`` as
novel. The registration of the world's datasets (:mod:`.builtin`) needs these before the files
exist, so they live here rather than with the generator, which imports them.
"""

from __future__ import annotations

__all__ = ["DEMO_WORLD_CATEGORIES", "DEMO_WORLD_NOVEL_THINGS"]

_THINGS = (
    ("ball", [220, 20, 60]),
    ("box", [0, 0, 142]),
    ("tent", [119, 11, 32]),
    ("kite", [0, 60, 100]),
    ("ring", [250, 170, 30]),
    ("cross", [190, 153, 153]),
)
_STUFF = (
    ("sky", [135, 206, 235]),
    ("grass", [34, 139, 34]),
    ("water", [30, 90, 200]),
    ("wall", [150, 60, 40]),
    ("sand", [230, 200, 140]),
)
DEMO_WORLD_CATEGORIES = [
    {"id": i + 1, "name": n, "isthing": 1, "color": c} for i, (n, c) in enumerate(_THINGS)
] + [{"id": 101 + i, "name": n, "isthing": 0, "color": c} for i, (n, c) in enumerate(_STUFF)]
DEMO_WORLD_NOVEL_THINGS = ("ring", "cross")

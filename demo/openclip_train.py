"""``python -m demo.openclip_train <open_clip_train arguments>``: upstream open_clip's
training script with the demo's model configs (EVA02-Demo-16, ViT-MAP-Demo-16) registered."""

import sys

from open_clip_train.main import main

from demo import register  # noqa: F401  (registers EVA02-Demo-16 with open_clip)

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]) or 0)

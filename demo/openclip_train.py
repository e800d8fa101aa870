"""``python -m demo.openclip_train <open_clip_train arguments>``: upstream open_clip's
training script with this project's model configs (EVA02-Demo-16, ...) registered."""

import sys

import densevlm_d2  # noqa: F401  (registers the model configs with open_clip)

from open_clip_train.main import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]) or 0)

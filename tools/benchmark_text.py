#!/usr/bin/env python
"""Speed and memory of class embeddings for large vocabularies: names per second and peak memory.

    python tools/benchmark_text.py --model EVA02-CLIP-B-16 --names 1000
    python tools/benchmark_text.py --model EVA02-CLIP-B-16 --names 1000 --one-name-at-a-time

Names are the 316 COCO-Stuff + ADE20K classes, then numbered variants of them ("cat 17"), with the
63 published templates each; random weights (speed does not depend on them); no cache.
``--one-name-at-a-time`` measures the straightforward loop (one name's 63 prompts per forward, full
77-token context) for comparison. Peak memory: the peak RSS (the CUDA allocator peak on a GPU).
"""

import argparse
import json
import resource
import time

import torch
import torch.nn.functional as F

import densevlm_d2
from densevlm_d2.clip import Vocabulary
from densevlm_d2.clip.prompts import VILD_TEMPLATES, prompts
from densevlm_d2.clip.text import TextEmbedder


def vocabulary(n: int) -> list[str]:
    base = densevlm_d2.dataset_vocabulary("densevlm_coco_stuff_ade20k_316").names
    return [base[i % len(base)] + ("" if i < len(base) else f" {i // len(base)}") for i in range(n)]


@torch.no_grad()
def one_name_at_a_time(embedder: TextEmbedder, names: list[str]) -> torch.Tensor:
    rows = []
    for name in names:
        tokens = embedder.tokenizer(prompts(name, VILD_TEMPLATES))
        emb = F.normalize(embedder.model.encode_text(tokens).float(), dim=-1).mean(0)
        rows.append(F.normalize(emb, dim=0))
    return torch.stack(rows)


def main(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", default="EVA02-CLIP-B-16")
    parser.add_argument("--names", type=int, default=1000)
    parser.add_argument("--batch", type=int, default=256, help="prompts per forward")
    parser.add_argument("--one-name-at-a-time", action="store_true")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args(argv)

    model = densevlm_d2.build_clip_model(args.model).to(args.device)
    embedder = TextEmbedder(model, args.model, cache_dir=None, batch_size=args.batch)
    names = vocabulary(args.names)
    start = time.perf_counter()
    if args.one_name_at_a_time:
        emb = one_name_at_a_time(embedder, names)
    else:
        emb = embedder(Vocabulary(names=tuple(names)))
    seconds = time.perf_counter() - start
    if args.device.startswith("cuda"):
        peak = torch.cuda.max_memory_allocated() / 2**20
        where = "peak CUDA memory"
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        where = "peak RSS"
    result = {
        "model": args.model,
        "names": len(names),
        "method": "one name at a time" if args.one_name_at_a_time else "batched",
        "seconds": round(seconds, 2),
        "names_per_s": round(len(names) / seconds, 2),
        "peak_mib": round(peak),
        "memory": where,
        "threads": torch.get_num_threads(),
        "shape": list(emb.shape),
    }
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()

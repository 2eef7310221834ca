"""Hash the CUDA code (.cu and .h) of every candidate round the autotuner builds for a model, so
that two commits can be compared: equal hashes mean every candidate tile of every tunable layer
runs byte-identical code at both, and the tuning choices timed at one hold at the other (what
`scripts/ship_tuning.py --rekey` needs before it moves shipped choices to a new kernels'
digest, together with an unchanged `runtime/compile.py`, which holds nvcc's flags). It covers
the model, GPU and batches given; re-key only a database whose entries are those.

    python3 scripts/candidate_code.py --out new.json            # here, and in a worktree of
    python3 scripts/candidate_code.py --compare old.json new.json   # the older commit
"""
from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

ROOT = Path(__file__).resolve().parents[1]
CASES = (("fp32", (1, 32, 128)), ("fp16", (1, 32)))      # what the shipped database covers


def candidate_hashes(model: Path, gpu: str, sms: int) -> dict:
    from squeezegen import load_model
    from squeezegen.codegen.schedule import candidate_tiles, tunable
    from squeezegen.codegen.target import Target
    from squeezegen.passes import run_passes
    from squeezegen.runtime import autotune as at
    graph = load_model(model)
    fused = run_passes(graph)
    target = Target(gpu, "sm_90", sms)
    out = {}
    for precision, batches in CASES:
        for batch in batches:
            todo = {n.name: candidate_tiles(fused, n, batch, precision, target)
                    for n in fused.nodes if tunable(n, batch)}
            out[f"{precision} b{batch} candidates"] = {k: [str(t) for t in v]
                                                       for k, v in sorted(todo.items())}
            rounds = at.candidate_rounds(graph, batch, todo, precision=precision, target=target)
            for r, built in sorted(rounds.items()):
                digest = hashlib.sha256()
                for suffix in (".cu", ".h"):             # the kernels and the host API
                    text = built.output.files[f"{fused.name}{suffix}"]
                    digest.update(text if isinstance(text, bytes) else text.encode())
                out[f"{precision} b{batch} round {r}"] = digest.hexdigest()
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default=str(ROOT / "models" / "squeezeseg.yaml"))
    ap.add_argument("--gpu", default="NVIDIA H100 80GB HBM3")
    ap.add_argument("--sms", type=int, default=132)
    ap.add_argument("--out", help="write the hashes here (JSON)")
    ap.add_argument("--compare", nargs=2, metavar=("OLD", "NEW"),
                    help="compare two such files; exit 1 if any round differs")
    args = ap.parse_args(argv)
    if args.compare:
        (old, new) = (json.loads(Path(p).read_text())["hashes"] for p in args.compare)
        differ = sorted(k for k in old.keys() | new.keys() if old.get(k) != new.get(k))
        rounds = sum(1 for k in new if " round " in k)
        print(f"{rounds} candidate rounds compared: "
              + ("all byte-identical" if not differ else f"{len(differ)} differ: {differ[:5]}"))
        return 1 if differ else 0
    from squeezegen.runtime.autotune import kernels_digest
    data = {"kernels_digest": kernels_digest(), "model": Path(args.model).name, "gpu": args.gpu,
            "hashes": candidate_hashes(Path(args.model), args.gpu, args.sms)}
    text = json.dumps(data, indent=1) + "\n"
    if args.out:
        Path(args.out).write_text(text)
    else:
        sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())

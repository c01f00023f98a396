"""The ``adapterscope`` command (installed by ``pip install -e .`` / ``make venv`` as ``.venv/bin/adapterscope``).

    adapterscope audit --base smollm2-135m --adapter path/to/peft_adapter_dir [--text file:notes.txt]
                       [--tokens 4096] [--device cuda] [--out report/]
    adapterscope reference                 # record data/reference/audit_reference.json from results/

Exit codes: 0 done, 2 bad input (one line naming the fix; nothing written), 1 anything else.
"""

from __future__ import annotations

import argparse
import sys


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="adapterscope", description="What a LoRA adapter changes inside a model.")
    sub = ap.add_subparsers(dest="cmd", required=True)
    a = sub.add_parser("audit", help="two-axis audit of a (base model, peft LoRA adapter) pair",
                       description="Measure the output axis (KL, top-1 agreement) and the internal axis (per-layer "
                       "CKA displacement, depth profile, crosscoders at two or more depths) of one adapter, place "
                       "each number against this project's reference adapters of the same base, and write "
                       "audit.json + a self-contained audit.html. Runs in a few minutes on 2 CPU cores for "
                       "SmolLM2-135M at the default --tokens.")
    a.add_argument("--base", required=True, help="embedded name (smollm2-135m, gemma3-270m), a local HF model "
                   "directory, or a hub id (with ADAPTERSCOPE_ALLOW_HUB=1)")
    a.add_argument("--adapter", required=True, help="a peft LoRA directory (adapter_config.json + "
                   "adapter_model.safetensors), trained by this project or not")
    a.add_argument("--text", default=None, help="also measure the output axis on this text: a corpus name, "
                   "file:PATH (.txt/.jsonl/.json), url:URL or hf:NAME (default: base-model samples only)")
    a.add_argument("--tokens", type=int, default=4096, help="token budget of the paired pass (default 4096): "
                   "the grid's 32 x 64 neutral base-model rows, then the rest as --text rows or, without --text, "
                   "more base-model samples for the internal axis; at least 2048")
    a.add_argument("--seq-len", type=int, default=64, help="tokens per row (default 64)")
    a.add_argument("--depths", type=float, nargs="+", default=[0.4, 0.9], help="relative depths of the "
                   "crosscoders, at least two (default 0.4 0.9, as in the reference grid)")
    a.add_argument("--device", default="cpu", help="cpu | cuda | cuda:N")
    a.add_argument("--seed", type=int, default=0)
    a.add_argument("--epochs", type=int, default=8, help="crosscoder passes over the training tokens")
    a.add_argument("--out", default="report", help="output folder (replaced atomically; default report/)")
    a.add_argument("--no-progress", action="store_true", help="no tqdm bars")
    r = sub.add_parser("reference", help="record the audit reference of the grid's adapters from results/")
    r.add_argument("--models", nargs="+", default=["smollm2-135m", "gemma3-270m"])
    return ap


def main(argv: list[str] | None = None) -> int:
    a = _parser().parse_args(argv)
    from . import audit, corpora, finetune, models

    try:
        if a.cmd == "audit":
            audit.run_audit(a.base, a.adapter, a.out, text=a.text, tokens=a.tokens, seq_len=a.seq_len,
                            depths=a.depths, device=a.device, seed=a.seed, epochs=a.epochs,
                            progress=not a.no_progress)
        else:
            print(audit.write_reference(a.models))
    except (audit.AuditError, models.ModelError, corpora.CorpusError, finetune.FinetuneError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())

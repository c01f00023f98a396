"""The ``adapterscope`` command (installed by ``pip install -e .`` / ``make venv`` as ``.venv/bin/adapterscope``).

    adapterscope audit --base smollm2-135m --adapter path/to/peft_adapter_dir [--text file:notes.txt]
                       [--tokens 4096] [--device cuda] [--out report/]
    adapterscope reference                 # record data/reference/audit_reference.json from results/

Exit codes: 0 done, 2 bad input (one line naming the fix; nothing written), 130 interrupted (Ctrl-C or SIGTERM;
nothing written), 1 anything else (one line; ``ADAPTERSCOPE_DEBUG=1`` shows the traceback).
"""

from __future__ import annotations

import argparse
import os
import signal
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
                   "file:PATH (.txt/.jsonl/.json), url:URL or hf:NAME (default: base-model samples only); only the "
                   "first rows the token budget takes are read")
    a.add_argument("--tokens", type=int, default=4096, help="token budget of the paired pass (default 4096): "
                   "the grid's 32 x 64 neutral base-model rows, then the rest as --text rows or, without --text, "
                   "more base-model samples for the internal axis; 2048 to 262144 (the top is about an hour on "
                   "2 CPU cores for SmolLM2-135M)")
    a.add_argument("--seq-len", type=int, default=64, help="tokens per row (default 64)")
    a.add_argument("--depths", type=float, nargs="+", default=[0.4, 0.9], help="relative depths of the "
                   "crosscoders, at least two (default 0.4 0.9, as in the reference grid)")
    a.add_argument("--device", default="cpu", help="cpu | cuda | cuda:N")
    a.add_argument("--seed", type=int, default=0)
    a.add_argument("--epochs", type=int, default=8, help="crosscoder passes over the training tokens")
    a.add_argument("--out", default="report", help="output folder (default report/): absent, empty, or a report "
                   "an earlier audit wrote (replaced atomically); a folder holding anything else is refused")
    a.add_argument("--no-progress", action="store_true", help="no tqdm bars")
    r = sub.add_parser("reference", help="record the audit reference of the grid's adapters from results/")
    r.add_argument("--models", nargs="+", default=["smollm2-135m", "gemma3-270m"])
    return ap


def _interrupt(signum, frame):  # SIGTERM unwinds like Ctrl-C, so atomic writes remove their temporaries
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    a = _parser().parse_args(argv)
    from . import audit, corpora, finetune, models
    from .audit_inputs import safe

    import threading

    main_thread = threading.current_thread() is threading.main_thread()
    old = signal.signal(signal.SIGTERM, _interrupt) if main_thread else None
    try:
        if a.cmd == "audit":
            audit.run_audit(a.base, a.adapter, a.out, text=a.text, tokens=a.tokens, seq_len=a.seq_len,
                            depths=a.depths, device=a.device, seed=a.seed, epochs=a.epochs,
                            progress=not a.no_progress, log=lambda s: print(s, flush=True))
        else:
            print(audit.write_reference(a.models))
    except (audit.AuditError, models.ModelError, corpora.CorpusError, finetune.FinetuneError) as e:
        print(f"error: {safe(e)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("error: interrupted; no report was written (an earlier report, if any, is unchanged)", file=sys.stderr)
        return 130
    except MemoryError:
        print("error: out of memory; lower --tokens or run on a machine with more memory", file=sys.stderr)
        return 1
    except Exception as e:  # noqa: BLE001 -- one line, not a traceback; the debug switch shows it
        if os.environ.get("ADAPTERSCOPE_DEBUG"):
            raise
        print(f"error: {type(e).__name__}: {safe(e)[:500]} (an internal error, not your input: rerun with "
              "ADAPTERSCOPE_DEBUG=1 for the traceback and report it)", file=sys.stderr)
        return 1
    finally:
        if main_thread:
            signal.signal(signal.SIGTERM, old)
    return 0


if __name__ == "__main__":
    sys.exit(main())

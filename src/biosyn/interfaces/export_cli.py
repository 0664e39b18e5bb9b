"""`biosyn export`: a model's encoder as ONNX, so inference runs without torch (`encoders.onnx`)."""

from __future__ import annotations

import argparse
import time


def add_export_parser(sub) -> None:
    p = sub.add_parser("export", help="export a model's encoder to ONNX for torch-free inference (--backend onnx)",
                       description="Writes model.onnx (and model.int8.onnx with --int8) and biosyn_onnx.json beside the "
                                   "model's weights; a folder that cannot be written (the packaged MiniLM) gets its "
                                   "export under $BIOSYN_CACHE/onnx. Needs torch. The export is checked against torch "
                                   "on a few names.")
    p.add_argument("model", nargs="?", help="'minilm', a biosyn model folder, a released BioSyn checkpoint, a "
                                            "transformers folder, or a disease tagger folder (default: as the other commands)")
    p.add_argument("--int8", action="store_true", help="also write int8 weights (dynamic quantisation; --backend onnx-int8)")
    p.add_argument("--output", help="folder to write into instead (found only when it is the model folder or the cache)")
    p.add_argument("--force", action="store_true", help="export again even when a current export exists")


def cmd_export(args: argparse.Namespace) -> int:
    from ..encoders.onnx import INT8_SCHEME, Backend, StaleExportError, cache_folder, export, find_export, int8_scheme, read_sidecar
    from ..model.specs import load_model, model_folder
    from ..ner.tagger import CONFIG_FILE as TAGGER_CONFIG, DiseaseTagger

    started = time.perf_counter()
    folder = model_folder(args.model)
    if not args.force and not args.output:
        try:
            current = find_export(folder, Backend.ONNX_INT8 if args.int8 else Backend.ONNX)
        except StaleExportError:
            current = None
        older_int8 = current is not None and args.int8 and int8_scheme(read_sidecar(current) or {}) != INT8_SCHEME
        if current is not None and not older_int8:
            print(f"the export in {current} is current (--force to export again)")
            return 0
    if (folder / TAGGER_CONFIG).is_file():
        where = DiseaseTagger.from_pretrained(folder, backend="torch").export_onnx(folder, int8=args.int8, output=args.output)
        print(f"exported the tagger {folder} to {where} in {time.perf_counter() - started:.1f} s")
        return 0
    model = load_model(args.model, backend="torch")
    assert model.fingerprint is not None  # model_folder refused the sparse model
    # The packaged MiniLM lives in site-packages, which may be read-only or shared: its export goes to the cache.
    output = args.output or (cache_folder(folder) if model.spec == "minilm" else None)
    where = export(model.encoder, folder, fingerprint=model.fingerprint, similarity=model.similarity, int8=args.int8,
                   output=output)
    print(f"exported {model.spec} (fingerprint {model.fingerprint}) to {where} in {time.perf_counter() - started:.1f} s")
    return 0


COMMANDS = {"export": cmd_export}

"""One digest of everything `radflow anonymize` writes for fixed inputs, to compare two trees.

Usage: python bench/deid_identity.py [--root PATH] [--ct-slices 120]

Runs `anonymize_tree` (1 and 2 processes) with a fixed secret on pydicom's test and charset
files and on scanner-like CT slices (`radflow.synth_ct`, explicit and implicit VR), and prints
the sha256 of every output file, every quarantine record and each summary line, then one
digest of them all. `--root` imports radflow from another tree (for example a `git archive`
of an older commit): equal digests mean byte-identical outputs and identical records.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib
import shutil
import sys
import tempfile
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SECRET = b"radflow-identity-secret-0123456789abcdef"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", type=Path, default=ROOT, help="the radflow tree to run")
    parser.add_argument("--ct-slices", type=int, default=120, help="explicit VR CT slices")
    parser.add_argument(
        "--lines", action="store_true", help="print every line, not only the digest"
    )
    args = parser.parse_args(argv)
    warnings.filterwarnings("ignore")
    import pydicom

    # The corpora come from this tree's generator, the de-identification from --root's.
    from radflow.synth_ct import write_ct_slices

    work = Path(tempfile.mkdtemp(prefix="radflow-deid-identity-"))
    try:
        data = Path(pydicom.__file__).parent / "data"
        corpora = {"pydicom": work / "pydicom", "ct": work / "ct", "ct-implicit": work / "cti"}
        for folder in ("test_files", "charset_files"):
            for path in sorted((data / folder).rglob("*")):
                if path.is_file():
                    copy = corpora["pydicom"] / folder / path.relative_to(data / folder)
                    copy.parent.mkdir(parents=True, exist_ok=True)
                    shutil.copyfile(path, copy)
        write_ct_slices(corpora["ct"], args.ct_slices, per_series=40)
        write_ct_slices(corpora["ct-implicit"], 20, per_series=10, implicit_vr=True, seed=3)

        for name in [m for m in sys.modules if m == "radflow" or m.startswith("radflow.")]:
            del sys.modules[name]
        sys.path.insert(0, str(args.root.resolve()))
        batch = importlib.import_module("radflow.dicom.batch")
        deid = importlib.import_module("radflow.dicom.deid")
        config = deid.DeidConfig(secret=SECRET)
        lines = []
        for name, src in corpora.items():
            for processes in (1, 2):
                out = work / f"out-{name}-{processes}"
                summary = batch.anonymize_tree(src, out, config, processes)
                for path in sorted(out.rglob("*")):
                    if path.is_file():
                        digest = hashlib.sha256(path.read_bytes()).hexdigest()
                        lines.append(f"{name} {processes} {path.relative_to(out)} {digest}")
                records = sorted(q.model_dump_json() for q in summary.quarantined)
                lines.append(f"{name} {processes} {summary.line()} {records}")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(f"radflow from {Path(batch.__file__).parents[2]}")
    if args.lines:
        print("\n".join(lines))
    text = "\n".join(lines)
    print(f"{len(lines)} lines, digest {hashlib.sha256(text.encode()).hexdigest()}")


if __name__ == "__main__":
    main()

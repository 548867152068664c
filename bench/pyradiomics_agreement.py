"""Agreement of radflow's features with pyradiomics' published baseline on its five cases.

Usage: python bench/pyradiomics_agreement.py   (after `make test-data`)

Prints a markdown table: for each case and feature class, the largest relative difference
|radflow - pyradiomics| / |pyradiomics| over the class's default features, and the feature
where it occurs. Settings come from the baseline's own configuration row (binWidth 25,
voxelArrayShift 2000, label 1, no resampling); tests/support/agreement.py does the work, as
for tests/unit/features/test_pyradiomics_agreement.py.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from support.agreement import CLASSES, radflow_case, relative_differences  # noqa: E402
from support.realdata import CASES  # noqa: E402

#: Shape features from the mesh's area and enclosed volume, which depend on how each cube is
#: triangulated (see radflow/features/shape.py); the column "shape, other" leaves them out.
MESH = {"MeshVolume", "SurfaceArea", "SurfaceVolumeRatio", "Sphericity"}


def _worst(differences: dict[str, float]) -> str:
    name, worst = max(differences.items(), key=lambda item: item[1])
    return f"{worst:.1e} ({name.split('_', 2)[2]})"


def main() -> None:
    columns = [CLASSES[0], CLASSES[1], "shape, other", *CLASSES[2:]]
    print("| case | voxels | " + " | ".join(columns) + " |")
    print("| --- | ---: | " + " | ".join("---" for _ in columns) + " |")
    started = time.perf_counter()
    for case in CASES:
        result = radflow_case(case)
        cells = []
        for feature_class in CLASSES:
            differences = relative_differences(result, feature_class)
            cells.append(_worst(differences))
            if feature_class == "shape":
                other = {k: v for k, v in differences.items() if k.split("_", 2)[2] not in MESH}
                cells.append(_worst(other))
        print(f"| {case} | {result.voxels} | " + " | ".join(cells) + " |")
    print(f"\n{len(CASES)} cases in {time.perf_counter() - started:.1f} s")


if __name__ == "__main__":
    main()

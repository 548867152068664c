"""GLSZM, GLDM and NGTDM features (radflow.features.zones).

Three kinds of checks:

* matrices counted by hand on tiny ROIs, entry by entry;
* invariants and brute-force cross-checks on random small ROIs (hypothesis);
* the IBSI digital phantom (IBSI reference manual, "Reference data sets"; 5 x 4 x 4 voxels,
  2 mm, 74 ROI voxels): its published 3-D GLSZM, NGLDM and NGTDM matrices, and the published
  3-D ("dig. phantom, 3D") benchmark values of every feature whose definition matches.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import SimpleITK as sitk
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from radflow.features.zones import (
    dependence_map,
    gldm_features,
    gldm_matrix,
    glszm_features,
    glszm_matrix,
    ngtdm_features,
    ngtdm_matrix,
    zone_features,
)

# ------------------------------------------------------------------------------- helpers


def _image_pair(values: np.ndarray, inside: np.ndarray) -> tuple[sitk.Image, sitk.Image]:
    image = sitk.GetImageFromArray(np.asarray(values, dtype=np.float64))
    image.SetSpacing((2.0, 2.0, 2.0))
    mask = sitk.GetImageFromArray(np.asarray(inside, dtype=np.uint8))
    mask.CopyInformation(image)
    return image, mask


def _entries(matrix: np.ndarray) -> dict[tuple[int, int], int]:
    """Non-zero entries as {(grey level, size or dependence): count}, both 1-based."""
    return {
        (int(i) + 1, int(j) + 1): int(matrix[i, j])
        for i, j in zip(*np.nonzero(matrix), strict=True)
    }


_NEIGHBOURS = [o for o in itertools.product((-1, 0, 1), repeat=3) if o != (0, 0, 0)]


def _inside(levels: np.ndarray, voxel: tuple[int, ...]) -> bool:
    return all(0 <= c < n for c, n in zip(voxel, levels.shape, strict=True)) and levels[voxel] > 0


def _brute_zones(levels: np.ndarray) -> dict[tuple[int, int], int]:
    """Size zones by flood fill, voxel by voxel (the slow, obvious way)."""
    seen = np.zeros(levels.shape, dtype=bool)
    zones: dict[tuple[int, int], int] = {}
    for start in zip(*np.nonzero(levels), strict=True):
        if seen[start]:
            continue
        grey, size, stack = levels[start], 0, [start]
        seen[start] = True
        while stack:
            voxel = stack.pop()
            size += 1
            for offset in _NEIGHBOURS:
                nb = tuple(c + o for c, o in zip(voxel, offset, strict=True))
                if _inside(levels, nb) and not seen[nb] and levels[nb] == grey:
                    seen[nb] = True
                    stack.append(nb)
        key = (int(grey), size)
        zones[key] = zones.get(key, 0) + 1
    return zones


def _brute_dependence(levels: np.ndarray) -> dict[tuple[int, int], int]:
    counts: dict[tuple[int, int], int] = {}
    for voxel in zip(*np.nonzero(levels), strict=True):
        dep = 1 + sum(
            1
            for offset in _NEIGHBOURS
            if _inside(levels, nb := tuple(c + o for c, o in zip(voxel, offset, strict=True)))
            and levels[nb] == levels[voxel]
        )
        key = (int(levels[voxel]), dep)
        counts[key] = counts.get(key, 0) + 1
    return counts


def _brute_ngtdm(levels: np.ndarray, n_levels: int) -> tuple[np.ndarray, np.ndarray]:
    n = np.zeros(n_levels)
    s = np.zeros(n_levels)
    for voxel in zip(*np.nonzero(levels), strict=True):
        nbs = [
            levels[nb]
            for offset in _NEIGHBOURS
            if _inside(levels, nb := tuple(c + o for c, o in zip(voxel, offset, strict=True)))
        ]
        if nbs:
            g = levels[voxel]
            n[g - 1] += 1
            s[g - 1] += abs(g - sum(nbs) / len(nbs))
    return n, s


# ------------------------------------------------------------------ hand-computed matrices

# A 3 x 3 x 1 ROI with two grey levels. In-plane 4-connectivity would split both levels in
# two; with 26-connectivity (8 in one slice) the diagonal contacts (1,0)-(2,1) for level 1 and
# (1,1)-(2,0) for level 2 join them: one zone of 5 voxels and one of 4.
_TWO_LEVELS = np.array([[[1, 1, 2], [1, 2, 2], [2, 1, 1]]])


def test_glszm_two_levels_by_hand() -> None:
    matrix = glszm_matrix(_TWO_LEVELS, 2)
    assert matrix.shape == (2, 5)
    assert _entries(matrix) == {(1, 5): 1, (2, 4): 1}


def test_glszm_line_of_zones_by_hand() -> None:
    # 1 1 2 1 2 along x: level 1 -> zones of 2 and 1; level 2 -> two zones of 1.
    matrix = glszm_matrix(np.array([[[1, 1, 2, 1, 2]]]), 2)
    np.testing.assert_array_equal(matrix, [[1, 1], [2, 0]])


def test_glszm_diagonal_checkerboard_is_two_zones() -> None:
    # 2 x 2 x 2, levels by parity: the 4 voxels of each level touch only at edges and corners,
    # which 26-connectivity links: one zone of 4 per level.
    z, y, x = np.indices((2, 2, 2))
    levels = 1 + (z + y + x) % 2
    np.testing.assert_array_equal(glszm_matrix(levels, 2), [[0, 0, 0, 1], [0, 0, 0, 1]])


def test_glszm_respects_the_roi_and_absent_levels() -> None:
    # Voxels outside the ROI (0) join nothing: the two 3s are not neighbours, so they are two
    # zones of 1. Level 2 is absent and leaves a zero row.
    levels = np.array([[[1, 1, 0, 3], [3, 0, 0, 0]]])
    matrix = glszm_matrix(levels, 3)
    assert _entries(matrix) == {(1, 2): 1, (3, 1): 2}
    assert not matrix[1].any()


@pytest.mark.parametrize("shape", [(1, 1, 1), (1, 3, 3), (2, 2, 2), (3, 4, 5)])
def test_uniform_roi_is_one_zone(shape: tuple[int, int, int]) -> None:
    n = math.prod(shape)
    levels = np.full(shape, 1)
    matrix = glszm_matrix(levels, 1)
    assert _entries(matrix) == {(1, n): 1}
    f = glszm_features(matrix)
    assert f["original_glszm_ZonePercentage"] == pytest.approx(1 / n)
    assert f["original_glszm_SmallAreaEmphasis"] == pytest.approx(1 / n**2)
    assert f["original_glszm_LargeAreaEmphasis"] == pytest.approx(n**2)
    assert f["original_glszm_ZoneEntropy"] == pytest.approx(0.0, abs=1e-12)
    assert f["original_glszm_GrayLevelVariance"] == 0.0
    assert f["original_glszm_ZoneVariance"] == 0.0


def test_gldm_two_levels_by_hand() -> None:
    # Dependence = 1 (the voxel) + equal-level neighbours among its 8 in-plane ones:
    #   level 1 at (0,0) (0,1) (1,0) (2,1) (2,2): 3 3 4 3 2
    #   level 2 at (0,2) (1,1) (1,2) (2,0):       3 4 3 2
    np.testing.assert_array_equal(
        dependence_map(_TWO_LEVELS, 2)[0], [[3, 3, 3], [4, 4, 3], [2, 3, 2]]
    )
    np.testing.assert_array_equal(gldm_matrix(_TWO_LEVELS, 2), [[0, 1, 3, 1], [0, 1, 2, 1]])


def test_gldm_uniform_block_counts_the_centre_voxel() -> None:
    levels = np.ones((3, 3, 3), dtype=np.int64)
    dep = dependence_map(levels, 1)
    assert dep[1, 1, 1] == 27  # all 26 neighbours + itself
    assert dep[0, 0, 0] == dep[2, 2, 2] == 8  # corners: 7 neighbours + itself
    assert dep[0, 0, 1] == 12  # edge centres
    assert dep[0, 1, 1] == 18  # face centres
    matrix = gldm_matrix(levels, 1)
    assert matrix.shape == (1, 27)
    assert _entries(matrix) == {(1, 8): 8, (1, 12): 12, (1, 18): 6, (1, 27): 1}
    f = gldm_features(matrix)
    assert f["original_gldm_DependenceNonUniformityNormalized"] == pytest.approx(
        (8**2 + 12**2 + 6**2 + 1**2) / 27**2
    )
    assert f["original_gldm_SmallDependenceEmphasis"] == pytest.approx(
        (8 / 8**2 + 12 / 12**2 + 6 / 18**2 + 1 / 27**2) / 27
    )
    assert f["original_gldm_GrayLevelVariance"] == 0.0


def test_gldm_lone_voxel_has_dependence_one() -> None:
    levels = np.array([[[2, 0, 1]]])
    np.testing.assert_array_equal(gldm_matrix(levels, 2), [[1], [1]])


def test_ngtdm_by_hand() -> None:
    # 1 2 3 along x: neighbour means 2, 2, 2 -> |1-2| = 1, |2-2| = 0, |3-2| = 1.
    n, s = ngtdm_matrix(np.array([[[1, 2, 3]]]), 3)
    np.testing.assert_array_equal(n, [1, 1, 1])
    np.testing.assert_allclose(s, [1, 0, 1])
    # A voxel with no ROI neighbour has no neighbourhood: it is left out of n and s.
    n, s = ngtdm_matrix(np.array([[[1, 2, 0, 0, 3]]]), 3)
    np.testing.assert_array_equal(n, [1, 1, 0])
    np.testing.assert_allclose(s, [1, 1, 0])
    # 2 x 2 x 1 block: the 1 sees (2, 2, 2) -> 1; each 2 sees (1, 2, 2) -> 1/3.
    n, s = ngtdm_matrix(np.array([[[1, 2], [2, 2]]]), 2)
    np.testing.assert_array_equal(n, [1, 3])
    np.testing.assert_allclose(s, [1, 1])


def test_ngtdm_flat_roi_follows_pyradiomics_guards() -> None:
    f = ngtdm_features(*ngtdm_matrix(np.ones((3, 3, 3), dtype=np.int64), 1))
    assert f["original_ngtdm_Coarseness"] == 1e6
    assert f["original_ngtdm_Contrast"] == 0.0
    assert f["original_ngtdm_Busyness"] == 0.0
    assert f["original_ngtdm_Complexity"] == 0.0
    assert f["original_ngtdm_Strength"] == 0.0


def test_bad_levels_are_refused() -> None:
    with pytest.raises(ValueError, match="3-D"):
        glszm_matrix(np.ones((3, 3)), 1)
    with pytest.raises(ValueError, match=r"0\.\.2"):
        gldm_matrix(np.full((1, 1, 2), 3), 2)
    with pytest.raises(ValueError, match="empty"):
        ngtdm_matrix(np.zeros((2, 2, 2), dtype=np.int64), 1)


# ------------------------------------------------------------------ invariants (hypothesis)

_levels_strategy = hnp.arrays(
    dtype=np.int64,
    shape=hnp.array_shapes(min_dims=3, max_dims=3, min_side=1, max_side=5),
    elements=st.integers(0, 4),
).filter(lambda a: bool((a > 0).any()))


@settings(max_examples=60, deadline=None)
@given(_levels_strategy)
def test_glszm_matches_flood_fill_and_covers_the_roi(levels: np.ndarray) -> None:
    n_levels = int(levels.max())
    matrix = glszm_matrix(levels, n_levels)
    sizes = np.arange(1, matrix.shape[1] + 1)
    assert int((matrix * sizes).sum()) == int((levels > 0).sum())
    assert _entries(matrix) == _brute_zones(levels)


@settings(max_examples=60, deadline=None)
@given(_levels_strategy)
def test_gldm_matches_brute_force_and_sums_to_the_roi(levels: np.ndarray) -> None:
    n_levels = int(levels.max())
    matrix = gldm_matrix(levels, n_levels)
    assert int(matrix.sum()) == int((levels > 0).sum())
    assert matrix.shape[1] <= 27
    assert _entries(matrix) == _brute_dependence(levels)


@settings(max_examples=60, deadline=None)
@given(_levels_strategy)
def test_ngtdm_matches_brute_force(levels: np.ndarray) -> None:
    n_levels = int(levels.max())
    n, s = ngtdm_matrix(levels, n_levels)
    n_ref, s_ref = _brute_ngtdm(levels, n_levels)
    np.testing.assert_array_equal(n, n_ref)
    np.testing.assert_allclose(s, s_ref, atol=1e-12)
    assert n.sum() <= (levels > 0).sum()
    f = ngtdm_features(n, s)
    if n.sum() > 0:
        assert all(math.isfinite(v) and v >= 0 for v in f.values())


# --------------------------------------------------------------------- IBSI digital phantom

# Grey levels in SimpleITK array order (z, y, x), read from the IBSI reference manual's
# figure of the phantom (github.com/theibsi/data_sets, ibsi_1_digital_phantom). Values under
# excluded voxels do not matter; the mask carries the exclusions (74 of 80 voxels remain).
_PHANTOM = np.array(
    [
        [[1, 4, 4, 1, 1], [1, 4, 6, 1, 1], [4, 1, 6, 4, 1], [4, 4, 6, 4, 1]],
        [[1, 4, 4, 1, 1], [1, 1, 6, 1, 1], [1, 1, 3, 1, 1], [4, 4, 6, 1, 1]],
        [[1, 4, 4, 1, 1], [1, 1, 1, 1, 1], [1, 1, 9, 1, 1], [1, 1, 6, 1, 1]],
        [[1, 4, 4, 1, 1], [1, 1, 1, 1, 1], [1, 1, 1, 1, 1], [1, 1, 6, 1, 1]],
    ]
)
_PHANTOM_MASK = np.ones(_PHANTOM.shape, dtype=np.uint8)
_PHANTOM_MASK[1, 2, 0] = 0
_PHANTOM_MASK[2, 0, 3:] = 0
_PHANTOM_MASK[3, 0, 3:] = 0
_PHANTOM_MASK[2, 2, 2] = 0  # the internal excluded voxel

# IBSI "Digital phantom texture matrices", 3-D: {(grey level, size or dependence): count}.
_IBSI_GLSZM_3D = {(1, 50): 1, (3, 1): 1, (4, 2): 1, (4, 14): 1, (6, 7): 1}
_IBSI_NGLDM_3D = {
    (1, 5): 2, (1, 6): 2, (1, 7): 1, (1, 8): 6, (1, 9): 4, (1, 10): 6, (1, 11): 5,
    (1, 12): 5, (1, 13): 3, (1, 14): 2, (1, 15): 5, (1, 16): 3, (1, 17): 3, (1, 18): 2,
    (1, 21): 1, (3, 1): 1, (4, 2): 2, (4, 4): 2, (4, 5): 6, (4, 6): 4, (4, 7): 2,
    (6, 2): 1, (6, 3): 4, (6, 4): 1, (6, 5): 1,
}  # fmt: skip
_IBSI_NGTDM_3D = {1: (50, 39.946954), 3: (1, 0.200000), 4: (16, 20.825401), 6: (7, 24.127005)}

# IBSI benchmark values, digital phantom, 3-D aggregation, by the pyradiomics name whose
# definition matches the IBSI one. GLDM <-> IBSI NGLDM: both count the centre voxel
# (dependence j >= 1), ignore neighbours outside the ROI, use delta = 1 and alpha = 0, and
# normalise by N_s = N_v; IBSI's "low/high dependence" is pyradiomics' "small/large
# dependence". IBSI's NGLDM normalised grey level non-uniformity, dependence count percentage
# and dependence count energy have no pyradiomics GLDM counterpart and are not compared.
_IBSI_3D = {
    # The stored IBSI text gives SZE's formula without its table; 0.255 is the manual's value
    # and equals SZE of IBSI's own 3-D GLSZM above: (1/50² + 1 + 1/2² + 1/14² + 1/7²) / 5.
    "original_glszm_SmallAreaEmphasis": 0.255,
    "original_glszm_LargeAreaEmphasis": 550,
    "original_glszm_LowGrayLevelZoneEmphasis": 0.253,
    "original_glszm_HighGrayLevelZoneEmphasis": 15.6,
    "original_glszm_SmallAreaLowGrayLevelEmphasis": 0.0256,
    "original_glszm_SmallAreaHighGrayLevelEmphasis": 2.76,
    "original_glszm_LargeAreaLowGrayLevelEmphasis": 503,
    "original_glszm_LargeAreaHighGrayLevelEmphasis": 1.49e3,
    "original_glszm_GrayLevelNonUniformity": 1.4,
    "original_glszm_GrayLevelNonUniformityNormalized": 0.28,
    "original_glszm_SizeZoneNonUniformity": 1,
    "original_glszm_SizeZoneNonUniformityNormalized": 0.2,
    "original_glszm_ZonePercentage": 0.0676,
    "original_glszm_GrayLevelVariance": 2.64,
    "original_glszm_ZoneVariance": 331,
    "original_glszm_ZoneEntropy": 2.32,
    "original_gldm_SmallDependenceEmphasis": 0.045,
    "original_gldm_LargeDependenceEmphasis": 109,
    "original_gldm_LowGrayLevelEmphasis": 0.693,
    "original_gldm_HighGrayLevelEmphasis": 7.66,
    "original_gldm_SmallDependenceLowGrayLevelEmphasis": 0.00963,
    "original_gldm_SmallDependenceHighGrayLevelEmphasis": 0.736,
    "original_gldm_LargeDependenceLowGrayLevelEmphasis": 102,
    "original_gldm_LargeDependenceHighGrayLevelEmphasis": 235,
    "original_gldm_GrayLevelNonUniformity": 37.9,
    "original_gldm_DependenceNonUniformity": 4.86,
    "original_gldm_DependenceNonUniformityNormalized": 0.0657,
    "original_gldm_GrayLevelVariance": 3.05,
    "original_gldm_DependenceVariance": 22.1,
    "original_gldm_DependenceEntropy": 4.4,
    "original_ngtdm_Coarseness": 0.0296,
    "original_ngtdm_Contrast": 0.584,
    "original_ngtdm_Busyness": 6.54,
    "original_ngtdm_Complexity": 13.5,
    "original_ngtdm_Strength": 0.763,
}


def _ibsi_tolerance(reference: float) -> float:
    """IBSI lists no tolerance for the phantom ("—"); its values are rounded to 3 significant
    figures, so accept anything that rounds to the published value: half a unit in the third
    significant digit (plus float slack)."""
    if reference == 0:
        return 1e-9
    return 0.5 * 10.0 ** (math.floor(math.log10(abs(reference))) - 2) * (1 + 1e-6)


@pytest.fixture(scope="module")
def phantom_levels() -> tuple[np.ndarray, int]:
    from radflow.features.discretise import roi_array

    image, mask = _image_pair(_PHANTOM, _PHANTOM_MASK)
    levels, n_levels = roi_array(image, mask, 1.0)  # bin width 1 keeps the phantom's levels
    return levels, n_levels


@pytest.fixture(scope="module")
def phantom_features() -> dict[str, float]:
    return zone_features(*_image_pair(_PHANTOM, _PHANTOM_MASK), bin_width=1.0)


def test_phantom_roi(phantom_levels: tuple[np.ndarray, int]) -> None:
    levels, n_levels = phantom_levels
    assert int((levels > 0).sum()) == 74
    assert n_levels == 6
    np.testing.assert_array_equal(levels[_PHANTOM_MASK > 0], _PHANTOM[_PHANTOM_MASK > 0])


def test_phantom_matrices_match_ibsi(phantom_levels: tuple[np.ndarray, int]) -> None:
    levels, n_levels = phantom_levels
    assert _entries(glszm_matrix(levels, n_levels)) == _IBSI_GLSZM_3D
    assert _entries(gldm_matrix(levels, n_levels)) == _IBSI_NGLDM_3D
    n, s = ngtdm_matrix(levels, n_levels)
    for grey in range(1, n_levels + 1):
        n_ref, s_ref = _IBSI_NGTDM_3D.get(grey, (0, 0.0))
        assert n[grey - 1] == n_ref
        assert s[grey - 1] == pytest.approx(s_ref, abs=5e-7)  # published to 6 decimals


@pytest.mark.parametrize("name", sorted(_IBSI_3D))
def test_phantom_features_match_ibsi(name: str, phantom_features: dict[str, float]) -> None:
    reference = _IBSI_3D[name]
    assert phantom_features[name] == pytest.approx(reference, abs=_ibsi_tolerance(reference))


# ---------------------------------------------------------------------------- public entry

# The brief's names, i.e. pyradiomics' GLSZM, GLDM and NGTDM feature names.
_GLSZM_NAMES = [
    "SmallAreaEmphasis",
    "LargeAreaEmphasis",
    "GrayLevelNonUniformity",
    "GrayLevelNonUniformityNormalized",
    "SizeZoneNonUniformity",
    "SizeZoneNonUniformityNormalized",
    "ZonePercentage",
    "GrayLevelVariance",
    "ZoneVariance",
    "ZoneEntropy",
    "LowGrayLevelZoneEmphasis",
    "HighGrayLevelZoneEmphasis",
    "SmallAreaLowGrayLevelEmphasis",
    "SmallAreaHighGrayLevelEmphasis",
    "LargeAreaLowGrayLevelEmphasis",
    "LargeAreaHighGrayLevelEmphasis",
]
_GLDM_NAMES = [
    "SmallDependenceEmphasis",
    "LargeDependenceEmphasis",
    "GrayLevelNonUniformity",
    "DependenceNonUniformity",
    "DependenceNonUniformityNormalized",
    "GrayLevelVariance",
    "DependenceVariance",
    "DependenceEntropy",
    "LowGrayLevelEmphasis",
    "HighGrayLevelEmphasis",
    "SmallDependenceLowGrayLevelEmphasis",
    "SmallDependenceHighGrayLevelEmphasis",
    "LargeDependenceLowGrayLevelEmphasis",
    "LargeDependenceHighGrayLevelEmphasis",
]
_NGTDM_NAMES = ["Coarseness", "Contrast", "Busyness", "Complexity", "Strength"]
_EXPECTED_NAMES = (
    {"original_glszm_" + n for n in _GLSZM_NAMES}
    | {"original_gldm_" + n for n in _GLDM_NAMES}
    | {"original_ngtdm_" + n for n in _NGTDM_NAMES}
)


def test_zone_features_names_and_order(phantom_features: dict[str, float]) -> None:
    assert set(phantom_features) == _EXPECTED_NAMES
    assert list(phantom_features) == sorted(phantom_features)
    assert all(isinstance(v, float) and math.isfinite(v) for v in phantom_features.values())


def test_zone_features_use_the_bin_width(phantom_features: dict[str, float]) -> None:
    # Scaling intensities by 25 and binning at 25 gives back the same grey levels.
    image, mask = _image_pair(_PHANTOM * 25.0 + 3.0, _PHANTOM_MASK)
    assert zone_features(image, mask, 25.0) == pytest.approx(phantom_features)
    # One bin for everything: a single grey level, so no grey-level spread at all.
    coarse = zone_features(image, mask, 1000.0)
    assert coarse["original_glszm_GrayLevelVariance"] == 0.0
    assert coarse["original_ngtdm_Contrast"] == 0.0


def test_zone_features_refuse_an_empty_mask() -> None:
    image, mask = _image_pair(_PHANTOM, np.zeros_like(_PHANTOM_MASK))
    with pytest.raises(ValueError, match="empty"):
        zone_features(image, mask, 1.0)

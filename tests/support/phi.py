"""The PHI strings a synthetic study carries in its raw headers: what must never leave the inbox."""

from __future__ import annotations

import pydicom

from radflow.synth import SynthStudy


def phi_strings(studies: list[SynthStudy]) -> set[str]:
    phi: set[str] = set()
    for study in studies:
        ds = pydicom.dcmread(study.files[0], stop_before_pixels=True)
        phi |= {str(ds.PatientID), str(ds.AccessionNumber), study.study_uid}
        phi |= {part for part in str(ds.PatientName).split("^") if len(part) > 3}
        phi |= {str(ds.InstitutionName), str(ds.ReferringPhysicianName).split("^")[0]}
    return phi

"""Records radflow writes beside its outputs: validated when built, then trusted."""

from __future__ import annotations

from pydantic import BaseModel, Field

from radflow.keys import sha256_bytes


class QuarantineRecord(BaseModel, frozen=True):
    """Why an input was set aside. Names the input by a hash of its key: keys may hold PHI."""

    source_hash: str = Field(pattern=r"^[0-9a-f]{64}$")
    stage: str
    reason: str
    error_class: str = ""

    @classmethod
    def for_key(
        cls, source: str, key: str, stage: str, reason: str, error: str = ""
    ) -> QuarantineRecord:
        return cls(
            source_hash=sha256_bytes(f"{source}/{key}".encode()),
            stage=stage,
            reason=reason,
            error_class=error,
        )

    @property
    def store_key(self) -> str:
        return f"quarantine/{self.stage}/{self.source_hash}.json"


class SeriesEntry(BaseModel, frozen=True):
    series_uid: str
    modality: str
    instances: int


class StudyManifest(BaseModel, frozen=True):
    """What the de-identified study holds; written last, so its presence means complete."""

    study_id: str
    study_uid: str
    patient_id: str
    series: list[SeriesEntry]

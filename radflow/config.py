"""Settings: `RADFLOW_*` environment variables, then an optional TOML file, then defaults.

With no settings at all radflow runs embedded: the lake is a folder under
`./radflow-data`, the raw-file cache a folder beside it, and Prefect needs no server.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    SettingsError,
    TomlConfigSettingsSource,
)

from radflow.errors import ConfigError
from radflow.limits import DEFAULT_MAX_SERIES_VOXELS
from radflow.segmentation.params import SegmentationParams
from radflow.store import S3Options, file_url_path

if TYPE_CHECKING:
    from radflow.dicom.deid import DeidConfig

CONFIG_ENV = "RADFLOW_CONFIG"
DEFAULT_CONFIG_FILE = "radflow.toml"


# Image storage SOP classes a primary or secondary series may be, by pydicom's keywords
# (`pydicom.uid`): single-frame, enhanced and legacy-converted CT and MR.
IMAGE_SOP_CLASSES = (
    "CTImageStorage",
    "EnhancedCTImageStorage",
    "LegacyConvertedEnhancedCTImageStorage",
    "MRImageStorage",
    "EnhancedMRImageStorage",
    "LegacyConvertedEnhancedMRImageStorage",
)


class SeriesRules(BaseModel, frozen=True):
    """Which image series of a study may be its volume (see `radflow.imaging.selection`).

    A series is kept when it passes every rule; the first rule it fails is recorded. Among
    the kept series the primary is the one the study's annotation references, else the most
    slices of the thinnest recon; the others are registered onto it. SeriesDescription
    patterns are Python regular expressions searched case-insensitively; the Annex E Basic
    Profile removes descriptions unless the clean-descriptors option keeps them.
    """

    modalities: tuple[str, ...] = ("CT", "MR")
    sop_classes: tuple[str, ...] = IMAGE_SOP_CLASSES
    allow_derived: bool = Field(False, description="keep DERIVED/SECONDARY images (reformats)")
    axial_tolerance_degrees: float | None = Field(
        30.0, ge=0, le=90, description="slice normal within this of the patient's axis; None: any"
    )
    slice_thickness_mm: tuple[float, float] = (0.0, 10.0)
    min_slices: int = Field(4, ge=4, description="fewer cannot be smoothed or registered in 3-D")
    description_include: tuple[str, ...] = ()
    description_exclude: tuple[str, ...] = ()

    @field_validator("sop_classes")
    @classmethod
    def _known_sop_classes(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        from pydicom.uid import UID_dictionary

        known = {entry[4] for entry in UID_dictionary.values() if entry[1] == "SOP Class"}
        unknown = sorted(set(v) - known)
        if unknown:
            raise ValueError(f"unknown SOP class keyword(s) {', '.join(unknown)}")
        return v

    @field_validator("description_include", "description_exclude")
    @classmethod
    def _patterns(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        import re

        for pattern in v:
            try:
                re.compile(pattern)
            except re.error as err:
                raise ValueError(f"{pattern!r} is not a regular expression: {err}") from None
        return v

    @field_validator("slice_thickness_mm")
    @classmethod
    def _range(cls, v: tuple[float, float]) -> tuple[float, float]:
        if not 0 <= v[0] <= v[1]:
            raise ValueError(f"need 0 <= low <= high, got {list(v)}")
        return v


#: Where a study's region of interest may come from, in the order tried: the study's own
#: annotation (a SEG or RTSTRUCT in it, or a label map given with `radflow ingest --masks`),
#: the champion segmentation model, the demo's threshold rule.
RoiSource = Literal["annotation", "model", "rule"]


class RoiSelection(BaseModel, frozen=True):
    """Which segment of a study's annotation (SEG, RTSTRUCT, label map) is the region of
    interest: by label (case-insensitive), number or code ("<scheme>:<value>"), all given
    ones must match; none given: the lowest-numbered segment (SEG segment 1, the first
    ROI, label 1). `tolerance_mm`: how far an annotation may lie off the series' grid."""

    label: str | None = None
    number: int | None = Field(None, ge=0)
    code: str | None = Field(None, pattern=r"^[^:\s]+:\S+$")
    tolerance_mm: float = Field(0.5, gt=0, le=5)


class PreprocessParams(BaseModel, frozen=True):
    """Parameters of the preprocess stage; hashed into its content address."""

    spacing_mm: tuple[float, float, float] = (1.5, 1.5, 1.5)
    window_level: float = 40.0
    window_width: float = 400.0
    shape: tuple[int, int, int] = (40, 40, 40)
    roi_threshold_hu: float = 80.0
    # The network input's intensity scaling: CT windowing, or for MR z-score / percentiles;
    # "auto" chooses by the primary series' modality (CT: window, anything else: zscore).
    normalize: Literal["auto", "window", "zscore", "percentile"] = "auto"
    n4: bool = Field(False, description="N4 bias-field correction first (MR)")
    registration: Literal["rigid", "affine"] = "rigid"
    registration_spacing_mm: float = Field(2.0, gt=0)
    series: SeriesRules = SeriesRules()
    # The rule (largest blob above `roi_threshold_hu`) finds bright lesions in synthetic CT and
    # the spine in a real chest: only a configuration that knows its data lists it (the demo).
    roi_sources: tuple[RoiSource, ...] = Field(
        ("annotation", "model"),
        min_length=1,
        description="where the ROI may come from, in order: annotation, model, rule",
    )
    roi_segment: RoiSelection = RoiSelection()

    @field_validator("spacing_mm")
    @classmethod
    def _positive_spacing(cls, v: tuple[float, float, float]) -> tuple[float, float, float]:
        if min(v) <= 0:
            raise ValueError("every spacing must be > 0 mm")
        return v

    @field_validator("roi_sources")
    @classmethod
    def _each_source_once(cls, v: tuple[RoiSource, ...]) -> tuple[RoiSource, ...]:
        if len(set(v)) != len(v):
            raise ValueError(f"each source at most once, got {list(v)}")
        return v

    @field_validator("shape")
    @classmethod
    def _positive_shape(cls, v: tuple[int, int, int]) -> tuple[int, int, int]:
        if min(v) < 4:
            raise ValueError("every dimension must be >= 4 voxels")
        return v


def default_reid_dir() -> Path:
    """The re-identification map's folder when none is set: the user's data folder
    (`$XDG_DATA_HOME/radflow/reid`, else `~/.local/share/radflow/reid` on Linux), never the
    current directory, which may be a checkout or a shared folder. The map's writer creates
    it mode 700."""
    from platformdirs import user_data_path

    return user_data_path("radflow") / "reid"


class DeidSettings(BaseModel, frozen=True):
    """De-identification: PS3.15 Annex E options (names of `radflow.dicom.profile.Option`),
    the Retain Safe Private allow-list as `"Private Creator:EE"` (EE: the element byte, hex),
    whether instances that may carry burned-in text pass, and where the re-identification map
    goes (a local folder, mode 700, never inside the lake; by default the user's own data
    folder, see `default_reid_dir`)."""

    options: tuple[str, ...] = ()
    safe_private: tuple[str, ...] = ()
    allow_burned_in: bool = False
    # Encapsulated documents: quarantined, or (PDF only) kept when their pages hold none of the
    # header's patient identifiers, rebuilt without their own metadata
    # (radflow.dicom.documents; README, "Encapsulated documents").
    documents: Literal["quarantine", "check_text"] = "quarantine"
    reid_dir: Path = Field(default_factory=default_reid_dir)

    @field_validator("options")
    @classmethod
    def _known_options(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        from radflow.dicom.profile import Option

        unknown = set(v) - {o.value for o in Option}
        if unknown:
            raise ValueError(f"unknown option(s) {', '.join(sorted(unknown))}")
        return tuple(sorted(set(v)))

    @field_validator("safe_private")
    @classmethod
    def _creator_element(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        for entry in v:
            creator, _, element = entry.rpartition(":")
            if (
                not creator
                or len(element) != 2
                or not all(c in "0123456789abcdefABCDEF" for c in element)
            ):
                raise ValueError(f"{entry!r} is not 'Private Creator:EE'")
        return v

    def allow_list(self) -> frozenset[tuple[str, int]]:
        return frozenset(
            (e.rpartition(":")[0], int(e.rpartition(":")[2], 16)) for e in self.safe_private
        )


class FeatureParams(BaseModel, frozen=True):
    bin_width: float = Field(25.0, gt=0)


class CNNSettings(BaseModel, frozen=True):
    """The 3D CNN candidate; `device="auto"` takes CUDA (with mixed precision) when present."""

    width: int = Field(8, ge=2, le=64)
    epochs: int = Field(30, ge=1)
    batch_size: int = Field(8, ge=1)
    learning_rate: float = Field(1e-3, gt=0)
    patience: int = Field(5, ge=1)
    num_workers: int = Field(0, ge=0)
    device: Literal["auto", "cpu", "cuda"] = "auto"


Candidate = Literal["lr", "rf", "gb", "cnn"]


class TrainSettings(BaseModel, frozen=True):
    """Training: patient-level test and validation splits, candidates, and the registry's rules.

    The validation split (taken from the training patients) stops the CNN early, picks the
    best candidate and the ensemble's members, fits the calibration and the threshold; the
    test split is touched once, to report."""

    seed: int = 0
    test_fraction: float = Field(0.25, gt=0.05, lt=0.5)
    validation_fraction: float = Field(0.25, gt=0.05, lt=0.5)
    candidates: tuple[Candidate, ...] = ("lr", "rf", "gb", "cnn")
    n_estimators: int = Field(200, ge=10)
    select_k: int = Field(20, ge=1)
    ensemble_size: int = Field(2, ge=0)
    threshold_rule: Literal["youden", "sensitivity"] = "youden"
    target_sensitivity: float = Field(0.9, gt=0, le=1)
    promotion_margin: float = Field(0.01, ge=0, le=0.5)
    calibration_slope: tuple[float, float] = (0.2, 5.0)
    cnn: CNNSettings = CNNSettings()
    # The segmentation model (radflow/segmentation), trained on the annotated studies of the
    # same patient-level split; its champion finds the ROI of studies without an annotation.
    segmentation: SegmentationParams = SegmentationParams()

    @field_validator("candidates")
    @classmethod
    def _some_candidates(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        if not v:
            raise ValueError("name at least one candidate (lr, rf, gb, cnn)")
        return tuple(dict.fromkeys(v))

    @field_validator("calibration_slope")
    @classmethod
    def _ordered(cls, v: tuple[float, float]) -> tuple[float, float]:
        if not 0 < v[0] < 1 < v[1]:
            raise ValueError(f"need 0 < low < 1 < high, got {list(v)}")
        return v


class Settings(BaseSettings):
    """Everything radflow can be told. Secrets are never part of a task's parameters."""

    model_config = SettingsConfigDict(
        env_prefix="RADFLOW_",
        env_nested_delimiter="__",
        extra="forbid",
        frozen=True,
    )

    store_url: str = "file://./radflow-data"
    s3_endpoint_url: str | None = None
    s3_region: str | None = None
    # botocore's retries (adaptive mode, backoff with jitter) and timeouts, in seconds.
    s3_max_attempts: int = Field(8, ge=1, le=50)
    s3_connect_timeout: float = Field(10.0, gt=0)
    s3_read_timeout: float = Field(60.0, gt=0)
    secret: SecretStr | None = None
    secret_file: Path | None = None
    # The name of a Prefect Secret block holding the secret, read by radflow's Prefect tasks.
    secret_block: str | None = None
    cache_dir: Path = Path("./radflow-cache")
    max_series_voxels: int = Field(
        DEFAULT_MAX_SERIES_VOXELS,
        ge=1,
        description="the most voxels a file or a series may declare (Rows x Columns x frames)",
    )
    deid: DeidSettings = Field(default_factory=DeidSettings)  # its reid_dir reads HOME per call
    preprocess: PreprocessParams = PreprocessParams()
    features: FeatureParams = FeatureParams()
    train: TrainSettings = TrainSettings()
    studies_per_stage: int = Field(
        1,
        ge=1,
        le=64,
        description="how many studies one flow process works on at once in each per-study"
        " stage (its threads); the studies still move through the stages side by side",
    )
    stage_tags: bool = Field(
        True,
        description="a `stage:<name>` tag on every task run, to filter by in the UI; off by"
        " default where a command starts its own temporary server (no UI there, and on its"
        " SQLite database each tagged run's concurrency check can wait about 2 s for a lock)",
    )

    @field_validator("store_url")
    @classmethod
    def _known_scheme(cls, v: str) -> str:
        if not v.startswith(("file://", "s3://")):
            raise ValueError("must start with file:// or s3://")
        if v.startswith("s3://") and not v[5:].split("/", 1)[0]:
            raise ValueError("an s3:// URL needs a bucket: s3://bucket/prefix")
        return v

    @model_validator(mode="after")
    def _reid_outside_the_lake(self) -> Settings:
        """The re-identification map is PHI: it must never land in (or be synced with) the lake."""
        if self.store_url.startswith("file://"):
            root = file_url_path(self.store_url).resolve()
            reid = self.deid.reid_dir.resolve()
            if reid == root or root in reid.parents:
                raise ConfigError(
                    "RADFLOW_DEID__REID_DIR",
                    "the re-identification map must not be inside the lake (RADFLOW_STORE_URL)",
                    hint="choose a folder outside the lake that only re-identifiers can read",
                )
        return self

    def s3_options(self) -> S3Options:
        """How the store reaches an S3-compatible server (`open_store(url, s3=...)`)."""
        return S3Options(
            endpoint_url=self.s3_endpoint_url,
            region=self.s3_region,
            max_attempts=self.s3_max_attempts,
            connect_timeout=self.s3_connect_timeout,
            read_timeout=self.s3_read_timeout,
        )

    def with_secret(self, value: str) -> Settings:
        """These settings with the secret given (a Prefect Secret block's value, say)."""
        return self.model_copy(update={"secret": SecretStr(value)})

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        toml_file = os.environ.get(CONFIG_ENV, DEFAULT_CONFIG_FILE)
        return (init_settings, env_settings, TomlConfigSettingsSource(settings_cls, toml_file))

    def deid_config(self) -> DeidConfig:
        """The de-identification configuration, secret included: never a task parameter."""
        from radflow.dicom.deid import DeidConfig

        return DeidConfig(
            secret=self.pseudonym_secret(),
            options=frozenset(self.deid.options),
            safe_private=self.deid.allow_list(),
            allow_burned_in=self.deid.allow_burned_in,
            documents=self.deid.documents,
        )

    def pseudonym_secret(self) -> bytes:
        """The key of every pseudonym; anonymize refuses to run without one."""
        if self.secret is not None and self.secret.get_secret_value():
            return self.secret.get_secret_value().encode()
        if self.secret_file is not None:
            return read_secret_file(self.secret_file)
        if self.secret_block:
            raise ConfigError(
                "RADFLOW_SECRET_BLOCK",
                "a Prefect Secret block is read only inside radflow's Prefect tasks",
                hint="outside a flow, set RADFLOW_SECRET_FILE (mode 600) or RADFLOW_SECRET",
            )
        raise ConfigError(
            "RADFLOW_SECRET",
            "no pseudonymisation secret is set",
            hint="set RADFLOW_SECRET_FILE to a file (mode 600) holding a long random string",
        )


def read_secret_file(path: Path) -> bytes:
    """Read a secret, refusing one that other users can read."""
    if not path.is_file():
        raise ConfigError(
            "RADFLOW_SECRET_FILE",
            "the file does not exist",
            hint="give the path of a file (mode 600) holding a long random string",
        )
    if path.stat().st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise ConfigError(
            "RADFLOW_SECRET_FILE", "the file is readable by others", hint=f"chmod 600 {path}"
        )
    secret = path.read_bytes().strip()
    if len(secret) < 16:
        raise ConfigError(
            "RADFLOW_SECRET_FILE",
            "the secret is shorter than 16 bytes",
            hint="make it long and random: openssl rand -hex 32 > FILE; chmod 600 FILE",
        )
    return secret


def load_settings(**overrides: Any) -> Settings:
    """Settings from the environment and the TOML file, or one ConfigError naming the setting."""
    try:
        return Settings(**overrides)
    except ValidationError as err:
        first = err.errors()[0]
        # A list item's position is not part of the variable's name: RADFLOW_PREPROCESS__SHAPE.
        path = [str(p) for p in first["loc"] if not isinstance(p, int)]
        items = [p + 1 for p in first["loc"] if isinstance(p, int)]
        problem = first["msg"].removeprefix("Value error, ")
        if items:
            what = "is missing" if first["type"] == "missing" else f"is wrong: {problem}"
            problem = f"item {items[-1]} {what}"
        needs = _needs(path)
        if needs and (items or first["type"] in _SHAPE_ERRORS):
            problem += f"; it needs {needs}"
        raise ConfigError(_env_name(path), problem, hint=_hint(path, needs)) from None
    except SettingsError:
        # pydantic-settings could not parse a list or table variable as JSON ("64,64,48").
        bad = _unparsable_env_setting()
        needs = _needs(bad) if bad else None
        raise ConfigError(
            _env_name(bad) if bad else "RADFLOW_*",
            "is not valid JSON" + (f"; it needs {needs}" if needs else ""),
            hint=_hint(bad, needs) if bad else "list and table settings are JSON",
        ) from None


# Pydantic error types that say a list setting has the wrong form, not a wrong item.
_SHAPE_ERRORS = {"tuple_type", "list_type", "too_short", "too_long", "missing"}
_NUMBER_WORDS = {1: "one", 2: "two", 3: "three", 4: "four"}
_KINDS = {int: "integers", float: "numbers", str: "strings", bool: "true/false values"}


def _env_name(path: list[str]) -> str:
    return "RADFLOW_" + "__".join(path).upper() if path else "settings"


def _hint(path: list[str], needs: str | None) -> str:
    """The setting's default as an example, or what to check when there is no such setting."""
    info = _field(path)
    if info is None:
        return "no such setting: check its spelling (RADFLOW_<SECTION>__<NAME>)"
    if needs or not isinstance(info.annotation, type) or not issubclass(info.annotation, BaseModel):
        example = _example(path)
        if example != "null":
            quoted = f"'{example}'" if example.startswith("[") else example
            return f"e.g. {_env_name(path)}={quoted} (the default)"
    return "see the settings in the README"


def _field(path: list[str]) -> Any:
    """The pydantic FieldInfo a settings path names, or None."""
    model: Any = Settings
    info: Any = None
    for part in path:
        fields = getattr(model, "model_fields", None)
        if not fields or part not in fields:
            return None
        info = fields[part]
        model = info.annotation
    return info


def _example(path: list[str]) -> str:
    import json

    info = _field(path)
    default = info.get_default() if info is not None else None
    if isinstance(default, tuple):
        return json.dumps(list(default), separators=(",", ":"))
    if isinstance(default, (str, Path)):
        return str(default)
    return json.dumps(default)


def _needs(path: list[str]) -> str | None:
    """What a list setting needs, from its type and default: "three integers as a JSON list,
    e.g. [40,40,40]"."""
    from typing import get_args, get_origin

    info = _field(path)
    if info is None or get_origin(info.annotation) is not tuple:
        return None
    args = get_args(info.annotation)
    example = _example(path)
    if len(args) == 2 and args[1] is Ellipsis:
        kind = _KINDS.get(args[0], "values")
        return f"a JSON list of {kind}, e.g. {example}"
    count = _NUMBER_WORDS.get(len(args), str(len(args)))
    kind = _KINDS.get(args[0], "values") if len(set(args)) == 1 else "values"
    return f"{count} {kind} as a JSON list, e.g. {example}"


def _unparsable_env_setting() -> list[str] | None:
    """The settings path of the first RADFLOW_* list variable that is not JSON."""
    import json

    for name, value in sorted(os.environ.items()):
        if not name.upper().startswith("RADFLOW_"):
            continue
        path = name[len("RADFLOW_") :].lower().split("__")
        info = _field(path)
        if info is None:
            continue
        try:
            json.loads(value)
        except ValueError:
            if not isinstance(info.annotation, type) or issubclass(info.annotation, BaseModel):
                return path
    return None

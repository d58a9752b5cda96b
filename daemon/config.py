"""The daemon's configuration: config.yaml, environment overrides, validation with one clear message.

:func:`load_config` reads the YAML file, applies ``MPWATCH__SECTION__KEY``
environment overrides, validates everything with pydantic and resolves
relative paths against the file's folder. Any problem raises
:class:`ConfigError` whose message names the key, so ``mpwatch run`` can
stop at start with one line.

>>> inbox = {"path": "/data/ftir", "name": "ftir"}
>>> cfg = Config.model_validate({"inboxes": [inbox], "state_dir": "/var/lib/mpwatch"})
>>> cfg.http.port, cfg.watch.quiet_seconds
(9108, 1.0)
>>> Config.model_validate({"inboxes": [], "state_dir": "s", "http": {"port": 70000}})
Traceback (most recent call last):
...
pydantic_core._pydantic_core.ValidationError: 1 validation error for Config
...
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from engine.core.conventions import TECHNIQUES, AcquisitionProfile
from engine.core.spectrum import SpectrumError, normalise_y_unit
from engine.io.candidates import NonSpectrumFilter
from engine.maps.config import MapConfig
from engine.models.served import ModelConfig
from engine.report.counts import DEFAULT_SIZE_CLASSES, SizeClasses

__all__ = [
    "LIBRARY_KEYS",
    "ClustersConfig",
    "CnnConfig",
    "Config",
    "ConfigError",
    "InboxConfig",
    "MapsConfig",
    "ReportConfig",
    "load_config",
]

ENV_PREFIX = "MPWATCH__"


#: The top-level key that names the library of each technique.
LIBRARY_KEYS = {"ir": "library", "raman": "raman_library"}


class ConfigError(ValueError):
    """A configuration that cannot be used; the message is one readable line."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class InboxConfig(_Section):
    """One watched folder, and what its instrument writes (the inbox profile).

    ``technique``, ``y_unit`` and ``range`` are stated facts: they win over what a
    file says and what the data suggest. ``library`` names the library for this
    inbox's technique (it needs ``technique``), the same as the top-level
    ``library`` or ``raman_library`` key. With ``ignore_non_spectra``, files that
    are plainly not spectra (by name: :class:`engine.io.candidates.NonSpectrumFilter`,
    extended by ``non_spectra``; by content: a note no reader recognises) are
    recorded as ignored and left alone instead of being quarantined.
    """

    path: Path
    name: str = Field(pattern=r"^[A-Za-z0-9_-]{1,40}$")
    polling: bool = False
    poll_interval_seconds: float = Field(5.0, gt=0, le=3600)
    include: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()
    ignore_non_spectra: bool = True
    non_spectra: tuple[str, ...] = ()
    technique: Literal["ir", "raman"] | None = None
    y_unit: str | None = None
    range: tuple[float, float] | None = None
    library: Path | None = None
    pixel_size_um: float | None = Field(None, gt=0, le=10_000)

    @field_validator("include", "exclude", "non_spectra")
    @classmethod
    def _patterns(cls, patterns: tuple[str, ...]) -> tuple[str, ...]:
        if any(not pattern.strip() for pattern in patterns):
            raise ValueError(f"glob patterns must not be empty, got {list(patterns)}")
        return patterns

    def non_spectrum_filter(self) -> NonSpectrumFilter | None:
        """The rule telling this inbox's non-spectra by name; None when they are not ignored."""
        return NonSpectrumFilter(extra=self.non_spectra) if self.ignore_non_spectra else None

    @field_validator("y_unit")
    @classmethod
    def _known_unit(cls, unit: str | None) -> str | None:
        if unit is None:
            return None
        try:
            return normalise_y_unit(unit)
        except SpectrumError as exc:
            raise ValueError(exc.message) from exc

    @field_validator("range")
    @classmethod
    def _ordered_range(cls, window: tuple[float, float] | None) -> tuple[float, float] | None:
        if window is not None and not 0 <= window[0] < window[1] <= 15000:
            raise ValueError(f"range must be [low, high] in cm-1 with 0 <= low < high, got {list(window)}")
        return window

    @model_validator(mode="after")
    def _library_needs_technique(self) -> InboxConfig:
        if self.library is not None and self.technique is None:
            raise ValueError(f"inbox {self.name}: a library needs the inbox's technique (ir or raman)")
        return self

    def profile(self) -> AcquisitionProfile:
        """What this inbox states about its spectra, for :func:`engine.core.conventions.resolve`."""
        return AcquisitionProfile(technique=self.technique, y_unit=self.y_unit, range=self.range)


class WatchConfig(_Section):
    quiet_seconds: float = Field(1.0, ge=0, le=3600)
    empty_file_seconds: float = Field(60.0, ge=0, le=86400)
    rescan_interval_seconds: float = Field(60.0, gt=0, le=86400)


class WorkerConfig(_Section):
    queue_size: int = Field(1000, ge=1, le=1_000_000)
    batch_size: int = Field(64, ge=1, le=10_000)
    retry_base_seconds: float = Field(5.0, gt=0)
    retry_cap_seconds: float = Field(600.0, gt=0)
    max_attempts: int = Field(5, ge=1, le=1000)
    #: Processes that read files and compute aging indices beside the model; None: one per core.
    helper_processes: int | None = Field(None, ge=0, le=256)

    def retry_settings(self) -> dict[str, Any]:
        """The ledger's retry policy, as keyword arguments of :class:`daemon.store.records.RetryPolicy`."""
        return {
            "base_seconds": self.retry_base_seconds,
            "cap_seconds": self.retry_cap_seconds,
            "max_attempts": self.max_attempts,
        }


class InstrumentFilesConfig(_Section):
    on_done: Literal["keep", "move"] = "keep"
    on_quarantine: Literal["keep", "move"] = "keep"


class HttpConfig(_Section):
    host: str = "127.0.0.1"
    port: int = Field(9108, ge=0, le=65535)
    token: str | None = None

    @property
    def exposed(self) -> bool:
        """Whether the port is reachable from other machines."""
        return self.host not in ("127.0.0.1", "localhost", "::1")


#: The engine's model defaults: the one home of every ``model`` and ``cnn`` fusion default.
_MODEL = ModelConfig()
#: The engine's map defaults: the one home of every ``maps`` default.
_MAP = MapConfig()


class ModelSection(_Section):
    """The ``model`` section: the subspace-kNN ensemble. Defaults come from :class:`ModelConfig`."""

    n_synthetic: int = Field(_MODEL.n_synthetic, ge=0, le=10_000)
    n_learners: int = Field(_MODEL.n_learners, ge=1, le=1000)
    subspace_fraction: float = Field(_MODEL.subspace_fraction, gt=0, le=1)
    n_neighbors: int = Field(_MODEL.n_neighbors, ge=1, le=100)
    search: Literal["exact", "shortlist"] = _MODEL.search
    seed: int = _MODEL.seed
    n_hits: int = Field(_MODEL.n_hits, ge=1, le=100)
    min_vote: float = Field(_MODEL.min_vote, ge=0, le=1)
    r_floor: float = Field(_MODEL.r_floor, ge=-1, le=1)
    min_confidence: float | None = Field(_MODEL.min_confidence, ge=0, le=1)

    def to_model_config(self) -> ModelConfig:
        return ModelConfig(**self.model_dump())


class CnnConfig(_Section):
    """The CNN member: a challenger retrained in a background process, promoted only when no worse.

    On by default: every result's ``members`` holds its opinion, and it votes with the weight
    held-out evaluation gave it (``weight: null``; for the bundled libraries that weight is 0).
    The network's shape (``max_epochs``, ``image_size``, ``width``, ``depth``) is the
    estimator's own (:class:`engine.models.cnn.PolarCNN`) unless set here.
    """

    enabled: bool = True
    retrain_hours: float = Field(24.0, gt=0, le=24 * 365)
    retrain_after_confirmations: int = Field(20, ge=1, le=1_000_000)
    fusion: Literal["subknn", "cnn", "weighted"] = _MODEL.fusion
    weight: float | None = Field(_MODEL.cnn_weight, ge=0, le=1)
    disagreement_r: float | None = Field(_MODEL.disagreement_r, ge=-1, le=1)
    max_epochs: int | None = Field(None, ge=1, le=1000)
    image_size: int | None = Field(None, ge=8, le=512)
    width: int | None = Field(None, ge=1, le=256)
    depth: int | None = Field(None, ge=1, le=8)

    def estimator_params(self) -> dict[str, int]:
        """The network settings set here, for :class:`engine.models.cnn.PolarCNN`; the rest keep its own."""
        return {key: value for key in CNN_PARAMS if (value := getattr(self, key)) is not None}


#: The CNN settings passed on to the estimator when they are set.
CNN_PARAMS = ("max_epochs", "image_size", "width", "depth")


class MapsConfig(_Section):
    """Imaging maps (ENVI cubes, Open Specy map zips, WiRE Raman maps): identified as a whole and cut
    into particles.

    The pixel size comes from the map's header, else from its inbox's ``pixel_size_um``; without
    either, sizes are in pixels. Defaults are the engine's (:class:`engine.maps.MapConfig`).
    """

    max_pixels: int = Field(_MAP.max_pixels, ge=1, le=100_000_000)
    block_pixels: int = Field(_MAP.block_pixels, ge=1, le=1_000_000)
    min_particle_pixels: int = Field(_MAP.min_particle_pixels, ge=1, le=1_000_000)
    background_fraction: float = Field(_MAP.background_fraction, ge=0, le=1)
    background_r: float | None = Field(_MAP.background_r, ge=-1, le=1)

    def map_config(self, pixel_size_um: float | None) -> MapConfig:
        """The engine's settings for a map of an inbox whose profile gives ``pixel_size_um``."""
        return MapConfig(**self.model_dump(), pixel_size_um=pixel_size_um)


class ReportConfig(_Section):
    """The sample reports written beside the result files and by ``mpwatch report``.

    A sample folder is a procedural blank when its name is in ``blanks`` or matches
    ``blank_pattern``; its counts are subtracted from the other samples in the same parent folder.
    """

    enabled: bool = True
    #: Reports are redrawn at most this often (result files every 2 s): a chart holds up the files
    #: arriving while it is drawn.
    interval_seconds: float = Field(30.0, ge=0, le=24 * 3600)
    size_classes: tuple[tuple[float, float], ...] = Field(
        [[low, high] for low, high in DEFAULT_SIZE_CLASSES], validate_default=True
    )
    blank_pattern: str = "blank*"
    blanks: tuple[str, ...] = ()

    @field_validator("size_classes")
    @classmethod
    def _ascending(cls, classes: tuple[tuple[float, float], ...]) -> tuple[tuple[float, float], ...]:
        SizeClasses.of(classes)
        return classes


class ClustersConfig(_Section):
    """How the review queue groups unknown spectra (:mod:`daemon.growth.clusters`).

    Two open reviews are neighbours when their model features correlate at Pearson r of
    ``min_r`` or more; DBSCAN makes clusters of neighbours, each of at least ``min_samples``.
    """

    min_r: float = Field(0.9, gt=0, le=1)
    min_samples: int = Field(2, ge=2, le=1000)
    max_reviews: int = Field(2000, ge=2, le=20_000)


class LoggingConfig(_Section):
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"


class Config(_Section):
    inboxes: tuple[InboxConfig, ...]
    state_dir: Path
    library: Path | None = None
    raman_library: Path | None = None
    confirm_dir: Path | None = None
    watch: WatchConfig = WatchConfig()
    worker: WorkerConfig = WorkerConfig()
    instrument_files: InstrumentFilesConfig = InstrumentFilesConfig()
    http: HttpConfig = HttpConfig()
    model: ModelSection = ModelSection()
    cnn: CnnConfig = CnnConfig()
    maps: MapsConfig = MapsConfig()
    report: ReportConfig = ReportConfig()
    clusters: ClustersConfig = ClustersConfig()
    logging: LoggingConfig = LoggingConfig()

    @field_validator("inboxes")
    @classmethod
    def _unique_names(cls, inboxes: tuple[InboxConfig, ...]) -> tuple[InboxConfig, ...]:
        names = [i.name for i in inboxes]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"inbox names must be unique, repeated: {', '.join(dupes)}")
        return inboxes

    @model_validator(mode="after")
    def _one_library_per_technique(self) -> Config:
        for technique in TECHNIQUES:
            named = set(self._libraries_named(technique))
            if len(named) > 1:
                paths = ", ".join(sorted(map(str, named)))
                raise ValueError(
                    f"one {technique} library per daemon, but several are named ({paths}); "
                    f"set it once, as {LIBRARY_KEYS[technique]} or on the {technique} inboxes"
                )
        return self

    def _libraries_named(self, technique: str) -> list[Path]:
        """The libraries configured for ``technique``: the top-level key first, then the inboxes'."""
        top: Path | None = getattr(self, LIBRARY_KEYS[technique])
        inboxes = [i.library for i in self.inboxes if i.technique == technique and i.library is not None]
        return [top, *inboxes] if top is not None else inboxes

    def library_for(self, technique: str) -> Path | None:
        """The configured library of ``technique`` (top level or an inbox), None for the bundled one."""
        named = self._libraries_named(technique)
        return named[0] if named else None

    @model_validator(mode="after")
    def _token_when_exposed(self) -> Config:
        if self.http.exposed and not self.http.token:
            raise ValueError(f"http.host {self.http.host} exposes the write API: set http.token")
        return self

    def engine_model_config(self) -> ModelConfig:
        """The engine's model settings: the ``model`` section plus the CNN fusion (kNN only when disabled)."""
        base = self.model.to_model_config()
        if not self.cnn.enabled:
            return base
        cnn = self.cnn
        return replace(base, fusion=cnn.fusion, cnn_weight=cnn.weight, disagreement_r=cnn.disagreement_r)

    @property
    def confirmed_dir(self) -> Path:
        return self.confirm_dir or self.state_dir / "confirmed"

    def resolved(self, base: Path) -> Config:
        """A copy whose relative paths are made absolute against ``base``."""

        def fix(p: Path | None) -> Path | None:
            return None if p is None else (p if p.is_absolute() else (base / p).resolve())

        data = self.model_dump()
        data["state_dir"] = fix(self.state_dir)
        data["library"] = fix(self.library)
        data["raman_library"] = fix(self.raman_library)
        data["confirm_dir"] = fix(self.confirm_dir)
        data["inboxes"] = [
            {**i, "path": fix(Path(i["path"])), "library": fix(i["library"] and Path(i["library"]))}
            for i in data["inboxes"]
        ]
        resolved = Config.model_validate(data)
        for inbox in resolved.inboxes:
            if inbox.path == resolved.state_dir or inbox.path in resolved.state_dir.parents:
                raise ValueError(
                    f"state_dir {resolved.state_dir} must not be inside inbox {inbox.name} ({inbox.path})"
                )
        return resolved


def _env_overrides(env: Mapping[str, str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, raw in env.items():
        if not key.startswith(ENV_PREFIX):
            continue
        parts = [p.lower() for p in key[len(ENV_PREFIX) :].split("__") if p]
        if not parts:
            continue
        node = out
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = yaml.safe_load(raw) if raw != "" else None
    return out


def _merge(base: dict[str, Any], extra: Mapping[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in extra.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def _describe(exc: ValidationError) -> str:
    first = exc.errors()[0]
    where = ".".join(str(p) for p in first["loc"]) or "(top level)"
    more = f" (and {exc.error_count() - 1} more problems)" if exc.error_count() > 1 else ""
    return f"{where}: {first['msg']}{more}"


def load_config(
    path: str | Path,
    *,
    overrides: Mapping[str, Any] | None = None,
    env: Mapping[str, str] | None = None,
    base: Path | None = None,
) -> Config:
    """Read, override, validate and resolve a configuration; raise :class:`ConfigError` on any problem.

    Relative paths are resolved against ``base``, by default the file's folder.
    """
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except FileNotFoundError as exc:
        raise ConfigError(f"configuration file {path} not found") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path} is not valid YAML: {exc}") from exc
    if not isinstance(raw, dict):
        raise ConfigError(f"{path} must hold a mapping of settings, not {type(raw).__name__}")
    data = _merge(raw, _env_overrides(os.environ if env is None else env))
    data = _merge(data, overrides or {})
    try:
        return Config.model_validate(data).resolved((path.parent if base is None else base).resolve())
    except ValidationError as exc:
        raise ConfigError(f"{path}: {_describe(exc)}") from exc
    except ValueError as exc:
        raise ConfigError(f"{path}: {exc}") from exc

"""The map route: a file that holds an imaging map is identified as a whole and cut into particles.

A map is not a file of spectra to classify one by one: :func:`engine.maps.identify_map` reads its
cube in blocks, sets the filter's pixels apart and gives one particle per region (with a pixel size
from the header, else from the inbox profile's ``pixel_size_um``). The worker sends such files here
instead of to the helpers (:meth:`MapRoute.claims`), identifies them on a snapshot of the served
model (:meth:`~daemon.pipeline.serving.ModelHolder.snapshot`: the model lock stays free for the
other files and for confirmations), and records one map and its particles with the file's ``done``
state (:class:`~daemon.store.maps.MapRecord`).
The map's drawing goes to ``<state_dir>/maps/<sha256>.png`` for the console and the reports.

An instrument writes a map's header and its data as two files, and the header may turn quiet
before the data is whole. A map whose data file is missing, or short and changed within the
inbox's quiet period, is still arriving (:meth:`MapRoute.arriving`): the worker retries it with
backoff instead of quarantining it. A short data file that has been quiet that long is truncated.
"""

from __future__ import annotations

import logging
import time
import zipfile
from collections.abc import Callable
from pathlib import Path

from daemon.config import InboxConfig, MapsConfig
from daemon.store.maps import MapRecord
from engine.core.spectrum import SpectrumError
from engine.io.envi import data_file_for, envi_header_for
from engine.io.wdf import is_wdf
from engine.maps import MapIdentification, identify_map, is_map, render_map
from engine.models.served import IdentificationModel

__all__ = ["MapRoute", "map_image"]

logger = logging.getLogger(__name__)


def map_image(images_dir: Path, sha256: str) -> Path:
    """Where the drawing of the map of content ``sha256`` is kept."""
    return images_dir / f"{sha256}.png"


class MapRoute:
    """Tells maps from other files, identifies them and makes their ledger record."""

    def __init__(
        self,
        settings: MapsConfig,
        images_dir: Path,
        *,
        inbox_for: Callable[[str], InboxConfig | None] = lambda path: None,
        quiet_seconds: float = 1.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self.images_dir = images_dir
        self.inbox_for = inbox_for
        #: How long a file must be unchanged to count as written (the watch's quiet period).
        self.quiet_seconds = quiet_seconds
        self.clock = clock

    def claims(self, path: str) -> bool:
        """Whether ``path`` holds a map (never raises: a file that cannot be looked at goes the usual way)."""
        try:
            return bool(is_map(Path(path)))
        except Exception:
            return False

    @staticmethod
    def header_of(path: str) -> str | None:
        """For the data half of an ENVI pair (a map's ``.dat`` beside its ``.hdr``): the header's name.

        The map is identified once, from its header; its data file is passed over. None for a
        header, a zip or a WDF file, which are the map's own file (whatever lies beside them).
        """
        file = Path(path)
        if file.suffix.lower() == ".hdr" or zipfile.is_zipfile(file) or is_wdf(file):
            return None
        header = envi_header_for(file)
        return None if header is None else header.name

    def arriving(self, path: str, error: SpectrumError) -> bool:
        """Whether ``error`` on the map at ``path`` means its data is still being written: the data
        file is missing, or truncated and changed within the quiet period."""
        if error.reason not in ("truncated", "no_spectrum") or Path(path).suffix.lower() != ".hdr":
            return False
        try:
            data = data_file_for(Path(path))
        except SpectrumError:
            return True  # no data file beside the header yet
        try:
            return self.clock() - data.stat().st_mtime < self.quiet_seconds
        except OSError:
            return True

    def identify(self, model: IdentificationModel, path: str) -> MapIdentification:
        """The map's particles; raises what the engine raises (a bad cube: SpectrumError)."""
        inbox = self.inbox_for(path)
        config = self.settings.map_config(None if inbox is None else inbox.pixel_size_um)
        return identify_map(
            model, Path(path), config=config, profile=None if inbox is None else inbox.profile()
        )

    def record(self, identification: MapIdentification, sha256: str) -> MapRecord:
        """The ledger's record of a map, after drawing it (a drawing that fails is only logged)."""
        image = map_image(self.images_dir, sha256)
        drawn: str | None = str(image)
        try:
            image.parent.mkdir(parents=True, exist_ok=True)
            render_map(identification, image)
        except Exception:
            logger.exception("could not draw the map %s", identification.source)
            drawn = None
        summary = identification.summary()
        particles = summary.pop("particles")
        spectra = {p.index: p.spectrum for p in identification.particles if p.spectrum is not None}
        return MapRecord(summary=summary, particles=particles, image_path=drawn, spectra=spectra)

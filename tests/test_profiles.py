"""Inbox profiles and other labs' files in the running daemon: one daemon, an LDIR inbox and a Raman inbox.

Files are written as other instruments deliver them: a bare ``wavenumber,intensity``
header with %T values, absorbance cut to 975-1800 cm-1, Raman counts.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml

from daemon.config import ConfigError, load_config
from daemon.service import Daemon
from daemon.store.ledger import StoredResult
from engine.analysis.evaluate import library_from_sources, load_source
from engine.core.labels import scoring_label
from engine.core.spectrum import Spectrum
from engine.models.served import IdentificationModel, ModelConfig
from tests.conftest import SHARED_DATA, wait_until
from tests.test_daemon import Running

FAST = ModelConfig(n_synthetic=10, n_learners=10)


def bare_csv(x: np.ndarray, y: np.ndarray) -> str:
    """Two columns under a header that names no unit, as many instruments export."""
    return "wavenumber,intensity\n" + "".join(f"{a:.3f},{b:.5f}\n" for a, b in zip(x, y, strict=True))


@pytest.fixture(scope="module")
def raman_library_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("raman")
    source = f"{SHARED_DATA / 'openspecy_raman_polymers_2023'}@organization=Cabernard et al. 2018"
    library_from_sources([source]).save(folder, message="Raman, one lab")
    return folder


@pytest.fixture(scope="module")
def particles() -> list[Spectrum]:
    return load_source(f"{SHARED_DATA / 'flopp_frond2021'}@library=FLOPP-e")[::6]


def write_config(tmp_path: Path, inboxes: list[dict[str, object]], **extra: object) -> Path:
    config = {
        "inboxes": inboxes,
        "state_dir": str(tmp_path / "state"),
        "watch": {"quiet_seconds": 0.2, "rescan_interval_seconds": 3600},
        "http": {"port": 0},
        "model": {"n_synthetic": 10, "n_learners": 10},
        "worker": {"helper_processes": 0},
        "cnn": {"enabled": False},  # it would train at start on these libraries (test_daemon.write_config)
        **extra,
    }
    for inbox in inboxes:
        Path(str(inbox["path"])).mkdir(parents=True, exist_ok=True)
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


class TestOtherLabsFiles:
    def test_percent_t_without_a_unit_header_as_well_as_the_labelled_set(
        self, tmp_path: Path, library_dir: Path, particles: list[Spectrum]
    ) -> None:
        """The daemon classifies %T CSVs without unit headers as well as the labelled set natively."""
        inbox = tmp_path / "inbox"
        config = load_config(
            write_config(tmp_path, [{"path": str(inbox), "name": "lab"}], library=str(library_dir))
        )
        model = IdentificationModel(
            library_from_sources([f"{SHARED_DATA / 'flopp_frond2021'}@library=FLOPP"]), FAST
        )
        native = model.classify(particles, aging=False)
        with Running(Daemon(config, model=model)) as d:
            for i, s in enumerate(particles):
                (inbox / f"particle_{i:03d}.csv").write_text(bare_csv(s.wavenumbers, s.values))
            wait_until(lambda: d.ledger.counts().get("done", 0) == len(particles), timeout=60)
            stored = {Path(r.source_path).name: r for r in d.ledger.results(limit=1000)}
        assert len(stored) == len(particles)
        for i, (s, expected) in enumerate(zip(particles, native, strict=True)):
            got = stored[f"particle_{i:03d}.csv"]
            assert (str(got.status), got.label) == (expected.status, expected.label), s.metadata["label"]
            assert got.payload["y_unit"] == "transmittance"
            assert got.payload["y_unit_source"] == "inferred"

    def test_an_ldir_inbox_and_a_raman_inbox_in_one_daemon(
        self, tmp_path: Path, library_dir: Path, raman_library_dir: Path, particles: list[Spectrum]
    ) -> None:
        ldir, raman = tmp_path / "ldir", tmp_path / "raman"
        inboxes = [
            {
                "path": str(ldir),
                "name": "ldir",
                "technique": "ir",
                "y_unit": "absorbance",
                "range": [975, 1800],
            },
            {"path": str(raman), "name": "raman", "technique": "raman", "library": str(raman_library_dir)},
        ]
        config = load_config(write_config(tmp_path, inboxes, library=str(library_dir)))
        others = load_source(f"{SHARED_DATA / 'openspecy_raman_polymers_2023'}@organization=J. Lynch, NIST")
        with Running(Daemon(config)) as d:
            for i, s in enumerate(particles):
                absorbance = -np.log10(np.clip(s.values / 100.0, 1e-4, None))  # full range: the profile cuts
                (ldir / f"ldir_{i:03d}.csv").write_text(bare_csv(s.wavenumbers, absorbance))
            for i, s in enumerate(others):  # starts at 300-400 cm-1: only the profile says Raman
                (raman / f"raman_{i:03d}.csv").write_text(bare_csv(s.wavenumbers, 2000 + 8000 * s.values))
            total = len(particles) + len(others)
            wait_until(lambda: d.ledger.counts().get("done", 0) == total, timeout=90)
            results = d.ledger.results(limit=1000)
        by_inbox: dict[str, list[StoredResult]] = {"ldir": [], "raman": []}
        for r in results:
            by_inbox[Path(r.source_path).parent.name].append(r)
        for r in by_inbox["ldir"]:
            assert r.payload["range"] == [975.0, 1800.0] and r.payload["y_unit_source"] == "profile"
            assert r.payload["technique"] == "ir"
        right = sum(
            str(r.status) == "known" and scoring_label(str(r.label)) == scoring_label(s.metadata["label"])
            for r, s in zip(sorted(by_inbox["ldir"], key=lambda r: r.source_path), particles, strict=True)
        )
        assert right >= 0.8 * len(particles)
        assert all(r.payload["technique"] == "raman" for r in by_inbox["raman"])
        assert sum(str(r.status) == "known" for r in by_inbox["raman"]) >= 0.8 * len(others)


class TestProfileValidation:
    """A bad profile stops the start with one line naming the key."""

    def _load(self, tmp_path: Path, inbox: dict[str, object], **extra: object) -> None:
        load_config(write_config(tmp_path, [{"path": str(tmp_path / "in"), "name": "lab", **inbox}], **extra))

    def test_unknown_unit(self, tmp_path: Path) -> None:
        with pytest.raises(ConfigError, match=r"inboxes\.0\.y_unit"):
            self._load(tmp_path, {"y_unit": "furlongs"})

    def test_reversed_range(self, tmp_path: Path) -> None:
        with pytest.raises(ConfigError, match=r"inboxes\.0\.range"):
            self._load(tmp_path, {"range": [1800, 975]})

    def test_unknown_technique(self, tmp_path: Path) -> None:
        with pytest.raises(ConfigError, match=r"inboxes\.0\.technique"):
            self._load(tmp_path, {"technique": "nmr"})

    def test_a_library_needs_the_technique(self, tmp_path: Path, library_dir: Path) -> None:
        with pytest.raises(ConfigError, match="needs the inbox's technique"):
            self._load(tmp_path, {"library": str(library_dir)})

    def test_two_ir_libraries_conflict(self, tmp_path: Path, library_dir: Path) -> None:
        with pytest.raises(ConfigError, match="one ir library per daemon"):
            self._load(
                tmp_path, {"technique": "ir", "library": str(tmp_path / "other")}, library=str(library_dir)
            )

    def test_a_library_of_the_wrong_technique(self, tmp_path: Path, raman_library_dir: Path) -> None:
        config = load_config(
            write_config(
                tmp_path, [{"path": str(tmp_path / "in"), "name": "lab"}], library=str(raman_library_dir)
            )
        )
        with pytest.raises(ConfigError, match="is a raman library"):
            Daemon(config)

    def test_units_are_normalised(self, tmp_path: Path) -> None:
        config = load_config(
            write_config(
                tmp_path,
                [{"path": str(tmp_path / "in"), "name": "lab", "y_unit": "%T", "range": [975, 1800]}],
            )
        )
        profile = config.inboxes[0].profile()
        assert (profile.y_unit, profile.range, profile.technique) == ("transmittance", (975.0, 1800.0), None)

"""Tests for :mod:`daemon.intake.watcher`: pure parts with an injected clock, then real observers.

The live tests run each scenario under the native observer (inotify here) and the
PollingObserver. Quiet periods pass by advancing a fake clock, never by sleeping; the
only waiting is :func:`wait_until`, which polls for an observable condition.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path, PurePath

import pytest
from watchdog.events import (
    DirModifiedEvent,
    DirMovedEvent,
    FileClosedEvent,
    FileCreatedEvent,
    FileDeletedEvent,
    FileModifiedEvent,
    FileMovedEvent,
)

from daemon.intake import (
    FileStat,
    InboxEventHandler,
    InboxWatcher,
    SpectrumFileFilter,
    StabilityTracker,
    scan,
    stat_candidate,
)
from engine.io import readers
from engine.io.candidates import NonSpectrumFilter, candidate_files
from engine.io.envi import DATA_SUFFIXES


def wait_until(predicate: Callable[[], bool], timeout: float = 10.0, interval: float = 0.02) -> None:
    """Poll ``predicate`` until it holds; fail the test after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"condition not met within {timeout} s")
        time.sleep(interval)


class FakeClock:
    """A clock that moves only when told to."""

    def __init__(self, start: float = 1000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def tracked_paths(watcher: InboxWatcher) -> set[Path]:
    return {entry.path for entry in watcher.tracked_files()}


def tracked_size(watcher: InboxWatcher, path: Path) -> int | None:
    return next((entry.size for entry in watcher.tracked_files() if entry.path == path), None)


@pytest.fixture
def inbox(tmp_path: Path) -> Path:
    folder = tmp_path / "inbox"
    folder.mkdir()
    return folder


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


P = Path("/inbox/map_0001.spa")


class TestStabilityTracker:
    def test_growing_file_is_ready_only_after_it_stops(self) -> None:
        tracker = StabilityTracker(quiet_seconds=2.0)
        for tick, size in enumerate([1000, 2000, 3000, 4000]):
            assert tracker.track(P, size=size, mtime=10.0 + tick, now=100.0 + tick)
            assert tracker.ready(now=100.0 + tick + 1.9) == []
        # Stopped growing at t=103: still the same stat on later ticks.
        for later in (104.0, 104.5):
            tracker.track(P, size=4000, mtime=13.0, now=later)
            assert tracker.ready(now=later) == []
        assert tracker.ready(now=105.0) == [FileStat(P, 4000, 13.0)]

    def test_zero_byte_placeholder_waits_for_content_then_quiet(self) -> None:
        tracker = StabilityTracker(quiet_seconds=2.0, empty_seconds=60.0)
        tracker.track(P, size=0, mtime=10.0, now=100.0)
        assert tracker.ready(now=159.0) == []  # an empty placeholder waits for its bytes
        tracker.track(P, size=512, mtime=10.0, now=159.0)
        assert tracker.ready(now=160.0) == []
        assert tracker.ready(now=161.0) == [FileStat(P, 512, 10.0)]

    def test_a_file_that_stays_empty_is_handed_on_at_last(self) -> None:
        """An empty file was never reported, and every rescan said so again, forever."""
        tracker = StabilityTracker(quiet_seconds=2.0, empty_seconds=60.0)
        tracker.track(P, size=0, mtime=10.0, now=100.0)
        assert tracker.next_ready_at() == 160.0
        assert tracker.ready(now=159.9) == []
        assert tracker.ready(now=160.0) == [FileStat(P, 0, 10.0)]

    def test_next_ready_at_is_the_earliest_file_with_content_plus_the_quiet_period(self) -> None:
        tracker = StabilityTracker(quiet_seconds=2.0)
        assert tracker.next_ready_at() is None
        tracker.track(P, size=0, mtime=10.0, now=100.0)
        assert tracker.next_ready_at() == 160.0  # a placeholder waits a minute for its bytes
        tracker.track(P.with_name("b.spa"), size=10, mtime=10.0, now=101.0)
        tracker.track(P.with_name("c.spa"), size=10, mtime=10.0, now=100.5)
        assert tracker.next_ready_at() == 102.5
        assert tracker.ready(now=102.5) == [FileStat(P.with_name("c.spa"), 10, 10.0)]

    def test_mtime_change_alone_resets_the_quiet_period(self) -> None:
        tracker = StabilityTracker(quiet_seconds=2.0)
        tracker.track(P, size=100, mtime=10.0, now=100.0)
        tracker.track(P, size=100, mtime=11.0, now=101.5)  # rewritten in place, same size
        assert tracker.ready(now=102.0) == []
        assert tracker.ready(now=103.5) == [FileStat(P, 100, 11.0)]

    def test_settle_collapses_repeated_reports(self) -> None:
        tracker = StabilityTracker(quiet_seconds=1.0)
        tracker.track(P, size=100, mtime=10.0, now=100.0)
        (ready,) = tracker.ready(now=101.0)
        assert tracker.settle(ready.path, size=ready.size, mtime=ready.mtime)
        assert P not in tracker
        assert not tracker.track(P, size=100, mtime=10.0, now=102.0)  # duplicate event
        assert tracker.ready(now=200.0) == []
        assert tracker.track(P, size=200, mtime=20.0, now=300.0)  # rewritten: tracked again
        assert tracker.ready(now=301.0) == [FileStat(P, 200, 20.0)]

    def test_settle_refuses_a_stat_that_changed_after_ready(self) -> None:
        tracker = StabilityTracker(quiet_seconds=1.0)
        tracker.track(P, size=100, mtime=10.0, now=100.0)
        (ready,) = tracker.ready(now=101.0)
        tracker.track(P, size=150, mtime=11.0, now=101.0)
        assert not tracker.settle(ready.path, size=ready.size, mtime=ready.mtime)
        assert len(tracker) == 1

    def test_ready_is_quietest_first_and_forget(self) -> None:
        tracker = StabilityTracker(quiet_seconds=1.0)
        late, early = Path("/inbox/b/late.spa"), Path("/inbox/b/early.spa")
        tracker.track(late, size=1, mtime=1.0, now=50.0)
        tracker.track(early, size=1, mtime=1.0, now=10.0)
        tracker.track(P, size=1, mtime=1.0, now=30.0)
        assert [r.path for r in tracker.ready(now=60.0)] == [early, P, late]
        tracker.forget(Path("/inbox/b"), recursive=True)
        assert [r.path for r in tracker.ready(now=60.0)] == [P]
        tracker.forget(P)
        assert len(tracker) == 0

    def test_negative_quiet_period_is_refused(self) -> None:
        with pytest.raises(ValueError):
            StabilityTracker(quiet_seconds=-1.0)


class TestSpectrumFileFilter:
    ROOT = Path("/inbox")

    def accepts(self, spectra: SpectrumFileFilter, relative: str) -> bool:
        return spectra.accepts(self.ROOT / relative, root=self.ROOT)

    @pytest.mark.parametrize(
        "name",
        [
            "scan.tmp",
            "SCAN.TMP",
            "~$report.xlsx",
            ".DS_Store",
            "._particle.spa",
            ".~lock.map.csv#",
            "download.part",
            "map.spa.crdownload",
            "instrument.lock",
            ".map.swp",
            "map.swp",
            "map.spa~",
            "Thumbs.db",
            "thumbs.DB",
            "desktop.ini",
            "copy.filepart",
        ],
    )
    def test_default_ignores(self, name: str) -> None:
        assert not self.accepts(SpectrumFileFilter(), name)

    @pytest.mark.parametrize(
        "name",
        ["particle.spa", "sample.0", "sample.12", "map.jdx", "r.spc", "raman.wdf", "x.csv", "NOSUFFIX"],
    )
    def test_spectrum_formats_are_not_restricted_by_default(self, name: str) -> None:
        assert self.accepts(SpectrumFileFilter(), name)
        assert self.accepts(SpectrumFileFilter(), f"run_07/{name}")

    @pytest.mark.parametrize(
        "relative",
        ["quarantine/a.spa", "_mpwatch/state.db", ".git/objects/x", "run/.cache/a.spa", "$RECYCLE.BIN/a.spa"],
    )
    def test_excluded_folders(self, relative: str) -> None:
        spectra = SpectrumFileFilter()
        assert not self.accepts(spectra, relative)
        assert not spectra.accepts_directory((self.ROOT / relative).parent, root=self.ROOT)

    def test_user_excludes_extend_defaults(self) -> None:
        spectra = SpectrumFileFilter(exclude=["*.log", "archive/*"], exclude_dirs=["processed"])
        assert not self.accepts(spectra, "omnic.LOG")
        assert not self.accepts(spectra, "archive/a.spa")
        assert not self.accepts(spectra, "processed/2024/a.spa")
        assert not self.accepts(spectra, "still.tmp")  # the defaults remain
        assert not self.accepts(spectra, "quarantine/a.spa")
        assert self.accepts(spectra, "run/archive/a.spa")  # path patterns anchor at the root
        assert spectra.exclude[: len(SpectrumFileFilter.DEFAULT_IGNORE_PATTERNS)] == (
            SpectrumFileFilter.DEFAULT_IGNORE_PATTERNS
        )
        assert "*.log" not in SpectrumFileFilter.DEFAULT_IGNORE_PATTERNS

    def test_includes_restrict(self) -> None:
        spectra = SpectrumFileFilter(include=["*.spa", "*.[0-9]", "ldir/*.csv"])
        assert self.accepts(spectra, "a.SPA")
        assert self.accepts(spectra, "b.0")
        assert self.accepts(spectra, "ldir/particles.csv")
        assert not self.accepts(spectra, "notes.csv")
        assert not self.accepts(spectra, "a.spa.tmp")  # excludes win over includes

    def test_paths_outside_the_root_and_the_root_itself(self) -> None:
        spectra = SpectrumFileFilter()
        assert not spectra.accepts(Path("/elsewhere/a.spa"), root=self.ROOT)
        assert not spectra.accepts(self.ROOT, root=self.ROOT)
        assert spectra.accepts_directory(self.ROOT, root=self.ROOT)

    def test_bad_patterns_fail_fast(self) -> None:
        with pytest.raises(ValueError):
            SpectrumFileFilter(exclude=[""])


class TestNonSpectrumFilter:
    @pytest.mark.parametrize(
        ("name", "kind"),
        [
            ("photo.png", "an image (*.png)"),
            ("IMG_0042.JPG", "an image (*.jpg)"),
            ("filter.tiff", "an image (*.tiff)"),
            ("results.xlsx", "a spreadsheet (*.xlsx)"),
            ("counts.ods", "a spreadsheet (*.ods)"),
            ("report.pdf", "a document (*.pdf)"),
            ("protocol.docx", "a document (*.docx)"),
            ("README.md", "a document (*.md)"),
        ],
    )
    def test_images_documents_and_spreadsheets_by_name(self, name: str, kind: str) -> None:
        assert NonSpectrumFilter().reason_for(PurePath("sample 7") / name) == kind

    def test_no_default_pattern_matches_a_suffix_a_reader_claims(self) -> None:
        claimed = {suffix for reader in readers() for suffix in reader.suffixes}
        claimed |= {suffix.lower() for suffix in DATA_SUFFIXES if suffix}  # an ENVI image's data file
        assert {".txt", ".csv", ".dat", ".tsv", ".spa", ".0", ".zip"} <= claimed
        rule = NonSpectrumFilter()
        assert [suffix for suffix in sorted(claimed) if rule.reason_for(PurePath(f"p{suffix}"))] == []
        assert rule.reason_for(PurePath("NOSUFFIX")) is None

    def test_extra_patterns_extend_the_defaults(self) -> None:
        rule = NonSpectrumFilter(extra=["*.log", "balance_*"])
        assert rule.reason_for(PurePath("omnic.LOG")) == "a configured non-spectrum pattern (*.log)"
        assert (
            rule.reason_for(PurePath("balance_0001.txt")) == "a configured non-spectrum pattern (balance_*)"
        )
        assert rule.reason_for(PurePath("photo.png")) == "an image (*.png)"  # the defaults remain
        assert rule.patterns[-2:] == ("*.log", "balance_*")
        with pytest.raises(ValueError, match="non-spectrum"):
            NonSpectrumFilter(extra=[" "])

    def test_the_intake_filter_is_the_engines(self) -> None:
        from engine.io.candidates import SpectrumFileFilter as EngineFilter

        assert SpectrumFileFilter is EngineFilter


class TestCandidateFiles:
    def test_walks_in_name_order_with_the_filter(self, inbox: Path) -> None:
        for relative in ["b.spa", "a.csv", "run/c.0", "run/deep/d.jdx", "run/~$x.xlsx", "quarantine/e.spa"]:
            (inbox / relative).parent.mkdir(parents=True, exist_ok=True)
            (inbox / relative).write_bytes(b"data")
        (inbox / "run" / "pipe.spa").parent.mkdir(exist_ok=True)
        os.mkfifo(inbox / "run" / "pipe.spa")
        found = [
            p.relative_to(inbox).as_posix() for p in candidate_files(inbox, file_filter=SpectrumFileFilter())
        ]
        assert found == ["a.csv", "b.spa", "run/c.0", "run/deep/d.jdx"]
        under = candidate_files(inbox, file_filter=SpectrumFileFilter(), under=inbox / "run" / "deep")
        assert [p.name for p in under] == ["d.jdx"]
        assert (
            list(candidate_files(inbox, file_filter=SpectrumFileFilter(), under=inbox / "quarantine")) == []
        )

    def test_links_to_files_are_files_links_to_folders_are_not_followed(
        self, inbox: Path, tmp_path: Path
    ) -> None:
        outside = tmp_path / "outside"
        outside.mkdir()
        (outside / "far.spa").write_bytes(b"x")
        (inbox / "near.spa").symlink_to(outside / "far.spa")
        (inbox / "elsewhere").symlink_to(outside, target_is_directory=True)
        assert [p.name for p in candidate_files(inbox, file_filter=SpectrumFileFilter())] == ["near.spa"]


class TestScanAndAccept:
    def test_scan_walks_and_filters(self, inbox: Path) -> None:
        (inbox / "run" / "deep").mkdir(parents=True)
        (inbox / "quarantine").mkdir()
        for relative in ["a.spa", "run/b.0", "run/deep/c.jdx", "run/skip.tmp", "quarantine/d.spa", ".hidden"]:
            (inbox / relative).write_bytes(b"data")
        (inbox / "empty.spa").touch()
        found = {
            entry.path.relative_to(inbox).as_posix(): entry
            for entry in scan(inbox, file_filter=SpectrumFileFilter())
        }
        assert set(found) == {"a.spa", "run/b.0", "run/deep/c.jdx", "empty.spa"}
        assert found["a.spa"].size == 4
        assert found["empty.spa"].size == 0
        under = scan(inbox, file_filter=SpectrumFileFilter(), under=inbox / "run")
        assert {e.path.name for e in under} == {"b.0", "c.jdx"}

    def test_scan_does_not_follow_folder_links(self, inbox: Path) -> None:
        (inbox / "run").mkdir()
        (inbox / "run" / "a.spa").write_bytes(b"x")
        (inbox / "run" / "loop").symlink_to(inbox, target_is_directory=True)
        assert [e.path.name for e in scan(inbox, file_filter=SpectrumFileFilter())] == ["a.spa"]

    def test_unreadable_folder_is_skipped_and_logged(
        self, inbox: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
    ) -> None:
        (inbox / "locked").mkdir()
        (inbox / "locked" / "a.spa").write_bytes(b"x")
        (inbox / "b.spa").write_bytes(b"x")
        real_scandir = os.scandir

        def scandir(path: str | os.PathLike[str]) -> Iterator[os.DirEntry[str]]:
            if Path(path).name == "locked":
                raise PermissionError(13, "Permission denied", str(path))
            return real_scandir(path)

        monkeypatch.setattr(os, "scandir", scandir)
        with caplog.at_level(logging.WARNING, logger="daemon.intake.watcher"):
            assert [e.path.name for e in scan(inbox, file_filter=SpectrumFileFilter())] == ["b.spa"]
        assert "Permission denied" in caplog.text

    def test_stat_candidate_never_raises(
        self, inbox: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
    ) -> None:
        spectra = SpectrumFileFilter()
        assert stat_candidate(inbox / "vanished.spa", root=inbox, file_filter=spectra) is None
        (inbox / "folder.spa").mkdir()
        assert stat_candidate(inbox / "folder.spa", root=inbox, file_filter=spectra) is None
        os.mkfifo(inbox / "pipe.spa")
        assert stat_candidate(inbox / "pipe.spa", root=inbox, file_filter=spectra) is None
        denied = inbox / "denied.spa"
        denied.write_bytes(b"x")
        real_stat = Path.stat

        def stat(self: Path, *, follow_symlinks: bool = True) -> os.stat_result:
            if self.name == "denied.spa":
                raise PermissionError(13, "Permission denied", str(self))
            return real_stat(self, follow_symlinks=follow_symlinks)

        monkeypatch.setattr(Path, "stat", stat)
        with caplog.at_level(logging.WARNING, logger="daemon.intake.watcher"):
            assert stat_candidate(denied, root=inbox, file_filter=spectra) is None
        assert "denied.spa" in caplog.text

    def test_accept_never_raises(
        self, inbox: Path, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        watcher = InboxWatcher(inbox, clock=clock)
        assert not watcher.accept(inbox / "vanished.spa")
        assert not watcher.accept(inbox)
        good = inbox / "good.spa"
        good.write_bytes(b"x")

        def broken(*args: object, **kwargs: object) -> bool:
            raise RuntimeError("tracker bug")

        monkeypatch.setattr(StabilityTracker, "track", broken)
        assert not watcher.accept(good)
        assert watcher.accept_tree(inbox) == 0

    def test_handler_maps_events_and_swallows_errors(
        self, inbox: Path, clock: FakeClock, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
    ) -> None:
        watcher = InboxWatcher(inbox, clock=clock)
        handler = InboxEventHandler(watcher)
        final, temp = inbox / "a.spa", inbox / "a.spa.writing"
        temp.write_bytes(b"partial")
        handler.dispatch(FileCreatedEvent(str(temp)))
        assert tracked_paths(watcher) == {temp}
        temp.rename(final)
        handler.dispatch(FileMovedEvent(str(temp), str(final)))
        assert tracked_paths(watcher) == {final}
        (inbox / "map").mkdir()
        (inbox / "map" / "tile_1.spa").write_bytes(b"x")
        handler.dispatch(DirMovedEvent(str(inbox / "incoming"), str(inbox / "map")))
        handler.dispatch(DirModifiedEvent(str(inbox)))
        handler.dispatch(FileModifiedEvent(str(final)))
        handler.dispatch(FileClosedEvent(str(final)))
        assert tracked_paths(watcher) == {final, inbox / "map" / "tile_1.spa"}
        handler.dispatch(FileDeletedEvent(str(final)))
        assert tracked_paths(watcher) == {inbox / "map" / "tile_1.spa"}

        def broken(path: Path) -> bool:
            raise RuntimeError("boom")

        monkeypatch.setattr(watcher, "accept", broken)
        with caplog.at_level(logging.ERROR, logger="daemon.intake.watcher"):
            handler.dispatch(FileCreatedEvent(str(final)))  # must not raise
        assert "boom" in caplog.text


class TestPollReady:
    def test_rescan_finds_what_a_silent_watcher_missed(self, inbox: Path, clock: FakeClock) -> None:
        watcher = InboxWatcher(inbox, quiet_seconds=1.0, clock=clock)  # never started: hears nothing
        (inbox / "a.spa").write_bytes(b"x" * 10)
        (inbox / "run").mkdir()
        (inbox / "run" / "b.spa").write_bytes(b"y" * 20)
        assert watcher.poll_ready() == []
        assert watcher.seconds_to_next_ready() is None
        assert watcher.rescan() == 2
        assert watcher.seconds_to_next_ready() == 1.0
        clock.advance(0.25)
        assert watcher.seconds_to_next_ready() == 0.75
        clock.advance(0.75)
        assert watcher.seconds_to_next_ready() == 0.0
        assert {(r.path.name, r.size) for r in watcher.poll_ready()} == {("a.spa", 10), ("b.spa", 20)}
        assert watcher.seconds_to_next_ready() is None
        assert watcher.rescan() == 0  # unchanged files are not handed on again
        clock.advance(10.0)
        assert watcher.poll_ready() == []

    def test_poll_hands_on_at_most_limit_files_quietest_first(self, inbox: Path, clock: FakeClock) -> None:
        watcher = InboxWatcher(inbox, quiet_seconds=1.0, clock=clock)
        for name in ("old.spa", "new.spa"):
            (inbox / name).write_bytes(b"x" * 10)
            watcher.accept(inbox / name)
            clock.advance(0.5)
        clock.advance(1.0)
        assert [r.path.name for r in watcher.poll_ready(limit=1)] == ["old.spa"]
        assert watcher.seconds_to_next_ready() == 0.0  # the other one is ready and waits its turn
        assert [r.path.name for r in watcher.poll_ready(limit=1)] == ["new.spa"]
        assert watcher.poll_ready(limit=1) == []

    def test_poll_restats_before_handing_on(self, inbox: Path, clock: FakeClock) -> None:
        watcher = InboxWatcher(inbox, quiet_seconds=1.0, clock=clock)
        growing, vanishing = inbox / "growing.spa", inbox / "vanishing.spa"
        growing.write_bytes(b"x" * 10)
        vanishing.write_bytes(b"x" * 10)
        watcher.rescan()
        clock.advance(1.0)
        with growing.open("ab") as handle:  # grows without an event reaching the watcher
            handle.write(b"x" * 10)
        vanishing.unlink()
        assert watcher.poll_ready() == []
        assert tracked_paths(watcher) == {growing}
        clock.advance(1.0)
        assert [(r.path, r.size) for r in watcher.poll_ready()] == [(growing, 20)]

    def test_start_fails_fast_without_an_inbox(self, tmp_path: Path) -> None:
        with pytest.raises(NotADirectoryError):
            InboxWatcher(tmp_path / "missing").start()
        with pytest.raises(ValueError):
            InboxWatcher(tmp_path, poll_interval=0.0)


@pytest.fixture(params=[False, True], ids=["native", "polling"])
def live(request: pytest.FixtureRequest, inbox: Path, clock: FakeClock) -> Iterator[InboxWatcher]:
    watcher = InboxWatcher(inbox, quiet_seconds=1.0, polling=request.param, poll_interval=0.05, clock=clock)
    watcher.start()
    try:
        yield watcher
    finally:
        watcher.stop()


class TestLiveObservers:
    def test_lifecycle(self, inbox: Path, clock: FakeClock) -> None:
        watcher = InboxWatcher(inbox, polling=True, poll_interval=0.05, clock=clock)
        assert not watcher.is_alive
        with watcher:
            assert watcher.is_alive
            with pytest.raises(RuntimeError):
                watcher.start()
        assert not watcher.is_alive

    @pytest.mark.parametrize("polling", [False, True], ids=["native", "polling"])
    def test_is_alive_turns_false_when_the_inbox_goes_away(
        self, inbox: Path, clock: FakeClock, polling: bool
    ) -> None:
        watcher = InboxWatcher(inbox, polling=polling, poll_interval=0.05, clock=clock)
        with watcher:
            inbox.rmdir()
            wait_until(lambda: not watcher.is_alive)

    def test_catch_up_at_start(self, inbox: Path, clock: FakeClock) -> None:
        (inbox / "before.spa").write_bytes(b"x")
        with InboxWatcher(inbox, quiet_seconds=1.0, clock=clock) as watcher:
            assert tracked_paths(watcher) == {inbox / "before.spa"}

    def test_write_then_rename_is_picked_up_once_under_its_final_name(
        self, live: InboxWatcher, inbox: Path, clock: FakeClock
    ) -> None:
        temp, final = inbox / "particle_0001.spa.tmp", inbox / "particle_0001.spa"
        with temp.open("wb") as handle:
            for _ in range(3):
                handle.write(b"\x00" * 4096)
                handle.flush()
        temp.rename(final)
        wait_until(lambda: final in tracked_paths(live))
        assert tracked_paths(live) == {final}
        clock.advance(1.0)
        assert live.poll_ready() == [FileStat(final, 3 * 4096, final.stat().st_mtime)]
        live.accept(final)  # a late duplicate event
        live.rescan()
        clock.advance(5.0)
        assert live.poll_ready() == []

    def test_folder_moved_into_the_inbox_yields_all_its_files(
        self, live: InboxWatcher, inbox: Path, tmp_path: Path, clock: FakeClock
    ) -> None:
        outside = tmp_path / "staging" / "map_0042"
        (outside / "tiles").mkdir(parents=True)
        names = ["overview.spa", "tiles/t1.spa", "tiles/t2.spa"]
        for name in names:
            (outside / name).write_bytes(b"spectrum")
        (outside / "tiles" / "t3.spa.part").write_bytes(b"half")
        outside.rename(inbox / "map_0042")
        expected = {inbox / "map_0042" / name for name in names}
        wait_until(lambda: tracked_paths(live) == expected)
        clock.advance(1.0)
        ready = live.poll_ready()
        assert len(ready) == 3
        assert {r.path for r in ready} == expected

    def test_duplicate_events_collapse_and_growth_restarts_the_quiet_period(
        self, live: InboxWatcher, inbox: Path, clock: FakeClock
    ) -> None:
        path = inbox / "spectrum.jdx"
        with path.open("wb") as handle:
            handle.write(b"y" * 100)
            handle.flush()
            wait_until(lambda: tracked_size(live, path) == 100)
            clock.advance(0.6)
            for _ in range(4):  # several writes, several events
                handle.write(b"y" * 100)
                handle.flush()
        wait_until(lambda: tracked_size(live, path) == 500)
        clock.advance(0.6)
        assert live.poll_ready() == []  # 0.6 s since the last growth
        live.accept(path)
        live.accept(path)
        assert live.waiting == 1
        clock.advance(0.5)
        assert [(r.path, r.size) for r in live.poll_ready()] == [(path, 500)]
        assert not live.accept(path)
        clock.advance(5.0)
        assert live.poll_ready() == []

    def test_rescan_catches_files_whose_events_were_lost(
        self, inbox: Path, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setattr(InboxEventHandler, "dispatch", lambda self, event: None)  # a silent share
        with InboxWatcher(inbox, quiet_seconds=1.0, clock=clock) as watcher:
            assert watcher.is_alive
            (inbox / "missed.spa").write_bytes(b"x")
            assert watcher.rescan() == 1
            clock.advance(1.0)
            assert [r.path for r in watcher.poll_ready()] == [inbox / "missed.spa"]

"""Speed and memory of :func:`engine.maps.identify_map` on a synthetic FTIR imaging map.

The map: ``--size`` x ``--size`` pixels (1000 x 1000 by default) on an 8 cm-1
axis from 676 to 3996 cm-1 (416 bands, float32, ENVI ``bip``), written to a
temporary folder. The filter is low-signal absorbance with noise; about
``--particles`` particles (rectangles, discs, rotated ellipses and fibres, 2 to
80 pixels across) are painted on it with real environmental particle spectra
(FLOPP-e, %T converted to absorbance, peaks 0.3 to 0.8) plus the same noise,
and a few pixels are NaN. The model is the served one: the bundled default IR
library with the default :class:`~engine.models.served.ModelConfig`.

Measured:

- the whole identification (read, background, pixels identified, segmented,
  every particle's mean spectrum classified with evidence and aging), in a
  child process, ``--repeats`` times (median); the child reports its own peak
  resident memory (``ru_maxrss``);
- the baseline in the same run: ``--baseline-pixels`` pixels drawn at random
  from the same map, each a :class:`~engine.core.spectrum.Spectrum`, classified
  by ``model.classify`` (``aging=False``, the daemon's path; the spectra are
  built before the clock starts), median of three; scaled per pixel;
- the per-pixel speed-up: the baseline's seconds per pixel over the map's.

Targets (issue #15): 1000 x 1000 in at most 120 s on 2 cores, peak RSS at most
1.5 GB, at least 10 times faster per pixel than separate spectra. ``--quick``
runs a 300 x 300 map.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from engine.io.envi import envi_header_text

AXIS = np.arange(676.0, 4000.0, 8.0)
NOISE = 0.003
SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"

#: Targets of issue #15 at 1000 x 1000.
TARGET_SECONDS = 120.0
TARGET_RSS_BYTES = 1.5e9
TARGET_SPEEDUP = 10.0


def particle_spectra(data: Path) -> npt.NDArray[np.float32]:
    """Environmental particle spectra (FLOPP-e) as absorbance on the map's axis, each with peak 1."""
    from engine.analysis.evaluate import load_source

    rows = []
    for s in load_source(f"{data / 'flopp_frond2021'}@library=FLOPP-e"):
        transmittance = np.interp(AXIS, s.wavenumbers, s.values)
        absorbance = -np.log10(np.clip(transmittance / 100.0, 1e-4, None))
        absorbance -= absorbance.min()
        if absorbance.max() > 0:
            rows.append(absorbance / absorbance.max())
    return np.asarray(rows, dtype=np.float32)


def paint(size: int, n_particles: int, rng: np.random.Generator) -> npt.NDArray[np.int32]:
    """An image of particle numbers (-1: filter) with shapes of several kinds."""
    ids = np.full((size, size), -1, dtype=np.int32)
    for k in range(n_particles):
        kind = rng.integers(4)
        cy, cx = (int(v) for v in rng.integers(0, size, 2))
        if kind == 0:
            h, w = (int(v) for v in rng.integers(3, 30, 2))
            ids[cy : cy + h, cx : cx + w] = k
            continue
        if kind == 3:  # a fibre: a thick segment
            length, width, angle = rng.uniform(20, 80), rng.uniform(1.0, 2.0), rng.uniform(0, np.pi)
            a, b = length / 2, width
        else:
            a, b = rng.uniform(2, 15), rng.uniform(2, 15) if kind == 2 else 0.0
            b, angle = (b or a), rng.uniform(0, np.pi)
        reach = int(np.ceil(max(a, b))) + 1
        lines, samples = np.mgrid[-reach : reach + 1, -reach : reach + 1]
        u = samples * np.cos(angle) + lines * np.sin(angle)
        v = -samples * np.sin(angle) + lines * np.cos(angle)
        inside = (u / a) ** 2 + (v / b) ** 2 <= 1.0 if kind != 3 else (np.abs(u) <= a) & (np.abs(v) <= b)
        ly, lx = lines[inside] + cy, samples[inside] + cx
        keep = (ly >= 0) & (ly < size) & (lx >= 0) & (lx < size)
        ids[ly[keep], lx[keep]] = k
    return ids


def write_map(folder: Path, size: int, n_particles: int, seed: int) -> tuple[Path, dict[str, Any]]:
    """The synthetic map as an ENVI pair in ``folder``, written a block of lines at a time."""
    rng = np.random.default_rng(seed)
    spectra = particle_spectra(SHARED)
    ids = paint(size, n_particles, rng)
    choice = rng.integers(0, len(spectra), n_particles)
    amplitude = rng.uniform(0.3, 0.8, n_particles).astype(np.float32)
    painted = spectra[choice] * amplitude[:, None]
    header = folder / "map.hdr"
    header.write_text(
        envi_header_text(samples=size, lines=size, wavenumbers=AXIS, pixel_size_um=(6.25, 6.25))
    )
    data = np.memmap(folder / "map.dat", dtype="<f4", mode="w+", shape=(size, size, AXIS.size))
    step = max(1, 50_000 // size)
    for start in range(0, size, step):
        stop = min(start + step, size)
        block = rng.standard_normal((stop - start, size, AXIS.size), dtype=np.float32)
        block *= NOISE
        block += 0.01
        inside = ids[start:stop] >= 0
        block[inside] += painted[ids[start:stop][inside]]
        data[start:stop] = block
    nan = rng.integers(0, size, (max(1, size // 10), 2))
    data[nan[:, 0], nan[:, 1]] = np.nan
    data.flush()
    del data
    facts = {
        "size": size,
        "bands": int(AXIS.size),
        "particles_painted": n_particles,
        "particle_pixels": int((ids >= 0).sum()),
        "nan_pixels": len({(int(a), int(b)) for a, b in nan}),
        "map_bytes": int((folder / "map.dat").stat().st_size),
    }
    return header, facts


def peak_rss_bytes() -> int:
    """This process's peak resident memory since it started its program.

    ``VmHWM`` rather than ``ru_maxrss``: Linux carries the parent's peak over a fork and exec into
    the child's ``ru_maxrss``, and the parent has just written the map.
    """
    with Path("/proc/self/status").open() as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def child(model_path: Path, map_path: Path, block_pixels: int) -> None:
    """Identify the map once; print the seconds, the counts and this process's peak RSS as JSON."""
    from engine.maps import MapConfig, identify_map
    from engine.models.served import IdentificationModel

    model = IdentificationModel.load(model_path)
    started = time.perf_counter()
    result = identify_map(model, map_path, config=MapConfig(block_pixels=block_pixels))
    seconds = time.perf_counter() - started
    summary = result.summary()
    out = {
        "seconds": seconds,
        "peak_rss_bytes": peak_rss_bytes(),
        "n_particles": summary["n_particles"],
        "n_background": summary["n_background"],
        "n_unknown_pixels": summary["n_unknown_pixels"],
        "n_low_quality_pixels": summary["n_low_quality_pixels"],
        "particles_by_status": {
            status: sum(p["status"] == status for p in summary["particles"])
            for status in ("known", "unknown", "low_quality")
        },
    }
    sys.stdout.write(json.dumps(out) + "\n")


def baseline(model: Any, map_path: Path, n: int, seed: int) -> dict[str, Any]:
    """Seconds per pixel when ``n`` random pixels are classified as separate spectra (median of three)."""
    from engine.core.spectrum import Spectrum, SpectrumError
    from engine.maps.cube import open_cube

    rng = np.random.default_rng(seed)
    with open_cube(map_path, max_pixels=10**8) as cube:
        flat = np.sort(rng.choice(cube.n_pixels, size=n, replace=False))
        values = cube.read_pixels(flat)
        spectra = []
        for row in values:
            try:
                spectra.append(
                    Spectrum.create(cube.wavenumbers, row, y_unit=cube.y_unit, technique=cube.technique)
                )
            except SpectrumError:
                continue
    times = []
    for _ in range(3):
        started = time.perf_counter()
        model.classify(spectra, aging=False)
        times.append(time.perf_counter() - started)
    seconds = statistics.median(times)
    return {"pixels": len(spectra), "seconds": seconds, "seconds_per_pixel": seconds / len(spectra)}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", type=Path, default=Path("artifacts/bench"))
    parser.add_argument("--size", type=int, default=1000, help="map side in pixels")
    parser.add_argument(
        "--particles", type=int, default=None, help="particles painted (default: size**2/1250)"
    )
    parser.add_argument("--quick", action="store_true", help="a 300 x 300 map")
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--baseline-pixels", type=int, default=2000)
    parser.add_argument("--block-pixels", type=int, default=16_384)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--child", nargs=2, type=Path, metavar=("MODEL", "MAP"), help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.child:
        child(*args.child, args.block_pixels)
        return 0
    from engine.core.library import DEFAULT_LIBRARY, ReferenceLibrary
    from engine.models.served import IdentificationModel

    size = 300 if args.quick else args.size
    n_particles = args.particles or max(10, size * size // 1250)
    with tempfile.TemporaryDirectory(prefix="bench-maps-") as tmp:
        folder = Path(tmp)
        started = time.perf_counter()
        map_path, facts = write_map(folder, size, n_particles, args.seed)
        facts["write_seconds"] = round(time.perf_counter() - started, 1)
        print(f"map {size} x {size} x {AXIS.size} written in {facts['write_seconds']} s", flush=True)
        model = IdentificationModel(ReferenceLibrary.load(DEFAULT_LIBRARY))
        model_path = folder / "model.pkl"
        model.save(model_path)
        runs = []
        for _ in range(args.repeats):
            command = [
                sys.executable,
                "-m",
                "benchmarks.bench_maps",
                "--child",
                str(model_path),
                str(map_path),
            ]
            done = subprocess.run(
                [*command, "--block-pixels", str(args.block_pixels)],
                check=True,
                capture_output=True,
                text=True,
            )
            runs.append(json.loads(done.stdout.strip().splitlines()[-1]))
            print(f"map identified in {runs[-1]['seconds']:.1f} s", flush=True)
        base = baseline(model, map_path, args.baseline_pixels, args.seed)
    seconds = statistics.median(r["seconds"] for r in runs)
    rss = max(r["peak_rss_bytes"] for r in runs)
    per_pixel = seconds / (size * size)
    speedup = base["seconds_per_pixel"] / per_pixel
    report = {
        "benchmark": "bench_maps",
        "when": datetime.now(UTC).isoformat(),
        "machine": {
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
        },
        "model": model.version,
        "map": facts,
        "runs": runs,
        "seconds_median": seconds,
        "peak_rss_bytes": rss,
        "seconds_per_pixel": per_pixel,
        "baseline": base,
        "speedup_per_pixel": speedup,
        "targets": {
            "seconds_at_1000x1000": TARGET_SECONDS,
            "peak_rss_bytes": TARGET_RSS_BYTES,
            "speedup_per_pixel": TARGET_SPEEDUP,
        },
    }
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"bench_maps_{datetime.now(UTC):%Y%m%dT%H%M%SZ}.json"
    path.write_text(json.dumps(report, indent=2))
    last = runs[-1]
    print(
        f"{'map':>12} {'seconds':>8} {'peak RSS':>9} {'us/pixel':>9} {'baseline us/px':>15} {'speed-up':>9}"
    )
    print(
        f"{size:>5} x {size:<4} {seconds:8.1f} {rss / 1e9:7.2f}GB {per_pixel * 1e6:9.1f} "
        f"{base['seconds_per_pixel'] * 1e6:15.1f} {speedup:8.1f}x"
    )
    print(
        f"particles {last['n_particles']} ({last['particles_by_status']}), "
        f"background {last['n_background']}, unknown pixels {last['n_unknown_pixels']}, "
        f"low quality {last['n_low_quality_pixels']}"
    )
    if size >= 1000:
        scaled = seconds * (1000 * 1000) / (size * size)
        ok = scaled <= TARGET_SECONDS and rss <= TARGET_RSS_BYTES and speedup >= TARGET_SPEEDUP
        print("targets met" if ok else "targets NOT met")
    print(f"written {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

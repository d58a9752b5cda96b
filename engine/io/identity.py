"""The identity of a file's content, which the ledger keys its work by.

Most files are their bytes (:func:`~engine.core.spectrum.file_sha256`). An ENVI map is two files,
and its header alone does not name it: instruments and export scripts write byte-identical
headers for maps of one shape, so :func:`content_sha256` takes the data file beside a header in.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from engine.core.spectrum import SpectrumError, file_sha256
from engine.io.envi import data_file_for

__all__ = ["BLOCK_BYTES", "SAMPLED_BLOCKS", "WHOLE_DATA_BYTES", "content_sha256"]

#: A data file up to this size is hashed whole into its pair's identity; a larger one by its size
#: and :data:`SAMPLED_BLOCKS` evenly spaced blocks of :data:`BLOCK_BYTES` (64 MB read, whatever its size).
WHOLE_DATA_BYTES = 256 << 20
SAMPLED_BLOCKS = 64
BLOCK_BYTES = 1 << 20


def content_sha256(path: str | Path) -> str:
    """The identity of a file's content: an ENVI header's is its bytes with its data file's, any
    other file's its own bytes (:func:`~engine.core.spectrum.file_sha256`).

    A header alone does not name a map: instruments and export scripts write byte-identical
    headers for maps of one shape, and two filters' maps would be one content. So the data file
    beside the header is part of it: hashed whole up to :data:`WHOLE_DATA_BYTES`, else by its size
    and sampled blocks (two acquisitions differ in every block, if only by their noise). A header
    whose data file is not there yet is its own bytes, until the data arrives.
    """
    file = Path(path)
    if file.suffix.lower() != ".hdr":
        return file_sha256(file)
    try:
        data = data_file_for(file)
    except SpectrumError:
        return file_sha256(file)
    digest = hashlib.sha256(file.read_bytes())
    size = data.stat().st_size
    digest.update(b"\0ENVI data\0" + size.to_bytes(8, "little"))
    with data.open("rb") as handle:
        if size <= WHOLE_DATA_BYTES:
            for chunk in iter(lambda: handle.read(BLOCK_BYTES), b""):
                digest.update(chunk)
        else:
            for k in range(SAMPLED_BLOCKS):
                handle.seek((size - BLOCK_BYTES) * k // (SAMPLED_BLOCKS - 1))
                digest.update(handle.read(BLOCK_BYTES))
    return digest.hexdigest()

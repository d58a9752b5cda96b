"""The CNN's torch side: the network, and the torch settings that training and prediction run under.

:class:`SpectrumImageNet` is a compact 2-D CNN: conv-BN-ReLU blocks that
halve the image by striding, global average pooling, a linear head. Two
constant channels with each pixel's x and y go in beside the image
("CoordConv"): global average pooling discards *where* a pattern is, and on
a polar image where means which wavenumber. (With four blocks the receptive
field already spans the image and on the benchmark they made no measurable
difference; they cost next to nothing and keep position available to
shallower networks.)

:func:`torch_session` sets torch's CPU threads and deterministic algorithms
for a block of work and restores both after.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn

__all__ = ["SpectrumImageNet", "torch_session"]


class SpectrumImageNet(nn.Module):
    """A compact CNN: ``depth`` conv-BN-ReLU blocks, global average pooling, dropout, a linear head.

    With ``coordinates`` two channels holding each pixel's x and y in [-1, 1]
    are appended to the ``in_channels`` of the input ("CoordConv").

    Each block is a 3x3 convolution with stride 2 (a learned pooling: it
    halves the image), batch normalisation and ReLU; block ``b`` has
    ``width * 2**b`` channels. Striding instead of conv + max-pool costs a
    quarter of the convolution and none of the pooling: on a CPU that made
    training 3 to 5 times faster at the same or better accuracy on real
    spectra (see ``benchmarks/bench_cnn.py``).
    """

    def __init__(
        self,
        *,
        in_channels: int,
        n_classes: int,
        width: int,
        depth: int,
        dropout: float,
        coordinates: bool = True,
    ) -> None:
        super().__init__()
        self.coordinates = coordinates
        layers: list[nn.Module] = []
        channels = in_channels + (2 if coordinates else 0)
        for block in range(depth):
            out = width * 2**block
            layers += [
                nn.Conv2d(channels, out, kernel_size=3, stride=2, padding=1, bias=False),
                nn.BatchNorm2d(out),
                nn.ReLU(inplace=True),
            ]
            channels = out
        self.features = nn.Sequential(*layers)
        self.head = nn.Sequential(
            nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(dropout), nn.Linear(channels, n_classes)
        )

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if self.coordinates:
            n, _, rows, cols = images.shape
            y = torch.linspace(1.0, -1.0, rows, device=images.device, dtype=images.dtype)  # up is positive
            x = torch.linspace(-1.0, 1.0, cols, device=images.device, dtype=images.dtype)
            grid = torch.stack([x.expand(rows, cols), y[:, None].expand(rows, cols)])
            images = torch.cat([images, grid.expand(n, 2, rows, cols)], dim=1)
        logits: torch.Tensor = self.head(self.features(images))
        return logits


@contextmanager
def torch_session(threads: int | None, *, device: torch.device) -> Iterator[None]:
    """Torch on ``threads`` intra-op threads, with deterministic algorithms; both restored after."""
    threads_before = torch.get_num_threads()
    deterministic_before = torch.are_deterministic_algorithms_enabled()
    warn_only_before = torch.is_deterministic_algorithms_warn_only_enabled()
    if threads is not None and threads != threads_before:
        torch.set_num_threads(threads)
    # CUDA has ops without a deterministic kernel: warn there instead of failing.
    fill_before = torch.utils.deterministic.fill_uninitialized_memory  # type: ignore[attr-defined]
    torch.use_deterministic_algorithms(mode=True, warn_only=device.type != "cpu")
    # Filling every new tensor with NaN (a debugging aid of deterministic mode) costs a sixth of the time.
    torch.utils.deterministic.fill_uninitialized_memory = False  # type: ignore[attr-defined]
    try:
        yield
    finally:
        torch.utils.deterministic.fill_uninitialized_memory = fill_before  # type: ignore[attr-defined]
        torch.use_deterministic_algorithms(mode=deterministic_before, warn_only=warn_only_before)
        if torch.get_num_threads() != threads_before:
            torch.set_num_threads(threads_before)

"""The roles several stages share, as ``typing.Protocol`` classes.

A role says what a stage needs from an object, not how the object is built: the offline
evaluation, the online simulation, the index builder and the search service all need *an
encoder* (images in, one embedding per image out), whether it is a trained CNN
(:class:`vs_lib.models.Encoder`), a baseline, or a stand-in written for a test.  Anything
with these members fits; nothing has to inherit from them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, TypeAlias, runtime_checkable

import numpy as np
from PIL import Image

#: What every image-taking function accepts: a uint8 array ``(n, H, W)`` / ``(n, H, W, C)``,
#: or a sequence of PIL images (any mode, any size) or uint8 arrays ``(H, W)`` / ``(H, W, C)``.
ImageBatch: TypeAlias = np.ndarray | Sequence[Image.Image | np.ndarray]


@runtime_checkable
class Encoder(Protocol):
    """Maps images to points of a ``dim``-dimensional space where similar images lie close.

    - ``embed(images, batch_size)`` → ``(n, dim)`` float32, every row L2-normalised, so the
      inner product of two rows is their cosine similarity;
    - ``dim``: the embedding size;
    - ``fingerprint``: a string that changes whenever the mapping changes (weights,
      preprocessing); an index records it, so vectors from two different models are never mixed;
    - ``name``: a short label for tables and file names.
    """

    @property
    def name(self) -> str: ...

    @property
    def dim(self) -> int: ...

    @property
    def fingerprint(self) -> str: ...

    def embed(self, images: ImageBatch, batch_size: int = 256) -> np.ndarray: ...

"""What ``predict`` reads and writes: input cases of a folder, and masks in the input's own format.

Inputs: every image Pillow opens and every NIfTI file in the folder, one case each; when every
name ends in ``_XXXX`` (nnU-Net's channel index) the files of one case are its channels in order.
Outputs, per case:

* NIfTI in -> ``CASE.nii.gz`` (uint8 class ids) with the input's affine and shape;
* 2-D, binary -> ``CASE_mask.png`` with 0/255; 2-D, multiclass -> ``CASE_mask.png`` as a palette
  PNG whose pixel values are the class ids and whose palette shows each class in its colour,
  listed in ``classes.json`` in the output folder;
* ``--save-probabilities`` -> ``CASE_probabilities.npz`` (``probabilities``: float16, classes
  first, the foreground alone for one-logit binary models; ``classes``: their names);
* overlays (2-D, optional) -> ``CASE_overlay.png``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from biorules.errors import InputError
from segment.data.volume import case_name, is_nifti

#: class colours (RGB) of palette masks and overlays, class 0 (background) first
PALETTE = np.array([[0, 0, 0], [255, 64, 64], [64, 200, 64], [64, 96, 255], [255, 200, 0], [200, 64, 255],
                    [0, 200, 200], [255, 128, 0], [128, 128, 255]], np.uint8)
_CHANNEL = re.compile(r"^(.+)_(\d{4})$")


def colour(k: int) -> tuple[int, int, int]:
    """The colour of class ``k`` (the palette repeats after its last entry, skipping black)."""
    c = PALETTE[k] if k < len(PALETTE) else PALETTE[1 + (k - 1) % (len(PALETTE) - 1)]
    return int(c[0]), int(c[1]), int(c[2])


@dataclass(frozen=True)
class InputCase:
    """One case to predict: its name, its channel files in order, whether it is a NIfTI volume."""

    name: str
    files: tuple[Path, ...]
    nifti: bool


def list_inputs(folder: str | Path, channels: int) -> list[InputCase]:
    """The cases of ``folder`` (module docstring); InputError for a missing or empty folder or a
    case whose channels are incomplete."""
    from segment.data.folder import readable

    src = Path(folder)
    if not src.is_dir():
        raise InputError(f"--input {src}: folder not found")
    files = [p for p in sorted(src.iterdir()) if readable(p)]
    if not files:
        raise InputError(f"--input {src}: no images (any format Pillow reads, or NIfTI .nii/.nii.gz)")
    names = [case_name(p) for p in files]
    matches = [_CHANNEL.match(n) for n in names]
    if all(matches):
        cases: dict[str, dict[int, Path]] = {}
        for m, p in zip(matches, files, strict=True):
            cases.setdefault(m.group(1), {})[int(m.group(2))] = p
        out = []
        for name, chans in cases.items():
            nifti = is_nifti(chans[min(chans)])
            want = [0] if (not nifti and channels == 3 and set(chans) == {0}) else list(range(channels))
            if sorted(chans) != want:
                raise InputError(f"--input {src}: case {name} has channel files {sorted(chans)}, the model "
                                 f"takes {channels} channel(s) (_0000 .. _{channels - 1:04d})")
            out.append(InputCase(name, tuple(chans[c] for c in want), nifti))
        return out
    if channels not in (1, 3):
        raise InputError(f"--input {src}: the model takes {channels} channels; name the files CASE_0000, "
                         "CASE_0001, ... (nnU-Net's naming)")
    return [InputCase(n, (p,), is_nifti(p)) for n, p in zip(names, files, strict=True)]


def check_readable(case: InputCase) -> tuple[int, int] | None:
    """Open each file's header (nothing is decoded): InputError naming an unreadable file. Returns
    the (height, width) of a 2-D case, None for a volume."""
    from segment.data.base import read_pil
    from segment.data.volume import read_geometry

    if case.nifti:
        for f in case.files:
            read_geometry(f)
        return None
    from PIL import Image, UnidentifiedImageError

    for f in case.files:
        try:
            with Image.open(f) as im:
                w, h = im.size
        except (OSError, UnidentifiedImageError, SyntaxError, ValueError):
            read_pil(f)  # the decoder's own message, naming the file
            raise
    return h, w


def write_mask_png(path: Path, labels: np.ndarray, num_classes: int) -> Path:
    """A 2-D mask: 0/255 greyscale for binary data, else a palette PNG of class ids."""
    from PIL import Image

    if num_classes == 2:
        Image.fromarray((labels > 0).astype(np.uint8) * 255).save(path)
        return path
    if num_classes > 256:
        raise InputError(f"{num_classes} classes do not fit a palette PNG (256 at most)")
    im = Image.fromarray(labels.astype(np.uint8), mode="P")
    im.putpalette([v for k in range(num_classes) for v in colour(k)])
    im.save(path)
    return path


def write_class_list(folder: Path, class_names: Sequence[str]) -> Path:
    """``classes.json``: each class (background first) with its value in the masks and its colour."""
    entries = {name: {"value": k, "color": list(colour(k))} for k, name in enumerate(["background", *class_names])}
    path = folder / "classes.json"
    path.write_text(json.dumps(entries, indent=1) + "\n")
    return path


def write_probabilities(path: Path, probs: np.ndarray, class_names: Sequence[str]) -> Path:
    """``probabilities`` (float16, classes first) and the ``classes`` they belong to, as npz."""
    np.savez_compressed(path, probabilities=np.asarray(probs, dtype=np.float16), classes=np.array(list(class_names)))
    return path

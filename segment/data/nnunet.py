"""nnU-Net's raw dataset layout, 2-D and 3-D (docs/datasets.md).

``imagesTr/CASE_XXXX{file_ending}`` (XXXX the 4-digit channel index), ``labelsTr/CASE{file_ending}``,
optionally ``imagesTs/`` (inputs for ``predict``; evaluated too when a ``labelsTs/`` folder holds
their labels) and ``dataset.json``:

    {"channel_names": {"0": "T2", "1": "ADC"}, "labels": {"background": 0, "PZ": 1, "TZ": 2},
     "numTraining": 32, "file_ending": ".nii.gz"}

(nnU-Net v1's ``modality`` and ``{"0": "background", ...}`` labels are read too). NIfTI cases are
cut into slices along ``"slice_axis"`` if dataset.json gives one (an addition nnU-Net ignores),
else along the coarsest voxel spacing, with intensities scaled to [0, 1] per volume and channel
(0.5–99.5 percentile window). 2-D cases are images Pillow reads (an RGB PNG holds the three
channels of ``channel_names`` in one ``_0000`` file, as nnU-Net's natural-image reader has it).
Labels are the class ids 0..K−1 themselves; region-based and ``ignore`` labels are refused.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np

from biorules.errors import InputError
from segment.data.base import (
    GRAY_MEAN,
    GRAY_STD,
    IMAGENET_MEAN,
    IMAGENET_STD,
    DatasetInfo,
    Record,
    Sample,
    Scan,
    check_same_size,
    read_label_array,
    read_pil,
    require_dir,
    to_float_image,
)
from segment.data.volume import NIFTI_ENDINGS, case_records, load_slice

LAYOUT = "dataset.json + imagesTr/CASE_0000{ending} + labelsTr/CASE{ending} [+ imagesTs/, labelsTs/]"
INFO = DatasetInfo(
    name="nnunet", num_classes=2, in_channels=1, class_names=("foreground",), mean=GRAY_MEAN, std=GRAY_STD,
    official_split=False, layout=LAYOUT,
)
IMAGE_ENDINGS = (".png", ".bmp", ".tif", ".tiff", ".jpg", ".jpeg")
_CHANNEL = re.compile(r"^(.+)_(\d{4})$")


def read_dataset_json(path: Path) -> dict:
    """dataset.json as ``{"channels": [names], "labels": [names], "file_ending", "numTraining",
    "slice_axis"}``; InputError with one line naming the file and the key if it is malformed."""
    if not path.is_file():
        raise InputError(f"--data-dir {path.parent}: no dataset.json (expected {LAYOUT})")
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise InputError(f"{path}: not readable JSON ({e})") from None
    if not isinstance(doc, dict):
        raise InputError(f"{path}: expected a JSON object")
    chans = doc.get("channel_names", doc.get("modality"))
    if not isinstance(chans, dict) or not chans:
        raise InputError(f"{path}: 'channel_names' missing or empty (e.g. {{\"0\": \"CT\"}})")
    try:
        order = sorted(chans, key=int)
    except (TypeError, ValueError):
        raise InputError(f"{path}: 'channel_names' keys must be channel numbers 0, 1, ...") from None
    if [int(k) for k in order] != list(range(len(order))):
        raise InputError(f"{path}: 'channel_names' must number the channels 0..{len(order) - 1}")
    labels = doc.get("labels")
    if not isinstance(labels, dict) or len(labels) < 2:
        raise InputError(f"{path}: 'labels' missing or with fewer than two classes (e.g. "
                         '{"background": 0, "tumour": 1})')
    if all(isinstance(k, str) and k.isdigit() for k in labels) and all(isinstance(v, str) for v in labels.values()):
        labels = {v: int(k) for k, v in labels.items()}  # nnU-Net v1: {"0": "background", ...}
    if "ignore" in labels:
        raise InputError(f"{path}: the 'ignore' label is not supported")
    if any(isinstance(v, list) for v in labels.values()):
        raise InputError(f"{path}: region-based labels (lists of values) are not supported")
    if not all(isinstance(v, int) and not isinstance(v, bool) for v in labels.values()):
        raise InputError(f"{path}: 'labels' values must be integers")
    by_value = sorted(labels.items(), key=lambda kv: kv[1])
    if [v for _, v in by_value] != list(range(len(by_value))):
        raise InputError(f"{path}: 'labels' values must be consecutive 0..{len(by_value) - 1} (background 0)")
    ending = doc.get("file_ending", ".nii.gz" if "modality" in doc else None)
    if not isinstance(ending, str) or not ending.startswith("."):
        raise InputError(f"{path}: 'file_ending' missing (e.g. \".nii.gz\" or \".png\")")
    if ending.lower() not in NIFTI_ENDINGS + IMAGE_ENDINGS:
        raise InputError(f"{path}: file_ending {ending!r} is not supported (NIfTI {', '.join(NIFTI_ENDINGS)} "
                         f"or images {', '.join(IMAGE_ENDINGS)})")
    axis = doc.get("slice_axis")
    if axis is not None and axis not in (0, 1, 2):
        raise InputError(f"{path}: slice_axis must be 0, 1 or 2, got {axis!r}")
    n = doc.get("numTraining")
    return {"channels": [str(chans[k]) for k in order], "labels": [k for k, _ in by_value], "file_ending": ending,
            "numTraining": n if isinstance(n, int) else None, "slice_axis": axis}


def list_cases(folder: Path, ending: str) -> tuple[dict[str, dict[int, Path]], list[str]]:
    """``case -> {channel: file}`` of ``CASE_XXXX{ending}`` files in ``folder``, and problems."""
    cases: dict[str, dict[int, Path]] = {}
    problems = []
    for p in sorted(folder.iterdir()):
        if p.name.startswith(".") or not p.name.lower().endswith(ending.lower()):
            continue
        m = _CHANNEL.match(p.name[: -len(ending)])
        if m is None:
            problems.append(f"{p}: image names end in _XXXX{ending} (the channel, e.g. _0000)")
            continue
        cases.setdefault(m.group(1), {})[int(m.group(2))] = p
    return cases, problems


def channel_files(case: str, chans: dict[int, Path], n_channels: int, nifti: bool) -> list[Path]:
    """The files of channels 0..C−1 in order; an RGB image may hold three channels in ``_0000``."""
    if not nifti and set(chans) == {0} and n_channels == 3:
        return [chans[0]]
    missing = [c for c in range(n_channels) if c not in chans]
    if missing:
        raise InputError(f"case {case}: no file for channel {missing[0]:04d} (dataset.json names {n_channels})")
    extra = sorted(set(chans) - set(range(n_channels)))
    if extra:
        raise InputError(f"case {case}: {chans[extra[0]].name} is channel {extra[0]}, "
                         f"dataset.json names {n_channels}")
    return [chans[c] for c in range(n_channels)]


def scan(root: Path) -> Scan:
    base = require_dir(root, "--data-dir")
    meta = read_dataset_json(base / "dataset.json")
    ending = meta["file_ending"]
    nifti = ending.lower() in NIFTI_ENDINGS
    for sub in ("imagesTr", "labelsTr"):
        if not (base / sub).is_dir():
            raise InputError(f"--data-dir {root}: no {sub}/ folder (expected {LAYOUT})")
    n_ch = len(meta["channels"])
    rgb = not nifti and n_ch == 3
    info = DatasetInfo(
        name="nnunet", num_classes=len(meta["labels"]), in_channels=n_ch, class_names=tuple(meta["labels"][1:]),
        mean=IMAGENET_MEAN if rgb else GRAY_MEAN * n_ch, std=IMAGENET_STD if rgb else GRAY_STD * n_ch,
        official_split=(base / "imagesTs").is_dir() and (base / "labelsTs").is_dir(), volumetric=nifti,
        layout=LAYOUT.replace("{ending}", ending),
    )
    records: list[Record] = []
    geometry = {}
    problems: list[str] = []
    parts = [("imagesTr", "labelsTr", "train")]
    if info.official_split:
        parts.append(("imagesTs", "labelsTs", "test"))
    for img_dir, lab_dir, part in parts:
        cases, more = list_cases(base / img_dir, ending)
        problems += more
        labels = {p.name[: -len(ending)]: p for p in sorted((base / lab_dir).iterdir())
                  if p.name.lower().endswith(ending.lower()) and not p.name.startswith(".")}
        problems += [f"case {c} in {img_dir}/ has no label {lab_dir}/{c}{ending}" for c in sorted(set(cases) - set(labels))]
        problems += [f"label {labels[c]} has no image {img_dir}/{c}_0000{ending}" for c in sorted(set(labels) - set(cases))]
        if part == "train" and meta["numTraining"] is not None and meta["numTraining"] != len(cases):
            problems.append(f"{base / 'dataset.json'}: numTraining is {meta['numTraining']}, "
                            f"imagesTr/ holds {len(cases)} cases")
        for case in sorted(set(cases) & set(labels)):
            try:
                files = channel_files(case, cases[case], n_ch, nifti)
                if nifti:
                    recs, geo = case_records(case, [str(f) for f in files], str(labels[case]), part,
                                             meta["slice_axis"], group=case)
                    records += recs
                    geometry[case] = geo
                else:
                    records.append(Record(id=case, image=str(files[0]), mask=str(labels[case]), part=part,
                                          group=case, extra_images=tuple(str(f) for f in files[1:]),
                                          meta=(("channels", str(n_ch)),)))
            except InputError as e:
                problems.append(str(e))
    return Scan(records, problems, info=info, geometry=geometry)


def read_channels(files: list[str], n_channels: int) -> np.ndarray:
    """2-D channel files -> float32 (H, W, C) in [0, 1]; InputError if the channel count is off."""
    parts = []
    for f in files:
        im = read_pil(f)
        if im.mode in ("P", "RGBA", "CMYK", "YCbCr", "LA", "PA"):
            im = im.convert("RGB")
        arr = np.array(im)
        parts.append(to_float_image(arr, arr.shape[2] if arr.ndim == 3 else 1, f))
    image = np.concatenate(parts, axis=2)
    if image.shape[2] != n_channels:
        raise InputError(f"case image {files[0]} has {image.shape[2]} channels, dataset.json names {n_channels}")
    if len({p.shape[:2] for p in parts}) > 1:
        raise InputError(f"the channel files of {files[0]} differ in size")
    return image


def load(record: Record) -> Sample:
    if record.volume is not None:
        return load_slice(record)
    n_ch = int(dict(record.meta).get("channels", "1"))
    image = read_channels([record.image, *record.extra_images], n_ch)
    assert record.mask is not None
    mask = read_label_array(record.mask)
    check_same_size(image, mask, record.image, record.mask)
    return Sample(image=image, mask=mask)

"""Reading knee MRIs and label maps safely, and writing labels atomically.

Everything goes through SimpleITK so that an image keeps its full geometry (spacing, origin, direction).
Bad input raises ``InputError`` with a message meant for the person who sent it; the server turns it
into a 4xx answer.
"""

from __future__ import annotations

import logging
import shutil
import uuid
import zlib
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from KneeAILib.atomic_files import replace_atomically
from KneeAILib.volume import VolumeError, read_dicom_images

from lib.transforms.working_grid import world_box

logger = logging.getLogger(__name__)

# Files the server reads as volumes (uploads: single self-contained files only, check_upload). DICOM
# comes as a series folder in the studies folder; the client sends pixels only.
VOLUME_SUFFIXES = (".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd")
MAX_VOXELS = 1024**3 // 4  # a quarter gigavoxel (640³): far above any knee MRI (a 512×512×160 DESS is 42 M)
MAX_BYTES = 1024**3  # the voxels as stored: a few MB of gzipped zeros can declare gigabytes
MAX_FIELD_OF_VIEW_MM = 500.0  # per world axis; knee MRIs are 100-250 mm, a 500 mm one is 333³ coarse voxels


class InputError(ValueError):
    """An image or label that the server cannot use, with a message for the sender."""


def volume_suffix(path: str | Path) -> str:
    name = str(path).lower()
    for suffix in VOLUME_SUFFIXES:
        if name.endswith(suffix):
            return suffix
    return ""


def read_volume(path: str | Path, echo: int | None = None) -> sitk.Image:
    """Reads a 3D volume from a NIfTI/NRRD/MetaImage file or a DICOM series folder.

    A DICOM folder holding several echoes (e.g. multi-echo spin echo, all in one series) is split by
    echo time; ``echo`` (1-based, in order of echo time) picks one, the first by default.
    """
    path = Path(path)
    if path.is_dir():
        echoes = read_dicom_echoes(path)
        index = 0 if echo is None else echo - 1
        if not 0 <= index < len(echoes):
            raise InputError(f"{path.name}: echo {echo} requested, the series has {len(echoes)} echo(es)")
        return echoes[index][1]
    if not path.is_file():
        raise InputError(f"{path.name}: no such image")
    if path.stat().st_size == 0:
        raise InputError(f"{path.name}: the file is empty")
    try:
        check_size(path)  # from the header, before the voxels are read into memory
        image = sitk.ReadImage(str(path))
    except RuntimeError as e:
        raise InputError(f"{path.name}: not a readable medical image ({_first_line(e)})") from e
    check_complete(path, image)
    return check_volume(_one_echo(image, echo, path.name), path.name)


def _one_echo(image: sitk.Image, echo: int | None, name: str) -> sitk.Image:
    """The ``echo``-th (1-based) volume of a 4D file (echoes or time points along its 4th axis); a 3D
    file has one echo only: asking it for another must not silently answer with the first."""
    echoes = image.GetSize()[3] if image.GetDimension() == 4 else 1
    index = 0 if echo is None else echo - 1
    if not 0 <= index < echoes:
        raise InputError(f"{name}: echo {echo} requested, the image has {echoes} echo(es)")
    if image.GetDimension() != 4:
        return image
    size = list(image.GetSize())
    return sitk.Extract(image, size[:3] + [0], [0, 0, 0, index])


# What a client may upload: one self-contained file. A detached header (.nhdr, .mhd) or a header that
# names a data file of its own would make the server read whatever file on its disk the header names.
UPLOAD_SUFFIXES = (".nii.gz", ".nii", ".nrrd", ".mha")


def read_upload(path: str | Path) -> sitk.Image:
    """``read_volume`` for a file a client sent (``check_upload`` first)."""
    return read_volume(check_upload(path))


def check_upload(path: str | Path) -> Path:
    """A file a client sent must be a single self-contained NIfTI, NRRD or MetaImage file: never a folder,
    a detached header or a header pointing at another file on the server. Reads the header only."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path.name}: not an uploaded file")
    if not path.name.lower().endswith(UPLOAD_SUFFIXES):
        raise InputError(f"{path.name}: send a single-file volume ({', '.join(UPLOAD_SUFFIXES)}), "
                         "not a detached header or another format")
    data_file = _named_data_file(path)
    if data_file:
        raise InputError(f"{path.name}: its header names a separate data file ({data_file!r}); send the voxels "
                         "in the file itself")
    return path


def _named_data_file(path: Path) -> str:
    """The data file an NRRD ('data file:') or MetaImage ('ElementDataFile = ...' other than LOCAL) header
    names, or '' when the voxels are in the file itself."""
    name = path.name.lower()
    if not name.endswith((".nrrd", ".mha")):
        return ""
    with path.open("rb") as f:
        header = f.read(65536).decode("latin-1")
    for line in header.splitlines():
        if not line.strip():
            break  # an NRRD header ends at its first blank line
        key, _, value = line.partition(":" if name.endswith(".nrrd") else "=")
        key = key.strip().lower().replace(" ", "")
        if name.endswith(".nrrd") and key == "datafile":
            return value.strip()
        if name.endswith(".mha") and key == "elementdatafile":
            return "" if value.strip().upper() == "LOCAL" else value.strip()
    return ""


def check_size(path: Path) -> None:
    """Refuses, from the header alone, a volume too large to read: checked after reading, an upload of a
    few megabytes (zeros compress) took gigabytes of memory before it was refused."""
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    reader.ReadImageInformation()
    size = reader.GetSize()
    voxels = int(np.prod(size, dtype=np.int64))
    component = sitk.Image([1] * len(size), reader.GetPixelID(), reader.GetNumberOfComponents())
    stored = voxels * reader.GetNumberOfComponents() * component.GetSizeOfPixelComponent()
    if voxels > MAX_VOXELS or stored > MAX_BYTES:
        raise InputError(f"{path.name}: size {size} ({stored / 1024**3:.1f} GiB of voxels) is too large for a knee "
                         f"MRI (at most {MAX_VOXELS // 1024**2} M voxels and {MAX_BYTES // 1024**3} GiB)")


def check_complete(path: Path, image: sitk.Image) -> None:
    """ITK reads a cut-off file without complaint, padding the missing voxels: refuse it instead."""
    with path.open("rb") as f:
        magic = f.read(2)
    if magic == b"\x1f\x8b":
        inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
        with path.open("rb") as f:
            while chunk := f.read(1 << 20):
                inflater.decompress(chunk, 1 << 20)
                while inflater.unconsumed_tail:
                    inflater.decompress(inflater.unconsumed_tail, 1 << 20)
        if not inflater.eof:
            raise InputError(f"{path.name}: the file is truncated (compressed data ends early)")
        return
    if not _stored_uncompressed(path):
        return  # internally compressed NRRD/MetaImage: ITK's own decoder fails on cut-off data
    voxel_bytes = image.GetNumberOfComponentsPerPixel() * image.GetSizeOfPixelComponent() * int(np.prod(image.GetSize()))
    if path.stat().st_size < voxel_bytes:
        raise InputError(f"{path.name}: the file is truncated ({path.stat().st_size} bytes for {voxel_bytes} of voxels)")


def _stored_uncompressed(path: Path) -> bool:
    """True for files whose voxels follow the header as raw bytes (so the file size bounds them)."""
    name = path.name.lower()
    if name.endswith(".nii"):
        return True
    if name.endswith((".nrrd", ".mha")):
        with path.open("rb") as f:
            header = f.read(4096).decode("latin-1").lower()
        return "encoding: raw" in header or "compresseddata = false" in header
    return False

def check_volume(image: sitk.Image, name: str) -> sitk.Image:
    """Rejects what cannot be a 3D knee MRI: 2D images, single slices, vectors, absurd sizes."""
    if image.GetDimension() != 3:
        raise InputError(f"{name}: a {image.GetDimension()}D image; KneeAI needs a 3D volume")
    size = image.GetSize()
    if min(size) < 2:
        raise InputError(f"{name}: size {size} is a single slice, not a 3D volume")
    if int(np.prod(size)) > MAX_VOXELS:
        raise InputError(f"{name}: size {size} is too large")
    if image.GetNumberOfComponentsPerPixel() != 1:
        raise InputError(f"{name}: has {image.GetNumberOfComponentsPerPixel()} components per voxel; expected 1")
    if min(image.GetSpacing()) <= 0:
        raise InputError(f"{name}: spacing {image.GetSpacing()} is not positive")
    extent = world_box(image).extent
    if extent.max() > MAX_FIELD_OF_VIEW_MM:
        # The whole field of view is resampled at the coarse spacing: a few voxels with a huge spacing
        # (or a wrong spacing unit) took tens of gigabytes of memory.
        raise InputError(f"{name}: a field of view of {' x '.join(f'{e:.0f}' for e in extent)} mm (size "
                         f"{size}, spacing {tuple(round(s, 4) for s in image.GetSpacing())} mm) is larger than "
                         f"any knee MRI (at most {MAX_FIELD_OF_VIEW_MM:.0f} mm)")
    return image


def read_mri(path: str | Path, echo: int | None = None) -> sitk.Image:
    """``read_volume`` of an MRI to segment, refine or score: one whose intensities can be normalised
    (``check_intensities``; a label map may be empty, an MRI may not be constant)."""
    return check_intensities(read_volume(path, echo=echo), Path(path).name)


def check_intensities(image: sitk.Image, name: str) -> sitk.Image:
    """Refuses an MRI whose voxels cannot be normalised: NaN or infinite voxels (every network output
    would be NaN: an all-background answer) or a constant image (no contrast, no anatomy)."""
    array = sitk.GetArrayViewFromImage(image)
    if array.dtype.kind == "f" and not np.isfinite(array).all():
        bad = int(array.size - np.count_nonzero(np.isfinite(array)))
        raise InputError(f"{name}: {bad} voxel(s) are NaN or infinite; an MRI has finite intensities")
    if array.min() == array.max():
        raise InputError(f"{name}: every voxel is {array.flat[0]}; a constant image holds no anatomy")
    return image


def read_dicom_echoes(folder: Path) -> list[tuple[float, sitk.Image]]:
    """All echoes of the DICOM series in ``folder``, as (echo time in ms, volume), sorted by echo time,
    read as the client reads them (``KneeAILib.volume.read_dicom_images``) and checked."""
    try:
        echoes = read_dicom_images(folder)
    except VolumeError as e:
        raise InputError(str(e)) from e
    return [(te, check_volume(volume, f"{folder.name} (TE {te:g} ms)")) for te, volume in echoes]


def pixels_only(image: sitk.Image) -> sitk.Image:
    """A copy with voxels and geometry only: no DICOM header or other metadata is carried along."""
    clean = sitk.GetImageFromArray(sitk.GetArrayViewFromImage(image))
    clean.CopyInformation(image)
    return clean


def same_geometry(a: sitk.Image, b: sitk.Image, tolerance: float = 1e-4) -> bool:
    return (
        a.GetSize() == b.GetSize()
        and np.allclose(a.GetSpacing(), b.GetSpacing(), rtol=tolerance, atol=tolerance)
        and np.allclose(a.GetOrigin(), b.GetOrigin(), rtol=tolerance, atol=tolerance * 10)
        and np.allclose(a.GetDirection(), b.GetDirection(), atol=tolerance)
    )


def write_atomically(image: sitk.Image, destination: str | Path, compress: bool = True) -> None:
    """Writes to a temporary file, then renames: never a half-written file.

    The temporary file lives in a ``.partial/`` folder beside the destination, not in the destination
    folder itself: MONAI Label's datastore lists a folder with ``fnmatch("*.nii.gz")``, which also
    matches hidden files, so a temporary ``.tmp-x.nii.gz`` there could be taken for an image. Each
    write has a folder of its own (``.partial-<random>``): one shared folder, removed after a write,
    vanished under a concurrent writer about to write into it.
    """
    partial = Path(destination).parent / f".partial-{uuid.uuid4().hex}"
    try:
        replace_atomically(destination, lambda temporary: sitk.WriteImage(image, str(temporary), compress),
                           folder=partial)
    finally:
        shutil.rmtree(partial, ignore_errors=True)  # this write's own folder, empty by now

def _first_line(error: Exception) -> str:
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    # ITK's messages start with a source location; the last line says what went wrong.
    return lines[-1] if lines else type(error).__name__

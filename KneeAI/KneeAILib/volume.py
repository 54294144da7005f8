"""A volume as voxels plus geometry only, and its conversions: files, DICOM series, Slicer's IJK->RAS.

``PixelVolume`` is what travels between the server, the files on disk and Slicer: a numpy array in
(k, j, i) order (SimpleITK's and Slicer's array order) with spacing, origin and direction in LPS, the
convention of NIfTI/NRRD readers in ITK and of MONAI Label's server. Nothing else is kept, which is
what makes an upload safe: there is no field a patient name or a DICOM UID could hide in.
Pure Python (numpy + SimpleITK).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from .atomic_files import replace_atomically

# Slicer's world is RAS; ITK files are LPS: the two differ by a flip of the first two axes.
LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0])
TAG_SERIES_UID = "0020|000e"
TAG_ECHO_TIME = "0018|0081"


class VolumeError(ValueError):
    """A file or folder that is not a usable 3D volume; the message says why."""


@dataclass(frozen=True)
class PixelVolume:
    array: np.ndarray  # (k, j, i) = (slice, row, column)
    spacing: tuple[float, float, float]
    origin: tuple[float, float, float]  # LPS, mm
    direction: tuple[float, ...]  # 9 values, row-major, LPS; columns are the i, j, k axes

    @property
    def size(self) -> tuple[int, int, int]:
        """(i, j, k) sizes, as ITK reports them."""
        k, j, i = self.array.shape
        return (i, j, k)

    # -- SimpleITK -----------------------------------------------------------------------------
    @classmethod
    def from_sitk(cls, image: sitk.Image) -> "PixelVolume":
        if image.GetDimension() != 3 or image.GetNumberOfComponentsPerPixel() != 1:
            raise VolumeError(f"Expected a 3D scalar volume, got {image.GetDimension()}D with "
                              f"{image.GetNumberOfComponentsPerPixel()} component(s)")
        return cls(
            sitk.GetArrayFromImage(image),
            tuple(float(v) for v in image.GetSpacing()),
            tuple(float(v) for v in image.GetOrigin()),
            tuple(float(v) for v in image.GetDirection()),
        )

    def to_sitk(self) -> sitk.Image:
        """A fresh image: voxels and geometry, no metadata dictionary at all."""
        image = sitk.GetImageFromArray(np.ascontiguousarray(self.array))
        image.SetSpacing(self.spacing)
        image.SetOrigin(self.origin)
        image.SetDirection(self.direction)
        return image

    def with_array(self, array: np.ndarray) -> "PixelVolume":
        if array.shape != self.array.shape:
            raise VolumeError(f"Array shape {array.shape} does not match the volume's {self.array.shape}")
        return PixelVolume(array, self.spacing, self.origin, self.direction)

    # -- Slicer geometry -----------------------------------------------------------------------
    def ijk_to_ras(self) -> np.ndarray:
        """The 4x4 IJK->RAS matrix Slicer's volume nodes use."""
        direction = np.asarray(self.direction, dtype=float).reshape(3, 3)
        matrix = np.eye(4)
        matrix[:3, :3] = LPS_TO_RAS @ direction @ np.diag(self.spacing)
        matrix[:3, 3] = LPS_TO_RAS @ np.asarray(self.origin, dtype=float)
        return matrix

    @classmethod
    def from_ijk_to_ras(cls, array: np.ndarray, ijk_to_ras: np.ndarray) -> "PixelVolume":
        """The inverse of ``ijk_to_ras``: array (k, j, i) + Slicer's matrix -> LPS geometry."""
        ijk_to_ras = np.asarray(ijk_to_ras, dtype=float)
        axes_lps = LPS_TO_RAS @ ijk_to_ras[:3, :3]
        spacing = np.linalg.norm(axes_lps, axis=0)
        if np.any(spacing <= 0):
            raise VolumeError(f"IJK->RAS matrix has a zero-length axis: {ijk_to_ras.tolist()}")
        direction = axes_lps / spacing
        origin = LPS_TO_RAS @ ijk_to_ras[:3, 3]
        return cls(array, tuple(float(s) for s in spacing), tuple(float(o) for o in origin),
                   tuple(float(d) for d in direction.ravel()))

    def same_geometry(self, other: "PixelVolume", tolerance: float = 1e-4) -> bool:
        return (
            self.array.shape == other.array.shape
            and np.allclose(self.spacing, other.spacing, atol=tolerance)
            and np.allclose(self.origin, other.origin, atol=tolerance * 10)
            and np.allclose(self.direction, other.direction, atol=tolerance)
        )

    def geometry_difference(self, other: "PixelVolume") -> str | None:
        """How the two grids differ (size, spacing, origin, direction), or None when they are the same."""
        if self.same_geometry(other):
            return None
        differences = [f"{name} {mine} vs {theirs}" for name, mine, theirs in (
            ("size", self.size, other.size), ("spacing", self.spacing, other.spacing),
            ("origin", self.origin, other.origin), ("direction", self.direction, other.direction))
            if not np.allclose(mine, theirs, atol=1e-3)]
        return "; ".join(differences) or "they differ slightly"


# -- files ---------------------------------------------------------------------------------------
def read_volume_file(path: str | Path) -> PixelVolume:
    """A NIfTI/NRRD/MetaImage file, or a DICOM folder (its first echo), as voxels and geometry."""
    path = Path(path)
    if path.is_dir():
        return read_dicom_echoes(path)[0][1]
    if not path.is_file():
        raise VolumeError(f"{path}: no such file or folder")
    try:
        image = sitk.ReadImage(str(path))
    except RuntimeError as e:
        raise VolumeError(f"{path.name}: not a readable medical image ({last_line(e)})") from e
    return PixelVolume.from_sitk(image)


def dicom_echo_files(folder: str | Path) -> list[tuple[float, list[str]]]:
    """The slice files of the main DICOM series below ``folder``, one list per echo as (echo time in ms,
    files ordered along the slice normal), by echo time; [] when there is no DICOM file. The client and
    the server both read DICOM through it.

    A multi-echo series keeps all echoes in one series; stacking it as one volume would interleave
    echoes into a wrong volume of several times the slices, so slices are grouped by (series, echo
    time) first. Of several series, the one with the most slices per echo (the main acquisition) is kept.
    """
    folder = Path(folder)
    groups: dict[tuple[str, float], list[str]] = defaultdict(list)
    reader = sitk.ImageFileReader()
    reader.LoadPrivateTagsOff()
    for f in sorted(p for p in folder.rglob("*") if p.is_file()):
        reader.SetFileName(str(f))
        try:
            reader.ReadImageInformation()
        except RuntimeError:
            # A slice cut short (an interrupted copy) is no longer readable; skipping it would leave a
            # hole in the volume that ITK only warns about.
            if _has_dicom_preamble(f):
                raise VolumeError(f"{folder.name}: {f.name} is a damaged DICOM file (cut short?); "
                                  "copy the series again") from None
            continue  # not a DICOM file (DICOMDIR, notes): skipped as a viewer would
        series = reader.GetMetaData(TAG_SERIES_UID).strip() if reader.HasMetaDataKey(TAG_SERIES_UID) else ""
        groups[(series, echo_time_ms(reader))].append(str(f))
    if not groups:
        return []
    main_series = max({s for s, _ in groups}, key=lambda s: max(len(v) for (u, _), v in groups.items() if u == s))
    return [(echo_time, _evenly_spaced_slices(names, f"{folder.name} (TE {echo_time:g} ms)"))
            for (series, echo_time), names in sorted(groups.items(), key=lambda kv: kv[0][1]) if series == main_series]


def read_dicom_images(folder: str | Path) -> list[tuple[float, sitk.Image]]:
    """Every echo of the DICOM series in ``folder`` as (echo time in ms, image), by echo time."""
    folder = Path(folder)
    echo_files = dicom_echo_files(folder)
    if not echo_files:
        raise VolumeError(f"{folder.name}: no DICOM images found")
    echoes = []
    for echo_time, files in echo_files:
        series_reader = sitk.ImageSeriesReader()
        series_reader.SetFileNames(files)
        try:
            echoes.append((echo_time, series_reader.Execute()))
        except RuntimeError as e:
            raise VolumeError(f"{folder.name}: cannot read the DICOM series ({last_line(e)})") from e
    return echoes


def read_dicom_echoes(folder: str | Path) -> list[tuple[float, PixelVolume]]:
    """Every echo of the DICOM series in ``folder`` as (echo time in ms, volume), by echo time. Only
    voxels and geometry are kept."""
    return [(echo_time, PixelVolume.from_sitk(image)) for echo_time, image in read_dicom_images(folder)]


def echo_time_ms(reader: sitk.ImageFileReader) -> float:
    """The DICOM slice's echo time in ms (client and server read it alike); 0.0 (unknown) when the tag
    is missing, empty (Echo Time is a type 2 tag: present but empty is allowed) or not a number."""
    if not reader.HasMetaDataKey(TAG_ECHO_TIME):
        return 0.0
    try:
        return float(reader.GetMetaData(TAG_ECHO_TIME))
    except ValueError:
        return 0.0


def _evenly_spaced_slices(names: list[str], where: str) -> list[str]:
    """Slice files in order along the slice normal (what GDCM does for one series), refused when their
    positions are not evenly spaced: a missing or doubled slice would otherwise give a volume with a
    wrong geometry (ITK stacks the slices at one spacing and only warns)."""
    reader = sitk.ImageFileReader()
    keyed = []
    for name in names:
        reader.SetFileName(name)
        reader.ReadImageInformation()
        direction = np.asarray(reader.GetDirection()).reshape(3, 3)
        keyed.append((float(np.dot(direction[:, 2], reader.GetOrigin())), name))
    keyed.sort()
    if len(keyed) > 2:
        gaps = np.diff([position for position, _ in keyed])
        step = float(np.median(gaps))
        if step < 1e-3 or np.abs(gaps - step).max() > 0.05 * step + 0.01:  # positions carry rounding noise
            raise VolumeError(f"{where}: slices missing or unevenly spaced ({gaps.min():.2f} to {gaps.max():.2f} mm "
                              f"apart along the slice normal, mostly {step:.2f} mm); the series may be incomplete")
    return [name for _, name in keyed]


def _has_dicom_preamble(path: Path) -> bool:
    with open(path, "rb") as f:
        return f.read(132)[128:] == b"DICM"


def write_volume_atomically(volume: PixelVolume, destination: str | Path,
                            metadata: dict[str, str] | None = None) -> Path:
    """Writes voxels and geometry to a temporary file beside ``destination``, then renames. The only
    header fields are ``metadata`` (e.g. a .seg.nrrd's segment fields), never any the source carried."""
    image = volume.to_sitk()
    for key, value in (metadata or {}).items():
        image.SetMetaData(key, value)
    return replace_atomically(destination, lambda temporary: sitk.WriteImage(image, str(temporary), True))


def last_line(error: Exception) -> str:
    """The last non-empty line of an error's text: for SimpleITK's multi-line errors, the reason."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return lines[-1] if lines else type(error).__name__

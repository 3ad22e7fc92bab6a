"""Is a slide file whole? Checked when it is opened, before any work (cheap: no pixel decoding
for TIFF files). A truncated JPEG tile decodes without error to partly wrong pixels, so a
truncated file must be caught from its structure."""
from __future__ import annotations

import struct

import numpy as np

_TIFF_MAGIC = (b"II*\0", b"MM\0*", b"II+\0", b"MM\0+")


def check_complete(slide) -> str | None:
    """What is wrong with an opened slide's file (a truncation, where its format lets us tell),
    or None. ``slide``: an :class:`engine.slides.Slide`.

    TIFF-based files (OME-TIFF, SVS, generic TIFF, whichever reader opened them): every TIFF
    directory, tag value and tile/strip of every level of every series must lie inside the
    file. JPEG images must end with the end-of-image marker. Other formats: the last pixel of
    each pyramid level is read (one tile per level).
    """
    path = slide.path
    with open(path, "rb") as f:
        head = f.read(4)
    if head in _TIFF_MAGIC:
        import tifffile

        tiff = getattr(slide.reader, "tiff", None)  # tiatoolbox's TIFF reader; OpenSlide has none
        own = tiff is None
        if own:
            try:
                tiff = tifffile.TiffFile(path)
            except Exception:  # noqa: BLE001 - a TIFF variant only the slide's reader understands
                return _read_last_pixels(slide)
        try:
            return _tiff_truncation(tiff)
        finally:
            if own:
                tiff.close()
    elif head[:2] == b"\xff\xd8":  # JPEG
        with open(path, "rb") as f:
            f.seek(max(0, path.stat().st_size - 4096))
            if b"\xff\xd9" not in f.read():
                return "truncated JPEG: no end-of-image marker (FF D9) at the end of the file"
        return None
    return _read_last_pixels(slide)


def _tiff_truncation(tiff) -> str | None:
    """What a truncated TIFF misses, or None: compares the end of every directory (IFD), tag
    value and tile/strip of every series level, and every SubIFD offset, with the file size."""
    size = int(tiff.filehandle.size)
    short: dict[tuple[int, int, str], int] = {}  # (series, level, what) -> the byte it needs to reach

    def need(i: int, k: int, what: str, end: int) -> None:
        if end > size:
            short[i, k, what] = max(end, short.get((i, k, what), 0))

    for i, series in enumerate(tiff.series):
        for k, level in enumerate(series.levels):
            for page in level.pages:
                if page is None:
                    continue
                offsets = np.asarray(page.dataoffsets, np.int64)
                counts = np.asarray(page.databytecounts, np.int64)
                need(i, k, "tile data", int((offsets + counts)[counts > 0].max(initial=0)))
                if not tiff.is_ndpi:  # NDPI stores 64-bit offsets in 32-bit fields
                    need(i, k, "TIFF tags", _ifd_end(tiff, int(page.offset), size))
                if k == 0:  # lower levels as SubIFDs: tifffile drops those it cannot read
                    for j, sub in enumerate(getattr(page, "subifds", None) or ()):
                        need(i, j + 1, "TIFF tags", int(sub) + tiff.tiff.tagnosize)
    if not short:
        return None
    names = [f"{'' if i == 0 else f'series {i} '}level {k} {what}" for i, k, what in sorted(short)]
    missing = max(short.values()) - size
    return (f"file is truncated (it ends at byte {size:,}, at least {missing:,} byte{'' if missing == 1 else 's'} "
            f"missing); cut off: {', '.join(names)}")


def _ifd_end(tiff, offset: int, size: int) -> int:
    """Byte after the end of the TIFF directory at ``offset``, of its out-of-line tag values and
    of the next directory's entry count (if it has a next directory)."""
    import tifffile

    fmt, fh = tiff.tiff, tiff.filehandle
    if offset + fmt.tagnosize > size:
        return offset + fmt.tagnosize
    fh.seek(offset)
    (n,) = struct.unpack(fmt.tagnoformat, fh.read(fmt.tagnosize))
    end = offset + fmt.tagnosize + n * fmt.tagsize + fmt.offsetsize
    if end > size:
        return end
    raw = fh.read(n * fmt.tagsize + fmt.offsetsize)
    for j in range(n):
        entry = raw[j * fmt.tagsize:(j + 1) * fmt.tagsize]
        _, dtype = struct.unpack(fmt.tagformat1, entry[:4])
        count, value = struct.unpack(fmt.tagformat2, entry[4:])
        nbytes = count * struct.calcsize(fmt.byteorder + tifffile.TIFF.DATA_FORMATS.get(dtype, "1B"))
        if nbytes > fmt.tagoffsetthreshold:
            end = max(end, struct.unpack(fmt.offsetformat, value[:fmt.offsetsize])[0] + nbytes)
    (nxt,) = struct.unpack(fmt.offsetformat, raw[-fmt.offsetsize:])
    return max(end, nxt + fmt.tagnosize) if nxt else end


def _read_last_pixels(slide) -> str | None:
    """Read the bottom-right pixel of each pyramid level; what failed, or None."""
    for k, ((wk, hk), d) in enumerate(zip(slide.level_dimensions_px, slide.level_downsamples)):
        x, y = int((wk - 1) * d), int((hk - 1) * d)
        try:
            slide.reader.read_rect(location=(x, y), size=(1, 1), resolution=k, units="level")
        except Exception as e:  # noqa: BLE001
            return f"level {k} cannot be read at its last pixel (level-0 ({x}, {y})): {e}"
    return None

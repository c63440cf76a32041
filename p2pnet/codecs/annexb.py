# -*- test-case-name: test.unit.test_annexb,test.interop.test_annexb_ffmpeg -*-
"""H.264 / H.265 Annex-B byte streams, sans-IO: NAL units, access units, parameter sets.

An Annex-B stream (ITU-T H.264 Annex B, H.265 Annex B) is NAL units each preceded by a
start code C{00 00 01} (or C{00 00 00 01}); trailing zero bytes after a NAL unit belong to
the next start code. L{AccessUnitParser} turns such a stream, fed in chunks of any size,
into access units (one coded picture and the NAL units around it), the unit a RustDesk
C{EncodedVideoFrame} carries (rustdesk.md §6.8):

 - A new access unit starts, once the current one holds a coded slice, at an access unit
   delimiter, a parameter set, a (prefix) SEI or another NAL type that may only precede
   the first slice (H.264 §7.4.1.2.3, H.265 §7.4.2.4.4), or at a slice that is the first
   of a picture (H.264: C{first_mb_in_slice == 0}, the slice header's first ue(v) is the
   single bit 1; H.265: C{first_slice_segment_in_pic_flag}).
 - A keyframe is an access unit with an IDR slice (H.264 type 5) or an IRAP slice (H.265
   types 16-23). The latest VPS/SPS/PPS are cached, and a keyframe that lacks them gets
   them inserted (after its delimiter), so every keyframe can start a decoder.
 - The SPS gives the picture size: H.264 §7.3.2.1.1 and H.265 §7.3.2.2, with the
   cropping / conformance window applied, read after emulation-prevention bytes
   (C{00 00 03}) are removed.

Bad input never raises out of L{AccessUnitParser.feed} and never grows memory beyond the
configured bounds: bytes before the first start code, NAL units with the forbidden bit
set, a NAL unit or access unit above its size bound, and the access units after such a
loss until the next keyframe are dropped and counted. L{parseSps} and the other helpers
raise L{AnnexBError} on malformed input.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

__all__ = [
    "H264",
    "H265",
    "DEFAULT_MAX_ACCESS_UNIT",
    "DEFAULT_MAX_NAL",
    "AccessUnit",
    "AccessUnitParser",
    "AnnexBError",
    "BitReader",
    "PictureSize",
    "joinNalUnits",
    "nalType",
    "parseSps",
    "splitNalUnits",
    "unescapeRbsp",
]

H264 = "h264"
H265 = "h265"
CODECS = (H264, H265)

#: Default bound on one NAL unit: far above a 4K intra picture at a sane bitrate.
DEFAULT_MAX_NAL = 8 * 1024 * 1024
#: Default bound on one access unit.
DEFAULT_MAX_ACCESS_UNIT = 8 * 1024 * 1024

START_CODE = b"\x00\x00\x01"
LONG_START_CODE = b"\x00\x00\x00\x01"

# H.264 nal_unit_type values (Table 7-1).
H264_IDR = 5
H264_SEI = 6
H264_SPS = 7
H264_PPS = 8
H264_AUD = 9
# H.265 nal_unit_type values (Table 7-1).
H265_VPS = 32
H265_SPS = 33
H265_PPS = 34
H265_AUD = 35
H265_PREFIX_SEI = 39

_H264_AU_START = frozenset({H264_SEI, H264_SPS, H264_PPS, H264_AUD, 14, 15, 16, 17, 18})
_H265_AU_START = frozenset(
    {H265_VPS, H265_SPS, H265_PPS, H265_AUD, H265_PREFIX_SEI, 41, 42, 43, 44} | set(range(48, 56))
)


class AnnexBError(ValueError):
    """The bytes are not a valid Annex-B stream, NAL unit or parameter set."""


def _checkCodec(codec: str) -> str:
    if codec not in CODECS:
        raise ValueError(f"codec must be one of {CODECS}, not {codec!r}")
    return codec


def nalType(codec: str, nal: bytes) -> int:
    """The C{nal_unit_type} of C{nal} (a NAL unit without its start code)."""
    if not nal:
        raise AnnexBError("empty NAL unit")
    if codec == H264:
        return nal[0] & 0x1F
    return (nal[0] >> 1) & 0x3F


def _isVcl(codec: str, t: int) -> bool:
    return 1 <= t <= 5 if codec == H264 else t <= 31


def _isKey(codec: str, t: int) -> bool:
    return t == H264_IDR if codec == H264 else 16 <= t <= 23


def splitNalUnits(data: bytes) -> list[bytes]:
    """The NAL units of a whole Annex-B buffer, without start codes or trailing zeros.

    Bytes before the first start code are ignored; empty NAL units are skipped.
    """
    out = []
    i = data.find(START_CODE)
    while i >= 0:
        start = i + 3
        i = data.find(START_CODE, start)
        nal = (data[start:] if i < 0 else data[start:i]).rstrip(b"\x00")
        if nal:
            out.append(nal)
    return out


def joinNalUnits(nals: Iterable[bytes]) -> bytes:
    """Annex-B bytes for C{nals}, each with a 4-byte start code."""
    return b"".join(LONG_START_CODE + n for n in nals)


def unescapeRbsp(data: bytes) -> bytes:
    """Remove emulation-prevention bytes: C{00 00 03} becomes C{00 00} (H.264 §7.4.1)."""
    i = data.find(b"\x00\x00\x03")
    if i < 0:
        return data
    out = bytearray()
    start = 0
    while i >= 0:
        out += data[start : i + 2]
        start = i + 3
        i = data.find(b"\x00\x00\x03", start)
    out += data[start:]
    return bytes(out)


class BitReader:
    """Big-endian bit reader over an RBSP, with exp-Golomb codes (H.264 §9.1)."""

    def __init__(self, data: bytes) -> None:
        self._value = int.from_bytes(data, "big")
        self._bits = len(data) * 8
        self.position = 0

    def u(self, n: int) -> int:
        """The next C{n} bits as an unsigned integer."""
        if n == 0:
            return 0
        end = self.position + n
        if end > self._bits:
            raise AnnexBError("parameter set ends early")
        value = (self._value >> (self._bits - end)) & ((1 << n) - 1)
        self.position = end
        return value

    def ue(self) -> int:
        """An unsigned exp-Golomb code C{ue(v)}."""
        zeros = 0
        while self.u(1) == 0:
            zeros += 1
            if zeros > 31:
                raise AnnexBError("exp-Golomb code longer than 32 bits")
        return (1 << zeros) - 1 + self.u(zeros)

    def se(self) -> int:
        """A signed exp-Golomb code C{se(v)}."""
        k = self.ue()
        return (k + 1) // 2 if k & 1 else -(k // 2)


@dataclass(frozen=True)
class PictureSize:
    """What an SPS says about the pictures: the cropped size and the SPS id."""

    width: int
    height: int
    spsId: int


_H264_HIGH_PROFILES = frozenset({100, 110, 122, 244, 44, 83, 86, 118, 128, 138, 139, 134, 135})
# (SubWidthC, SubHeightC) by chroma_format_idc (H.264 Table 6-1, H.265 Table 6-1).
_SUBSAMPLING = {0: (1, 1), 1: (2, 2), 2: (2, 1), 3: (1, 1)}


def parseSps(codec: str, nal: bytes) -> PictureSize:
    """The cropped picture size in an SPS NAL unit (with its header, without start code)."""
    _checkCodec(codec)
    if nalType(codec, nal) != (H264_SPS if codec == H264 else H265_SPS):
        raise AnnexBError("not an SPS NAL unit")
    header = 1 if codec == H264 else 2
    r = BitReader(unescapeRbsp(nal[header:]))
    return _parseH264Sps(r) if codec == H264 else _parseH265Sps(r)


def _skipScalingList(r: BitReader, size: int) -> None:
    last = nextScale = 8
    for _ in range(size):
        if nextScale != 0:
            nextScale = (last + r.se() + 256) % 256
        last = nextScale or last


def _parseH264Sps(r: BitReader) -> PictureSize:
    # H.264 §7.3.2.1.1 seq_parameter_set_data().
    profile = r.u(8)
    r.u(16)  # constraint_set flags, reserved_zero_2bits, level_idc
    spsId = r.ue()
    if spsId > 31:
        raise AnnexBError("seq_parameter_set_id out of range")
    chroma = 1
    separate = 0
    if profile in _H264_HIGH_PROFILES:
        chroma = r.ue()
        if chroma > 3:
            raise AnnexBError("chroma_format_idc out of range")
        if chroma == 3:
            separate = r.u(1)
        r.ue()  # bit_depth_luma_minus8
        r.ue()  # bit_depth_chroma_minus8
        r.u(1)  # qpprime_y_zero_transform_bypass_flag
        if r.u(1):  # seq_scaling_matrix_present_flag
            for i in range(8 if chroma != 3 else 12):
                if r.u(1):
                    _skipScalingList(r, 16 if i < 6 else 64)
    r.ue()  # log2_max_frame_num_minus4
    pocType = r.ue()
    if pocType == 0:
        r.ue()  # log2_max_pic_order_cnt_lsb_minus4
    elif pocType == 1:
        r.u(1)  # delta_pic_order_always_zero_flag
        r.se()  # offset_for_non_ref_pic
        r.se()  # offset_for_top_to_bottom_field
        cycle = r.ue()
        if cycle > 255:
            raise AnnexBError("num_ref_frames_in_pic_order_cnt_cycle out of range")
        for _ in range(cycle):
            r.se()
    elif pocType != 2:
        raise AnnexBError("pic_order_cnt_type out of range")
    r.ue()  # max_num_ref_frames
    r.u(1)  # gaps_in_frame_num_value_allowed_flag
    widthMbs = r.ue() + 1
    heightMapUnits = r.ue() + 1
    frameMbsOnly = r.u(1)
    if not frameMbsOnly:
        r.u(1)  # mb_adaptive_frame_field_flag
    r.u(1)  # direct_8x8_inference_flag
    width = widthMbs * 16
    height = (2 - frameMbsOnly) * heightMapUnits * 16
    if r.u(1):  # frame_cropping_flag; crop units from H.264 §7.4.2.1.1
        left, right, top, bottom = r.ue(), r.ue(), r.ue(), r.ue()
        if separate or chroma == 0:
            unitX, unitY = 1, 2 - frameMbsOnly
        else:
            subW, subH = _SUBSAMPLING[chroma]
            unitX, unitY = subW, subH * (2 - frameMbsOnly)
        width -= unitX * (left + right)
        height -= unitY * (top + bottom)
    if width <= 0 or height <= 0:
        raise AnnexBError("cropping leaves no picture")
    return PictureSize(width, height, spsId)


def _parseH265Sps(r: BitReader) -> PictureSize:
    # H.265 §7.3.2.2 seq_parameter_set_rbsp().
    r.u(4)  # sps_video_parameter_set_id
    maxSubLayersMinus1 = r.u(3)
    if maxSubLayersMinus1 > 6:
        raise AnnexBError("sps_max_sub_layers_minus1 out of range")
    r.u(1)  # sps_temporal_id_nesting_flag
    # H.265 §7.3.3 profile_tier_level(1, sps_max_sub_layers_minus1): the general part is 88
    # bits of profile and 8 bits of level.
    r.u(32)
    r.u(32)
    r.u(32)
    present = [(r.u(1), r.u(1)) for _ in range(maxSubLayersMinus1)]
    if maxSubLayersMinus1 > 0:
        for _ in range(maxSubLayersMinus1, 8):
            r.u(2)  # reserved_zero_2bits
    for profilePresent, levelPresent in present:
        if profilePresent:
            r.u(32)
            r.u(32)
            r.u(24)
        if levelPresent:
            r.u(8)
    spsId = r.ue()
    if spsId > 15:
        raise AnnexBError("sps_seq_parameter_set_id out of range")
    chroma = r.ue()
    if chroma > 3:
        raise AnnexBError("chroma_format_idc out of range")
    separate = r.u(1) if chroma == 3 else 0
    width = r.ue()
    height = r.ue()
    if r.u(1):  # conformance_window_flag
        left, right, top, bottom = r.ue(), r.ue(), r.ue(), r.ue()
        subW, subH = (1, 1) if separate else _SUBSAMPLING[chroma]
        width -= subW * (left + right)
        height -= subH * (top + bottom)
    if width <= 0 or height <= 0:
        raise AnnexBError("conformance window leaves no picture")
    return PictureSize(width, height, spsId)


def _firstUe(data: bytes) -> int:
    return BitReader(unescapeRbsp(data[:16])).ue()


@dataclass(frozen=True)
class AccessUnit:
    """One access unit: Annex-B bytes (4-byte start codes) and whether it is a keyframe.

    A keyframe's C{data} always holds the parameter sets a decoder needs to start there.
    """

    data: bytes
    key: bool
    nalTypes: tuple[int, ...]


class AccessUnitParser:
    """Annex-B bytes in (chunks of any size), access units out.

    Access units before the first keyframe, and after a loss (a dropped NAL unit or access
    unit) until the next keyframe, are dropped: a decoder could not use them.

    @ivar width: the picture width from the latest SPS, 0 until one was seen.
    @ivar height: the picture height, likewise.
    @ivar droppedNals: NAL units dropped (forbidden bit set, above C{maxNal}).
    @ivar droppedBytes: bytes thrown away (garbage before a start code, dropped NALs).
    @ivar droppedAccessUnits: access units dropped (broken, too big, undecodable).
    @ivar badParameterSets: SPS NAL units that could not be parsed.
    @ivar cutErrors: times L{endAccessUnit} ended a NAL unit that went on.
    @ivar accessUnits: access units returned.
    """

    def __init__(
        self,
        codec: str,
        maxNal: int = DEFAULT_MAX_NAL,
        maxAccessUnit: int = DEFAULT_MAX_ACCESS_UNIT,
    ) -> None:
        self.codec = _checkCodec(codec)
        self._h264 = codec == H264
        self._maxNal = maxNal
        self._maxAu = maxAccessUnit
        self._buf = bytearray()
        self._inNal = False  # the buffer starts inside a NAL unit (a start code was seen)
        self._scan = 0
        self._afterCut = False
        self._au: list[bytes] = []
        self._auSize = 0
        self._auVcl = False
        self._auBroken = False
        self._synced = False
        self._vps: dict[int, bytes] = {}
        self._sps: dict[int, bytes] = {}
        self._pps: dict[int, bytes] = {}
        self.width = 0
        self.height = 0
        self.droppedNals = 0
        self.droppedBytes = 0
        self.droppedAccessUnits = 0
        self.badParameterSets = 0
        self.cutErrors = 0
        self.accessUnits = 0

    @property
    def buffered(self) -> int:
        """Bytes held: the incomplete NAL unit and the incomplete access unit."""
        return len(self._buf) + self._auSize

    def parameterSets(self) -> list[bytes]:
        """The cached parameter set NAL units (VPS, SPS, PPS), in decoding order."""
        return [*self._vps.values(), *self._sps.values(), *self._pps.values()]

    def feed(self, data: bytes) -> list[AccessUnit]:
        """Add stream bytes; return the access units they complete."""
        out: list[AccessUnit] = []
        buf = self._buf
        buf += data
        pos = 0
        while True:
            i = buf.find(START_CODE, max(pos, self._scan))
            if i < 0:
                break
            if self._inNal:
                self._nal(bytes(buf[pos:i]).rstrip(b"\x00"), out)
            else:
                lost = len(buf[pos:i].rstrip(b"\x00"))
                self.droppedBytes += lost
                if lost and self._afterCut:
                    self._miscut()
            self._afterCut = False
            self._inNal = True
            pos = i + 3
            self._scan = 0
        if pos:
            del buf[:pos]
        self._scan = max(0, len(buf) - 2)
        if self._inNal and len(buf) > self._maxNal:
            # A NAL unit above the bound: drop it and what the access unit had so far.
            self.droppedNals += 1
            t = buf[0] & 0x1F if self._h264 else (buf[0] >> 1) & 0x3F
            self._auVcl = self._auVcl or _isVcl(self.codec, t)
            self._lose(len(buf) - 2)
            self._inNal = False
        elif not self._inNal and len(buf) > 2:
            lost = len(buf[:-2].rstrip(b"\x00"))
            if lost and self._afterCut:
                self._miscut()
                self._afterCut = False
            self._lose(len(buf) - 2, counted=lost)
        return out

    def _miscut(self) -> None:
        # endAccessUnit ended a NAL unit that went on: the picture sent was cut short.
        self.cutErrors += 1
        self._synced = False

    def endAccessUnit(self) -> list[AccessUnit]:
        """The source paused: take the bytes so far as ending a NAL unit and an access unit.

        Annex-B has no end marker, so an access unit is otherwise known complete only when
        the next one begins, one frame later. A live encoder that writes each access unit
        at once (ffmpeg with C{-flush_packets 1}) lets the caller end it at a pause. If
        the guess was wrong (the next bytes do not begin with a start code), those bytes
        are dropped, counted in C{cutErrors}, and pictures are dropped until the next
        keyframe.
        """
        out: list[AccessUnit] = []
        if self._inNal:
            end = len(self._buf.rstrip(b"\x00"))
            if end:
                nal = bytes(self._buf[:end])
                del self._buf[:end]  # trailing zeros may begin the next start code
                self._scan = 0
                self._inNal = False
                self._afterCut = True
                self._nal(nal, out)
        if self._auVcl:
            self._finish(out)
        return out

    def flush(self) -> list[AccessUnit]:
        """End of stream: return the access unit still being gathered, if it is complete."""
        out: list[AccessUnit] = []
        if self._inNal:
            self._nal(bytes(self._buf).rstrip(b"\x00"), out)
        else:
            self.droppedBytes += len(self._buf.rstrip(b"\x00"))
        self._buf.clear()
        self._inNal = False
        self._scan = 0
        self._finish(out)
        return out

    def _lose(self, n: int, counted: int | None = None) -> None:
        self.droppedBytes += n if counted is None else counted
        del self._buf[:n]
        self._scan = 0
        if counted is None:
            self._auBroken = True

    def _nal(self, nal: bytes, out: list[AccessUnit]) -> None:
        header = 1 if self._h264 else 2
        if not nal:
            return
        if len(nal) < header or nal[0] & 0x80:
            self.droppedNals += 1
            self.droppedBytes += len(nal)
            self._auBroken = True
            return
        t = nal[0] & 0x1F if self._h264 else (nal[0] >> 1) & 0x3F
        if self._h264:
            vcl = 1 <= t <= 5
            starts = t in _H264_AU_START or (vcl and len(nal) > 1 and nal[1] & 0x80)
        else:
            vcl = t <= 31
            starts = t in _H265_AU_START or (vcl and len(nal) > 2 and nal[2] & 0x80)
        if starts and self._auVcl:
            self._finish(out)
        if not vcl:
            self._cacheParameterSet(t, nal)
        if self._auSize + len(nal) > self._maxAu:
            self._auBroken = True
            self.droppedBytes += len(nal)
            return
        self._au.append(nal)
        self._auSize += len(nal) + 4
        self._auVcl = self._auVcl or vcl

    def _cacheParameterSet(self, t: int, nal: bytes) -> None:
        try:
            if self._h264:
                if t == H264_SPS:
                    size = parseSps(H264, nal)
                    self._sps = {size.spsId: nal}
                    self.width, self.height = size.width, size.height
                elif t == H264_PPS:
                    self._pps[_firstUe(nal[1:])] = nal
            elif t == H265_VPS:
                self._vps = {nal[2] >> 4: nal} if len(nal) > 2 else self._vps
            elif t == H265_SPS:
                size = parseSps(H265, nal)
                self._sps = {size.spsId: nal}
                self.width, self.height = size.width, size.height
            elif t == H265_PPS:
                self._pps[_firstUe(nal[2:])] = nal
        except AnnexBError:
            self.badParameterSets += 1
            return
        if len(self._pps) > 64:
            self._pps.pop(next(iter(self._pps)))

    def _finish(self, out: list[AccessUnit]) -> None:
        nals, broken, vcl = self._au, self._auBroken, self._auVcl
        self._au, self._auSize, self._auVcl, self._auBroken = [], 0, False, False
        if not nals and not broken:
            return
        types = [nal[0] & 0x1F if self._h264 else (nal[0] >> 1) & 0x3F for nal in nals]
        key = any(_isKey(self.codec, t) for t in types)
        if key and not broken:
            nals, types, key = self._withParameterSets(nals, types)
        if broken or not vcl or (not key and not self._synced):
            self.droppedAccessUnits += 1
            if broken:
                self._synced = False
            return
        self._synced = self._synced or key
        self.accessUnits += 1
        out.append(AccessUnit(joinNalUnits(nals), key, tuple(types)))

    def _withParameterSets(
        self, nals: list[bytes], types: list[int]
    ) -> tuple[list[bytes], list[int], bool]:
        """C{nals} with the cached parameter sets it lacks, after its delimiter."""
        if self._h264:
            kinds = [(H264_SPS, self._sps), (H264_PPS, self._pps)]
            aud = H264_AUD
        else:
            kinds = [(H265_VPS, self._vps), (H265_SPS, self._sps), (H265_PPS, self._pps)]
            aud = H265_AUD
        present = set(types)
        if all(t in present for t, _ in kinds):
            return nals, types, True
        if any(t not in present and not cache for t, cache in kinds):
            return nals, types, False
        head = [n for n, t in zip(nals, types, strict=True) if t == aud]
        params: list[bytes] = []
        for t, cache in kinds:
            inBand = [n for n, nt in zip(nals, types, strict=True) if nt == t]
            params += inBand or list(cache.values())
        paramTypes = {t for t, _ in kinds}
        rest = [n for n, t in zip(nals, types, strict=True) if t != aud and t not in paramTypes]
        nals = head + params + rest
        return nals, [nalType(self.codec, n) for n in nals], True

"""FIX 4.4 on the wire: framing with BodyLength/CheckSum checks, the Deribit Logon digest, the seq store.

simplefix encodes and splits fields but does not check BodyLength(9) or CheckSum(10), so framing is
done here: a frame whose declared length does not land on its trailer, or whose checksum is wrong,
comes out as a ``BadFrame`` (counted and logged by the session) and the bytes after it still parse.
"""

from __future__ import annotations

import base64
import hashlib
import os
import re
from dataclasses import dataclass
from pathlib import Path

SOH = b"\x01"
_BEGIN = b"8=FIX"
_TRAILER = b"\x0110="
#: A frame larger than this without a trailer is garbage, not a slow message.
MAX_FRAME = 1 << 20


def raw_data(time_ms: int, nonce: bytes) -> str:
    """RawData(96): ``<ms timestamp>.<base64 nonce>``."""
    return f"{time_ms}.{base64.b64encode(nonce).decode()}"


def logon_password(raw: str, client_secret: str) -> str:
    """Password(554): base64 of the raw SHA-256 digest of RawData + client_secret."""
    return base64.b64encode(hashlib.sha256((raw + client_secret).encode()).digest()).decode()


def checksum(data: bytes | bytearray) -> int:
    return sum(data) % 256


@dataclass(frozen=True)
class BadFrame:
    kind: str    # "garbage" | "bad_body_length" | "bad_checksum"
    detail: str


class FixFramer:
    """Bytes in, whole checked frames (``bytes``) or ``BadFrame`` out, in stream order."""

    def __init__(self) -> None:
        self._buf = bytearray()

    def feed(self, data: bytes) -> list[bytes | BadFrame]:
        self._buf += data
        out: list[bytes | BadFrame] = []
        while self._next(out):
            pass
        return out

    def _next(self, out: list) -> bool:
        buf = self._buf
        start = buf.find(_BEGIN)
        if start < 0:
            keep = len(_BEGIN) - 1  # the tail may be the start of a "8=FIX" still arriving
            if len(buf) > keep:
                out.append(BadFrame("garbage", f"{len(buf) - keep} bytes with no 8=FIX"))
                del buf[:-keep]
            return False
        if start:
            out.append(BadFrame("garbage", f"{start} bytes before 8=FIX"))
            del buf[:start]
        end_begin = buf.find(SOH)
        end_len = buf.find(SOH, end_begin + 1) if end_begin >= 0 else -1
        if end_len < 0:
            return self._too_long(out, "no BodyLength field")
        length_field = bytes(buf[end_begin + 1:end_len])
        if not re.fullmatch(rb"9=\d{1,7}", length_field):
            return self._drop(out, "bad_body_length", f"second field is {length_field[:20]!r}, not 9=<n>")
        body_start = end_len + 1
        body_end = body_start + int(length_field[2:])  # where "10=" must begin
        if (len(buf) >= body_end + 7 and buf[body_end - 1:body_end + 3] == _TRAILER
                and buf[body_end + 6] == 1):
            frame = bytes(buf[:body_end + 7])
            del buf[:body_end + 7]
            declared, actual = frame[-4:-1], checksum(frame[:-7])
            if declared != b"%03d" % actual:
                out.append(BadFrame("bad_checksum", f"declared {declared.decode(errors='replace')}, "
                                                    f"computed {actual:03d}"))
            else:
                out.append(frame)
            return True
        trailer = buf.find(_TRAILER, body_start - 1)
        trailer_end = buf.find(SOH, trailer + 4) if trailer >= 0 else -1
        if trailer_end >= 0 and trailer + 1 != body_end:
            # The declared length misses the real trailer: drop exactly this frame.
            del buf[:trailer_end + 1]
            out.append(BadFrame("bad_body_length", f"declared {body_end - body_start}, "
                                                    f"body is {trailer + 1 - body_start} bytes"))
            return True
        if len(buf) < body_end + 7:
            return self._too_long(out, "no trailer")
        return self._drop(out, "bad_body_length", "declared length does not end at a CheckSum field")

    def _drop(self, out: list, kind: str, detail: str) -> bool:
        out.append(BadFrame(kind, detail))
        del self._buf[:1]  # resynchronise on the next "8=FIX"
        return True

    def _too_long(self, out: list, what: str) -> bool:
        if len(self._buf) <= MAX_FRAME:
            return False  # wait for more bytes
        return self._drop(out, "garbage", f"{what} within {MAX_FRAME} bytes")


class SeqStore:
    """Next sender/target MsgSeqNum, in memory (tests) or persisted by ``FileSeqStore``."""

    def __init__(self) -> None:
        self.next_sender = 1
        self.next_target = 1

    def load(self) -> None:
        pass

    def save(self) -> None:
        pass

    def close(self) -> None:
        pass


class FileSeqStore(SeqStore):
    """Both numbers in one fixed-width line, rewritten in place by one pwrite per change.

    One pwrite of 42 bytes is cheap enough for every market-data message and survives a process
    crash (the page cache keeps it); it is not fsynced, so a power loss may lose the last numbers,
    which FIX repairs with a ResendRequest or a too-low logout and reset.
    """

    def __init__(self, path: str | os.PathLike) -> None:
        super().__init__()
        self.path = Path(path)
        self._fd: int | None = None

    def load(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        text = os.pread(self._fd, 100, 0).decode("ascii", errors="replace").split()
        if not text:
            self.save()
            return
        if len(text) != 2 or not all(t.isdigit() and int(t) > 0 for t in text):
            raise ValueError(f"FIX sequence store {self.path} is corrupt ({' '.join(text)[:60]!r}); "
                             "delete it and log on with ResetSeqNumFlag")
        self.next_sender, self.next_target = int(text[0]), int(text[1])

    def save(self) -> None:
        if self._fd is not None:
            os.pwrite(self._fd, b"%020d %020d\n" % (self.next_sender, self.next_target), 0)

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

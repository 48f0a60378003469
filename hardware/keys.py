"""Per-device HMAC keys for the stimulator link.

Each stimulator has its own 32-byte secret; a frame is accepted only with an HMAC-SHA256 made
with that key. The key lives in a file readable by its owner only (mode 0600); a key file
that others can read, or of the wrong length, is refused, because a leaked key lets anyone
drive the stimulator. The file is untrusted like any other: a directory, a FIFO or device (a
read that never ends), or a huge file is refused in one line before it is read.
"""

from __future__ import annotations

import os
import secrets
import stat
from pathlib import Path

from hardware.errors import HardwareError
from hardware.untrusted_json import UntrustedFileError, read_untrusted_bytes

KEY_BYTES = 32
#: Environment variable that overrides the default key file location.
KEY_ENV = "NPE_DEVICE_KEY_FILE"


class DeviceKeyError(HardwareError, ValueError):
    """A device key file that must not be used."""


def default_key_path() -> Path:
    env = os.environ.get(KEY_ENV)
    if env:
        return Path(env)
    return Path.home() / ".config" / "npe" / "device.key"


def load_or_create_device_key(path: Path | None = None) -> bytes:
    """Read the device key at `path` (default: $NPE_DEVICE_KEY_FILE or ~/.config/npe/device.key),
    creating a fresh random one (mode 0600) if the file does not exist.

    Raises DeviceKeyError if the file is readable by group/others or not exactly 32 bytes.
    """
    p = Path(path) if path is not None else default_key_path()
    if not p.exists() and not p.is_symlink():
        if p.parent.exists() and not p.parent.is_dir():
            raise DeviceKeyError(
                f"{p}: cannot create the device key ({p.parent} is not a directory)"
            )
        try:
            p.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise DeviceKeyError(f"{p}: cannot create the device key ({exc.strerror})") from exc
        key = secrets.token_bytes(KEY_BYTES)
        try:
            fd = os.open(p, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except OSError as exc:
            raise DeviceKeyError(f"{p}: cannot create the device key ({exc.strerror})") from exc
        try:
            os.write(fd, key)
        finally:
            os.close(fd)
        return key
    try:
        st = p.stat()
    except OSError as exc:
        raise DeviceKeyError(f"{p}: cannot read the device key ({exc.strerror})") from exc
    if not stat.S_ISREG(st.st_mode):
        kind = "a directory" if stat.S_ISDIR(st.st_mode) else "not a regular file"
        raise DeviceKeyError(f"{p}: is {kind}, expected a {KEY_BYTES}-byte device key file")
    mode = st.st_mode
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise DeviceKeyError(
            f"{p}: device key is accessible by group/others (mode {oct(mode & 0o777)}); "
            "chmod 600 it"
        )
    try:
        # One byte more than a key is enough to tell a wrong length; nothing bigger is read.
        key = read_untrusted_bytes(p, "device key file", max_bytes=4096)
    except UntrustedFileError as exc:
        raise DeviceKeyError(str(exc)) from exc
    if len(key) != KEY_BYTES:
        raise DeviceKeyError(f"{p}: device key must be {KEY_BYTES} bytes, found {len(key)}")
    return key

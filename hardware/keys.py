"""Per-device HMAC keys for the stimulator link.

Each stimulator has its own 32-byte secret; a frame is accepted only with an HMAC-SHA256 made
with that key. The key lives in a file readable by its owner only (mode 0600); a key file
that others can read, or of the wrong length, is refused, because a leaked key lets anyone
drive the stimulator.
"""

from __future__ import annotations

import os
import secrets
import stat
from pathlib import Path

from hardware.errors import HardwareError

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
    if not p.exists():
        p.parent.mkdir(parents=True, exist_ok=True)
        key = secrets.token_bytes(KEY_BYTES)
        fd = os.open(p, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.write(fd, key)
        finally:
            os.close(fd)
        return key
    mode = p.stat().st_mode
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise DeviceKeyError(
            f"{p}: device key is accessible by group/others (mode {oct(mode & 0o777)}); "
            "chmod 600 it"
        )
    key = p.read_bytes()
    if len(key) != KEY_BYTES:
        raise DeviceKeyError(f"{p}: device key must be {KEY_BYTES} bytes, found {len(key)}")
    return key

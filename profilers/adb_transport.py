"""Two ways to reach a phone's adbd, behind one interface.

* :class:`AdbShellTransport` (``transport: tcp`` / ``usb``): ``adb_shell`` speaks the ADB wire
  protocol straight to the phone's adbd, no adb server needed. Authenticates with the user's adb
  key (``~/.android/adbkey``, created with 0600 permissions on first use).
* :class:`AdbServerTransport` (``transport: server``): goes through the host's running adb
  server (``adbutils``), for machines where that server already owns the USB phones: two
  programs cannot both claim a USB device.

Both expose ``shell`` (exit status + merged output), ``push``, ``stat`` and ``close``, and map
failures to three errors: :class:`DeviceUnauthorized` (the user must accept the RSA key on the
phone; never retried), :class:`DeviceOffline` and :class:`TransientAdbError` (retried with
backoff by the caller).
"""
from __future__ import annotations

import logging
import os
import re
import shutil
import socket
import stat as stat_mod
import tempfile
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Optional, Tuple

from supernet.errors import first_line

from .base import ProfilerError
from .devices import DeviceEntry, default_key_path

__all__ = ["AdbTransport", "AdbShellTransport", "AdbServerTransport", "AdbTransportError",
           "DeviceUnauthorized", "DeviceOffline", "TransientAdbError", "RemoteStat",
           "open_transport", "load_or_create_key"]

log = logging.getLogger(__name__)

# Appended to every shell command: ADB's v1 shell service carries no exit status.
_RC_MARK = "__ofa_rc="
_RC_RE = re.compile(re.escape(_RC_MARK) + r"(\d+)\s*$")


class AdbTransportError(ProfilerError):
    """Talking to the phone failed."""


class DeviceUnauthorized(AdbTransportError):
    """The phone has not accepted this host's RSA key."""


class TransientAdbError(AdbTransportError):
    """A dropped connection or a timeout: worth retrying after a reconnect."""


class DeviceOffline(TransientAdbError):
    """The phone cannot be reached (or the adb server reports it offline)."""


@dataclass(frozen=True)
class RemoteStat:
    """What ``stat`` reports of a file on the phone (mode bits, size in bytes, mtime in seconds)."""

    mode: int
    size: int
    mtime: int


def _unauthorized(name: str, key: Optional[Path]) -> DeviceUnauthorized:
    where = f" ({key}.pub)" if key else ""
    return DeviceUnauthorized(
        f"device {name} unauthorized: accept the RSA key prompt on the phone{where} "
        f"('Allow USB debugging', tick 'Always allow'), then retry")


def load_or_create_key(path: "str | os.PathLike") -> Path:
    """``path`` (an adb private key), generated on first use: written in a private temp dir,
    chmod 0600, then moved into place, so the key is never readable by others, even briefly.
    An existing key is used as is; its missing ``.pub`` is regenerated from it."""
    from adb_shell.auth.keygen import keygen, write_public_keyfile

    key = Path(path).expanduser()
    pub = Path(str(key) + ".pub")
    if key.exists() and pub.exists():
        return key
    key.parent.mkdir(parents=True, exist_ok=True)
    if not key.parent.stat().st_mode & stat_mod.S_IWUSR:
        raise ProfilerError(f"cannot write an adb key into {key.parent}")
    tmp = Path(tempfile.mkdtemp(prefix=".adbkey-", dir=key.parent))  # mode 0700
    try:
        if key.exists():
            write_public_keyfile(str(key), str(tmp / "adbkey.pub"))
        else:
            keygen(str(tmp / "adbkey"))
            os.chmod(tmp / "adbkey", 0o600)
            log.warning("created adb key %s; phones will ask to allow it once", key)
        os.chmod(tmp / "adbkey.pub", 0o644)
        if not key.exists():
            os.replace(tmp / "adbkey", key)
        os.replace(tmp / "adbkey.pub", pub)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return key


def _split_rc(output: str, command: str) -> Tuple[int, str]:
    out = output.replace("\r\n", "\n")
    m = _RC_RE.search(out)
    if m is None:
        # The stream ended before the trailer: the connection or the shell died mid-command.
        raise TransientAdbError(f"shell command ended without an exit status: {command[:120]}")
    return int(m.group(1)), out[:m.start()]


def _tcp_device(host: str, port: int, timeout_s: float):
    """``adb_shell``'s TCP device, except that a peer closing the socket is an error at once:
    the stock transport treats an empty read as "no data yet" and spins until the read timeout,
    so a dropped link would look like a hung benchmark."""
    from adb_shell.adb_device import AdbDevice
    from adb_shell.transport.tcp_transport import TcpTransport

    class _Tcp(TcpTransport):
        def bulk_read(self, numbytes, transport_timeout_s):
            data = super().bulk_read(numbytes, transport_timeout_s)
            if not data and numbytes:
                raise ConnectionResetError(f"{host}:{port} closed the connection")
            return data

    return AdbDevice(_Tcp(host, port), default_transport_timeout_s=timeout_s)


def _wrap(command: str) -> str:
    return f"( {command} ) 2>&1; echo {_RC_MARK}$?"


class AdbTransport(ABC):
    """One phone. ``connect`` is implicit in the first call; ``close`` drops the connection."""

    kind = ""

    def __init__(self, entry: DeviceEntry):
        self.entry = entry

    @property
    def name(self) -> str:
        """The device's registry name (used in every error message)."""
        return self.entry.name

    @abstractmethod
    def connect(self) -> None:
        """Open the connection if it is not open (every other call does this first); raises
        DeviceUnauthorized/DeviceOffline with what to do."""

    @abstractmethod
    def shell(self, command: str, timeout_s: Optional[float] = None) -> Tuple[int, str]:
        """Run ``command`` (already quoted) with ``sh -c``; exit status and stdout+stderr."""

    @abstractmethod
    def push(self, local: "str | os.PathLike", remote: str, mode: int = 0o644,
             timeout_s: Optional[float] = None) -> None:
        """Copy the local file to ``remote`` with permission bits ``mode``."""

    @abstractmethod
    def stat(self, remote: str) -> Optional[RemoteStat]:
        """``None`` when ``remote`` does not exist."""

    @abstractmethod
    def close(self) -> None:
        """Drop the connection; the next call reconnects."""

    def describe(self) -> Dict[str, Any]:
        """How the phone is reached (transport, address), recorded with measurements."""
        return {"transport": self.entry.transport, "address": self.entry.address}

    def __enter__(self) -> "AdbTransport":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class AdbShellTransport(AdbTransport):
    """Straight to adbd over TCP (``host:port``) or USB (optional serial), via ``adb_shell``."""

    kind = "adb-shell"

    def __init__(self, entry: DeviceEntry):
        super().__init__(entry)
        self.key_path = Path(entry.key) if entry.key else default_key_path()
        self._dev = None

    def connect(self) -> None:
        """Connect to adbd directly (TCP or USB) and authenticate with this host's RSA key."""
        if self._dev is not None:
            return
        from adb_shell import exceptions as ex
        from adb_shell.auth.sign_pythonrsa import PythonRSASigner

        e = self.entry
        if e.transport == "usb":
            try:
                from adb_shell.adb_device import AdbDeviceUsb
                dev = AdbDeviceUsb(serial=e.address or None,
                                   default_transport_timeout_s=e.timeout_s)
            except (ImportError, ex.InvalidTransportError) as exc:
                raise AdbTransportError(
                    f"device {e.name}: USB needs libusb (pip install 'adb-shell[usb]'), or use "
                    f"transport: server with the host's adb server ({exc})") from None
            except ex.UsbDeviceNotFoundError as exc:
                raise DeviceOffline(f"device {e.name} offline: no USB device"
                                    f"{' ' + e.address if e.address else ''} ({exc})") from None
            where = f"USB {e.address or '(first device)'}"
        else:
            host, port = e.host_port
            dev = _tcp_device(host, port, e.timeout_s)
            where = f"{host}:{port}"
        key = load_or_create_key(self.key_path)
        signer = PythonRSASigner.FromRSAKeyPath(str(key))
        prompted = []

        def on_prompt(_dev) -> None:
            prompted.append(True)
            log.warning("device %s: accept the RSA key prompt on the phone (%s.pub)",
                        e.name, key)

        try:
            dev.connect(rsa_keys=[signer], transport_timeout_s=min(e.timeout_s, 10.0),
                        auth_timeout_s=e.auth_timeout_s, read_timeout_s=min(e.timeout_s, 10.0),
                        auth_callback=on_prompt)
        except (ex.AdbTimeoutError, ex.TcpTimeoutException, socket.timeout) as exc:
            dev.close()
            if prompted:
                raise _unauthorized(e.name, key) from None
            raise DeviceOffline(f"device {e.name} offline: no answer from {where} ({exc})") from None
        except ex.DeviceAuthError:
            dev.close()
            raise _unauthorized(e.name, key) from None
        except (ConnectionError, OSError, ex.UsbDeviceNotFoundError, ex.UsbReadFailedError,
                ex.UsbWriteFailedError) as exc:
            dev.close()
            msg = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
            raise DeviceOffline(f"device {e.name} offline: cannot reach {where} ({msg}); is "
                                f"USB debugging on (and `adb tcpip 5555` done for Wi-Fi)?") from None
        except (ex.InvalidResponseError, ex.InvalidCommandError, ex.InvalidChecksumError) as exc:
            dev.close()
            raise TransientAdbError(f"device {e.name}: bad handshake from {where} ({exc})") from None
        except Exception as exc:  # libusb's own errors (usb1.USBError) are no OSError
            if e.transport != "usb":
                raise
            dev.close()
            raise DeviceOffline(f"device {e.name} offline: {where} failed ({exc}); if the host's "
                                f"adb server holds the phone, use transport: server or run "
                                f"`adb kill-server`") from None
        self._dev = dev

    def _call(self, what: str, fn):
        from adb_shell import exceptions as ex

        self.connect()
        try:
            return fn()
        except (ex.AdbTimeoutError, ex.TcpTimeoutException, socket.timeout) as exc:
            self.close()
            raise TransientAdbError(f"device {self.name}: {what} timed out ({exc})") from None
        except (ConnectionError, OSError, ex.AdbConnectionError, ex.InvalidResponseError,
                ex.InvalidCommandError, ex.InvalidChecksumError, ex.UsbReadFailedError,
                ex.UsbWriteFailedError) as exc:
            self.close()
            raise TransientAdbError(f"device {self.name}: connection lost during {what} "
                                    f"({first_line(exc, with_type=True)})") from None

    def shell(self, command: str, timeout_s: Optional[float] = None) -> Tuple[int, str]:
        """Run ``command`` on the phone; exit status and combined output (the status is echoed after
        a marker, as adbd's shell protocol v1 does not return it)."""
        t = float(timeout_s or self.entry.timeout_s)
        out = self._call(f"shell '{command[:80]}'", lambda: self._dev.shell(
            _wrap(command), transport_timeout_s=t, read_timeout_s=t, timeout_s=t,
            decode=False))
        return _split_rc(out.decode("utf-8", errors="replace"), command)

    def push(self, local, remote: str, mode: int = 0o644,
             timeout_s: Optional[float] = None) -> None:
        """Copy the local file to ``remote`` over adb sync, with permission bits ``mode``."""
        from adb_shell import exceptions as ex

        t = float(timeout_s or self.entry.timeout_s)
        try:
            self._call(f"push to {remote}", lambda: self._dev.push(
                str(local), remote, st_mode=stat_mod.S_IFREG | mode, transport_timeout_s=t,
                read_timeout_s=t))
        except (ex.PushFailedError, ex.AdbCommandFailureException) as exc:
            raise AdbTransportError(f"device {self.name}: push to {remote} failed: {exc}") from None

    def stat(self, remote: str) -> Optional[RemoteStat]:
        """Mode, size and mtime of ``remote``; None when it is absent (adbd then reports zeros)."""
        t = self.entry.timeout_s
        mode, size, mtime = self._call(f"stat {remote}", lambda: self._dev.stat(
            remote, transport_timeout_s=t, read_timeout_s=t))
        if mode == 0 and size == 0 and mtime == 0:
            return None
        return RemoteStat(mode, size, mtime)

    def close(self) -> None:
        """Close the socket, ignoring errors of an already dead one (they would mask the real
        failure)."""
        dev, self._dev = self._dev, None
        if dev is not None:
            try:
                dev.close()
            except Exception:  # closing a dead socket must not mask the real error
                pass

    def describe(self) -> Dict[str, Any]:
        """The base description plus the transport kind and the RSA key used."""
        return {**super().describe(), "via": self.kind, "key": str(self.key_path)}


class AdbServerTransport(AdbTransport):
    """Through the host's adb server (``adbutils``). ``address`` is the device serial as
    ``adb devices`` lists it; a ``host:port`` serial not yet listed is ``adb connect``-ed."""

    kind = "adb-server"

    def __init__(self, entry: DeviceEntry):
        super().__init__(entry)
        self._client = None
        self._device = None

    def _adb_errors(self):
        from adbutils import errors as ae
        return ae

    def _state(self) -> Optional[str]:
        for info in self._client.list():
            if info.serial == self.entry.address:
                return info.state
        return None

    def connect(self) -> None:
        """Find the phone through the host's adb server (which holds the authorization) and check it
        is online."""
        if self._device is not None:
            return
        import adbutils
        from adbutils._adb import _check_server

        ae = self._adb_errors()
        e = self.entry
        host, port = e.server_host_port
        # adbutils would start a server itself when none answers; a measurement tool should not
        # leave daemons behind, so say what is missing instead.
        if not _check_server(host, port):
            raise DeviceOffline(f"device {e.name}: no adb server at {host}:{port}; start it with "
                                f"`adb start-server` (or `adb -P {port} start-server`)")
        self._client = adbutils.AdbClient(host=host, port=port, socket_timeout=e.timeout_s)
        try:
            state = self._state()
            said = ""
            if state is None and re.match(r"^[^:\s]+:\d+$", e.address or ""):
                said = self._client.connect(e.address, timeout=min(e.timeout_s, 10.0))
                log.info("adb connect %s: %s", e.address, said)
                state = self._state()
            deadline = time.monotonic() + e.auth_timeout_s
            # A fresh connection passes through connecting/authorizing/offline before "device";
            # "unauthorized" lasts until the user taps Allow, so it gets the auth timeout too.
            while state != "device" and time.monotonic() < deadline:
                time.sleep(0.1)
                state = self._state()
        except (ae.AdbError, OSError) as exc:
            self._client = None
            raise DeviceOffline(f"device {e.name}: adb server at {host}:{port} failed: {exc}") \
                from None
        if state == "unauthorized":
            self._client = None
            raise _unauthorized(e.name, None)
        if state != "device":
            self._client = None
            if state is None:
                raise DeviceOffline(f"device {e.name} offline: adb server at {host}:{port} does "
                                    f"not list {e.address!r} (see `adb devices`)"
                                    + (f"; adb connect said: {said}" if said else ""))
            raise DeviceOffline(f"device {e.name} {state}: adb server at {host}:{port} reports "
                                f"{e.address!r} as {state!r}")
        self._device = self._client.device(serial=e.address)

    def _call(self, what: str, fn):
        ae = self._adb_errors()
        self.connect()
        try:
            return fn()
        except (ae.AdbTimeout, socket.timeout, TimeoutError) as exc:
            self.close()
            raise TransientAdbError(f"device {self.name}: {what} timed out ({exc})") from None
        except (ae.AdbError, ConnectionError, OSError) as exc:
            self.close()
            text = str(exc)
            if "unauthorized" in text:
                raise _unauthorized(self.name, None) from None
            raise TransientAdbError(f"device {self.name}: {what} failed ({text})") from None

    def shell(self, command: str, timeout_s: Optional[float] = None) -> Tuple[int, str]:
        """Run ``command`` on the phone via the adb server; exit status and combined output."""
        t = float(timeout_s or self.entry.timeout_s)
        out = self._call(f"shell '{command[:80]}'", lambda: self._device.shell(
            _wrap(command), timeout=t, encoding=None, rstrip=False))
        return _split_rc(out.decode("utf-8", errors="replace"), command)

    def push(self, local, remote: str, mode: int = 0o644,
             timeout_s: Optional[float] = None) -> None:
        """Copy the local file to ``remote`` via the adb server's sync service; a short write is an
        error."""
        def go():
            # adbutils sends "SEND"/"DATA"/"DONE" then reads OKAY or FAIL.
            n = self._device.sync.push(Path(local), remote, mode=mode)
            if n != Path(local).stat().st_size:
                raise self._adb_errors().AdbError(f"pushed {n} of {Path(local).stat().st_size} "
                                                  f"bytes")
        self._call(f"push to {remote}", go)

    def stat(self, remote: str) -> Optional[RemoteStat]:
        """Mode, size and mtime of ``remote``; None when it does not exist."""
        info = self._call(f"stat {remote}", lambda: self._device.sync.stat(remote))
        if info.mode == 0 and info.size == 0 and info.mtime is None:
            return None
        mtime = int(info.mtime.timestamp()) if info.mtime else 0
        return RemoteStat(info.mode, info.size, mtime)

    def close(self) -> None:
        """Forget the server client and device handle (the server keeps its own connection)."""
        self._device = None
        self._client = None

    def describe(self) -> Dict[str, Any]:
        """The base description plus the transport kind and the adb server address."""
        return {**super().describe(), "via": self.kind, "server": self.entry.server}


def open_transport(entry: DeviceEntry) -> AdbTransport:
    """The transport the registry entry asks for: the host's adb server (``transport: server``) or
    adbd directly."""
    if entry.transport == "server":
        return AdbServerTransport(entry)
    return AdbShellTransport(entry)

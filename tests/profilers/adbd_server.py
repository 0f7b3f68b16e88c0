"""A loopback Android device for the ADB tests: adbd's side of the ADB wire protocol.

No Debian package ships a device-side adbd, so the tests bring this one. It listens on
127.0.0.1 (an ephemeral port, never 5555, which the adb server probes as an emulator) and speaks
the real protocol, so both ``adb_shell`` and Debian's adb server talk to it unmodified:

* 24-byte message headers (command, arg0, arg1, data length, data checksum, magic); checksums
  are checked for peers older than ``A_VERSION_SKIP_CHECKSUM`` and always sent.
* ``CNXN`` with a ``device::`` banner; ``AUTH``: a random token, the client's signature checked
  against the authorized keys (Android's RSA public key format), a new token after a failed
  signature, and ``RSAPUBLICKEY`` accepted only with ``auto_accept`` (the user tapping "Allow");
  otherwise the prompt stays unanswered, as on a phone nobody is holding.
* ``OPEN``/``OKAY``/``WRTE``/``CLSE`` streams with one-packet flow control.
* ``shell:CMD`` runs ``/bin/sh -c`` in a sandbox directory that stands for ``/data/local/tmp``
  (device paths in commands are mapped to it and back in the output); the process is killed
  when its stream or connection closes, as adbd does. ``getprop`` answers from ``props``.
* ``sync:`` with ``STAT``, ``SEND``/``DATA``/``DONE`` (-> ``OKAY``/``FAIL``) and ``QUIT``.

Faults for the tests: :meth:`LoopbackAdbd.add_fault` drops the TCP connection (and optionally
stays offline), or hangs, when a matching shell command arrives; ``offline = True`` closes every
new connection at once.

The pushed ``benchmark_model`` is a small script that calls :func:`benchmark_model_main`, which
times the .tflite with LiteRT on the host and prints what TFLite's ``benchmark_model`` prints.
"""
from __future__ import annotations

import base64
import os
import re
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Tuple

__all__ = ["LoopbackAdbd", "benchmark_model_main", "write_benchmark_stub"]


def _cmd(name: bytes) -> int:
    return int.from_bytes(name, "little")


A_SYNC, A_CNXN, A_OPEN, A_OKAY = _cmd(b"SYNC"), _cmd(b"CNXN"), _cmd(b"OPEN"), _cmd(b"OKAY")
A_CLSE, A_WRTE, A_AUTH = _cmd(b"CLSE"), _cmd(b"WRTE"), _cmd(b"AUTH")
A_VERSION_MIN = 0x01000000
A_VERSION_SKIP_CHECKSUM = 0x01000001
A_VERSION = A_VERSION_SKIP_CHECKSUM
AUTH_TOKEN, AUTH_SIGNATURE, AUTH_RSAPUBLICKEY = 1, 2, 3
MAX_PAYLOAD = 256 * 1024
SYNC_DATA_MAX = 64 * 1024
_HEADER = struct.Struct("<6I")


def checksum(data: bytes) -> int:
    return sum(data) & 0xFFFFFFFF


def parse_android_pubkey(text: "str | bytes"):
    """An ``adbkey.pub`` line (base64 of Android's RSAPublicKey struct, then `` user@host``)
    -> a ``cryptography`` RSA public key."""
    from cryptography.hazmat.primitives.asymmetric.rsa import RSAPublicNumbers

    if isinstance(text, bytes):
        text = text.rstrip(b"\0").decode("ascii", errors="replace")
    blob = base64.b64decode(text.strip().split()[0])
    words = struct.unpack_from("<I", blob, 0)[0]
    size = words * 4
    modulus = blob[8:8 + size]
    exponent = struct.unpack_from("<I", blob, 8 + 2 * size)[0]
    return RSAPublicNumbers(exponent, int.from_bytes(modulus, "little")).public_key()


def _verify(key, token: bytes, signature: bytes) -> bool:
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import padding, utils

    try:
        # adb signs the 20-byte token as if it were a SHA-1 digest (PKCS#1 v1.5).
        key.verify(signature, token, padding.PKCS1v15(), utils.Prehashed(hashes.SHA1()))
        return True
    except (InvalidSignature, ValueError):
        return False


@dataclass
class _Fault:
    kind: str  # "drop" | "vanish" | "hang"
    match: "re.Pattern[str]"
    skip: int
    times: int


class _Closed(Exception):
    pass


class _Stream:
    def __init__(self, conn: "_Conn", local: int, remote: int):
        self.conn, self.local, self.remote = conn, local, remote
        self.ready = threading.Event()
        self.ready.set()  # the first WRTE needs no OKAY
        self.cv = threading.Condition()
        self.inbox = bytearray()
        self.closed = False
        self.proc: Optional[subprocess.Popen] = None

    def write(self, data: bytes) -> None:
        for i in range(0, len(data), self.conn.maxdata):
            while not self.ready.wait(0.05):
                if self.closed or self.conn.dead.is_set():
                    raise _Closed()
            if self.closed:
                raise _Closed()
            self.ready.clear()
            self.conn.send(A_WRTE, self.local, self.remote, data[i:i + self.conn.maxdata])

    def feed(self, data: bytes) -> None:
        with self.cv:
            self.inbox += data
            self.cv.notify_all()

    def read_exact(self, n: int) -> bytes:
        with self.cv:
            while len(self.inbox) < n:
                if self.closed or self.conn.dead.is_set():
                    raise _Closed()
                self.cv.wait(0.05)
            out = bytes(self.inbox[:n])
            del self.inbox[:n]
            return out

    def peer_closed(self) -> None:
        with self.cv:
            self.closed = True
            self.cv.notify_all()
        self.ready.set()
        self.kill()

    def kill(self) -> None:
        p = self.proc
        if p is not None and p.poll() is None:
            try:  # adbd hangs up the whole process group of a shell whose stream closes
                os.killpg(p.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass

    def finish(self) -> None:
        """The device side is done: CLSE, unless the peer closed first."""
        if self.conn.streams.pop(self.local, None) is self and not self.closed:
            self.closed = True
            try:
                self.conn.send(A_CLSE, self.local, self.remote)
            except OSError:
                pass


class _Conn:
    def __init__(self, server: "LoopbackAdbd", sock: socket.socket):
        self.server, self.sock = server, sock
        self.wlock = threading.Lock()
        self.peer_version: Optional[int] = None
        self.maxdata = 4096
        self.token: Optional[bytes] = None
        self.online = False
        self.streams: Dict[int, _Stream] = {}
        self.next_id = 1
        self.dead = threading.Event()

    def send(self, cmd: int, arg0: int, arg1: int, data: bytes = b"") -> None:
        # Always send a checksum: peers that skip checking ignore it, older ones need it.
        hdr = _HEADER.pack(cmd, arg0, arg1, len(data), checksum(data), cmd ^ 0xFFFFFFFF)
        with self.wlock:
            self.sock.sendall(hdr + data)

    def _recv_exact(self, n: int) -> bytes:
        buf = bytearray()
        while len(buf) < n:
            chunk = self.sock.recv(n - len(buf))
            if not chunk:
                raise _Closed()
            buf += chunk
        return bytes(buf)

    def abort(self) -> None:
        """Sever the TCP connection the way a pulled cable or a dead Wi-Fi link does."""
        self.dead.set()
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()

    def run(self) -> None:
        try:
            while not self.dead.is_set():
                cmd, a0, a1, n, chk, magic = _HEADER.unpack(self._recv_exact(_HEADER.size))
                if magic != cmd ^ 0xFFFFFFFF or n > MAX_PAYLOAD * 4:
                    break
                data = self._recv_exact(n) if n else b""
                old_peer = self.peer_version is None or self.peer_version < A_VERSION_SKIP_CHECKSUM
                if data and old_peer and chk != checksum(data) and not (
                        self.peer_version is None and chk == 0):
                    break  # corrupt packet: adbd drops such a connection
                self.dispatch(cmd, a0, a1, data)
        except (_Closed, OSError, struct.error):
            pass
        finally:
            self.dead.set()
            for s in list(self.streams.values()):
                s.peer_closed()
            self.streams.clear()
            try:
                self.sock.close()
            except OSError:
                pass
            self.server._forget(self)

    def _go_online(self) -> None:
        self.online = True
        self.token = None
        self.server.auth_ok += 1
        self.send(A_CNXN, A_VERSION, MAX_PAYLOAD, self.server.banner.encode() + b"\0")

    def _new_token(self) -> None:
        self.token = os.urandom(20)
        self.send(A_AUTH, AUTH_TOKEN, 0, self.token)

    def dispatch(self, cmd: int, a0: int, a1: int, data: bytes) -> None:
        srv = self.server
        if cmd == A_CNXN:
            self.peer_version = a0
            self.maxdata = max(256, min(a1, MAX_PAYLOAD))
            srv.client_banners.append(data.rstrip(b"\0").decode(errors="replace"))
            for s in list(self.streams.values()):
                s.peer_closed()
            self.streams.clear()
            self.online = False
            if srv.require_auth:
                self._new_token()
            else:
                self._go_online()
        elif cmd == A_AUTH and self.token is not None and not self.online:
            if a0 == AUTH_SIGNATURE:
                if any(_verify(k, self.token, data) for k in srv.authorized_keys()):
                    self._go_online()
                else:
                    self._new_token()
            elif a0 == AUTH_RSAPUBLICKEY:
                srv.prompts.append(data.rstrip(b"\0").decode(errors="replace"))
                if srv.auto_accept:
                    srv.authorize(data)
                    self._go_online()
                # else: the "Allow USB debugging?" dialog waits for a user who never comes
        elif not self.online:
            return
        elif cmd == A_OPEN:
            service = data.rstrip(b"\0").decode("utf-8", errors="replace")
            local = self.next_id
            self.next_id += 1
            if service.startswith("shell:") and service != "shell:":
                target = self._shell
            elif service == "sync:":
                target = self._sync
            else:
                self.send(A_CLSE, 0, a0)
                return
            st = _Stream(self, local, a0)
            self.streams[local] = st
            self.send(A_OKAY, local, a0)
            threading.Thread(target=self._run_stream, args=(target, st, service), daemon=True,
                             name=f"adbd-{service[:20]}").start()
        elif cmd == A_OKAY:
            st = self.streams.get(a1)
            if st is not None:
                st.ready.set()
        elif cmd == A_WRTE:
            st = self.streams.get(a1)
            if st is not None:
                st.feed(data)
                self.send(A_OKAY, a1, a0)
        elif cmd == A_CLSE:
            st = self.streams.pop(a1, None)
            if st is not None:
                st.peer_closed()
                self.send(A_CLSE, a1, a0)

    def _run_stream(self, fn, st: _Stream, service: str) -> None:
        try:
            fn(st, service)
        except (_Closed, OSError):
            pass
        finally:
            st.kill()
            st.finish()

    # -- services --------------------------------------------------------------------------
    def _shell(self, st: _Stream, service: str) -> None:
        srv = self.server
        command = service[len("shell:"):]
        srv.shell_log.append(command)
        fault = srv._take_fault(command)
        if fault in ("drop", "vanish"):
            if fault == "vanish":
                srv.offline = True
            self.abort()
            return
        if fault == "hang":
            while not (st.closed or self.dead.is_set() or srv._stopping.is_set()):
                time.sleep(0.05)
            return
        st.proc = subprocess.Popen(
            ["/bin/sh", "-c", srv.to_host(command)], cwd=srv.root, env=srv.shell_env(),
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            start_new_session=True)
        srv._procs.add(st.proc)
        try:
            for line in iter(st.proc.stdout.readline, b""):
                st.write(srv.to_device(line))
            st.proc.wait()
        finally:
            st.proc.stdout.close()
            srv._procs.discard(st.proc)

    def _sync(self, st: _Stream, _service: str) -> None:
        srv = self.server
        while True:
            req = st.read_exact(8)
            ident, n = req[:4], struct.unpack("<I", req[4:])[0]
            if ident == b"QUIT":
                return
            if n > 4096 and ident != b"DATA":
                return
            arg = st.read_exact(n).decode("utf-8", errors="replace")
            if ident == b"STAT":
                host = srv.map_path(arg)
                try:
                    s = os.lstat(host) if host is not None else None
                except OSError:
                    s = None
                vals = (s.st_mode, s.st_size, int(s.st_mtime)) if s else (0, 0, 0)
                st.write(b"STAT" + struct.pack("<3I", *(v & 0xFFFFFFFF for v in vals)))
            elif ident == b"SEND":
                err = self._receive_file(st, arg)
                if err:
                    msg = err.encode()
                    st.write(b"FAIL" + struct.pack("<I", len(msg)) + msg)
                    return
                st.write(b"OKAY" + struct.pack("<I", 0))
            else:
                msg = f"unsupported sync request {ident!r}".encode()
                st.write(b"FAIL" + struct.pack("<I", len(msg)) + msg)
                return

    def _receive_file(self, st: _Stream, spec: str) -> Optional[str]:
        srv = self.server
        path, _, mode_text = spec.rpartition(",")
        try:
            mode = int(mode_text)
        except ValueError:
            path, mode = spec, 0o100644
        host = srv.map_path(path)
        err = None if host is not None else f"{path}: Permission denied"
        fh, tmp = None, None
        if err is None:
            try:
                host.parent.mkdir(parents=True, exist_ok=True)  # adbd's fixed_push_mkdir
                fd, tmp = tempfile.mkstemp(dir=host.parent, prefix=".push-")
                fh = os.fdopen(fd, "wb")
            except OSError as exc:
                err = f"{path}: {exc.strerror}"
        size = 0
        mtime = 0
        try:
            while True:
                h = st.read_exact(8)
                ident, n = h[:4], struct.unpack("<I", h[4:])[0]
                if ident == b"DATA":
                    if n > SYNC_DATA_MAX:
                        return f"DATA chunk of {n} bytes exceeds {SYNC_DATA_MAX}"
                    data = st.read_exact(n)
                    size += n
                    if fh is not None:
                        fh.write(data)
                elif ident == b"DONE":
                    mtime = n
                    break
                else:
                    return f"unexpected {ident!r} during SEND"
            if err is not None:
                return err
            fh.close()
            fh = None
            os.chmod(tmp, mode & 0o777)
            os.utime(tmp, (mtime, mtime))
            os.replace(tmp, host)
            tmp = None
            srv.pushes.append((path, size, mode & 0o777))
            return None
        finally:
            if fh is not None:
                fh.close()
            if tmp is not None and os.path.exists(tmp):
                os.unlink(tmp)


class LoopbackAdbd:
    """A fake phone on ``127.0.0.1:<ephemeral>``; ``root`` is its ``/data/local/tmp``."""

    def __init__(self, root: "str | os.PathLike", *, authorized: Iterable["str | bytes"] = (),
                 auto_accept: bool = True, require_auth: bool = True,
                 device_prefix: str = "/data/local/tmp", props: Optional[Dict[str, str]] = None,
                 env: Optional[Dict[str, str]] = None, host: str = "127.0.0.1"):
        self.root = Path(root).resolve()
        self.root.mkdir(parents=True, exist_ok=True)
        if re.search(r"[^A-Za-z0-9_./+-]", str(self.root)):
            raise ValueError(f"sandbox path must be shell-safe: {self.root}")
        self.device_prefix = device_prefix.rstrip("/")
        self.auto_accept = auto_accept
        self.require_auth = require_auth
        self.props = {"ro.product.model": "LoopbackPhone", "ro.product.name": "loopback",
                      "ro.product.device": "loopback", "ro.product.cpu.abi": "x86_64",
                      "ro.build.version.release": "14", **(props or {})}
        self.env = dict(env or {})
        self.host = host
        self.offline = False
        self._keys: List = []
        self._key_lock = threading.Lock()
        for k in authorized:
            self.authorize(k)
        self.prompts: List[str] = []
        self.client_banners: List[str] = []
        self.shell_log: List[str] = []
        self.pushes: List[Tuple[str, int, int]] = []
        self.connections = 0
        self.auth_ok = 0
        self._faults: List[_Fault] = []
        self._fault_lock = threading.Lock()
        self._conns: set = set()
        self._procs: set = set()
        self._stopping = threading.Event()
        self._listener: Optional[socket.socket] = None
        self._thread: Optional[threading.Thread] = None
        self._sysdir = Path(tempfile.mkdtemp(prefix="adbd-system-"))
        self._write_getprop()

    # -- configuration ---------------------------------------------------------------------
    @property
    def banner(self) -> str:
        keys = ("ro.product.name", "ro.product.model", "ro.product.device")
        return "device::" + "".join(f"{k}={self.props[k]};" for k in keys)

    def authorize(self, pubkey: "str | bytes | os.PathLike") -> None:
        """Trust a key: ``adbkey.pub`` contents, or its path."""
        if isinstance(pubkey, Path) or (isinstance(pubkey, str) and os.path.isfile(pubkey)):
            pubkey = Path(pubkey).read_text()
        with self._key_lock:
            self._keys.append(parse_android_pubkey(pubkey))

    def authorized_keys(self) -> List:
        with self._key_lock:
            return list(self._keys)

    def add_fault(self, kind: str, match: str = r".", *, skip: int = 0, times: int = 1) -> None:
        """On a shell command matching ``match`` (after ``skip`` matches): ``drop`` the TCP
        connection, ``vanish`` (drop it and go offline, like a phone leaving Wi-Fi range), or
        ``hang`` (never answer) -- ``times`` times."""
        if kind not in ("drop", "vanish", "hang"):
            raise ValueError(kind)
        with self._fault_lock:
            self._faults.append(_Fault(kind, re.compile(match), skip, times))

    def _take_fault(self, command: str) -> Optional[str]:
        with self._fault_lock:
            for f in self._faults:
                if f.times > 0 and f.match.search(command):
                    if f.skip > 0:
                        f.skip -= 1
                        continue
                    f.times -= 1
                    return f.kind
        return None

    # -- paths and shell -------------------------------------------------------------------
    def map_path(self, device_path: str) -> Optional[Path]:
        p = os.path.normpath(device_path)
        if p == self.device_prefix or p.startswith(self.device_prefix + "/"):
            return self.root / os.path.relpath(p, self.device_prefix)
        return None

    def to_host(self, command: str) -> str:
        return command.replace(self.device_prefix, str(self.root))

    def to_device(self, data: bytes) -> bytes:
        return data.replace(str(self.root).encode(), self.device_prefix.encode())

    def shell_env(self) -> Dict[str, str]:
        return {"PATH": f"{self._sysdir}:{os.environ.get('PATH', '/usr/bin:/bin')}",
                "HOME": str(self.root), "TMPDIR": str(self.root), "LANG": "C.UTF-8",
                **self.env}

    def _write_getprop(self) -> None:
        cases = "".join(f"  {k}) echo '{v}' ;;\n" for k, v in self.props.items())
        script = f"#!/bin/sh\ncase \"$1\" in\n{cases}  *) echo ;;\nesac\n"
        p = self._sysdir / "getprop"
        p.write_text(script)
        p.chmod(0o755)

    # -- lifecycle -------------------------------------------------------------------------
    @property
    def port(self) -> int:
        assert self._listener is not None, "not started"
        return self._listener.getsockname()[1]

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    def start(self) -> "LoopbackAdbd":
        lst = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        lst.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        lst.bind((self.host, 0))
        if lst.getsockname()[1] == 5555:  # the adb server probes 5555 as an emulator
            lst.close()
            return self.start()
        lst.listen(16)
        lst.settimeout(0.1)
        self._listener = lst
        self._stopping.clear()
        self._thread = threading.Thread(target=self._accept_loop, daemon=True, name="adbd")
        self._thread.start()
        return self

    def _accept_loop(self) -> None:
        while not self._stopping.is_set():
            try:
                sock, _ = self._listener.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            self.connections += 1
            if self.offline:
                sock.close()
                continue
            sock.settimeout(None)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            conn = _Conn(self, sock)
            self._conns.add(conn)
            threading.Thread(target=conn.run, daemon=True, name="adbd-conn").start()

    def _forget(self, conn: _Conn) -> None:
        self._conns.discard(conn)

    def drop_connections(self) -> None:
        for c in list(self._conns):
            c.abort()

    def stop(self) -> None:
        self._stopping.set()
        if self._listener is not None:
            self._listener.close()
        if self._thread is not None:
            self._thread.join(2)
        self.drop_connections()
        for p in list(self._procs):
            try:
                os.killpg(p.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        deadline = time.monotonic() + 2
        while self._conns and time.monotonic() < deadline:
            time.sleep(0.02)
        shutil.rmtree(self._sysdir, ignore_errors=True)

    def __enter__(self) -> "LoopbackAdbd":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


# -- the device's benchmark_model ------------------------------------------------------------
def write_benchmark_stub(path: "str | os.PathLike") -> Path:
    """An executable that the profiler pushes as ``benchmark_model``: it runs
    :func:`benchmark_model_main` with this interpreter."""
    path = Path(path)
    here = str(Path(__file__).resolve().parent)
    path.write_text(f"#!{sys.executable}\nimport sys\nsys.path.insert(0, {here!r})\n"
                    f"from adbd_server import benchmark_model_main\n"
                    f"sys.exit(benchmark_model_main(sys.argv[1:]))\n")
    path.chmod(0o755)
    return path


_FLAGS = {"graph": str, "num_threads": int, "warmup_runs": int, "warmup_min_secs": float,
          "num_runs": int, "min_secs": float, "max_secs": float, "run_delay": float,
          "use_xnnpack": str, "enable_op_profiling": str, "verbose": str}


def _stat_line(samples: List[int]) -> str:
    """TFLite's ``Stat<int64_t>::OutputToStream``: integer us, avg as a C++ double, integer std."""
    if not samples:
        return "count=0"
    n = len(samples)
    lo, hi = min(samples), max(samples)
    if lo == hi:
        return f"count={n} curr={samples[-1]}" + ("(all same)" if n > 1 else "")
    avg = sum(samples) / n
    var = sum(s * s for s in samples) / n - avg * avg
    return (f"count={n} first={samples[0]} curr={samples[-1]} min={lo} max={hi} avg={avg:g} "
            f"std={int(max(var, 0.0) ** 0.5)}")


def benchmark_model_main(argv: List[str]) -> int:
    """Times ``--graph`` with LiteRT on this host and prints ``benchmark_model``'s output.
    ``BENCHMARK_MODEL_OUTPUT=legacy`` prints the older ``Average inference timings`` summary."""
    legacy = os.environ.get("BENCHMARK_MODEL_OUTPUT") == "legacy"
    out = sys.stderr
    prefix = "" if legacy else "INFO: "

    def log(msg: str) -> None:
        out.write(f"{prefix}{msg}\n")
        out.flush()

    params = {"num_threads": -1, "warmup_runs": 1, "warmup_min_secs": 0.5, "num_runs": 50,
              "min_secs": 1.0, "max_secs": 150.0, "run_delay": -1.0, "use_xnnpack": "true"}
    unconsumed = []
    for a in argv:
        m = re.fullmatch(r"--([a-z_]+)=(.*)", a)
        if not m or m.group(1) not in _FLAGS:
            unconsumed.append(a)
            continue
        try:
            params[m.group(1)] = _FLAGS[m.group(1)](m.group(2))
        except ValueError:
            unconsumed.append(a)
    log("STARTING!")
    if unconsumed:
        out.write(f"ERROR: Unconsumed cmdline flags: {' '.join(unconsumed)}\n")
        return 1
    graph = params.get("graph")
    log("Log parameter values verbosely: [0]")
    log(f"Min num runs: [{params['num_runs']}]")
    log(f"Num threads: [{params['num_threads']}]")
    log(f"Min warmup runs: [{params['warmup_runs']}]")
    log(f"Graph: [{graph}]")
    log(f"Use xnnpack: [{1 if params['use_xnnpack'] == 'true' else 0}]")
    if not graph or not os.path.isfile(graph):
        out.write(f"ERROR: Could not open '{graph}'.\nERROR: Failed to mmap model {graph}\n"
                  f"ERROR: Benchmarking failed.\n")
        return 1
    import numpy as np
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    log(f"Loaded model {graph}")
    t0 = time.perf_counter_ns()
    resolver = (OpResolverType.AUTO if params["use_xnnpack"] == "true"
                else OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
    threads = params["num_threads"] if params["num_threads"] > 0 else None
    it = Interpreter(model_path=graph, num_threads=threads, experimental_op_resolver_type=resolver)
    it.allocate_tensors()
    init_us = (time.perf_counter_ns() - t0) // 1000
    log("The input model file size (MB): " + f"{os.path.getsize(graph) / 1e6:g}")
    log(f"Initialized session in {init_us / 1e3:g}ms.")
    rng = np.random.default_rng(0)
    for d in it.get_input_details():
        shape = tuple(int(s) for s in d["shape"])
        if np.issubdtype(d["dtype"], np.floating):
            it.set_tensor(d["index"], rng.standard_normal(shape).astype(d["dtype"]))
        else:
            it.set_tensor(d["index"], rng.integers(0, 100, shape).astype(d["dtype"]))

    # BENCHMARK_MODEL_SLOWDOWN_US: every invocation runs that much slower per inference than
    # the one before, like a phone heating up.
    slow_us = int(os.environ.get("BENCHMARK_MODEL_SLOWDOWN_US", "0"))
    if slow_us:
        calls = Path(os.environ.get("HOME", "."), ".benchmark_model_calls")
        n_calls = int(calls.read_text()) + 1 if calls.exists() else 1
        calls.write_text(str(n_calls))
        slow_us *= n_calls

    def invoke() -> None:
        it.invoke()
        if slow_us:
            end = time.perf_counter_ns() + slow_us * 1000
            while time.perf_counter_ns() < end:
                pass

    def run(min_times: int, min_secs: float, max_secs: float) -> List[int]:
        log(f"Running benchmark for at least {min_times} iterations and at least {min_secs:g} "
            f"seconds but terminate if exceeding {max_secs:g} seconds.")
        now = time.perf_counter_ns()
        min_finish, max_finish = now + int(min_secs * 1e9), now + int(max_secs * 1e9)
        samples: List[int] = []
        while (len(samples) < min_times or now < min_finish) and now <= max_finish:
            s = time.perf_counter_ns()
            invoke()
            e = time.perf_counter_ns()
            samples.append((e - s) // 1000)
            if params["run_delay"] > 0:
                time.sleep(params["run_delay"])
            now = time.perf_counter_ns()
        log(_stat_line(samples) + "\n")
        return samples

    warm = run(params["warmup_runs"], params["warmup_min_secs"], params["max_secs"])
    timed = run(params["num_runs"], params["min_secs"], params["max_secs"])
    avg = (lambda xs: sum(xs) / len(xs) if xs else float("nan"))
    if legacy:
        log(f"Average inference timings in us: Warmup: {avg(warm):g}, Init: {init_us}, "
            f"Inference: {avg(timed):g}")
    else:
        log(f"Inference timings in us: Init: {init_us}, First inference: "
            f"{warm[0] if warm else 0}, Warmup (avg): {avg(warm):g}, Inference (avg): "
            f"{avg(timed):g}")
    return 0

"""A throwaway ``sshd`` on a high loopback port (temp config, host and user keys in the work
dir), so benchmarks can compare with ssh/sshfs on the same machine. Needs root for sshd's
privilege separation; returns ``None`` when sshd cannot be started."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path


@dataclass
class Sshd:
    proc: subprocess.Popen[bytes]
    port: int
    identity: Path
    user: str

    def ssh_args(self, *extra: str) -> list[str]:
        return [
            "ssh",
            "-p",
            str(self.port),
            "-i",
            str(self.identity),
            "-o",
            "StrictHostKeyChecking=no",
            "-o",
            "UserKnownHostsFile=/dev/null",
            "-o",
            "LogLevel=ERROR",
            "-o",
            "BatchMode=yes",
            *extra,
            f"{self.user}@127.0.0.1",
        ]

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_sshd(work: Path) -> Sshd | None:
    sshd = shutil.which("sshd") or ("/usr/sbin/sshd" if os.path.exists("/usr/sbin/sshd") else None)
    if sshd is None or os.geteuid() != 0 or shutil.which("ssh") is None:
        return None
    d = work / "sshd"
    d.mkdir(parents=True, exist_ok=True)
    os.makedirs("/run/sshd", exist_ok=True)
    host_key = d / "host_ed25519"
    user_key = d / "user_ed25519"
    for key in (host_key, user_key):
        if not key.exists():
            subprocess.run(
                ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True
            )
    (d / "authorized_keys").write_text(Path(str(user_key) + ".pub").read_text())
    port = _free_port()
    sftp = next(
        (
            p
            for p in ("/usr/lib/openssh/sftp-server", "/usr/libexec/openssh/sftp-server")
            if os.path.exists(p)
        ),
        "internal-sftp",
    )
    config = d / "sshd_config"
    config.write_text(
        f"Port {port}\nListenAddress 127.0.0.1\nHostKey {host_key}\n"
        f"AuthorizedKeysFile {d / 'authorized_keys'}\nStrictModes no\n"
        "PasswordAuthentication no\nPermitRootLogin prohibit-password\nUsePAM no\n"
        f"PidFile {d / 'sshd.pid'}\nSubsystem sftp {sftp}\n"
        "Ciphers chacha20-poly1305@openssh.com,aes128-gcm@openssh.com\n"
    )
    log = open(d / "sshd.log", "wb")  # noqa: SIM115 - lives as long as sshd
    proc = subprocess.Popen([sshd, "-D", "-e", "-f", str(config)], stderr=log)
    server = Sshd(proc, port, user_key, "root")
    for _ in range(50):
        ok = subprocess.run([*server.ssh_args(), "true"], capture_output=True).returncode == 0
        if ok:
            return server
        time.sleep(0.1)
    server.stop()
    return None

"""The file commands end to end, as a user runs them, on images made by real tools; results
checked with sfdisk, blkid, debugfs, e2fsck -fn, fsck.fat -n, mtools, GNU tar and the kernel."""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import tarfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from burrow import errors
from disk_helpers import MiB, burrow_cli, esp_tree, ext4_image, gpt_disk, os_tree, snapshot
from images import run

pytestmark = pytest.mark.tool("mkfs.ext4", "mkfs.fat", "mcopy", "sgdisk", "e2fsck", "fsck.fat")


@pytest.fixture(scope="module")
def trees(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    base = tmp_path_factory.mktemp("clitrees")
    return os_tree(base / "root"), esp_tree(base / "esp")


@pytest.fixture(scope="module")
def ro_disk(tmp_path_factory: pytest.TempPathFactory, trees: tuple[Path, Path]) -> Path:
    return gpt_disk(tmp_path_factory.mktemp("clidisk"), *trees)


@pytest.fixture
def rw_disk(tmp_path: Path, ro_disk: Path) -> Path:
    """A private copy of the module's disk (sparse copy: much cheaper than rebuilding)."""
    disk = tmp_path / "disk.img"
    subprocess.run(["cp", "--sparse=always", str(ro_disk), str(disk)], check=True)
    return disk


def extract(disk: Path, offset: int, size: int, out: Path) -> Path:
    with open(disk, "rb") as f:
        f.seek(offset)
        out.write_bytes(f.read(size))
    return out


def root_part(disk: Path, tmp: Path) -> Path:
    return extract(disk, 33 * MiB, 48 * MiB, tmp / "root.check")


def esp_part(disk: Path, tmp: Path) -> Path:
    return extract(disk, MiB, 32 * MiB, tmp / "esp.check")


def e2fsck_clean(part: Path) -> None:
    proc = subprocess.run(["e2fsck", "-fn", str(part)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


@contextmanager
def loop(part: Path) -> Iterator[Path]:
    mnt = part.parent / (part.name + ".mnt")
    mnt.mkdir(exist_ok=True)
    subprocess.run(["mount", "-o", "ro,loop", str(part), str(mnt)], check=True)
    try:
        yield mnt
    finally:
        subprocess.run(["umount", str(mnt)], check=False)


# -- reading -------------------------------------------------------------------------------
@pytest.mark.tool("sfdisk", "blkid")
def test_info_json_matches_sfdisk_and_blkid(ro_disk: Path) -> None:
    info = json.loads(burrow_cli("info", "--json", str(ro_disk)).stdout)
    table = json.loads(subprocess.run(["sfdisk", "-J", str(ro_disk)], capture_output=True,
                                      check=True).stdout)["partitiontable"]  # fmt: skip
    assert info["format"] == "raw" and info["virtual_size"] == ro_disk.stat().st_size
    assert info["table"]["kind"] == "gpt"
    assert info["table"]["disk_id"] == table["id"]
    for ours, theirs in zip(info["partitions"], table["partitions"], strict=True):
        assert ours["start"] == theirs["start"] * 512
        assert ours["size"] == theirs["size"] * 512
        assert ours["type"] == theirs["type"]
        assert ours["uuid"] == theirs["uuid"]
        assert ours["name"] == theirs.get("name", "")
    fs = {f["number"]: f for f in info["filesystems"]}
    for number, part in ((1, "esp.part"), (2, "root.part")):
        out = subprocess.run(["blkid", "-p", "-o", "export", str(ro_disk.parent / part)],
                             capture_output=True, text=True, check=True).stdout  # fmt: skip
        tags = dict(line.split("=", 1) for line in out.splitlines() if "=" in line)
        assert fs[number]["uuid"].lower() == tags["UUID"].lower()
        assert fs[number]["label"] == tags["LABEL"]
        assert fs[number]["fstype"] == tags["TYPE"]
    assert fs[2]["root"] and not fs[1]["root"]
    assert fs[2]["used"] > 0 and fs[2]["free"] > 0
    assert "metadata_csum" in fs[2]["features"]
    text = burrow_cli("info", str(ro_disk)).stdout.decode()
    assert "EFI System" in text and "ext4" in text


@pytest.mark.tool("debugfs")
def test_ls_cat_stat_tree(ro_disk: Path, trees: tuple[Path, Path]) -> None:
    root = trees[0]
    listing = json.loads(burrow_cli("ls", "--json", "-a", f"{ro_disk}:/etc").stdout)
    names = [e["name"] for e in listing[0]["entries"]]
    assert names[:2] == [".", ".."]
    assert sorted(names[2:]) == sorted(os.listdir(root / "etc"))
    dbg = subprocess.run(["debugfs", "-R", "ls -p /etc", str(ro_disk.parent / "root.part")],
                         capture_output=True, text=True, check=True).stdout  # fmt: skip
    modes = {}
    for line in dbg.splitlines():
        f = line.strip().strip("/").split("/")  # /ino/mode/uid/gid/name/size/
        if len(f) >= 5 and f[4] not in (".", ".."):
            modes[f[4]] = int(f[1], 8)
    ours = {
        e["name"]: stat.filemode(modes[e["name"]]) == e["mode"] for e in listing[0]["entries"][2:]
    }
    assert all(ours.values()), ours
    long = burrow_cli("ls", "-l", f"{ro_disk}:/etc").stdout.decode()
    assert "abs-link -> /etc/hostname" in long
    assert burrow_cli("ls", f"{ro_disk}@ESP:/").stdout.decode().split() == ["EFI", "loader.conf"]
    rec = burrow_cli("ls", "-R", f"{ro_disk}:/srv/data").stdout.decode()
    assert f"{ro_disk}:/srv/data/deep/er:" in rec
    data = burrow_cli("cat", f"{ro_disk}:/bin/tool", f"{ro_disk}:/etc/hostname").stdout
    assert data == (root / "usr/bin/tool").read_bytes() + b"testhost\n"
    st = json.loads(burrow_cli("stat", "--json", f"{ro_disk}:/usr/bin/tool").stdout)
    host = os.lstat(root / "usr/bin/tool")
    # mkfs.ext4 -d keeps whole seconds of the source's mtime
    assert (st["mode"], st["size"]) == (host.st_mode, host.st_size)
    assert st["mtime_ns"] // 10**9 == host.st_mtime_ns // 10**9
    assert st["mode_string"] == "-rwsr-xr-x"
    link = json.loads(burrow_cli("stat", "--json", f"{ro_disk}:/bin").stdout)
    assert link["type"] == "symbolic link" and link["target"] == "usr/bin"
    tree = burrow_cli("tree", f"{ro_disk}:/srv").stdout.decode()
    assert "└── " in tree and "deep" in tree
    tj = json.loads(burrow_cli("tree", "--json", f"{ro_disk}:/home").stdout)
    assert tj["contents"][0]["name"] == "alice"


def test_read_commands_never_write(ro_disk: Path) -> None:
    before = (ro_disk.read_bytes(), os.stat(ro_disk).st_mtime_ns)
    for args in (["ls", "-lRa", f"{ro_disk}:/"], ["cat", f"{ro_disk}:/etc/os-release"],
                 ["stat", f"{ro_disk}:/"], ["tree", f"{ro_disk}:/"], ["info", str(ro_disk)],
                 ["inspect", str(ro_disk)]):  # fmt: skip
        burrow_cli(*args)
    assert (ro_disk.read_bytes(), os.stat(ro_disk).st_mtime_ns) == before


def test_errors_are_one_line_with_exit_codes(ro_disk: Path, tmp_path: Path) -> None:
    cases = [
        (
            ["cat", f"{ro_disk}:/nope"],
            errors.EXIT_FILESYSTEM,
            "/nope: No such file or directory",
        ),
        (["cat", f"{ro_disk}:/etc"], errors.EXIT_FILESYSTEM, "Is a directory"),
        (["ls", f"{tmp_path}/missing.img:/"], errors.EXIT_FILESYSTEM, "missing.img"),
        (["ls", f"{ro_disk}@9:/"], errors.EXIT_FILESYSTEM, "no partition 9"),
        (["cat", f"{ro_disk}:/etc/hostname/x"], errors.EXIT_FILESYSTEM, "Not a directory"),
        (["cp", "a", "b"], errors.EXIT_USAGE, "no operand is inside an image"),
        (["ls"], errors.EXIT_USAGE, ""),
    ]
    garbage = tmp_path / "garbage.img"
    garbage.write_bytes(os.urandom(1 << 20))
    cases.append((["ls", f"{garbage}:/"], errors.EXIT_UNSUPPORTED, "unsupported"))
    bad = ext4_image(tmp_path / "bad.img", None, 8)
    with open(bad, "r+b") as f:
        f.seek(1024 + 0x18)
        f.write((40).to_bytes(4, "little"))
    cases.append((["ls", f"{bad}:/"], (errors.EXIT_CORRUPT, errors.EXIT_UNSUPPORTED), "burrow:"))
    for args, code, text in cases:
        proc = burrow_cli(*args, check=False)
        err = proc.stderr.decode()
        codes = code if isinstance(code, tuple) else (code,)
        assert proc.returncode in codes, (args, proc.returncode, err)
        if args != ["ls"]:
            assert err.count("\n") == 1 and err.startswith("burrow: "), (args, err)
            assert "Traceback" not in err
        assert text in err, (args, err)


@pytest.mark.root
def test_cp_archive_out_of_a_qcow2_equals_kernel_view(ro_disk: Path, tmp_path: Path) -> None:
    q = tmp_path / "disk.qcow2"
    run(["qemu-img", "convert", "-O", "qcow2", ro_disk, q])
    out = tmp_path / "out"
    burrow_cli("cp", "-a", f"{q}:/", str(out))
    with loop(root_part(ro_disk, tmp_path)) as mnt:
        assert snapshot(out) == snapshot(mnt)
    # a single file into an existing directory keeps its name
    burrow_cli("cp", f"{q}:/etc/hostname", str(tmp_path))
    assert (tmp_path / "hostname").read_text() == "testhost\n"


@pytest.mark.tool("tar")
def test_tar_out_equals_gnu_tar_of_the_source(
    ro_disk: Path, tmp_path: Path, trees: tuple[Path, Path]
) -> None:
    tarball = tmp_path / "out.tar"
    with open(tarball, "wb") as f:
        subprocess.run([*burrow_cmd(), "tar-out", f"{ro_disk}:/"], stdout=f, check=True)
    dest = tmp_path / "x"
    dest.mkdir()
    subprocess.run(["tar", "--xattrs", "--xattrs-include=*", "--same-owner", "-p", "-C", str(dest),
                    "-xf", str(tarball)], check=True)  # fmt: skip
    got = snapshot(dest)
    if os.geteuid() == 0:
        with loop(root_part(ro_disk, tmp_path)) as mnt:
            want = snapshot(mnt)
    else:  # the source tree, with the whole seconds mkfs.ext4 -d keeps and no owners
        want = snapshot(trees[0])
        for snap in (got, want):
            for rec in snap.values():
                rec["uid"] = rec["gid"] = None
                rec["mtime"] = rec["mtime"] and rec["mtime"] // 10**9
    assert got == want


# -- writing -------------------------------------------------------------------------------
def test_cp_in_archive_then_fsck_and_kernel(rw_disk: Path, tmp_path: Path) -> None:
    src = os_tree(tmp_path / "src")
    burrow_cli("mkdir", f"{rw_disk}:/imported")
    burrow_cli("cp", "-a", f"{src}/.", f"{rw_disk}:/imported")
    part = root_part(rw_disk, tmp_path)
    e2fsck_clean(part)
    if os.geteuid() == 0:
        with loop(part) as mnt:
            assert snapshot(mnt / "imported") == snapshot(src)
    listing = json.loads(burrow_cli("ls", "--json", f"{rw_disk}:/imported/etc").stdout)
    assert {e["name"] for e in listing[0]["entries"]} == set(os.listdir(src / "etc"))


def test_cp_in_plain_follows_coreutils(rw_disk: Path, tmp_path: Path) -> None:
    f = tmp_path / "script.sh"
    f.write_text("#!/bin/sh\n")
    os.chmod(f, 0o4775)
    env = dict(os.environ)
    proc = subprocess.run(["sh", "-c", f"umask 027; exec {' '.join(burrow_cmd())} cp {f} {rw_disk}:/etc/"],
                          capture_output=True, env=env)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    st = json.loads(burrow_cli("stat", "--json", f"{rw_disk}:/etc/script.sh").stdout)
    assert st["mode_octal"] == "0750"  # 4775 & 0777 & ~027: set-id dropped, umask applied
    assert (st["uid"], st["gid"]) == (os.getuid(), os.getgid())
    burrow_cli("touch", f"{rw_disk}:/etc/touched")
    st = json.loads(burrow_cli("stat", "--json", f"{rw_disk}:/etc/touched").stdout)
    mask = os.umask(0)
    os.umask(mask)
    assert int(st["mode_octal"], 8) == 0o666 & ~mask
    e2fsck_clean(root_part(rw_disk, tmp_path))


def test_edit_commands_then_fsck(rw_disk: Path, tmp_path: Path) -> None:
    d = f"{rw_disk}:"
    burrow_cli("mkdir", "-p", f"{d}/a/b/c")
    burrow_cli("touch", "-d", "2001-02-03T04:05:06", f"{d}/a/file")
    burrow_cli("truncate", "-s", "3M", f"{d}/a/file")
    burrow_cli("ln", "-s", "../file", f"{d}/a/b/sym")
    burrow_cli("ln", f"{d}/a/file", f"{d}/a/hard")
    burrow_cli("chmod", "u=rwx,go=rx", f"{d}/a/file")
    burrow_cli("chown", "alice:staff", f"{d}/a/file")
    burrow_cli("mv", f"{d}/a/b/c", f"{d}/a/moved")
    burrow_cli("rm", f"{d}/etc/dangling")
    burrow_cli("rm", "-r", f"{d}/srv/data")
    st = json.loads(burrow_cli("stat", "--json", f"{d}/a/hard").stdout)
    assert (st["size"], st["mode_octal"], st["uid"], st["gid"], st["nlink"]) == (
        3 * MiB,
        "0755",
        1000,
        50,
        2,
    )
    assert st["mtime_ns"] != 0
    assert burrow_cli("cat", f"{d}/a/b/sym").stdout == bytes(3 * MiB)
    assert burrow_cli("ls", f"{d}/a").stdout.decode().split() == ["b", "file", "hard", "moved"]
    part = root_part(rw_disk, tmp_path)
    e2fsck_clean(part)
    dbg = subprocess.run(["debugfs", "-R", "stat /a/file", str(part)], capture_output=True,
                         text=True, check=True).stdout  # fmt: skip
    assert "User:  1000" in dbg and "Group:    50" in dbg
    proc = burrow_cli("rm", f"{d}/a", check=False)
    assert proc.returncode == errors.EXIT_FILESYSTEM
    proc = burrow_cli("rm", "-f", f"{d}/not-there")
    assert proc.returncode == 0


def test_failed_command_leaves_image_untouched(rw_disk: Path, tmp_path: Path) -> None:
    before = rw_disk.read_bytes()
    src = tmp_path / "two"
    (src / "dir").mkdir(parents=True)
    (src / "dir" / "f").write_text("x")
    (src / "z").write_text("z")
    burrow_cli("mkdir", f"{rw_disk}:/t")
    after_mkdir = rw_disk.read_bytes()
    assert after_mkdir != before
    burrow_cli("mkdir", f"{rw_disk}:/t/z")  # a directory where the file z should go
    snap = rw_disk.read_bytes()
    proc = burrow_cli("cp", "-r", f"{src}/.", f"{rw_disk}:/t", check=False)
    assert proc.returncode == errors.EXIT_FILESYSTEM
    assert rw_disk.read_bytes() == snap  # dir/f was copied first, then everything was dropped


def test_fat_cp_in_then_fsck_and_mtools(rw_disk: Path, tmp_path: Path) -> None:
    src = tmp_path / "boot"
    (src / "grub").mkdir(parents=True)
    (src / "grub" / "grub.cfg").write_text("set timeout=1\n")
    (src / "vmlinuz").write_bytes(os.urandom(3 * MiB + 17))
    burrow_cli("cp", "-r", str(src), f"{rw_disk}@ESP:/")
    part = esp_part(rw_disk, tmp_path)
    run(["fsck.fat", "-n", part])
    got = subprocess.run(["mtype", "-i", str(part), "::/boot/grub/grub.cfg"], capture_output=True)
    assert got.stdout == b"set timeout=1\n"
    out = tmp_path / "vm"
    subprocess.run(["mcopy", "-n", "-i", str(part), "::/boot/vmlinuz", str(out)], check=True)
    assert out.read_bytes() == (src / "vmlinuz").read_bytes()


@pytest.mark.tool("tar")
def test_tar_in_keeps_owners_without_root(rw_disk: Path, tmp_path: Path) -> None:
    tarball = tmp_path / "in.tar.gz"
    with tarfile.open(tarball, "w:gz", format=tarfile.PAX_FORMAT) as tar:
        for name, kind, uid, gid, mode in [("opt", tarfile.DIRTYPE, 0, 0, 0o755),
                                           ("opt/app", tarfile.REGTYPE, 4242, 4343, 0o640),
                                           ("opt/link", tarfile.SYMTYPE, 7, 8, 0o777),
                                           ("opt/hl", tarfile.LNKTYPE, 4242, 4343, 0o640),
                                           ("../evil", tarfile.REGTYPE, 0, 0, 0o644)]:  # fmt: skip
            ti = tarfile.TarInfo(name)
            ti.type, ti.uid, ti.gid, ti.mode, ti.mtime = kind, uid, gid, mode, 1_234_567_890
            data = b""
            if kind == tarfile.SYMTYPE:
                ti.linkname = "app"
            elif kind == tarfile.LNKTYPE:
                ti.linkname = "opt/app"
            elif kind == tarfile.REGTYPE:
                data = b"payload\n"
                ti.size = len(data)
                ti.pax_headers = {"SCHILY.xattr.user.k": "v"}
            import io

            tar.addfile(ti, io.BytesIO(data) if data else None)
    proc = burrow_cli("tar-in", f"{rw_disk}:/", input=tarball.read_bytes())
    assert b"'..'" in proc.stderr
    st = json.loads(burrow_cli("stat", "--json", f"{rw_disk}:/opt/app").stdout)
    assert (st["uid"], st["gid"], st["mode_octal"], st["nlink"]) == (4242, 4343, "0640", 2)
    assert st["mtime_ns"] == 1_234_567_890 * 10**9
    link = json.loads(burrow_cli("stat", "--json", f"{rw_disk}:/opt/link").stdout)
    assert (link["uid"], link["gid"], link["target"]) == (7, 8, "app")
    assert burrow_cli("cat", f"{rw_disk}:/opt/link").stdout == b"payload\n"
    e2fsck_clean(root_part(rw_disk, tmp_path))


def test_edit_with_editor(rw_disk: Path, tmp_path: Path) -> None:
    editor = tmp_path / "ed.sh"
    editor.write_text('#!/bin/sh\nsed -i s/testhost/edited/ "$1"\n')
    editor.chmod(0o755)
    env = {**os.environ, "EDITOR": str(editor), "VISUAL": ""}
    burrow_cli("edit", f"{rw_disk}:/etc/hostname", env=env)
    assert burrow_cli("cat", f"{rw_disk}:/etc/hostname").stdout == b"edited\n"
    bad = tmp_path / "bad.sh"
    bad.write_text('#!/bin/sh\necho junk > "$1"; exit 3\n')
    bad.chmod(0o755)
    proc = burrow_cli(
        "edit", f"{rw_disk}:/etc/hostname", env={**env, "EDITOR": str(bad)}, check=False
    )
    assert proc.returncode == errors.EXIT_ERROR
    assert burrow_cli("cat", f"{rw_disk}:/etc/hostname").stdout == b"edited\n"


def test_shell_piped(rw_disk: Path, tmp_path: Path) -> None:
    script = (
        b"pwd\ncd /etc\nls\ncat hostname\nmkdir /newdir\nget /etc/os-release "
        + str(tmp_path).encode()
        + b"\nexit\n"
    )
    proc = burrow_cli("shell", "--rw", str(rw_disk), input=script)
    out = proc.stdout.decode()
    assert out.startswith("/\n") and "testhost" in out and "os-release" in out
    assert (tmp_path / "os-release").read_text().startswith("PRETTY_NAME")
    assert "newdir" in burrow_cli("ls", f"{rw_disk}:/").stdout.decode()
    proc = burrow_cli("shell", str(rw_disk), input=b"mkdir /x\ncat /nope\n", check=False)
    assert proc.returncode == 1 and proc.stderr.count(b"burrow: ") == 2


def burrow_cmd() -> list[str]:
    import sys

    return [sys.executable, "-m", "burrow"]


def test_help_of_every_file_command_is_light() -> None:
    for cmd in ("info", "inspect", "ls", "cat", "stat", "tree", "shell", "cp", "rm", "mkdir",
                "mv", "ln", "chmod", "chown", "touch", "truncate", "edit", "tar-out", "tar-in",
                "create"):  # fmt: skip
        proc = burrow_cli(cmd, "--help")
        assert b"usage: burrow " + cmd.encode() in proc.stdout
    assert shutil.which("true")


def test_cp_image_to_image(
    ro_disk: Path, rw_disk: Path, tmp_path: Path, trees: tuple[Path, Path]
) -> None:
    burrow_cli("cp", "-r", f"{ro_disk}:/srv/data", f"{rw_disk}@ESP:/")
    burrow_cli("cp", "-a", f"{ro_disk}:/home", f"{rw_disk}:/home-copy")
    part = esp_part(rw_disk, tmp_path)
    run(["fsck.fat", "-n", part])
    got = subprocess.run(["mtype", "-i", str(part), "::/data/deep/er/file"], capture_output=True)
    assert got.stdout == b"x" * 5000
    st = json.loads(burrow_cli("stat", "--json", f"{rw_disk}:/home-copy/alice/notes.txt").stdout)
    if os.geteuid() == 0:  # the source tree has alice's ids only when made as root
        assert (st["uid"], st["gid"]) == (1000, 1000)
    e2fsck_clean(root_part(rw_disk, tmp_path))
    # within one image: a copy of a directory into its own subtree is refused
    proc = burrow_cli("cp", "-r", f"{rw_disk}:/srv", f"{rw_disk}:/srv/data/inside", check=False)
    assert proc.returncode == errors.EXIT_FILESYSTEM and b"into itself" in proc.stderr


def test_shell_completion_lists_image_paths(ro_disk: Path) -> None:
    from burrow.cli.commands.shell import BurrowShell
    from burrow.disk import open_target

    with open_target(str(ro_disk)) as target:
        sh = BurrowShell(target.fs, "disk", interactive=False)
        assert sh.complete_path("/et") == ["/etc/"]
        assert sh.complete_path("/etc/host") == ["/etc/hostname"]
        assert "/srv/data/" in sh.complete_path("/srv/d")
        sh.onecmd("cd /etc")
        assert sh.complete_path("os") == ["os-release"]
        assert sh.completenames("ca") == ["cat "]


def test_progress_only_on_a_terminal_and_after_a_delay(monkeypatch: pytest.MonkeyPatch) -> None:
    import io
    import sys

    from burrow.cli.common import Progress

    monkeypatch.setattr(sys, "stderr", io.StringIO())  # not a TTY: never draws
    with Progress(100, "x", delay=0) as bar:
        bar.update(50)
        assert bar._bar is None
    pytest.importorskip("rich")

    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    monkeypatch.setattr(sys, "stderr", Tty())
    with Progress(100, "x", delay=3600) as bar:  # fast work: nothing drawn
        bar.update(100)
        assert bar._bar is None
    with Progress(100, "x", delay=0) as bar:  # slow work on a terminal: a bar
        bar.update(10)
        assert bar._bar is not None
    assert bar._bar is None  # closed


def test_copy_out_goes_on_past_a_failing_entry(ro_disk: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    (out / "etc" / "hostname").mkdir(parents=True)  # a directory where a file must go
    proc = burrow_cli("cp", "-a", f"{ro_disk}:/", str(out), check=False)
    assert proc.returncode == errors.EXIT_FILESYSTEM
    lines = proc.stderr.decode().splitlines()
    assert len(lines) == 1 and "etc/hostname" in lines[0], lines
    assert (out / "etc" / "os-release").read_text().startswith("PRETTY_NAME")  # the rest came


@pytest.mark.tool("qemu-img")
def test_qcow2_overlay_on_a_backing_file(rw_disk: Path, tmp_path: Path) -> None:
    top = tmp_path / "top.qcow2"
    run(["qemu-img", "create", "-f", "qcow2", "-b", str(rw_disk), "-F", "raw", top])
    base_before = rw_disk.read_bytes()
    info = json.loads(burrow_cli("info", "--json", str(top)).stdout)
    assert info["format"] == "qcow2"
    assert [b["filename"] for b in info["backing_chain"]] == [str(rw_disk)]
    assert info["backing_chain"][0]["format"] == "raw"
    assert burrow_cli("cat", f"{top}:/etc/hostname").stdout == b"testhost\n"
    blob = tmp_path / "blob.bin"
    blob.write_bytes(os.urandom(5 * MiB))
    burrow_cli("cp", str(blob), f"{top}@ESP:/copy.bin")
    burrow_cli("rm", f"{top}:/etc/hostname")
    assert rw_disk.read_bytes() == base_before  # writes land in the top image only
    run(["qemu-img", "check", top])
    flat = tmp_path / "flat.raw"
    run(["qemu-img", "convert", "-O", "raw", top, flat])
    assert burrow_cli("ls", f"{flat}:/etc").stdout.decode().split().count("hostname") == 0
    assert burrow_cli("cat", f"{flat}@ESP:/copy.bin").stdout == blob.read_bytes()
    run(["fsck.fat", "-n", esp_part(flat, tmp_path)])
    e2fsck_clean(root_part(flat, tmp_path))


def test_tree_bytes_counts_every_regular_file(ro_disk: Path, trees: tuple[Path, Path]) -> None:
    from burrow.cli.common import tree_bytes
    from burrow.disk import open_target

    expected = sum(
        os.lstat(os.path.join(d, f)).st_size
        for d, _, files in os.walk(trees[0])
        for f in files
        if stat.S_ISREG(os.lstat(os.path.join(d, f)).st_mode)
    )
    with open_target(str(ro_disk)) as target:
        assert tree_bytes(target.fs, "/") == expected
        assert tree_bytes(target.fs, "/etc/hostname") == len("testhost\n")

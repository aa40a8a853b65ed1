"""``burrow chown [-R] [-h] OWNER[:GROUP] IMAGE[@PART]:PATH...``: change owner and group.

Names are looked up in the image's own ``/etc/passwd`` and ``/etc/group`` (of the root
filesystem), never the host's; numbers are taken as they are.
"""

from __future__ import annotations

import argparse

from burrow.fs.paths import PathFS


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("owner", metavar="OWNER[:GROUP]")
    parser.add_argument("paths", nargs="+", metavar="IMAGE[@PART]:PATH")
    parser.add_argument("-R", "--recursive", action="store_true", help="change trees")
    # chown(1) spells "do not follow symlinks" -h; keep --help and give -h to that meaning
    parser.conflict_handler = "resolve"
    parser._optionals.conflict_handler = "resolve"
    parser.add_argument("-h", "--no-dereference", dest="nofollow", action="store_true",
                        help="change symlinks themselves")  # fmt: skip


def _table(pfs: PathFS, path: str) -> dict[str, int]:
    out: dict[str, int] = {}
    try:
        text = pfs.read_text(path, errors="replace")
    except OSError:
        return out
    for line in text.splitlines():
        fields = line.split(":")
        if len(fields) >= 3 and fields[2].isdigit():
            out.setdefault(fields[0], int(fields[2]))
    return out


def resolve_ids(spec: str, pfs: PathFS) -> tuple[int, int]:
    """``OWNER[:GROUP]`` -> (uid, gid), ``-1`` for "unchanged". ``OWNER:`` means the owner's
    login group, as chown(1)."""
    from burrow.errors import UsageError

    user, sep, group = (
        spec.replace(".", ":", 1).partition(":") if ":" not in spec else spec.partition(":")
    )
    users = groups = None
    uid = gid = -1
    if user:
        if user.isdigit():
            uid = int(user)
        else:
            users = _table(pfs, "/etc/passwd")
            if user not in users:
                raise UsageError(f"invalid user: {user!r} (not in the image's /etc/passwd)")
            uid = users[user]
    if group:
        if group.isdigit():
            gid = int(group)
        else:
            groups = _table(pfs, "/etc/group")
            if group not in groups:
                raise UsageError(f"invalid group: {group!r} (not in the image's /etc/group)")
            gid = groups[group]
    elif sep and user:
        for line in (
            pfs.read_text("/etc/passwd", errors="replace").splitlines()
            if pfs.exists("/etc/passwd")
            else []
        ):
            f = line.split(":")
            if len(f) >= 4 and f[0] == user and f[3].isdigit():
                gid = int(f[3])
                break
    if uid == -1 and gid == -1 and not (user or group):
        raise UsageError(f"invalid owner {spec!r}")
    return uid, gid


def run(args: argparse.Namespace) -> int:
    import posixpath

    from burrow.cli.common import Session, fs_address

    addrs = [fs_address(p) for p in args.paths]
    with Session(writable=True) as session:
        for addr in addrs:
            pfs = session.fs(addr)
            uid, gid = resolve_ids(args.owner, pfs)
            follow = not args.nofollow
            _chown(pfs, addr.path, uid, gid, follow)
            if args.recursive and pfs.lstat(addr.path).is_dir():
                for dirpath, dirs, files in pfs.walk(addr.path):
                    for name in [*dirs, *files]:
                        _chown(pfs, posixpath.join(dirpath, name), uid, gid, False)
    return 0


def _chown(pfs: PathFS, path: str, uid: int, gid: int, follow: bool) -> None:
    """chown(2) as the kernel does it: changing the owner of a regular file also drops its
    privileges — set-user-ID, set-group-ID when group-executable, and file capabilities
    (``security.capability``) — even for root, so a chowned binary gains nothing."""
    import stat

    from burrow.errors import FilesystemError

    pfs.chown(path, uid, gid, follow_symlinks=follow)
    st = pfs.stat(path, follow_symlinks=follow)
    if not stat.S_ISREG(st.st_mode):
        return
    mode = stat.S_IMODE(st.st_mode)
    drop = stat.S_ISUID | (stat.S_ISGID if mode & stat.S_IXGRP else 0)
    if mode & drop:
        pfs.chmod(path, mode & ~drop, follow_symlinks=follow)
    try:
        names = pfs.listxattr(path, follow_symlinks=follow)
    except FilesystemError:
        return  # a filesystem without xattrs (FAT) has no capabilities to drop
    if "security.capability" in names:
        pfs.removexattr(path, "security.capability", follow_symlinks=follow)

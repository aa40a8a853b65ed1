"""``burrow key gen FILE`` / ``burrow key pub FILE``: keys for secure shares (WireGuard style).

``gen`` writes a new private key (mode 0600, never overwriting) and prints the public key as
base64 on the last line of stdout; ``pub`` prints the public key of an existing key file.
"""

from __future__ import annotations

import argparse


def configure(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    gen = sub.add_parser("gen", help="write a new private key file and print its public key")
    gen.add_argument("file", metavar="FILE")
    pub = sub.add_parser("pub", help="print the public key of a private key file")
    pub.add_argument("file", metavar="FILE")


def run(args: argparse.Namespace) -> int:
    from burrow.share.keys import encode_key, generate_key_file, load_private_key

    if args.action == "gen":
        pair = generate_key_file(args.file)
        print(f"wrote private key to {args.file} (mode 0600); public key:")
    else:
        pair = load_private_key(args.file)
    print(encode_key(pair.public))
    return 0

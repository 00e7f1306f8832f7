"""`vledge keygen`: a new Ed25519 key pair for signing bundles (needs the sign extra)."""

from __future__ import annotations


def add_parser(sub) -> None:
    p = sub.add_parser("keygen", help="write a new Ed25519 key pair for signing bundles")
    p.add_argument("--out", required=True, help="folder for NAME.key (private, mode 0600) and NAME.pub (public)")
    p.add_argument("--name", default="vledge-signing", help="file name of the pair")
    p.set_defaults(handler=run)


def run(args) -> int:
    from vledge.signing import generate_key_pair, key_id, load_private_key

    private, public = generate_key_pair(args.out, args.name)
    print(f"private key: {private} (keep it off devices; sign with: vledge sign BUNDLE --key {private})")
    print(f"public key:  {public} (key id {key_id(load_private_key(private).public_key())}; give it to devices)")
    return 0

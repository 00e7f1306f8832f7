"""`vledge sign`: sign a bundle's manifest with an Ed25519 private key (writes vledge.sig beside it)."""

from __future__ import annotations


def add_parser(sub) -> None:
    p = sub.add_parser("sign", help="sign a bundle (its files are verified first) with a private key from vledge keygen")
    p.add_argument("bundle", help="the bundle folder to sign (vledge.sig is written beside its manifest)")
    p.add_argument("--key", required=True, help="the private key file (PEM, from vledge keygen)")
    p.set_defaults(handler=run)


def run(args) -> int:
    from vledge.bundle_signing import sign_bundle

    record = sign_bundle(args.bundle, args.key)
    print(f"signed {args.bundle}: key id {record['key_id']}, manifest sha256 {record['manifest_sha256']}")
    return 0

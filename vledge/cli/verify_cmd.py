"""`vledge verify`: check a bundle's files, and its signature against trusted public keys, without loading it."""

from __future__ import annotations


def add_parser(sub) -> None:
    p = sub.add_parser("verify", help="check a bundle's files and its signature by a trusted key")
    p.add_argument("bundle", help="the bundle folder to check")
    p.add_argument("--trusted-key", action="append", default=None, metavar="PUBLIC",
                   help="a public key file (from vledge keygen) the signature must verify with; repeat for several")
    p.add_argument("--manifest-sha256", default=None, help="also require the manifest to have this sha256 (pinning)")
    p.set_defaults(handler=run)


def run(args) -> int:
    from vledge.bundle_files import read_bundle

    bundle = read_bundle(args.bundle, trusted_keys=args.trusted_key, manifest_sha256=args.manifest_sha256)
    signed = f"signed by trusted key {bundle.signed_by}" if bundle.signed_by else "signature not checked (no --trusted-key)"
    print(f"{args.bundle}: {len(bundle.contents)} files match their sha256; {signed}; "
          f"manifest sha256 {bundle.manifest_sha256}")
    return 0

"""ORAS (the oras-py SDK) as a registry client for tests/clients.rs: what a user's script does.

    oras_client.py [--ca FILE] --config FILE login HOST USER PASSWORD
    oras_client.py [--ca FILE] --config FILE pull REF OUTDIR   # prints the manifest's digest
    oras_client.py [--ca FILE] --config FILE push REF FILE...  # prints the manifest's digest

--ca is the CA bundle oras-py verifies the registry with (its `tls_verify`); without it, the
bundle `requests` ships. --config is the docker-style config.json that `login` writes the
credentials to and `pull`/`push` read them from (oras-py's `config_path`), so nothing under
$HOME is read or written. The basic auth backend answers a `Basic` challenge (the default token
backend would look the realm up as a host name). Exit status 1 and the error on stderr when the
client fails.
"""

import argparse
import hashlib
import json
import os
import sys

import oras.auth.utils
import oras.main.login
import oras.provider

MANIFEST_TYPES = [
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.v2+json",
]


def registry(args):
    tls_verify = args.ca if args.ca else True
    return oras.provider.Registry(tls_verify=tls_verify, auth_backend="basic")


def login(args):
    """What `oras login` does: the credentials must open /v2/, then they are saved."""
    client = registry(args)
    client.auth.set_basic_auth(args.user, args.password)
    response = client.do_request(f"https://{args.host}/v2/", "GET")
    if response.status_code != 200:
        sys.exit(f"login to {args.host} failed: {response.status_code} {response.text.strip()}")
    oras.main.login.DockerClient().login(
        username=args.user,
        password=args.password,
        registry=args.host,
        dockercfg_path=args.config,
    )
    print("Login Succeeded")


def pull(args):
    """The manifest, its config and every layer into OUTDIR (blobs named by their hex digest,
    each checked against it), and the manifest's digest over the bytes the registry served.
    Not `Registry.pull`: that unpacks a layer whose media type is a gzipped tar, as an image's
    are, where a test wants the blobs."""
    client = registry(args)
    container = client.get_container(args.ref)
    client.auth.load_configs(container, configs=[args.config])
    response = client.do_request(
        f"https://{container.manifest_url()}",
        "GET",
        headers={"Accept": ", ".join(MANIFEST_TYPES)},
    )
    if response.status_code != 200:
        sys.exit(f"GET {args.ref}: {response.status_code} {response.text.strip()}")
    manifest = json.loads(response.content)
    os.makedirs(args.outdir, exist_ok=True)
    for blob in [manifest["config"], *manifest["layers"]]:
        path = os.path.join(args.outdir, blob["digest"].split(":", 1)[1])
        client.download_blob(container, blob["digest"], path)
        with open(path, "rb") as f:
            got = "sha256:" + hashlib.sha256(f.read()).hexdigest()
        if got != blob["digest"]:
            sys.exit(f"{path}: {got}, the manifest says {blob['digest']}")
    with open(os.path.join(args.outdir, "manifest.json"), "wb") as f:
        f.write(response.content)
    print("sha256:" + hashlib.sha256(response.content).hexdigest())


def push(args):
    """`oras push REF FILE...`: each file a layer; prints the digest of the manifest pushed."""
    client = registry(args)
    response = client.push(
        target=args.ref,
        files=args.files,
        config_path=args.config,
        disable_path_validation=True,
        quiet=True,
    )
    print(response.headers["Docker-Content-Digest"])


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--ca")
    parser.add_argument("--config", required=True)
    commands = parser.add_subparsers(dest="command", required=True)
    p = commands.add_parser("login")
    p.add_argument("host")
    p.add_argument("user")
    p.add_argument("password")
    p.set_defaults(run=login)
    p = commands.add_parser("pull")
    p.add_argument("ref")
    p.add_argument("outdir")
    p.set_defaults(run=pull)
    p = commands.add_parser("push")
    p.add_argument("ref")
    p.add_argument("files", nargs="+")
    p.set_defaults(run=push)
    args = parser.parse_args()
    # oras-py reads ~/.docker/config.json as well; point $HOME away so only --config counts.
    os.environ["HOME"] = os.path.dirname(os.path.abspath(args.config))
    try:
        args.run(args)
    except SystemExit:
        raise
    except Exception as e:  # the client's own error, as a user would see it
        sys.exit(f"{type(e).__name__}: {e}")


if __name__ == "__main__":
    main()

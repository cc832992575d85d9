//! Real clients through one `host:port` (issue 11): the Docker engine, containerd's `ctr`,
//! podman, skopeo and the ORAS Python SDK each take the journey a user takes, through the gateway
//! in front of the Nexus-like topology (pushes to hosted, pulls from dockgate's group of hosted
//! and a pull-through cache of a hub), over the gateway's own minted CA:
//!
//! 1. without the CA where its users put it, the client refuses the gateway's certificate;
//! 2. with it, a wrong password is refused and the right one logs in;
//! 3. an image only the hub has is pulled, with the hub's digest;
//! 4. it is tagged under a new name and pushed (its layers are proxied ones hosted lacks);
//! 5. an image built elsewhere is loaded and pushed;
//! 6. hosted itself serves both; deleted locally, both pull back with those digests;
//! 7. with the CA taken away again, a pull fails on the certificate.
//!
//! Each client does it twice: hosted with basic auth and absolute upload URLs (Distribution's
//! default), then hosted anonymous with relative ones. Docker is the one client that reaches the
//! gateway by a name on `[::1]`: it never verifies TLS for 127.0.0.0/8.
//!
//! `.ci/run` installs the clients (Debian's docker.io, containerd, podman, apache2-utils for
//! `htpasswd`, and `pip install oras`). One client alone: `cargo test --test clients docker`.

mod support;

use support::{
    is_unauthorized, is_unknown_authority, Client, Ctr, Docker, Oras, Podman, RegistryOptions,
    Site, SkopeoUser, HUB_IMAGE,
};

const USER: &str = "ci-bot";
const PASSWORD: &str = "correct horse battery staple";

#[test]
fn docker_logs_in_pulls_pushes_and_pulls_back_through_the_gateway_trusting_its_ca() {
    let mut docker = Docker::start();
    journey(&mut docker, &Site::start("docker", with_basic_auth()));
    journey(&mut docker, &Site::start("docker-anon", anonymous()));
}

#[test]
fn ctr_logs_in_pulls_pushes_and_pulls_back_through_the_gateway_trusting_its_ca() {
    let mut ctr = Ctr::start();
    journey(&mut ctr, &Site::start("ctr", with_basic_auth()));
    journey(&mut ctr, &Site::start("ctr-anon", anonymous()));
}

#[test]
fn podman_logs_in_pulls_pushes_and_pulls_back_through_the_gateway_trusting_its_ca() {
    let mut podman = Podman::new();
    journey(&mut podman, &Site::start("podman", with_basic_auth()));
    journey(&mut podman, &Site::start("podman-anon", anonymous()));
}

#[test]
fn skopeo_logs_in_pulls_pushes_and_pulls_back_through_the_gateway_trusting_its_ca() {
    let mut skopeo = SkopeoUser::new();
    journey(&mut skopeo, &Site::start("skopeo", with_basic_auth()));
    journey(&mut skopeo, &Site::start("skopeo-anon", anonymous()));
}

/// oras-py sends every request without credentials first and answers the 401 (its basic auth
/// backend). For a blob's `PUT` with a 16 MiB body, hosted answers 401 before reading it; the
/// client reads that 401 only if the gateway drains the body rather than closing the
/// connection under it (the early-response drain), and then pushes again with credentials.
/// Straight to hosted the client reads the 401 every time; through today's gateway it gets
/// `SSLEOFError(8, 'EOF occurred in violation of protocol')` instead.
#[test]
fn oras_logs_in_pulls_pushes_and_pulls_back_through_the_gateway_trusting_its_ca() {
    let mut oras = Oras::new();
    journey(&mut oras, &Site::start("oras", with_basic_auth()));
    journey(&mut oras, &Site::start("oras-anon", anonymous()));
}

/// Hosted asks for `USER`/`PASSWORD` (`auth: htpasswd`), absolute upload URLs.
fn with_basic_auth() -> RegistryOptions {
    RegistryOptions {
        basic_auth: Some((USER.to_string(), PASSWORD.to_string())),
        ..RegistryOptions::default()
    }
}

/// Hosted asks for nothing, relative upload URLs.
fn anonymous() -> RegistryOptions {
    RegistryOptions {
        relative_urls: true,
        ..RegistryOptions::default()
    }
}

/// The steps of the module's doc, each checked, with `client` against `site`.
fn journey(client: &mut dyn Client, site: &Site) {
    let name = client.name();
    client.use_gateway(&site.gateway);
    let registry = client.registry();
    let credentials = site.credentials();
    let gateway_log = || {
        let log = site.gateway.log();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    };

    client.trust(None);
    let untrusted = match &credentials {
        Some((user, password)) => client.login(user, password),
        None => client.pull(HUB_IMAGE),
    };
    assert!(
        !untrusted.success && is_unknown_authority(&untrusted.stderr),
        "{name} without the CA for {registry}: `{}` should fail on the certificate:\n{}{}",
        untrusted.command,
        untrusted.stderr,
        untrusted.stdout
    );
    client.trust(Some(&site.ca()));

    if let Some((user, password)) = &credentials {
        let refused = client.login(user, "not the password");
        assert!(
            !refused.success && is_unauthorized(&refused.stderr),
            "{name}: a wrong password should be refused by hosted: `{}`:\n{}{}",
            refused.command,
            refused.stderr,
            refused.stdout
        );
        client.login(user, password).expect_success();
    }

    client.pull(HUB_IMAGE).expect_success();
    assert_eq!(
        client.digest(HUB_IMAGE),
        site.base.manifest_digest(),
        "{name}: the hub's image, through the group's cache"
    );

    client.tag(HUB_IMAGE, "team/app:1").expect_success();
    let pushed = client.push("team/app:1");
    assert!(
        pushed.success,
        "{name}: push of a hub image under a new name: `{}`:\n{}{}\nthe gateway log ends:\n{}",
        pushed.command,
        pushed.stderr,
        pushed.stdout,
        gateway_log()
    );
    let app = site.hosted_digest("team/app:1");

    client.load(&site.fresh, "team/fresh:1").expect_success();
    let pushed = client.push("team/fresh:1");
    assert!(
        pushed.success,
        "{name}: push of a fresh image: `{}`:\n{}{}\nthe gateway log ends:\n{}",
        pushed.command,
        pushed.stderr,
        pushed.stdout,
        gateway_log()
    );
    let fresh = site.hosted_digest("team/fresh:1");

    for reference in [HUB_IMAGE, "team/app:1", "team/fresh:1"] {
        client.remove(reference).expect_success();
    }
    client.pull("team/app:1").expect_success();
    client.pull("team/fresh:1").expect_success();
    assert_eq!(
        client.digest("team/app:1"),
        app,
        "{name}: team/app:1 pulled back"
    );
    assert_eq!(
        client.digest("team/fresh:1"),
        fresh,
        "{name}: team/fresh:1 pulled back"
    );

    client.trust(None);
    let untrusted = client.pull("team/app:1");
    assert!(
        !untrusted.success && is_unknown_authority(&untrusted.stderr),
        "{name} with the CA taken away: `{}` should fail on the certificate:\n{}{}",
        untrusted.command,
        untrusted.stderr,
        untrusted.stdout
    );
}

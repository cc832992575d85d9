//! How a client host comes to trust the CA: the commands that put `ca.crt` where docker,
//! podman/skopeo, containerd and the system trust store look for it.

use std::path::Path;

/// Shell commands that install `ca_crt` on a client host for each `host:port` in `addresses`.
pub fn ca_install_hints(ca_crt: &Path, addresses: &[String]) -> String {
    let ca = std::path::absolute(ca_crt).unwrap_or_else(|_| ca_crt.to_path_buf());
    let ca = shell_quote(&ca.display().to_string());
    let mut out = String::new();
    for addr in addresses {
        let per_host = [
            ("Docker", "/etc/docker/certs.d"),
            ("Podman, Skopeo, Buildah, CRI-O", "/etc/containers/certs.d"),
            // containerd reads a docker-style ca.crt from its hosts directory; the CRI plugin
            // only looks there when `config_path = "/etc/containerd/certs.d"` is set.
            (
                "containerd (nerdctl, ctr --hosts-dir)",
                "/etc/containerd/certs.d",
            ),
        ];
        for (clients, base) in per_host {
            let dir = shell_quote(&format!("{base}/{addr}"));
            let dest = shell_quote(&format!("{base}/{addr}/ca.crt"));
            out.push_str(&format!(
                "# {clients}, for {addr}\nsudo mkdir -p {dir}\nsudo cp {ca} {dest}\n"
            ));
        }
    }
    out.push_str(&format!(
        "# The system trust store on Debian and Ubuntu (curl, Go programs, ...)\n\
         sudo cp {ca} /usr/local/share/ca-certificates/dockgate.crt\n\
         sudo update-ca-certificates\n"
    ));
    out
}

fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn install_hints_name_every_client_and_address() {
        let hints = ca_install_hints(
            Path::new("/srv/certs/ca.crt"),
            &names(&["registry.example.com:8443", "[::1]:8443"]),
        );
        for line in [
            "sudo cp '/srv/certs/ca.crt' '/etc/docker/certs.d/registry.example.com:8443/ca.crt'",
            "sudo mkdir -p '/etc/containers/certs.d/registry.example.com:8443'",
            "sudo cp '/srv/certs/ca.crt' '/etc/containers/certs.d/[::1]:8443/ca.crt'",
            "sudo cp '/srv/certs/ca.crt' '/etc/containerd/certs.d/[::1]:8443/ca.crt'",
            "sudo cp '/srv/certs/ca.crt' /usr/local/share/ca-certificates/dockgate.crt",
            "sudo update-ca-certificates",
        ] {
            assert!(
                hints.lines().any(|l| l == line),
                "missing {line:?} in\n{hints}"
            );
        }
        assert_eq!(shell_quote("it's"), r"'it'\''s'");
    }
}

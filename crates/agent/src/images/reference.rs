//! Image references parsed and normalised as containerd and the docker CLI do
//! (`busybox` → `docker.io/library/busybox:latest`); the one spelling the store keys names by.

use std::fmt;

use super::ImagesError;

const DEFAULT_DOMAIN: &str = "docker.io";
const LEGACY_DOMAIN: &str = "index.docker.io";
const OFFICIAL_PREFIX: &str = "library/";
const MAX_NAME_LEN: usize = 255;

/// A parsed, normalised reference: `domain/path` plus a tag or a digest (a digest wins over a
/// tag, as containerd's `ParseDockerRef` does: the tag of `name:tag@digest` is dropped).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reference {
    /// `docker.io`, `localhost:5000`, `registry.example.com`.
    pub domain: String,
    /// `library/busybox`, `team/app`.
    pub path: String,
    /// Set unless `digest` is: `latest` when the reference names none.
    pub tag: Option<String>,
    /// `sha256:<64 hex>`.
    pub digest: Option<String>,
}

impl Reference {
    pub fn parse(reference: &str) -> Result<Reference, ImagesError> {
        let invalid = |reason: &str| ImagesError::InvalidReference {
            reference: reference.to_string(),
            reason: reason.to_string(),
        };
        if reference.is_empty() {
            return Err(invalid("empty reference"));
        }
        if reference.len() == 64 && reference.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(invalid(
                "a 64-character hexadecimal string is an image id, not a repository name",
            ));
        }
        let (named, digest) = match reference.split_once('@') {
            Some((n, d)) => {
                super::digest::sha256_hex(d).map_err(|reason| invalid(&reason))?;
                (n, Some(d.to_string()))
            }
            None => (reference, None),
        };
        let (name, tag) = match named.rfind(':') {
            Some(i) if !named[i + 1..].contains('/') => (&named[..i], Some(&named[i + 1..])),
            _ => (named, None),
        };
        if let Some(t) = tag {
            if !valid_tag(t) {
                return Err(invalid(&format!("invalid tag {t:?}")));
            }
        }
        let (domain, path) = split_domain(name);
        if !valid_domain(&domain) {
            return Err(invalid(&format!("invalid registry host {domain:?}")));
        }
        if path.bytes().any(|b| b.is_ascii_uppercase()) {
            return Err(invalid("repository name must be lowercase"));
        }
        if path.is_empty() || !path.split('/').all(valid_path_component) {
            return Err(invalid(&format!("invalid repository name {path:?}")));
        }
        if domain.len() + 1 + path.len() > MAX_NAME_LEN {
            return Err(invalid("repository name longer than 255 characters"));
        }
        let tag = match (&digest, tag) {
            (Some(_), _) => None,
            (None, Some(t)) => Some(t.to_string()),
            (None, None) => Some("latest".to_string()),
        };
        Ok(Reference {
            domain,
            path,
            tag,
            digest,
        })
    }

    /// `docker.io/library/busybox`: the name without tag or digest.
    pub fn repository(&self) -> String {
        format!("{}/{}", self.domain, self.path)
    }
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.domain, self.path)?;
        if let Some(d) = &self.digest {
            write!(f, "@{d}")
        } else if let Some(t) = &self.tag {
            write!(f, ":{t}")
        } else {
            Ok(())
        }
    }
}

/// The first component is a registry host when it looks like one (a dot, a port, or
/// `localhost`, or upper case, which a repository path may not hold); otherwise Docker Hub.
fn split_domain(name: &str) -> (String, String) {
    let (domain, rest) = match name.split_once('/') {
        Some((first, rest))
            if first.contains('.')
                || first.contains(':')
                || first == "localhost"
                || first.bytes().any(|b| b.is_ascii_uppercase()) =>
        {
            (first.to_string(), rest.to_string())
        }
        _ => (DEFAULT_DOMAIN.to_string(), name.to_string()),
    };
    let domain = if domain == LEGACY_DOMAIN {
        DEFAULT_DOMAIN.to_string()
    } else {
        domain
    };
    let path = if domain == DEFAULT_DOMAIN && !rest.contains('/') {
        format!("{OFFICIAL_PREFIX}{rest}")
    } else {
        rest
    };
    (domain, path)
}

/// `[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*`
fn valid_path_component(c: &str) -> bool {
    let b = c.as_bytes();
    if b.is_empty() || !is_alnum(b[0]) || !is_alnum(b[b.len() - 1]) {
        return false;
    }
    let mut i = 0;
    while i < b.len() {
        if is_alnum(b[i]) {
            i += 1;
            continue;
        }
        let start = i;
        while i < b.len() && !is_alnum(b[i]) {
            i += 1;
        }
        let sep = &c[start..i];
        let ok = sep == "." || sep == "_" || sep == "__" || sep.bytes().all(|s| s == b'-');
        if !ok {
            return false;
        }
    }
    true
}

fn is_alnum(b: u8) -> bool {
    b.is_ascii_lowercase() || b.is_ascii_digit()
}

/// `[\w][\w.-]{0,127}`
fn valid_tag(t: &str) -> bool {
    let word = |b: u8| b.is_ascii_alphanumeric() || b == b'_';
    let b = t.as_bytes();
    !b.is_empty()
        && b.len() <= 128
        && word(b[0])
        && b[1..].iter().all(|&c| word(c) || c == b'.' || c == b'-')
}

/// Host components of letters, digits and inner dashes joined by dots, an optional numeric
/// port, or a bracketed IPv6 address.
fn valid_domain(d: &str) -> bool {
    let (host, port) = if let Some(rest) = d.strip_prefix('[') {
        match rest.split_once(']') {
            Some((ip, tail)) if ip.parse::<std::net::Ipv6Addr>().is_ok() => {
                (None, tail.strip_prefix(':'))
            }
            _ => return false,
        }
    } else {
        match d.split_once(':') {
            Some((h, p)) => (Some(h), Some(p)),
            None => (Some(d), None),
        }
    };
    let host_ok = host.is_none_or(|h| {
        !h.is_empty()
            && h.split('.').all(|c| {
                !c.is_empty()
                    && !c.starts_with('-')
                    && !c.ends_with('-')
                    && c.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
            })
    });
    let port_ok = port.is_none_or(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()));
    host_ok && port_ok
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    #[test]
    fn normalises_as_containerd_does() {
        let table: &[(&str, String)] = &[
            ("busybox", "docker.io/library/busybox:latest".into()),
            ("busybox:1.36", "docker.io/library/busybox:1.36".into()),
            ("library/busybox", "docker.io/library/busybox:latest".into()),
            (
                "docker.io/busybox",
                "docker.io/library/busybox:latest".into(),
            ),
            (
                "index.docker.io/library/busybox:1",
                "docker.io/library/busybox:1".into(),
            ),
            ("user/app", "docker.io/user/app:latest".into()),
            ("user/team/app:v2", "docker.io/user/team/app:v2".into()),
            ("localhost/app", "localhost/app:latest".into()),
            ("localhost:5000/x", "localhost:5000/x:latest".into()),
            (
                "127.0.0.1:5000/busybox:1",
                "127.0.0.1:5000/busybox:1".into(),
            ),
            ("[::1]:5000/app:v1", "[::1]:5000/app:v1".into()),
            (
                "quay.io/coreos/etcd:v3.5",
                "quay.io/coreos/etcd:v3.5".into(),
            ),
            (
                "registry.k8s.io/pause:3.9",
                "registry.k8s.io/pause:3.9".into(),
            ),
            (
                "capstan.test/busybox-oci:1.0",
                "capstan.test/busybox-oci:1.0".into(),
            ),
            ("my-app.v2/x", "my-app.v2/x:latest".into()),
            ("a__b/c-d--e", "docker.io/a__b/c-d--e:latest".into()),
            (
                "busybox:Latest_1.x-y",
                "docker.io/library/busybox:Latest_1.x-y".into(),
            ),
            (
                &format!("busybox@{D}"),
                format!("docker.io/library/busybox@{D}"),
            ),
            (
                &format!("busybox:1.36@{D}"),
                format!("docker.io/library/busybox@{D}"),
            ),
            (
                &format!("localhost:5000/x@{D}"),
                format!("localhost:5000/x@{D}"),
            ),
        ];
        for (input, want) in table {
            let got = Reference::parse(input).map(|r| r.to_string());
            assert_eq!(got.ok().as_ref(), Some(want), "normalising {input:?}");
        }
    }

    #[test]
    fn splits_repository_tag_and_digest() {
        let r = Reference::parse("localhost:5000/team/app:v1").unwrap();
        assert_eq!(r.domain, "localhost:5000");
        assert_eq!(r.path, "team/app");
        assert_eq!(r.tag.as_deref(), Some("v1"));
        assert_eq!(r.digest, None);
        assert_eq!(r.repository(), "localhost:5000/team/app");
        let r = Reference::parse(&format!("busybox@{D}")).unwrap();
        assert_eq!(r.tag, None);
        assert_eq!(r.digest.as_deref(), Some(D));
    }

    #[test]
    fn rejects_what_containerd_rejects() {
        let bad = [
            "",
            "Busybox",
            "docker.io/Library/busybox",
            "busybox:",
            "busybox:-tag",
            "busybox@sha256:abc",
            "busybox@md5:0123456789abcdef0123456789abcdef",
            "busybox@",
            "a//b",
            "/busybox",
            "busybox/",
            "bad-.host.io/x",
            "host:port/x",
            "a/b..c",
            "my_app.io/x",
            "a/.b",
            "a/b..c",
            "my_app.io/x",
            "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
        ];
        for input in bad {
            match Reference::parse(input) {
                Err(ImagesError::InvalidReference { reference, .. }) => {
                    assert_eq!(reference, input)
                }
                other => panic!("{input:?} should be invalid, got {other:?}"),
            }
        }
        let long = format!("x.io/{}", "a".repeat(260));
        assert!(Reference::parse(&long).is_err());
        let long_tag = format!("busybox:{}", "t".repeat(129));
        assert!(Reference::parse(&long_tag).is_err());
    }
}

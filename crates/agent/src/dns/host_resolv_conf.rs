//! The host's /etc/resolv.conf, read: its nameservers (where the cluster DNS forwards other
//! names) and its search domains and options (which pods' resolv.conf inherit).

use std::net::IpAddr;

#[derive(Debug, Clone, Default, PartialEq)]
pub struct HostResolvConf {
    pub nameservers: Vec<IpAddr>,
    pub search: Vec<String>,
    pub options: Vec<String>,
}

impl HostResolvConf {
    /// The file's contents, or an empty configuration when it is missing or unreadable.
    pub fn read() -> HostResolvConf {
        match std::fs::read_to_string("/etc/resolv.conf") {
            Ok(text) => HostResolvConf::parse(&text),
            Err(e) => {
                tracing::warn!(error = %e, "reading the host's /etc/resolv.conf failed");
                HostResolvConf::default()
            }
        }
    }

    pub fn parse(text: &str) -> HostResolvConf {
        let mut conf = HostResolvConf::default();
        for line in text.lines() {
            let mut words = line.split_whitespace();
            match words.next() {
                Some("nameserver") => {
                    if let Some(ip) = words.next().and_then(|w| w.parse().ok()) {
                        conf.nameservers.push(ip);
                    }
                }
                // The last `search` (or `domain`) line wins, as in glibc.
                Some("search" | "domain") => conf.search = words.map(String::from).collect(),
                Some("options") => conf.options.extend(words.map(String::from)),
                _ => {}
            }
        }
        conf
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_nameservers_options_and_the_last_search_line() {
        let conf = HostResolvConf::parse(
            "# comment\nnameserver 10.0.0.2\nnameserver bogus\nsearch a.example\nsearch b.example c.example\noptions edns0 trust-ad\nnameserver fd00::1\n",
        );
        assert_eq!(
            conf.nameservers,
            vec![
                "10.0.0.2".parse::<IpAddr>().unwrap(),
                "fd00::1".parse().unwrap()
            ]
        );
        assert_eq!(conf.search, vec!["b.example", "c.example"]);
        assert_eq!(conf.options, vec!["edns0", "trust-ad"]);
    }
}

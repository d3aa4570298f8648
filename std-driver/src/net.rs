//! Addresses (`HOST` or `HOST:PORT`, default port 987) and outbound TCP connects with errors
//! that say what to check.
//!
//! ```
//! use dmsg_std::net::{Addr, DEFAULT_PORT};
//! let a: Addr = "hub-1".parse().unwrap();
//! assert_eq!((a.host(), a.port()), ("hub-1", DEFAULT_PORT));
//! let b: Addr = "[fe80::1]:1987".parse().unwrap();
//! assert_eq!((b.host(), b.port()), ("fe80::1", 1987));
//! let c: Addr = "::1".parse().unwrap(); // a bare IPv6 address takes the default port
//! assert_eq!(c.to_string(), "[::1]:987");
//! assert!("hub:99999".parse::<Addr>().unwrap_err().to_string().contains("1..=65535"));
//! ```

use std::fmt;
use std::io;
use std::net::{IpAddr, SocketAddr, TcpStream, ToSocketAddrs};
use std::str::FromStr;
use std::time::Duration;

/// The TCP port DMSG uses (`hammer2 service` listens on it).
pub const DEFAULT_PORT: u16 = 987;

/// A peer address as typed: a host name or IP address, and a port.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Addr {
    host: String,
    port: u16,
}

/// Why an address could not be read or resolved.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AddrError {
    input: String,
    problem: String,
}

impl fmt::Display for AddrError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "bad address '{}': {}; write HOST or HOST:PORT (IPv6 as [ADDR]:PORT), \
             the port defaults to {DEFAULT_PORT}",
            self.input, self.problem
        )
    }
}

impl std::error::Error for AddrError {}

impl Addr {
    /// `host` (a name or an IP address, without brackets) and `port`.
    pub fn new(host: impl Into<String>, port: u16) -> Addr {
        Addr {
            host: host.into(),
            port,
        }
    }

    /// The host part (IPv6 without brackets).
    pub fn host(&self) -> &str {
        &self.host
    }

    /// The port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The socket addresses the host resolves to (an IP address resolves to itself, without
    /// asking DNS).
    pub fn resolve(&self) -> Result<Vec<SocketAddr>, ConnectError> {
        if let Ok(ip) = self.host.parse::<IpAddr>() {
            return Ok(vec![SocketAddr::new(ip, self.port)]);
        }
        let fail = |detail: String| ConnectError {
            addr: self.to_string(),
            kind: ConnectErrorKind::Resolve,
            detail,
        };
        match (self.host.as_str(), self.port).to_socket_addrs() {
            Ok(it) => {
                let all: Vec<SocketAddr> = it.collect();
                if all.is_empty() {
                    Err(fail("the name has no addresses".into()))
                } else {
                    Ok(all)
                }
            }
            Err(e) => Err(fail(e.to_string())),
        }
    }
}

impl fmt::Display for Addr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

impl From<SocketAddr> for Addr {
    fn from(sa: SocketAddr) -> Addr {
        Addr::new(sa.ip().to_string(), sa.port())
    }
}

impl FromStr for Addr {
    type Err = AddrError;

    fn from_str(s: &str) -> Result<Addr, AddrError> {
        let err = |problem: &str| AddrError {
            input: s.to_string(),
            problem: problem.to_string(),
        };
        let t = s.trim();
        if t.is_empty() {
            return Err(err("it is empty"));
        }
        if t.chars().any(|c| c.is_whitespace()) {
            return Err(err("it contains a space"));
        }
        let (host, port) = if let Some(rest) = t.strip_prefix('[') {
            let Some((h, after)) = rest.split_once(']') else {
                return Err(err("'[' without a closing ']'"));
            };
            if h.parse::<std::net::Ipv6Addr>().is_err() {
                return Err(err("the part in [...] is not an IPv6 address"));
            }
            let port = match after {
                "" => None,
                p => match p.strip_prefix(':') {
                    Some(p) => Some(p),
                    None => return Err(err("only ':PORT' may follow ']'")),
                },
            };
            (h, port)
        } else if t.matches(':').count() > 1 {
            // Several colons and no brackets: a bare IPv6 address with the default port.
            if t.parse::<std::net::Ipv6Addr>().is_err() {
                return Err(err(
                    "several ':' but not an IPv6 address (write [ADDR]:PORT for IPv6 with a port)",
                ));
            }
            (t, None)
        } else {
            match t.split_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (t, None),
            }
        };
        if host.is_empty() {
            return Err(err("the host is empty"));
        }
        if !host.contains(':')
            && !host
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.' || c == '_')
        {
            return Err(err(
                "the host may hold only letters, digits, '-', '_' and '.'",
            ));
        }
        let port = match port {
            None => DEFAULT_PORT,
            Some(p) => match p.parse::<u32>() {
                Ok(n) if (1..=65535).contains(&n) => n as u16,
                Ok(_) => return Err(err("the port must be in 1..=65535")),
                Err(_) => return Err(err("the port is not a number in 1..=65535")),
            },
        };
        Ok(Addr::new(host, port))
    }
}

/// What kind of failure a [`ConnectError`] is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ConnectErrorKind {
    /// The host name could not be resolved.
    Resolve,
    /// Nothing listens on the port (TCP RST).
    Refused,
    /// No answer within the connect timeout.
    Timeout,
    /// No route to the host or network.
    Unreachable,
    /// Anything else.
    Other,
}

/// A failed connect, with the address and what to check.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConnectError {
    /// The address tried (as typed, or the socket address).
    pub addr: String,
    /// What went wrong.
    pub kind: ConnectErrorKind,
    /// The system's message.
    pub detail: String,
}

impl ConnectError {
    /// A connect error from an I/O error on `addr`.
    pub fn from_io(addr: impl fmt::Display, e: &io::Error) -> ConnectError {
        let kind = match e.kind() {
            io::ErrorKind::ConnectionRefused => ConnectErrorKind::Refused,
            io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock => ConnectErrorKind::Timeout,
            io::ErrorKind::HostUnreachable | io::ErrorKind::NetworkUnreachable => {
                ConnectErrorKind::Unreachable
            }
            _ => ConnectErrorKind::Other,
        };
        ConnectError {
            addr: addr.to_string(),
            kind,
            detail: e.to_string(),
        }
    }
}

impl fmt::Display for ConnectError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let a = &self.addr;
        match self.kind {
            ConnectErrorKind::Resolve => write!(
                f,
                "cannot resolve the host of {a} ({}); check the name, or give an IP address",
                self.detail
            ),
            ConnectErrorKind::Refused => write!(
                f,
                "connection to {a} refused: nothing listens there. Is the hub (hammer2 service, \
                 or dmsg hub) running on that host? DMSG uses TCP port {DEFAULT_PORT} unless \
                 HOST:PORT says otherwise; check the port and any firewall"
            ),
            ConnectErrorKind::Timeout => write!(
                f,
                "no answer from {a} in time ({}): check the address, that the host is up, and \
                 that no firewall drops TCP port {}; or raise --connect-timeout",
                self.detail,
                a.rsplit(':').next().unwrap_or("987")
            ),
            ConnectErrorKind::Unreachable => write!(
                f,
                "cannot reach {a} ({}): check the address and the network route",
                self.detail
            ),
            ConnectErrorKind::Other => write!(f, "cannot connect to {a}: {}", self.detail),
        }
    }
}

impl std::error::Error for ConnectError {}

/// Connects to `addr` once: every resolved address in turn, each with `timeout`. Returns the
/// first stream that connects, or the error of the last address tried. The stream has
/// `TCP_NODELAY` set (DMSG frames are small and latency matters more than batching).
pub fn connect(addr: &Addr, timeout: Duration) -> Result<TcpStream, ConnectError> {
    let all = addr.resolve()?;
    let mut last = None;
    for sa in all {
        match TcpStream::connect_timeout(&sa, timeout) {
            Ok(s) => {
                let _ = s.set_nodelay(true);
                log::debug!("connected to {addr} ({sa})");
                return Ok(s);
            }
            Err(e) => {
                log::debug!("connect to {sa} failed: {e}");
                let mut ce = ConnectError::from_io(addr, &e);
                if ce.kind == ConnectErrorKind::Timeout {
                    ce.detail = format!("{} ms", timeout.as_millis());
                }
                last = Some(ce);
            }
        }
    }
    Err(last.unwrap_or(ConnectError {
        addr: addr.to_string(),
        kind: ConnectErrorKind::Resolve,
        detail: "no addresses".into(),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(s: &str) -> (String, u16) {
        let a: Addr = s.parse().unwrap_or_else(|e| panic!("{s}: {e}"));
        (a.host().to_string(), a.port())
    }

    fn bad(s: &str) -> String {
        s.parse::<Addr>().unwrap_err().to_string()
    }

    #[test]
    fn forms() {
        assert_eq!(ok("hub"), ("hub".into(), 987));
        assert_eq!(ok("hub.example:1000"), ("hub.example".into(), 1000));
        assert_eq!(ok("10.0.0.1"), ("10.0.0.1".into(), 987));
        assert_eq!(ok("10.0.0.1:65535"), ("10.0.0.1".into(), 65535));
        assert_eq!(ok("::1"), ("::1".into(), 987));
        assert_eq!(ok("[::1]"), ("::1".into(), 987));
        assert_eq!(ok("[2001:db8::7]:12"), ("2001:db8::7".into(), 12));
        assert_eq!(ok(" hub "), ("hub".into(), 987));
    }

    #[test]
    fn errors_say_what_is_wrong() {
        assert!(bad("").contains("empty"));
        assert!(bad(":987").contains("host is empty"));
        assert!(bad("hub:").contains("not a number"));
        assert!(bad("hub:0").contains("1..=65535"));
        assert!(bad("hub:70000").contains("1..=65535"));
        assert!(bad("hub:x").contains("not a number"));
        assert!(bad("[::1").contains("closing"));
        assert!(bad("[::1]x").contains("':PORT'"));
        assert!(bad("[hub]:1").contains("IPv6"));
        assert!(bad("a:b:c").contains("IPv6"));
        assert!(bad("h b").contains("space"));
        assert!(bad("hub/x").contains("letters"));
        for e in [bad(""), bad("hub:0")] {
            assert!(e.contains("HOST:PORT") && e.contains("987"), "{e}");
        }
    }

    #[test]
    fn display_round_trips() {
        for s in ["hub:987", "[::1]:5", "10.1.2.3:4"] {
            assert_eq!(s.parse::<Addr>().unwrap().to_string(), s);
        }
    }

    #[test]
    fn ip_resolves_without_dns_and_refused_says_what_to_check() {
        let a: Addr = "127.0.0.1:9".parse().unwrap();
        assert_eq!(a.resolve().unwrap(), vec!["127.0.0.1:9".parse().unwrap()]);
        // A port that was just free: nothing listens.
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        drop(l);
        let e = connect(&Addr::new("127.0.0.1", port), Duration::from_secs(2)).unwrap_err();
        assert_eq!(e.kind, ConnectErrorKind::Refused);
        let msg = e.to_string();
        assert!(msg.contains("refused") && msg.contains("987") && msg.contains("firewall"));
    }
}

//! A throw-away Linux network namespace with a TAP device in it, for tests: everything
//! addressed in a run stays inside the namespace, and the namespace goes away when the
//! [`Netns`] is dropped (also when a test panics). Needs root (CAP_SYS_ADMIN and
//! CAP_NET_ADMIN) and the `ip` tool of iproute2.

use std::io;
use std::path::PathBuf;
use std::process::{Command, Output};

/// Prefix of the namespaces this module creates: `dmsg-tap-<pid>-<n>`.
pub const PREFIX: &str = "dmsg-tap-";

/// A network namespace, deleted on drop.
#[derive(Debug)]
pub struct Netns {
    name: String,
}

/// Runs `ip ARGS`; an error carries `ip`'s stderr.
pub fn ip(args: &[&str]) -> io::Result<Output> {
    let out = Command::new("ip").args(args).output()?;
    if out.status.success() {
        Ok(out)
    } else {
        Err(io::Error::other(format!(
            "ip {}: {} {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )))
    }
}

impl Netns {
    /// Creates the namespace `dmsg-tap-<pid>-<tag>` with its loopback up. Removes the
    /// namespaces earlier runs left behind (their process is gone) first.
    pub fn create(tag: &str) -> io::Result<Netns> {
        sweep_stale();
        let name = format!("{PREFIX}{}-{tag}", std::process::id());
        ip(&["netns", "add", &name])?;
        let ns = Netns { name };
        ns.ip(&["link", "set", "lo", "up"])?;
        Ok(ns)
    }

    /// The namespace's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Its handle for `setns(2)`: `/var/run/netns/<name>`.
    pub fn path(&self) -> PathBuf {
        PathBuf::from("/var/run/netns").join(&self.name)
    }

    /// Runs `ip -n <name> ARGS` (an `ip` command inside the namespace).
    pub fn ip(&self, args: &[&str]) -> io::Result<Output> {
        let mut all = vec!["-n", self.name.as_str()];
        all.extend_from_slice(args);
        ip(&all)
    }

    /// A command that runs `program` inside the namespace (`ip netns exec`).
    pub fn command(&self, program: &str) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.name, program]);
        cmd
    }

    /// Adds a persistent TAP device `tap` with address `cidr` (e.g. `10.77.0.1/24`) and
    /// brings it up. It has no carrier until a process attaches to it.
    pub fn add_tap(&self, tap: &str, cidr: &str) -> io::Result<()> {
        self.ip(&["tuntap", "add", "dev", tap, "mode", "tap"])?;
        self.ip(&["addr", "add", cidr, "dev", tap])?;
        self.set_link(tap, true)
    }

    /// `ip link set DEV up|down` inside the namespace.
    pub fn set_link(&self, dev: &str, up: bool) -> io::Result<()> {
        self.ip(&["link", "set", dev, if up { "up" } else { "down" }])
            .map(drop)
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        // Deleting the namespace removes the TAP device in it too.
        if let Err(e) = ip(&["netns", "del", &self.name]) {
            eprintln!(
                "dmsg-tap: could not delete network namespace {}: {e}",
                self.name
            );
        }
    }
}

/// Deletes `dmsg-tap-<pid>-*` namespaces whose process no longer exists (a run that was
/// killed before its cleanup). Errors are ignored: this is housekeeping.
pub fn sweep_stale() {
    let Ok(out) = ip(&["netns", "list"]) else {
        return;
    };
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let name = line.split_whitespace().next().unwrap_or("");
        let Some(rest) = name.strip_prefix(PREFIX) else {
            continue;
        };
        let Some(pid) = rest.split('-').next().and_then(|p| p.parse::<u32>().ok()) else {
            continue;
        };
        if !std::path::Path::new(&format!("/proc/{pid}")).exists() {
            let _ = ip(&["netns", "del", name]);
        }
    }
}

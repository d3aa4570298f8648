//! Key files, the keys-directory policy and `dmsg keygen`.
//!
//! # Key file format
//! One line of ASCII text, `<tag> <64 hex digits> [comment]`, then a newline:
//! - public key (`NAME.pub`, mode 0644): `dmsg-x25519-pub <key> <comment>`;
//! - secret key (`NAME.key`, mode 0600): `dmsg-x25519-secret <key>`.
//!
//! The key is the raw 32-byte X25519 key in lower-case hex (upper case is accepted). Blank
//! lines and lines starting with `#` are ignored; anything else is a format error. A secret
//! file that group or others may read is refused (like ssh's private keys).
//!
//! # Keys directory (DragonFly's `/etc/hammer2/remote/` model, `spec/SECURE.md` section 3)
//! For a peer named `P` (the host or address as given, e.g. `hub1` or `10.0.0.5`):
//! `P.pub` = secure channel with that key, `P.none` = plaintext DMSG, neither = refuse (with
//! the reason), both = refuse (ambiguous). [`KeysDir::policy`] answers that;
//! [`KeysDir::find_key`] answers an acceptor's question "which peer holds this
//! authenticated key?" after [`dmsg_core::secure::SecureEvent::PeerHello`].

use std::ffi::OsString;
use std::fmt;
use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use dmsg_core::secure::{Keypair, PublicKey};
use rand_core::{OsRng, TryRngCore};

use crate::cli::{print_or_usage, Arg, ArgReader, Io};
use crate::exit;

/// First word of a public key file.
pub const PUBLIC_TAG: &str = "dmsg-x25519-pub";
/// First word of a secret key file.
pub const SECRET_TAG: &str = "dmsg-x25519-secret";

/// What went wrong with a key file or the keys directory.
#[derive(Debug)]
pub enum KeyError {
    /// Reading or writing failed.
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        error: io::Error,
    },
    /// The file is not in the key file format.
    Format {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// A secret key file that group or others may access.
    InsecurePermissions {
        /// The file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// The file exists and overwriting was not asked for.
    Exists(PathBuf),
}

impl fmt::Display for KeyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeyError::Io { path, error } => write!(f, "{}: {error}", path.display()),
            KeyError::Format { path, reason } => {
                write!(f, "{}: not a dmsg key file: {reason}", path.display())
            }
            KeyError::InsecurePermissions { path, mode } => write!(
                f,
                "{}: secret key readable by others (mode {mode:o}); chmod 600 it",
                path.display()
            ),
            KeyError::Exists(path) => {
                write!(f, "{} exists (use --force to replace it)", path.display())
            }
        }
    }
}

impl std::error::Error for KeyError {}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> KeyError + '_ {
    move |error| KeyError::Io {
        path: path.to_path_buf(),
        error,
    }
}

fn hex(bytes: &[u8; 32]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Parses one key line with `tag`; returns the 32 key bytes.
fn parse_line(text: &str, tag: &str) -> Result<[u8; 32], String> {
    let mut lines = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'));
    let line = lines.next().ok_or("empty file")?;
    if lines.next().is_some() {
        return Err("more than one key line".into());
    }
    let mut words = line.split_whitespace();
    let found = words.next().unwrap_or_default();
    if found != tag {
        return Err(format!("expected '{tag}', found '{found}'"));
    }
    let digits = words.next().ok_or("no key after the tag")?;
    if digits.len() != 64 || !digits.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err("the key must be 64 hex digits".into());
    }
    let mut key = [0u8; 32];
    for (i, k) in key.iter_mut().enumerate() {
        *k = u8::from_str_radix(&digits[2 * i..2 * i + 2], 16).map_err(|e| e.to_string())?;
    }
    Ok(key)
}

/// The text of a public key file.
pub fn format_public(key: &PublicKey, comment: &str) -> String {
    let comment: String = comment.chars().filter(|c| !c.is_control()).collect();
    format!("{PUBLIC_TAG} {} {comment}\n", hex(key.as_bytes())).replace(" \n", "\n")
}

/// Parses the text of a public key file.
pub fn parse_public(text: &str) -> Result<PublicKey, String> {
    parse_line(text, PUBLIC_TAG).map(PublicKey)
}

/// Parses the text of a secret key file.
pub fn parse_secret(text: &str) -> Result<Keypair, String> {
    let mut key = parse_line(text, SECRET_TAG)?;
    let kp = Keypair::from_secret(key);
    key.fill(0);
    Ok(kp)
}

/// Reads a public key file.
pub fn load_public(path: &Path) -> Result<PublicKey, KeyError> {
    let text = fs::read_to_string(path).map_err(io_err(path))?;
    parse_public(&text).map_err(|reason| KeyError::Format {
        path: path.to_path_buf(),
        reason,
    })
}

/// Reads a secret key file, refusing one that group or others may access.
pub fn load_secret(path: &Path) -> Result<Keypair, KeyError> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = fs::metadata(path)
            .map_err(io_err(path))?
            .permissions()
            .mode()
            & 0o777;
        if mode & 0o077 != 0 {
            return Err(KeyError::InsecurePermissions {
                path: path.to_path_buf(),
                mode,
            });
        }
    }
    let mut text = fs::read(path).map_err(io_err(path))?;
    let parsed = std::str::from_utf8(&text)
        .map_err(|_| "not UTF-8 text".to_string())
        .and_then(parse_secret);
    text.fill(0);
    parsed.map_err(|reason| KeyError::Format {
        path: path.to_path_buf(),
        reason,
    })
}

/// Creates `path` with `contents`; mode 0600 when `secret`, 0644 otherwise. With `force` an
/// existing file is removed first (so it never keeps looser permissions).
fn create(path: &Path, contents: &[u8], secret: bool, force: bool) -> Result<(), KeyError> {
    if force {
        match fs::remove_file(path) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_err(path)(e)),
        }
    }
    let mut opts = fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(if secret { 0o600 } else { 0o644 });
    }
    #[cfg(not(unix))]
    let _ = secret;
    let mut f = opts.open(path).map_err(|e| {
        if e.kind() == io::ErrorKind::AlreadyExists {
            KeyError::Exists(path.to_path_buf())
        } else {
            io_err(path)(e)
        }
    })?;
    f.write_all(contents)
        .and_then(|()| f.sync_all())
        .map_err(io_err(path))?;
    // The creation mode is filtered by the umask; set the exact bits.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = if secret { 0o600 } else { 0o644 };
        fs::set_permissions(path, fs::Permissions::from_mode(mode)).map_err(io_err(path))?;
    }
    Ok(())
}

/// Writes `DIR/NAME.key` (0600) and `DIR/NAME.pub` (0644) for `kp`; returns both paths.
/// Neither file is replaced unless `force`; if either exists, nothing is written.
pub fn write_keypair(
    dir: &Path,
    name: &str,
    kp: &Keypair,
    force: bool,
) -> Result<(PathBuf, PathBuf), KeyError> {
    let secret_path = dir.join(format!("{name}.key"));
    let public_path = dir.join(format!("{name}.pub"));
    if !force {
        for p in [&secret_path, &public_path] {
            if p.exists() {
                return Err(KeyError::Exists(p.clone()));
            }
        }
    }
    let mut secret = format!("{SECRET_TAG} {}\n", hex(kp.secret_bytes())).into_bytes();
    let r = create(&secret_path, &secret, true, force);
    secret.fill(0);
    r?;
    create(
        &public_path,
        format_public(&kp.public(), name).as_bytes(),
        false,
        force,
    )?;
    Ok((secret_path, public_path))
}

/// Why a peer is refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RefuseReason {
    /// Neither `P.pub` nor `P.none` exists.
    NoKeyFile,
    /// Both exist: the operator must choose.
    Ambiguous,
    /// The peer name cannot name a file in the directory (empty, `/`, `..`, control chars).
    BadName,
}

impl fmt::Display for RefuseReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            RefuseReason::NoKeyFile => "no <peer>.pub or <peer>.none in the keys directory",
            RefuseReason::Ambiguous => "both <peer>.pub and <peer>.none exist; remove one",
            RefuseReason::BadName => "the peer name cannot name a key file",
        })
    }
}

/// What to do with a peer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PeerPolicy {
    /// Secure channel; the peer must prove this static key.
    Use(PublicKey),
    /// Plaintext DMSG (e.g. a DragonFly host).
    Plaintext,
    /// Refuse the connection, for this reason (to be logged).
    Refuse(RefuseReason),
}

/// A keys directory (`<peer>.pub`, `<peer>.none`).
#[derive(Clone, Debug)]
pub struct KeysDir {
    dir: PathBuf,
}

impl KeysDir {
    /// The directory at `dir`, which must exist.
    pub fn open(dir: impl Into<PathBuf>) -> Result<KeysDir, KeyError> {
        let dir = dir.into();
        let meta = fs::metadata(&dir).map_err(io_err(&dir))?;
        if !meta.is_dir() {
            return Err(KeyError::Io {
                error: io::Error::new(io::ErrorKind::InvalidInput, "not a directory"),
                path: dir,
            });
        }
        Ok(KeysDir { dir })
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.dir
    }

    /// The policy for the peer named `peer`. A `.pub` file that does not parse is an error
    /// (the operator meant keys; it is not silently treated as absent).
    pub fn policy(&self, peer: &str) -> Result<PeerPolicy, KeyError> {
        if peer.is_empty()
            || peer == "."
            || peer == ".."
            || peer.contains(['/', '\\'])
            || peer.chars().any(char::is_control)
        {
            return Ok(PeerPolicy::Refuse(RefuseReason::BadName));
        }
        let public = self.dir.join(format!("{peer}.pub"));
        let none = self.dir.join(format!("{peer}.none"));
        match (public.is_file(), none.is_file()) {
            (true, true) => Ok(PeerPolicy::Refuse(RefuseReason::Ambiguous)),
            (true, false) => load_public(&public).map(PeerPolicy::Use),
            (false, true) => Ok(PeerPolicy::Plaintext),
            (false, false) => Ok(PeerPolicy::Refuse(RefuseReason::NoKeyFile)),
        }
    }

    /// The name of the peer whose `.pub` file holds `key` (an acceptor's check after the
    /// handshake authenticated it), or `None`. Files that do not parse are skipped here
    /// (they are reported by [`policy`](Self::policy)).
    pub fn find_key(&self, key: &PublicKey) -> Result<Option<String>, KeyError> {
        let mut names = Vec::new();
        for entry in fs::read_dir(&self.dir).map_err(io_err(&self.dir))? {
            let path = entry.map_err(io_err(&self.dir))?.path();
            if path.extension().is_some_and(|e| e == "pub") {
                if let (Ok(k), Some(stem)) = (load_public(&path), path.file_stem()) {
                    if k == *key {
                        names.push(stem.to_string_lossy().into_owned());
                    }
                }
            }
        }
        names.sort();
        Ok(names.into_iter().next())
    }
}

const KEYGEN_HELP: &str = "\
dmsg keygen: write a new X25519 key pair for the secure channel

Usage: dmsg keygen [--dir DIR] [--name NAME] [--force]

Writes DIR/NAME.key (the secret key, mode 0600) and DIR/NAME.pub (the public key, mode
0644), and prints the public key line. Give NAME.pub to the peers that should accept this
node: they save it in their keys directory as <this node's name>.pub. The key comes from the
operating system's random number generator.

Options:
  --dir DIR    directory to write to (default: the current directory)
  --name NAME  file name without extension (default: node)
  --force      replace existing files
  -h, --help   show this help
";

/// `dmsg keygen`.
pub fn keygen_main(args: &[OsString], io: &mut Io<'_>) -> u8 {
    let mut r = ArgReader::new("keygen", args);
    let (mut dir, mut name, mut force) = (PathBuf::from("."), String::from("node"), false);
    while let Some(arg) = r.next_arg() {
        let step = match arg {
            Arg::Option("-h" | "--help", _) => return print_or_usage(io, KEYGEN_HELP),
            Arg::Option("--dir", v) => r.value("--dir", v).map(|v| dir = PathBuf::from(v)),
            Arg::Option("--name", v) => r.value("--name", v).map(|v| name = v.to_string()),
            Arg::Option("--force", v) => r.no_value("--force", v).map(|()| force = true),
            Arg::Option(o, _) => Err(r.error(format!("unknown option {o}"))),
            Arg::Positional(p) => {
                Err(r.error(format!("unexpected argument '{}'", p.to_string_lossy())))
            }
        };
        if let Err(e) = step {
            let _ = writeln!(io.stderr, "{e}");
            return exit::USAGE;
        }
    }
    if name.is_empty() || name.contains(['/', '\\']) || name == "." || name == ".." {
        let _ = writeln!(io.stderr, "{}", r.error(format!("bad --name '{name}'")));
        return exit::USAGE;
    }
    let mut seed = [0u8; 32];
    if let Err(e) = OsRng.try_fill_bytes(&mut seed) {
        let _ = writeln!(
            io.stderr,
            "dmsg keygen: no operating-system randomness: {e}"
        );
        return exit::USAGE;
    }
    let kp = Keypair::from_secret(seed);
    seed.fill(0);
    match write_keypair(&dir, &name, &kp, force) {
        Ok((secret, public)) => print_or_usage(
            io,
            &format!(
                "wrote {} (secret, mode 0600) and {}\n{}",
                secret.display(),
                public.display(),
                format_public(&kp.public(), &name)
            ),
        ),
        Err(e) => {
            let _ = writeln!(io.stderr, "dmsg keygen: {e}");
            exit::USAGE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tmp(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("dmsg-keys-{tag}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn public_key_text_round_trips_and_rejects_garbage() {
        let kp = Keypair::from_secret([7; 32]);
        let text = format_public(&kp.public(), "hub-1");
        assert!(text.starts_with("dmsg-x25519-pub ") && text.ends_with(" hub-1\n"));
        assert_eq!(parse_public(&text), Ok(kp.public()));
        assert_eq!(
            parse_public(&format!("# comment\n\n{text}")),
            Ok(kp.public())
        );
        assert!(parse_public("").is_err());
        assert!(parse_public("dmsg-x25519-secret 00").is_err());
        assert!(parse_public(&text.replace("pub ", "pub zz")).is_err());
        assert!(parse_public(&format!("{text}{text}")).is_err());
        assert!(parse_public(&format!("{PUBLIC_TAG} {}", "0".repeat(63))).is_err());
    }

    #[cfg(unix)]
    #[test]
    fn keygen_writes_0600_secret_and_refuses_to_overwrite() {
        use std::os::unix::fs::PermissionsExt;
        let d = tmp("keygen");
        let args: Vec<OsString> = ["--dir", d.to_str().unwrap(), "--name", "leaf7"]
            .iter()
            .map(OsString::from)
            .collect();
        let (mut out, mut err) = (Vec::new(), Vec::new());
        let mut io = Io {
            stdin: &mut io::empty(),
            stdout: &mut out,
            stderr: &mut err,
            interactive: false,
        };
        assert_eq!(keygen_main(&args, &mut io), exit::OK);
        let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&d.join("leaf7.key")), 0o600);
        assert_eq!(mode(&d.join("leaf7.pub")), 0o644);
        let kp = load_secret(&d.join("leaf7.key")).unwrap();
        assert_eq!(load_public(&d.join("leaf7.pub")).unwrap(), kp.public());
        let printed = String::from_utf8(out).unwrap();
        assert!(printed.contains(&format_public(&kp.public(), "leaf7")));
        // A second run does not replace the pair; --force does, with a new key.
        let (mut out, mut err) = (Vec::new(), Vec::new());
        let mut io = Io {
            stdin: &mut io::empty(),
            stdout: &mut out,
            stderr: &mut err,
            interactive: false,
        };
        assert_eq!(keygen_main(&args, &mut io), exit::USAGE);
        assert!(String::from_utf8(err).unwrap().contains("exists"));
        let mut forced = args.clone();
        forced.push("--force".into());
        let (mut out, mut err) = (Vec::new(), Vec::new());
        let mut io = Io {
            stdin: &mut io::empty(),
            stdout: &mut out,
            stderr: &mut err,
            interactive: false,
        };
        assert_eq!(keygen_main(&forced, &mut io), exit::OK);
        assert_ne!(
            load_secret(&d.join("leaf7.key")).unwrap().public(),
            kp.public()
        );
        assert_eq!(mode(&d.join("leaf7.key")), 0o600);
        // A secret key others may read is refused.
        fs::set_permissions(d.join("leaf7.key"), fs::Permissions::from_mode(0o644)).unwrap();
        assert!(matches!(
            load_secret(&d.join("leaf7.key")),
            Err(KeyError::InsecurePermissions { mode: 0o644, .. })
        ));
        fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn keys_directory_policy_is_use_plaintext_or_refuse() {
        let d = tmp("policy");
        let hub = Keypair::from_secret([1; 32]);
        fs::write(d.join("hub1.pub"), format_public(&hub.public(), "hub1")).unwrap();
        fs::write(d.join("10.0.0.5.none"), "").unwrap();
        fs::write(d.join("both.pub"), format_public(&hub.public(), "both")).unwrap();
        fs::write(d.join("both.none"), "").unwrap();
        fs::write(d.join("broken.pub"), "not a key\n").unwrap();
        let keys = KeysDir::open(&d).unwrap();
        assert_eq!(keys.policy("hub1").unwrap(), PeerPolicy::Use(hub.public()));
        assert_eq!(keys.policy("10.0.0.5").unwrap(), PeerPolicy::Plaintext);
        assert_eq!(
            keys.policy("stranger").unwrap(),
            PeerPolicy::Refuse(RefuseReason::NoKeyFile)
        );
        assert_eq!(
            keys.policy("both").unwrap(),
            PeerPolicy::Refuse(RefuseReason::Ambiguous)
        );
        for bad in ["", "..", "../etc/passwd", "a/b"] {
            assert_eq!(
                keys.policy(bad).unwrap(),
                PeerPolicy::Refuse(RefuseReason::BadName),
                "{bad:?}"
            );
        }
        assert!(matches!(
            keys.policy("broken"),
            Err(KeyError::Format { .. })
        ));
        // The acceptor's question: who holds this authenticated key?
        assert_eq!(
            keys.find_key(&hub.public()).unwrap().as_deref(),
            Some("both")
        );
        let other = Keypair::from_secret([2; 32]).public();
        assert_eq!(keys.find_key(&other).unwrap(), None);
        assert!(KeysDir::open(d.join("hub1.pub")).is_err());
        fs::remove_dir_all(&d).unwrap();
    }
}

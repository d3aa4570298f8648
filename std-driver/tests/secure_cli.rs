//! `--keys` on the command line: `dmsg keygen`, `dmsg hub --keys`, `dmsg leaf --keys` and
//! `dmsg tree --keys` as processes; missing keys are reported with what to do.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn dmsg() -> Command {
    Command::new(env!("CARGO_BIN_EXE_dmsg"))
}

/// Kills the child when dropped (a failed assertion must not leave a process behind).
struct Kill(Child);

impl Drop for Kill {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A temp keys directory with key pairs for `names` (removed on drop).
struct Keys(PathBuf);

impl Keys {
    fn new(tag: &str, names: &[&str]) -> Keys {
        let p = std::env::temp_dir().join(format!("dmsg-secure-cli-{}-{tag}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        for n in names {
            let out = dmsg()
                .args(["keygen", "--dir", p.to_str().unwrap(), "--name", n])
                .output()
                .unwrap();
            assert!(out.status.success(), "{out:?}");
        }
        Keys(p)
    }

    fn dir(&self) -> &str {
        self.0.to_str().unwrap()
    }
}

impl Drop for Keys {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn an_encrypted_hub_shows_its_leaf_to_tree_with_keys_and_refuses_plain_tree() {
    let k = Keys::new("tree", &["hub", "north", "shell"]);
    let mut hub = Kill(
        dmsg()
            .args([
                "hub",
                "--listen",
                "127.0.0.1:0",
                "--stats",
                "0",
                "--keys",
                k.dir(),
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let mut line = String::new();
    BufReader::new(hub.0.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert!(line.contains("encrypted"), "{line}");
    let addr = line
        .split_whitespace()
        .find(|w| w.starts_with("127.0.0.1:"))
        .unwrap_or_else(|| panic!("no address in '{line}'"))
        .to_string();
    let _leaf = Kill(
        dmsg()
            .args([
                "leaf",
                "--connect",
                &addr,
                "--label",
                "north",
                "--keys",
                k.dir(),
            ])
            .args(["--peer", "hub"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let end = Instant::now() + Duration::from_secs(8);
    loop {
        let out = dmsg()
            .args(["tree", "--keys", k.dir(), "--peer", "hub", &addr])
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        if out.status.success() && text.contains("(north)") && text.contains("(hub)") {
            break;
        }
        assert!(
            Instant::now() < end,
            "tree never showed the leaf: {text} {}",
            String::from_utf8_lossy(&out.stderr)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    // Plaintext against an encrypted hub: refused, nothing shown.
    let out = dmsg().args(["tree", &addr]).output().unwrap();
    assert_eq!(out.status.code(), Some(3), "{out:?}");
    assert!(out.stdout.is_empty());
}

#[test]
fn missing_keys_are_usage_errors_that_say_what_to_do() {
    let k = Keys::new("missing", &["hub"]);
    // No key pair for this leaf.
    let out = dmsg()
        .args([
            "leaf",
            "--connect",
            "127.0.0.1:9",
            "--label",
            "west",
            "--keys",
            k.dir(),
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("west.key")
            && err.contains("dmsg keygen --dir")
            && err.contains("--name west"),
        "{err}"
    );
    // A leaf key, but nothing that names the hub.
    let out = dmsg()
        .args(["keygen", "--dir", k.dir(), "--name", "west"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let out = dmsg()
        .args([
            "leaf",
            "--connect",
            "127.0.0.1:9",
            "--label",
            "west",
            "--keys",
            k.dir(),
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("127.0.0.1.pub") && err.contains("127.0.0.1.none") && err.contains("--peer"),
        "{err}"
    );
    // No such directory.
    let out = dmsg()
        .args([
            "hub",
            "--listen",
            "127.0.0.1:0",
            "--keys",
            "/nonexistent/dmsg-keys",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("dmsg keygen --dir /nonexistent/dmsg-keys --name hub"),
        "{err}"
    );
}

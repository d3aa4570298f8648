//! A `dmsg hub` process holding 1,000 leaf connections, with its memory (resident set from
//! /proc) reported. Ignored by default (it starts 1,000 leaf runtimes); run it with
//!
//! ```text
//! cargo test --release -p dmsg-std --test node_scale -- --ignored --nocapture
//! ```
//!
//! The leaves are small MCU-sized reliable nodes (`ReliableMcuLeaf`, one runtime thread
//! each) in this test's process; they ask for no spans (`peer_mask` 0) so the hub holds
//! 1,000 links and 1,000 spans without relaying a thousand squared of them back.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use dmsg_core::node::ReliableMcuLeaf;
use dmsg_std::net::Addr;
use dmsg_std::node::{self, default_cluster, span_for, NodeEvent, NodeHandle};
use dmsg_std::node_cmd::leaf_options;

const LEAVES: usize = 1000;

struct Kill(Child);

impl Drop for Kill {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn rss_of(pid: u32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = s.lines().find(|l| l.starts_with("VmRSS:"))?;
    Some(line.split_whitespace().nth(1)?.parse::<u64>().ok()? * 1024)
}

/// CPU time (user + system) of a process, in clock ticks (normally 1/100 s).
fn cpu_ticks(pid: u32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = s.rsplit_once(')')?.1;
    let f: Vec<&str> = rest.split_whitespace().collect();
    Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?)
}

fn mb(b: u64) -> f64 {
    b as f64 / 1e6
}

#[test]
#[ignore = "starts 1,000 leaf runtimes; run explicitly (see the file's docs)"]
fn a_hub_process_holds_1000_leaf_connections() {
    let mut hub = Kill(
        Command::new(env!("CARGO_BIN_EXE_dmsg"))
            .args(["hub", "--listen", "127.0.0.1:0", "--stats", "1s"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let mut first = String::new();
    BufReader::new(hub.0.stdout.take().unwrap())
        .read_line(&mut first)
        .unwrap();
    println!("{}", first.trim());
    let port: u16 = first
        .split_whitespace()
        .find_map(|w| w.strip_prefix("127.0.0.1:"))
        .and_then(|p| p.parse().ok())
        .expect("the hub prints its address");
    let stats = Arc::new(Mutex::new(String::new()));
    let s2 = stats.clone();
    let stderr = hub.0.stderr.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            *s2.lock().unwrap() = line;
        }
    });
    std::thread::sleep(Duration::from_millis(300));
    let idle = rss_of(hub.0.id()).unwrap();
    println!("hub idle: rss {:.1} MB", mb(idle));

    let t = Instant::now();
    let mut leaves: Vec<NodeHandle> = Vec::with_capacity(LEAVES);
    let mut events = Vec::with_capacity(LEAVES);
    for i in 0..LEAVES {
        let name = format!("leaf-{i:04}");
        let mut opts = leaf_options(&name, default_cluster(), true);
        opts.link.conn.peer_mask = 0;
        opts.echo = false;
        let (h, ev) = node::spawn::<ReliableMcuLeaf>(opts).unwrap();
        h.advertise(span_for(default_cluster(), &name)).unwrap();
        h.connect(Addr::new("127.0.0.1", port)).unwrap();
        leaves.push(h);
        events.push(ev);
        if (i + 1) % 200 == 0 {
            println!(
                "{} leaves started ({:.1} s)",
                i + 1,
                t.elapsed().as_secs_f64()
            );
        }
    }
    // Every leaf hears the hub's LNK_CONN.
    let end = Instant::now() + Duration::from_secs(120);
    for (i, ev) in events.iter().enumerate() {
        loop {
            let left = end.saturating_duration_since(Instant::now());
            match ev.recv_timeout(left) {
                Ok(NodeEvent::PeerConn { .. }) => break,
                Ok(_) => {}
                Err(_) => panic!("leaf {i} never linked"),
            }
        }
    }
    println!(
        "{LEAVES} leaves linked after {:.1} s",
        t.elapsed().as_secs_f64()
    );
    // The hub's own count.
    let want = format!("{LEAVES} links, {} spans", LEAVES + 1);
    loop {
        let line = stats.lock().unwrap().clone();
        if line.contains(&want) {
            println!("hub says: {line}");
            break;
        }
        assert!(
            Instant::now() < end,
            "the hub never reported '{want}' (last: {line})"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let full = rss_of(hub.0.id()).unwrap();
    println!(
        "hub with {LEAVES} leaves: rss {:.1} MB ({:.1} MB idle, {:.1} KB per link added); this \
         process (the leaves): rss {:.1} MB",
        mb(full),
        mb(idle),
        (full.saturating_sub(idle)) as f64 / 1e3 / LEAVES as f64,
        mb(node::rss_bytes().unwrap_or(0)),
    );
    // The links stay up (keepalive: a ping per link per second) for a few seconds.
    let c0 = cpu_ticks(hub.0.id()).unwrap();
    std::thread::sleep(Duration::from_secs(3));
    let c1 = cpu_ticks(hub.0.id()).unwrap();
    println!(
        "hub CPU while holding {LEAVES} idle links: {:.0}% of one core",
        (c1 - c0) as f64 / 3.0
    );
    for (i, h) in leaves.iter().enumerate().step_by(97) {
        assert_eq!(h.status().unwrap().links.len(), 1, "leaf {i} lost its link");
    }
    let line = stats.lock().unwrap().clone();
    assert!(line.contains(&want), "after 3 s the hub says: {line}");
    let t = Instant::now();
    drop(leaves);
    println!(
        "{LEAVES} leaves shut down in {:.1} s",
        t.elapsed().as_secs_f64()
    );
}

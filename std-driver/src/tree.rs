//! The span tree as DragonFly's debug shell prints it (`tree`), parsed, and turned into
//! Graphviz DOT on the client side for peers that have no `dot` command.
//!
//! The text (DragonFly's `dmsg_shell_tree`, and our node's `tree`) is:
//!
//! ```text
//! Cluster HAMMER2 11111111-2222-3333-4444-555555555555 (cpeer-cluster)
//!     Node 08 66666666-7777-8888-9999-aaaaaaaaaaaa (cpeer-pfs)
//! \tSLink msgid 00007f0ea0001840 dist=0 via 4
//! \t    Relay-out msgid 00007f5bc80016e0 via 5
//! ```
//!
//! A `Cluster` line per cluster (peer type, peer id, label), a `Node` line per node of it
//! (PFS type in hex, PFS id, label), an `SLink` line per span received for the node (the
//! span's msgid, its distance as received, and the link it came in on; DragonFly prints the
//! socket's file descriptor), and a `Relay-out` line per relay of that span to another link.
//!
//! The DOT graph has a `self` vertex for the peer asked, one vertex per node (inside a
//! Graphviz cluster per DMSG cluster), an edge `self -> node` per SLink labelled with the link
//! and distance, and a dashed edge `node -> "link N"` per relay. Lines that do not parse are
//! kept as DOT comments, so nothing is lost silently.
//!
//! `dmsg tree --dot` first sends `dot`; output that starts with `digraph`, `graph` or `strict`
//! ([`is_dot`]) is printed as it is (a node's `dot` command should print
//! `dmsg_core::span::SpanTable::write_dot`), anything else (DragonFly answers
//! `Unrecognized command: dot`) makes it ask `tree` and convert here.

use std::fmt::Write as _;

/// A parsed `tree` listing.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Tree {
    /// The clusters, in the order printed.
    pub clusters: Vec<Cluster>,
    /// Lines that did not parse (without their newline).
    pub unparsed: Vec<String>,
}

/// A `Cluster` line and what follows it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Cluster {
    /// Peer type as printed (`HAMMER2`, `ROUTER`, or hex).
    pub peer_type: String,
    /// Peer (cluster) id.
    pub peer_id: String,
    /// Peer label.
    pub label: String,
    /// Its nodes.
    pub nodes: Vec<Node>,
}

/// A `Node` line and its links.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Node {
    /// PFS type as printed (two hex digits).
    pub pfs_type: String,
    /// PFS (node) id.
    pub pfs_id: String,
    /// PFS label.
    pub label: String,
    /// The spans received for this node.
    pub links: Vec<SLink>,
}

/// An `SLink` line: one span received for a node.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SLink {
    /// The span transaction's msgid (hex as printed).
    pub msgid: String,
    /// Distance as received.
    pub dist: u32,
    /// The link it came in on (a socket number for DragonFly).
    pub via: String,
    /// Its relays to other links.
    pub relays: Vec<Relay>,
}

/// A `Relay-out` line.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Relay {
    /// The relayed span's msgid on the outgoing link.
    pub msgid: String,
    /// The link it is relayed to.
    pub via: String,
}

/// `"X (label)"` split into `X` and `label`: the label runs from the first `" ("` to the last
/// `)`, so labels holding spaces or parentheses survive.
fn split_label(s: &str) -> Option<(&str, &str)> {
    let open = s.find(" (")?;
    let rest = &s[open + 2..];
    let close = rest.rfind(')')?;
    if !rest[close + 1..].trim().is_empty() {
        return None;
    }
    Some((&s[..open], &rest[..close]))
}

fn parse_cluster(line: &str) -> Option<Cluster> {
    let rest = line.strip_prefix("Cluster ")?;
    let (head, label) = split_label(rest)?;
    let mut it = head.split_whitespace();
    let (peer_type, peer_id) = (it.next()?, it.next()?);
    if it.next().is_some() {
        return None;
    }
    Some(Cluster {
        peer_type: peer_type.into(),
        peer_id: peer_id.into(),
        label: label.into(),
        nodes: Vec::new(),
    })
}

fn parse_node(line: &str) -> Option<Node> {
    let rest = line.trim_start_matches([' ', '\t']).strip_prefix("Node ")?;
    let (head, label) = split_label(rest)?;
    let mut it = head.split_whitespace();
    let (pfs_type, pfs_id) = (it.next()?, it.next()?);
    if it.next().is_some() {
        return None;
    }
    Some(Node {
        pfs_type: pfs_type.into(),
        pfs_id: pfs_id.into(),
        label: label.into(),
        links: Vec::new(),
    })
}

fn parse_slink(line: &str) -> Option<SLink> {
    let rest = line.trim_start().strip_prefix("SLink msgid ")?;
    let mut it = rest.split_whitespace();
    let msgid = it.next()?;
    let dist = it.next()?.strip_prefix("dist=")?.parse().ok()?;
    if it.next()? != "via" {
        return None;
    }
    let via = it.next()?;
    if it.next().is_some() {
        return None;
    }
    Some(SLink {
        msgid: msgid.into(),
        dist,
        via: via.into(),
        relays: Vec::new(),
    })
}

fn parse_relay(line: &str) -> Option<Relay> {
    let rest = line.trim_start().strip_prefix("Relay-out msgid ")?;
    let mut it = rest.split_whitespace();
    let msgid = it.next()?;
    if it.next()? != "via" {
        return None;
    }
    let via = it.next()?;
    if it.next().is_some() {
        return None;
    }
    Some(Relay {
        msgid: msgid.into(),
        via: via.into(),
    })
}

/// Parses `tree` output. Never fails: lines that do not fit (or come before the `Cluster`
/// or `Node` they would belong to) go to [`Tree::unparsed`].
pub fn parse(text: &str) -> Tree {
    let mut t = Tree::default();
    for raw in text.lines() {
        let line = raw.trim_end_matches('\r');
        if line.trim().is_empty() {
            continue;
        }
        let placed = if let Some(c) = parse_cluster(line) {
            t.clusters.push(c);
            true
        } else if let Some(n) = parse_node(line) {
            t.clusters.last_mut().map(|c| c.nodes.push(n)).is_some()
        } else if let Some(l) = parse_slink(line) {
            t.clusters
                .last_mut()
                .and_then(|c| c.nodes.last_mut())
                .map(|n| n.links.push(l))
                .is_some()
        } else if let Some(r) = parse_relay(line) {
            t.clusters
                .last_mut()
                .and_then(|c| c.nodes.last_mut())
                .and_then(|n| n.links.last_mut())
                .map(|l| l.relays.push(r))
                .is_some()
        } else {
            false
        };
        if !placed {
            t.unparsed.push(line.to_string());
        }
    }
    t
}

/// `s` escaped for a double-quoted DOT string.
pub fn dot_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '"' | '\\' => {
                out.push('\\');
                out.push(c);
            }
            '\n' => out.push_str("\\n"),
            c if c.is_control() => {
                let _ = write!(out, "\\x{:02x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out
}

/// The tree as a Graphviz digraph; `self_label` names the peer that printed it.
pub fn to_dot(tree: &Tree, self_label: &str) -> String {
    let mut s = String::new();
    let e = dot_escape;
    s.push_str("digraph dmsg {\n  rankdir=LR;\n");
    let _ = writeln!(s, "  \"self\" [label=\"{}\", shape=box];", e(self_label));
    let mut links_seen: Vec<&str> = Vec::new();
    for (i, c) in tree.clusters.iter().enumerate() {
        let _ = writeln!(s, "  subgraph \"cluster_{i}\" {{");
        let _ = writeln!(
            s,
            "    label=\"{} {} ({})\";",
            e(&c.peer_type),
            e(&c.peer_id),
            e(&c.label)
        );
        for n in &c.nodes {
            let _ = writeln!(
                s,
                "    \"{}/{}\" [label=\"{}\\n{} {}\"];",
                e(&c.peer_id),
                e(&n.pfs_id),
                e(&n.label),
                e(&n.pfs_type),
                e(&n.pfs_id)
            );
        }
        s.push_str("  }\n");
        for n in &c.nodes {
            let v = format!("{}/{}", e(&c.peer_id), e(&n.pfs_id));
            for l in &n.links {
                let _ = writeln!(
                    s,
                    "  \"self\" -> \"{v}\" [label=\"via link {} dist {}\\nmsgid {}\"];",
                    e(&l.via),
                    l.dist,
                    e(&l.msgid)
                );
                for r in &l.relays {
                    if !links_seen.contains(&r.via.as_str()) {
                        links_seen.push(&r.via);
                        let _ =
                            writeln!(s, "  \"link {}\" [shape=ellipse, style=dashed];", e(&r.via));
                    }
                    let _ = writeln!(
                        s,
                        "  \"{v}\" -> \"link {}\" [style=dashed, label=\"relayed\\nmsgid {}\"];",
                        e(&r.via),
                        e(&r.msgid)
                    );
                }
            }
        }
    }
    for u in &tree.unparsed {
        let _ = writeln!(s, "  // unparsed: {}", u.replace(['\n', '\r'], " "));
    }
    s.push_str("}\n");
    s
}

/// True when `text` looks like a DOT graph already (what a peer's own `dot` command prints).
pub fn is_dot(text: &str) -> bool {
    let t = text.trim_start();
    ["digraph", "graph", "strict"]
        .iter()
        .any(|k| t.starts_with(k))
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "Cluster HAMMER2 11111111-2222-3333-4444-555555555555 (cpeer-cluster)\n    Node 08 66666666-7777-8888-9999-aaaaaaaaaaaa (cpeer-pfs)\n\tSLink msgid 00007f0ea0001840 dist=0 via 4\n\t    Relay-out msgid 00007f5bc80016e0 via 5\n";

    #[test]
    fn parses_dragonfly_tree() {
        let t = parse(TEXT);
        assert!(t.unparsed.is_empty());
        assert_eq!(t.clusters.len(), 1);
        let c = &t.clusters[0];
        assert_eq!(
            (c.peer_type.as_str(), c.label.as_str()),
            ("HAMMER2", "cpeer-cluster")
        );
        let n = &c.nodes[0];
        assert_eq!((n.pfs_type.as_str(), n.label.as_str()), ("08", "cpeer-pfs"));
        assert_eq!(n.links[0].dist, 0);
        assert_eq!(n.links[0].via, "4");
        assert_eq!(n.links[0].relays[0].via, "5");
    }

    #[test]
    fn labels_with_spaces_and_parens_and_junk_lines() {
        let t = parse("Cluster ROUTER 1 (a (b) c)\n    Node 01 2 ()\nwhat is this\n\tSLink msgid x dist=q via 1\n");
        assert_eq!(t.clusters[0].label, "a (b) c");
        assert_eq!(t.clusters[0].nodes[0].label, "");
        assert_eq!(t.unparsed, ["what is this", "\tSLink msgid x dist=q via 1"]);
        let dot = to_dot(&t, "h\"x");
        assert!(dot.contains("label=\"h\\\"x\""));
        assert!(dot.contains("// unparsed: what is this"));
    }

    #[test]
    fn orphan_lines_are_unparsed() {
        let t = parse("    Node 01 2 (x)\n");
        assert!(t.clusters.is_empty());
        assert_eq!(t.unparsed.len(), 1);
    }

    #[test]
    fn empty_tree_is_a_graph_with_self_only() {
        let d = to_dot(&parse(""), "hub");
        assert_eq!(
            d,
            "digraph dmsg {\n  rankdir=LR;\n  \"self\" [label=\"hub\", shape=box];\n}\n"
        );
        assert!(is_dot(&d));
        assert!(!is_dot("Unrecognized command: dot\n"));
    }
}

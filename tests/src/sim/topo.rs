//! Topologies (undirected graphs over node indices) and the BFS truth.

use std::collections::VecDeque;

use super::rng::Rng;

/// A topology: `n` nodes and undirected edges.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Topology {
    /// Its name (for messages).
    pub name: String,
    /// Node count.
    pub n: usize,
    /// Edges `(a, b)`, `a != b`, no duplicates.
    pub edges: Vec<(usize, usize)>,
}

impl Topology {
    fn new(name: impl Into<String>, n: usize) -> Topology {
        Topology {
            name: name.into(),
            n,
            edges: Vec::new(),
        }
    }

    fn add(&mut self, a: usize, b: usize) {
        let e = (a.min(b), a.max(b));
        if a != b && !self.edges.contains(&e) {
            self.edges.push(e);
        }
    }

    /// 0 - 1 - 2 - ... - n-1.
    pub fn line(n: usize) -> Topology {
        let mut t = Topology::new(format!("line({n})"), n);
        for i in 1..n {
            t.add(i - 1, i);
        }
        t
    }

    /// A line closed into a ring.
    pub fn ring(n: usize) -> Topology {
        let mut t = Topology::line(n);
        t.name = format!("ring({n})");
        if n > 2 {
            t.add(n - 1, 0);
        }
        t
    }

    /// Node 0 is the hub, every other node a leaf.
    pub fn star(n: usize) -> Topology {
        let mut t = Topology::new(format!("star({n})"), n);
        for i in 1..n {
            t.add(0, i);
        }
        t
    }

    /// A random connected graph: a random spanning tree plus `extra` random edges.
    pub fn mesh(n: usize, extra: usize, rng: &mut Rng) -> Topology {
        let mut t = Topology::new(format!("mesh({n},+{extra})"), n);
        let mut order: Vec<usize> = (0..n).collect();
        rng.shuffle(&mut order);
        for i in 1..n {
            let j = rng.below(i);
            t.add(order[i], order[j]);
        }
        let mut tries = 0;
        let target = t.edges.len() + extra;
        while t.edges.len() < target && tries < extra * 20 + 20 {
            tries += 1;
            let a = rng.below(n);
            let b = rng.below(n);
            t.add(a, b);
        }
        t
    }

    /// A random connected graph where no node has more than `max_deg` links (a random
    /// tree grown under the bound, plus extra edges under the bound).
    pub fn bounded_mesh(n: usize, extra: usize, max_deg: usize, rng: &mut Rng) -> Topology {
        let mut t = Topology::new(format!("mesh({n},+{extra},deg<={max_deg})"), n);
        let mut deg = vec![0usize; n];
        let mut order: Vec<usize> = (0..n).collect();
        rng.shuffle(&mut order);
        for i in 1..n {
            loop {
                let j = order[rng.below(i)];
                if deg[j] < max_deg {
                    t.add(order[i], j);
                    deg[order[i]] += 1;
                    deg[j] += 1;
                    break;
                }
            }
        }
        let mut added = 0;
        let mut tries = 0;
        while added < extra && tries < extra * 50 + 50 {
            tries += 1;
            let a = rng.below(n);
            let b = rng.below(n);
            let before = t.edges.len();
            if a != b && deg[a] < max_deg && deg[b] < max_deg {
                t.add(a, b);
                if t.edges.len() > before {
                    deg[a] += 1;
                    deg[b] += 1;
                    added += 1;
                }
            }
        }
        t
    }

    /// Two levels of hubs: a core ring of `hubs` hubs, each with `per_hub` leaves, and
    /// every leaf connected to one extra hub with probability 1/3 (dual-homed).
    pub fn two_level(hubs: usize, per_hub: usize, rng: &mut Rng) -> Topology {
        let n = hubs + hubs * per_hub;
        let mut t = Topology::new(format!("hubs({hubs}x{per_hub})"), n);
        for h in 0..hubs {
            if hubs > 1 {
                t.add(h, (h + 1) % hubs);
            }
            for l in 0..per_hub {
                let leaf = hubs + h * per_hub + l;
                t.add(h, leaf);
                if hubs > 1 && rng.below(3) == 0 {
                    let other = (h + 1 + rng.below(hubs - 1)) % hubs;
                    t.add(other, leaf);
                }
            }
        }
        t
    }

    /// Largest degree.
    pub fn max_degree(&self) -> usize {
        let mut deg = vec![0usize; self.n];
        for &(a, b) in &self.edges {
            deg[a] += 1;
            deg[b] += 1;
        }
        deg.into_iter().max().unwrap_or(0)
    }
}

/// Hop distances from `src` over `edges` (`None`: unreachable).
pub fn bfs(n: usize, edges: &[(usize, usize)], src: usize) -> Vec<Option<u32>> {
    let mut adj = vec![Vec::new(); n];
    for &(a, b) in edges {
        adj[a].push(b);
        adj[b].push(a);
    }
    let mut dist = vec![None; n];
    let mut q = VecDeque::new();
    dist[src] = Some(0);
    q.push_back(src);
    while let Some(u) = q.pop_front() {
        let d = dist[u].unwrap_or(0);
        for &v in &adj[u] {
            if dist[v].is_none() {
                dist[v] = Some(d + 1);
                q.push_back(v);
            }
        }
    }
    dist
}

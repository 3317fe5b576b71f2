//! Small helpers: a fast hasher for integer and short-string keys, natural ordering of names,
//! and duration formatting.

use std::cmp::Ordering;
use std::collections::{HashMap, HashSet};
use std::hash::{BuildHasherDefault, Hasher};

/// The multiply-rotate hash of rustc (FxHash): fast, not DoS-resistant, fine for keys that come
/// from a snapshot the user chose to plan.
#[derive(Default, Clone, Copy)]
pub struct FxHasher {
    hash: u64,
}

const SEED: u64 = 0x51_7c_c1_b7_27_22_0a_95;

impl FxHasher {
    #[inline]
    fn add(&mut self, word: u64) {
        self.hash = (self.hash.rotate_left(5) ^ word).wrapping_mul(SEED);
    }
}

impl Hasher for FxHasher {
    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for c in &mut chunks {
            let mut w = [0u8; 8];
            w.copy_from_slice(c);
            self.add(u64::from_le_bytes(w));
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            let mut w = [0u8; 8];
            w[..rest.len()].copy_from_slice(rest);
            self.add(u64::from_le_bytes(w));
        }
    }
    #[inline]
    fn write_u8(&mut self, i: u8) {
        self.add(u64::from(i));
    }
    #[inline]
    fn write_u32(&mut self, i: u32) {
        self.add(u64::from(i));
    }
    #[inline]
    fn write_u64(&mut self, i: u64) {
        self.add(i);
    }
    #[inline]
    fn write_usize(&mut self, i: usize) {
        self.add(i as u64);
    }
    #[inline]
    fn finish(&self) -> u64 {
        self.hash
    }
}

/// HashMap with [`FxHasher`].
pub type FxHashMap<K, V> = HashMap<K, V, BuildHasherDefault<FxHasher>>;
/// HashSet with [`FxHasher`].
pub type FxHashSet<K> = HashSet<K, BuildHasherDefault<FxHasher>>;

/// "No index" marker in `u32` index vectors.
pub const NONE: u32 = u32::MAX;

/// Natural order: `worker2` before `worker10`.
pub fn natural_cmp(a: &str, b: &str) -> Ordering {
    let (mut ai, mut bi) = (a.as_bytes(), b.as_bytes());
    loop {
        match (ai.first(), bi.first()) {
            (None, None) => return a.cmp(b),
            (None, Some(_)) => return Ordering::Less,
            (Some(_), None) => return Ordering::Greater,
            (Some(x), Some(y)) if x.is_ascii_digit() && y.is_ascii_digit() => {
                let an = ai.iter().take_while(|c| c.is_ascii_digit()).count();
                let bn = bi.iter().take_while(|c| c.is_ascii_digit()).count();
                let (ad, bd) = (&ai[..an], &bi[..bn]);
                let at = trim_zeros(ad);
                let bt = trim_zeros(bd);
                let ord = at.len().cmp(&bt.len()).then_with(|| at.cmp(bt));
                if ord != Ordering::Equal {
                    return ord;
                }
                ai = &ai[an..];
                bi = &bi[bn..];
            }
            (Some(x), Some(y)) => {
                if x != y {
                    return x.cmp(y);
                }
                ai = &ai[1..];
                bi = &bi[1..];
            }
        }
    }
}

fn trim_zeros(d: &[u8]) -> &[u8] {
    let n = d.iter().take_while(|c| **c == b'0').count();
    &d[n.min(d.len().saturating_sub(1))..]
}

/// `1h05m`, `12m30s`, `45s`.
pub fn format_seconds(s: u64) -> String {
    let (h, m, sec) = (s / 3600, (s % 3600) / 60, s % 60);
    if h > 0 {
        format!("{h}h{m:02}m")
    } else if m > 0 {
        format!("{m}m{sec:02}s")
    } else {
        format!("{sec}s")
    }
}

/// Up to `max` names, then "and N more".
pub fn list_names<S: AsRef<str>>(names: &[S], max: usize) -> String {
    let shown: Vec<&str> = names.iter().take(max).map(|s| s.as_ref()).collect();
    let mut out = shown.join(", ");
    if names.len() > max {
        out.push_str(&format!(" and {} more", names.len() - max));
    }
    out
}

/// `1 pod` / `2 pods`.
pub fn plural(n: usize, word: &str) -> String {
    if n == 1 {
        format!("1 {word}")
    } else {
        format!("{n} {word}s")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn natural_order() {
        let mut v = vec!["w10", "w2", "w1", "a", "w02"];
        v.sort_by(|a, b| natural_cmp(a, b));
        assert_eq!(v, ["a", "w1", "w02", "w2", "w10"]);
    }

    #[test]
    fn formats() {
        assert_eq!(format_seconds(3900), "1h05m");
        assert_eq!(format_seconds(750), "12m30s");
        assert_eq!(format_seconds(45), "45s");
        assert_eq!(list_names(&["a", "b", "c"], 2), "a, b and 1 more");
        assert_eq!(plural(2, "pod"), "2 pods");
    }
}

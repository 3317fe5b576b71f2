//! Allocation-free JSON pointer lookups for the hot paths.
//!
//! `serde_json::Value::pointer` allocates a `String` for every token of the path; the simulator
//! looks up fields of every object it sees on every event, so that cost shows up in profiles. [`Ptr::ptr`]
//! borrows the tokens instead and falls back to `pointer` only for escaped tokens (`~0`, `~1`).

use serde_json::{Map, Value};

/// Maps up to this size are searched linearly: cheaper than hashing the key (serde_json's maps
/// hash with SipHash), and most Kubernetes objects are small maps.
const LINEAR: usize = 16;

/// `m.get(key)`, without hashing the key when the map is small.
#[inline]
pub fn get<'a>(m: &'a Map<String, Value>, key: &str) -> Option<&'a Value> {
    if m.len() <= LINEAR {
        // Length and first byte first: most keys differ there, without a call to memcmp.
        let kb = key.as_bytes();
        m.iter()
            .find(|(k, _)| {
                let b = k.as_bytes();
                b.len() == kb.len() && b.first() == kb.first() && b == kb
            })
            .map(|(_, v)| v)
    } else {
        m.get(key)
    }
}

/// A deterministic, fast hasher for maps keyed by short strings on hot paths: eight bytes per
/// step (FNV-1a takes one; the standard SipHash costs more than a short lookup), finished with
/// MurmurHash3's mixer so that every input bit reaches the low bits hashbrown picks buckets
/// with. It serves the large key -> object maps of the components (pods by namespace and
/// name), where a `BTreeMap` lookup cost a dozen string comparisons, each a cache miss.
/// Runs stay deterministic only if iteration order never matters: whoever walks such a map
/// sorts first.
#[derive(Clone, Copy, Default)]
pub struct Fast(u64);

const FAST_K: u64 = 0xf135_7aea_2e62_a9c5;

impl Fast {
    #[inline]
    fn add(&mut self, word: u64) {
        self.0 = (self.0 ^ word).wrapping_mul(FAST_K).rotate_left(23);
    }
}

impl std::hash::Hasher for Fast {
    #[inline]
    fn finish(&self) -> u64 {
        let mut x = self.0;
        x ^= x >> 33;
        x = x.wrapping_mul(0xff51_afd7_ed55_8ccd);
        x ^= x >> 33;
        x = x.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
        x ^ (x >> 33)
    }

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
            // The length keeps "a" and "a\0" apart.
            self.add(u64::from_le_bytes(w) ^ ((rest.len() as u64) << 56));
        }
    }

    #[inline]
    fn write_u8(&mut self, i: u8) {
        self.add(u64::from(i) | 0x100);
    }

    #[inline]
    fn write_u64(&mut self, i: u64) {
        self.add(i);
    }

    #[inline]
    fn write_usize(&mut self, i: usize) {
        self.add(i as u64);
    }
}

/// `HashMap`/`HashSet` state for [`Fast`].
pub type FastBuild = std::hash::BuildHasherDefault<Fast>;

/// A map on [`Fast`] hashing.
pub type FastMap<K, V> = std::collections::HashMap<K, V, FastBuild>;

/// A set on [`Fast`] hashing.
pub type FastSet<K> = std::collections::HashSet<K, FastBuild>;

/// A JSON object from `"key" => value` pairs, each value moved in with `Value::from`.
///
/// `serde_json::json!` serializes every interpolated expression again (`to_value(&expr)`): for a
/// `Value`, a `Map` or a `Vec<Value>` that is a deep copy through the serializer, which showed up
/// as a tenth of the simulator's time in profiles. Use this where the values are already JSON.
macro_rules! object {
    () => {
        serde_json::Value::Object(serde_json::Map::new())
    };
    ($($k:expr => $v:expr),+ $(,)?) => {{
        let mut m = serde_json::Map::with_capacity(0 $(+ { let _ = stringify!($k); 1 })+);
        $( m.insert(String::from($k), serde_json::Value::from($v)); )+
        serde_json::Value::Object(m)
    }};
}
pub(crate) use object;

pub trait Ptr {
    /// Same result as [`Value::pointer`].
    fn ptr(&self, path: &str) -> Option<&Self>;
}

impl Ptr for Value {
    fn ptr(&self, path: &str) -> Option<&Value> {
        if path.is_empty() {
            return Some(self);
        }
        let rest = path.strip_prefix('/')?;
        // Byte searches: the paths are short, and `str::split(char)` costs more in setting up
        // its searcher than in searching (a tenth of the simulator's instructions went there).
        if rest.as_bytes().contains(&b'~') {
            return self.pointer(path);
        }
        let mut cur = self;
        for token in tokens(rest) {
            cur = match cur {
                Value::Object(m) => get(m, token)?,
                Value::Array(a) => a.get(array_index(token)?)?,
                _ => return None,
            };
        }
        Some(cur)
    }
}

/// A JSON pointer token as a list index (RFC 6901: digits, no leading zero).
pub(crate) fn array_index(token: &str) -> Option<usize> {
    if token.len() > 1 && token.starts_with('0') || token.starts_with('+') {
        return None;
    }
    token.parse().ok()
}

/// The `/`-separated tokens of a path (without its leading `/`), found byte by byte.
pub(crate) fn tokens(rest: &str) -> impl Iterator<Item = &str> {
    let mut left = Some(rest);
    std::iter::from_fn(move || {
        let s = left?;
        match s.as_bytes().iter().position(|b| *b == b'/') {
            Some(i) => {
                left = Some(&s[i + 1..]);
                Some(&s[..i])
            }
            None => {
                left = None;
                Some(s)
            }
        }
    })
}

/// Field lookups without hashing: `serde_json`'s own `Value::get` hashes the key with SipHash
/// on every call, which was a twentieth of the simulator's instructions.
pub trait Field {
    type Out;
    /// Same result as `Value::get` with a string key.
    fn field(&self, key: &str) -> Option<&Self::Out>;
}

impl Field for Value {
    type Out = Value;
    #[inline]
    fn field(&self, key: &str) -> Option<&Value> {
        match self {
            Value::Object(m) => get(m, key),
            _ => None,
        }
    }
}

impl Field for Map<String, Value> {
    type Out = Value;
    #[inline]
    fn field(&self, key: &str) -> Option<&Value> {
        get(self, key)
    }
}

/// What the components read of JSON, for both `serde_json::Value` (objects being built or
/// patched) and [`crate::tree::Tree`] (stored objects): helpers generic over it serve both.
/// Concrete types keep their own inherent methods of the same names.
pub trait Json: Ptr + Field<Out = Self> + PartialEq + serde::Serialize + Sized {
    fn as_str(&self) -> Option<&str>;
    fn as_i64(&self) -> Option<i64>;
    fn as_u64(&self) -> Option<u64>;
    fn as_f64(&self) -> Option<f64>;
    fn as_bool(&self) -> Option<bool>;
    fn is_null(&self) -> bool;
    fn is_object(&self) -> bool;
    fn as_array(&self) -> Option<&[Self]>;
    fn number(&self) -> Option<serde_json::Number>;
    /// An object's entries in order; `None` for anything else.
    fn entries(&self) -> Option<impl Iterator<Item = (&str, &Self)>>;
    /// A deep copy as a `serde_json::Value`.
    fn to_value(&self) -> Value;
    /// `self == other`, comparing objects entry by entry when their keys come in the same order.
    fn same(&self, other: &Self) -> bool;
}

impl Json for Value {
    fn as_str(&self) -> Option<&str> {
        Value::as_str(self)
    }
    fn as_i64(&self) -> Option<i64> {
        Value::as_i64(self)
    }
    fn as_u64(&self) -> Option<u64> {
        Value::as_u64(self)
    }
    fn as_f64(&self) -> Option<f64> {
        Value::as_f64(self)
    }
    fn as_bool(&self) -> Option<bool> {
        Value::as_bool(self)
    }
    fn is_null(&self) -> bool {
        Value::is_null(self)
    }
    fn is_object(&self) -> bool {
        Value::is_object(self)
    }
    fn as_array(&self) -> Option<&[Value]> {
        Value::as_array(self).map(Vec::as_slice)
    }
    fn number(&self) -> Option<serde_json::Number> {
        match self {
            Value::Number(n) => Some(n.clone()),
            _ => None,
        }
    }
    fn entries(&self) -> Option<impl Iterator<Item = (&str, &Value)>> {
        Value::as_object(self).map(|m| m.iter().map(|(k, v)| (k.as_str(), v)))
    }
    fn to_value(&self) -> Value {
        self.clone()
    }
    fn same(&self, other: &Value) -> bool {
        same(self, other)
    }
}

/// `a == b` for JSON values, comparing maps entry by entry when their keys come in the same
/// order (the usual case: versions of one object), instead of hashing every key of one map to
/// find it in the other.
pub fn same(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            if x.len() != y.len() {
                return false;
            }
            let mut ordered = true;
            for ((ka, va), (kb, vb)) in x.iter().zip(y.iter()) {
                if ka != kb {
                    ordered = false;
                    break;
                }
                if !same(va, vb) {
                    return false;
                }
            }
            ordered || x == y
        }
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y.iter()).all(|(a, b)| same(a, b))
        }
        _ => a == b,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn fast_hash(h: impl std::hash::Hash) -> u64 {
        use std::hash::BuildHasher;
        FastBuild::default().hash_one(h)
    }

    #[test]
    fn fast_hash_tells_near_keys_apart() {
        // Tails shorter than a word, zero bytes, word boundaries, the pair split.
        let keys: Vec<(String, String)> = vec![
            ("a".into(), "".into()),
            ("a\0".into(), "".into()),
            ("".into(), "a".into()),
            ("ab".into(), "c".into()),
            ("a".into(), "bc".into()),
            ("abcdefgh".into(), "".into()),
            ("abcdefg".into(), "h".into()),
            ("abcdefgh".into(), "\0".into()),
            ("team-01".into(), "web-7d9f-abcde".into()),
            ("team-01".into(), "web-7d9f-abcdf".into()),
            ("team-10".into(), "web-7d9f-abcde".into()),
        ];
        let hashes: std::collections::BTreeSet<u64> = keys.iter().map(fast_hash).collect();
        assert_eq!(hashes.len(), keys.len());
        // Deterministic: the same key, the same hash (runs must not depend on a random seed).
        assert_eq!(fast_hash(&keys[8]), fast_hash(keys[8].clone()));
    }

    #[test]
    fn fast_hash_spreads_names_over_buckets() {
        // hashbrown picks the bucket from the low bits: pod names that differ in one character
        // must not pile up in a few buckets.
        let mut buckets = [0u32; 64];
        for i in 0..6400 {
            let key = ("team-01".to_string(), format!("web-{i:05}"));
            buckets[(fast_hash(&key) & 63) as usize] += 1;
        }
        let (min, max) = (buckets.iter().min().unwrap(), buckets.iter().max().unwrap());
        assert!(*min > 50 && *max < 150, "buckets from {min} to {max}");
    }

    #[test]
    fn object_builds_what_json_builds() {
        let inner = json!({"a": [1, {"b": null}], "c": "d"});
        let list = vec![json!(1), json!("x")];
        let mut map = Map::new();
        map.insert("k".into(), json!(true));
        let built = object! {
            "inner" => inner.clone(),
            "list" => list.clone(),
            "map" => map.clone(),
            "s" => "text",
            "owned" => String::from("o"),
            "n" => 7i64,
            "b" => false,
            "none" => Value::Null,
        };
        let expected = json!({"inner": inner, "list": list, "map": map, "s": "text",
            "owned": "o", "n": 7, "b": false, "none": null});
        assert_eq!(
            serde_json::to_string(&built).unwrap(),
            serde_json::to_string(&expected).unwrap()
        );
        assert_eq!(object! {}, json!({}));
    }

    #[test]
    fn field_and_same_agree_with_serde() {
        let v = json!({"a": 1, "b": {"c": [1, {"d": null}]}, "e": "x"});
        for k in ["a", "b", "e", "missing", ""] {
            assert_eq!(v.field(k), v.get(k), "key {k:?}");
            assert_eq!(v.as_object().unwrap().field(k), v.get(k), "key {k:?}");
        }
        assert_eq!(json!([1]).field("a"), None);
        let reordered = json!({"e": "x", "b": {"c": [1, {"d": null}]}, "a": 1});
        let changed = json!({"a": 1, "b": {"c": [1, {"d": 0}]}, "e": "x"});
        let longer = json!({"a": 1, "b": {"c": [1, {"d": null}]}, "e": "x", "f": 2});
        for (x, y) in [
            (&v, &v),
            (&v, &reordered),
            (&v, &changed),
            (&v, &longer),
            (&changed, &reordered),
        ] {
            assert_eq!(same(x, y), x == y);
            assert_eq!(same(y, x), y == x);
        }
        assert!(same(&v, &reordered));
        assert!(!same(&v, &changed));
    }

    #[test]
    fn tokens_split_like_str_split() {
        for p in ["a", "a/b", "a//b", "", "/", "a/", "/a", "ä/ö/ü"] {
            assert_eq!(
                tokens(p).collect::<Vec<_>>(),
                p.split('/').collect::<Vec<_>>(),
                "{p:?}"
            );
        }
    }

    #[test]
    fn agrees_with_serde_pointer() {
        let v = json!({"a": {"b/c": 1, "d~e": 2, "": 3, "list": [10, {"x": "y"}]}, "n": null});
        for p in [
            "",
            "/",
            "/a",
            "/a/b~1c",
            "/a/d~0e",
            "/a/d~0e/",
            "/a/~1",
            "/a/",
            "/a/list",
            "/a/list/0",
            "/a/list/1/x",
            "/a/list/01",
            "/a/list/+1",
            "/a/list/2",
            "/a/list/x",
            "/n",
            "/n/x",
            "a",
            "/missing",
        ] {
            assert_eq!(v.ptr(p), v.pointer(p), "path {p:?}");
            let t = crate::tree::Tree::from(&v);
            assert_eq!(
                t.ptr(p).map(crate::tree::Tree::to_value).as_ref(),
                v.pointer(p),
                "tree, path {p:?}"
            );
        }
    }
}

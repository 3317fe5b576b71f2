//! Allocation-free JSON pointer lookups for the hot paths.
//!
//! `serde_json::Value::pointer` allocates a `String` for every token of the path; the simulator
//! looks up fields of every object it sees on every event, so that cost shows up in profiles. [`Ptr::ptr`]
//! borrows the tokens instead and falls back to `pointer` only for escaped tokens (`~0`, `~1`).

use serde_json::Value;

pub trait Ptr {
    /// Same result as [`Value::pointer`].
    fn ptr(&self, path: &str) -> Option<&Value>;
}

impl Ptr for Value {
    fn ptr(&self, path: &str) -> Option<&Value> {
        if path.is_empty() {
            return Some(self);
        }
        let rest = path.strip_prefix('/')?;
        if rest.contains('~') {
            return self.pointer(path);
        }
        let mut cur = self;
        for token in rest.split('/') {
            cur = match cur {
                Value::Object(m) => m.get(token)?,
                Value::Array(a) => {
                    if token.len() > 1 && token.starts_with('0') || token.starts_with('+') {
                        return None;
                    }
                    a.get(token.parse::<usize>().ok()?)?
                }
                _ => return None,
            };
        }
        Some(cur)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn agrees_with_serde_pointer() {
        let v = json!({"a": {"b/c": 1, "d~e": 2, "": 3, "list": [10, {"x": "y"}]}, "n": null});
        for p in [
            "",
            "/",
            "/a",
            "/a/b~1c",
            "/a/d~0e",
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
        }
    }
}

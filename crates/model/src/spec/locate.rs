//! Finding where a field is in YAML source text.
//!
//! serde_yaml keeps no spans, but it attaches the position of the current event to any error a
//! `Deserialize` implementation raises. [`locate`] walks the document along a path, skipping
//! every other value, and raises an error as soon as it reaches the path's end: the error's
//! location is the position of the key (or sequence item) the path names. This works for block
//! and flow style alike, with anchors, quotes and comments, because it is serde_yaml's own parser
//! that walks.

use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};

use super::validate::PathSeg;

const FOUND: &str = "\u{0}theseus-located\u{0}";

struct Seek<'a>(&'a [PathSeg]);

impl<'de> DeserializeSeed<'de> for Seek<'_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        if self.0.is_empty() {
            return Err(de::Error::custom(FOUND));
        }
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Seek<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any YAML value")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let Some((PathSeg::Key(want), rest)) = self.0.split_first() else {
            while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
            return Ok(());
        };
        while let Some(key) = map.next_key_seed(KeySeed {
            want,
            terminal: rest.is_empty(),
        })? {
            if key.0.as_deref() == Some(want.as_str()) {
                return map.next_value_seed(Seek(rest));
            }
            map.next_value::<IgnoredAny>()?;
        }
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let Some((PathSeg::Index(want), rest)) = self.0.split_first() else {
            while seq.next_element::<IgnoredAny>()?.is_some() {}
            return Ok(());
        };
        for _ in 0..*want {
            if seq.next_element::<IgnoredAny>()?.is_none() {
                return Ok(());
            }
        }
        if rest.is_empty() {
            seq.next_element_seed(RaiseHere)?;
        } else {
            seq.next_element_seed(Seek(rest))?;
        }
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(())
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<(), E> {
        Ok(())
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<(), E> {
        Ok(())
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> Result<(), E> {
        Ok(())
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<(), E> {
        Ok(())
    }
    fn visit_str<E: de::Error>(self, _: &str) -> Result<(), E> {
        Ok(())
    }
    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        Ok(())
    }
    fn visit_none<E: de::Error>(self) -> Result<(), E> {
        Ok(())
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
    fn visit_enum<A: de::EnumAccess<'de>>(self, data: A) -> Result<(), A::Error> {
        let (IgnoredAny, variant) = data.variant::<IgnoredAny>()?;
        de::VariantAccess::newtype_variant::<IgnoredAny>(variant)?;
        Ok(())
    }
}

/// Raises the marker error from inside the value, so that its location is the value's own.
struct RaiseHere;

impl<'de> DeserializeSeed<'de> for RaiseHere {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(RaiseHere)
    }
}

impl<'de> Visitor<'de> for RaiseHere {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any YAML value")
    }
    fn visit_bool<E: de::Error>(self, _: bool) -> Result<(), E> {
        Err(E::custom(FOUND))
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<(), E> {
        Err(E::custom(FOUND))
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> Result<(), E> {
        Err(E::custom(FOUND))
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<(), E> {
        Err(E::custom(FOUND))
    }
    fn visit_str<E: de::Error>(self, _: &str) -> Result<(), E> {
        Err(E::custom(FOUND))
    }
    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        Err(E::custom(FOUND))
    }
    fn visit_map<A: MapAccess<'de>>(self, _: A) -> Result<(), A::Error> {
        Err(de::Error::custom(FOUND))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, _: A) -> Result<(), A::Error> {
        Err(de::Error::custom(FOUND))
    }
}

/// A map key as text (keys that are not scalars match nothing).
struct KeyText(Option<String>);

/// Reads a map key; when it is the wanted one at the end of the path, raises the marker error
/// from inside the key's own deserialization, so that the error's location is the key's.
struct KeySeed<'a> {
    want: &'a str,
    terminal: bool,
}

impl<'de> DeserializeSeed<'de> for KeySeed<'_> {
    type Value = KeyText;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<KeyText, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for KeySeed<'_> {
    type Value = KeyText;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a map key")
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<KeyText, E> {
        if self.terminal && v == self.want {
            return Err(E::custom(FOUND));
        }
        Ok(KeyText(Some(v.to_string())))
    }
    fn visit_bool<E: de::Error>(self, v: bool) -> Result<KeyText, E> {
        self.visit_str(&v.to_string())
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<KeyText, E> {
        self.visit_str(&v.to_string())
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<KeyText, E> {
        self.visit_str(&v.to_string())
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<KeyText, E> {
        self.visit_str(&v.to_string())
    }
    fn visit_unit<E: de::Error>(self) -> Result<KeyText, E> {
        Ok(KeyText(None))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut m: A) -> Result<KeyText, A::Error> {
        while m.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(KeyText(None))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut s: A) -> Result<KeyText, A::Error> {
        while s.next_element::<IgnoredAny>()?.is_some() {}
        Ok(KeyText(None))
    }
}

/// Line and column (both 1-based) of the field at `path` in the YAML `source`: the position of its
/// key, or of the sequence item for an index. When the path does not exist, the position of its
/// longest existing prefix. `None` when even the document root cannot be read.
pub fn locate(source: &str, path: &[PathSeg]) -> Option<(usize, usize)> {
    for len in (1..=path.len()).rev() {
        if let Some(pos) = locate_exact(source, &path[..len]) {
            return Some(pos);
        }
    }
    None
}

fn locate_exact(source: &str, path: &[PathSeg]) -> Option<(usize, usize)> {
    let de = serde_yaml::Deserializer::from_str(source);
    match Seek(path).deserialize(de) {
        Err(e) if e.to_string().contains(FOUND) => e.location().map(|l| (l.line(), l.column())),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn path(p: &str) -> Vec<PathSeg> {
        p.split('.')
            .map(|s| match s.parse::<usize>() {
                Ok(i) => PathSeg::Index(i),
                Err(_) => PathSeg::Key(s.to_string()),
            })
            .collect()
    }

    const DOC: &str = "\
apiVersion: theseus.io/v1alpha1  # comment
kind: Migration
spec:
  operation: {upgrade: {targetVersion: v1.13}}
  strategy:
    maxUnavailable: \"120%\"
  probes:
  - name: a
    tcp: {address: x:1}
  - name: b
    interval: 5s
";

    #[test]
    fn finds_keys_in_block_and_flow_style() {
        assert_eq!(
            locate(DOC, &path("spec.strategy.maxUnavailable")),
            Some((6, 5))
        );
        assert_eq!(locate(DOC, &path("kind")), Some((2, 1)));
        assert_eq!(locate(DOC, &path("spec.probes.1.interval")), Some((11, 5)));
        let (line, _) = locate(DOC, &path("spec.operation.upgrade.targetVersion")).unwrap();
        assert_eq!(line, 4);
    }

    #[test]
    fn falls_back_to_the_longest_existing_prefix() {
        assert_eq!(locate(DOC, &path("spec.strategy.zoneByZone")), Some((5, 3)));
        assert_eq!(locate("x: 1", &path("a")), None);
    }
}

//! A read-only reader of bbolt files (etcd's backend and snapshot format), enough to compute what
//! `etcdctl snapshot status` prints: the CRC-32C hash over every bucket's name, keys and values,
//! the revision (the last key of the `key` bucket), the number of keys and the size.
//!
//! Format (bbolt, little endian on the platforms etcd ships for): pages of `page_size` bytes with
//! a 16-byte header (id u64, flags u16, count u16, overflow u32); pages 0 and 1 are meta pages
//! (magic 0xED0CDAED, version 2, page size, root bucket, free list, high-water page id, txid, and a
//! FNV-1a 64 checksum); branch pages hold (pos u32, ksize u32, child u64) elements; leaf pages hold
//! (flags u32, pos u32, ksize u32, vsize u32) elements; a bucket value is (root u64, sequence u64),
//! followed by the bucket's page inline when root is 0.

use std::fs::File;
use std::os::unix::fs::FileExt;

use serde::Serialize;

const MAGIC: u32 = 0xED0C_DAED;
const PAGE_HEADER: usize = 16;
const BRANCH: u16 = 0x01;
const LEAF: u16 = 0x02;
const BUCKET_LEAF: u32 = 0x01;
const MAX_DEPTH: usize = 64;

/// What `etcdctl snapshot status` reports about a database.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DbStatus {
    /// CRC-32C (Castagnoli) of every bucket name, key and value, in order.
    pub hash: u32,
    /// The revision of the last write (the last key of the `key` bucket).
    pub revision: i64,
    /// Keys in all buckets (every revision of every etcd key, plus etcd's own bookkeeping).
    pub total_key: u64,
    /// The database size: the high-water page id times the page size.
    pub total_size: u64,
    pub page_size: u32,
    /// Buckets and their key counts.
    pub buckets: Vec<(String, u64)>,
}

fn u16_at(b: &[u8], off: usize) -> Result<u16, String> {
    b.get(off..off + 2)
        .map(|s| u16::from_le_bytes([s[0], s[1]]))
        .ok_or_else(|| format!("truncated page (offset {off})"))
}

fn u32_at(b: &[u8], off: usize) -> Result<u32, String> {
    b.get(off..off + 4)
        .and_then(|s| s.try_into().ok())
        .map(u32::from_le_bytes)
        .ok_or_else(|| format!("truncated page (offset {off})"))
}

fn u64_at(b: &[u8], off: usize) -> Result<u64, String> {
    b.get(off..off + 8)
        .and_then(|s| s.try_into().ok())
        .map(u64::from_le_bytes)
        .ok_or_else(|| format!("truncated page (offset {off})"))
}

fn fnv64a(data: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in data {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

struct Meta {
    page_size: u32,
    root: u64,
    pgid: u64,
    txid: u64,
}

fn parse_meta(page: &[u8]) -> Result<Meta, String> {
    let m = page
        .get(PAGE_HEADER..PAGE_HEADER + 64)
        .ok_or("truncated meta page")?;
    if u32_at(m, 0)? != MAGIC {
        return Err("bad magic: not a bbolt database".into());
    }
    if u32_at(m, 4)? != 2 {
        return Err(format!("unsupported bbolt version {}", u32_at(m, 4)?));
    }
    if fnv64a(&m[..56]) != u64_at(m, 56)? {
        return Err("meta page checksum mismatch".into());
    }
    Ok(Meta {
        page_size: u32_at(m, 8)?,
        root: u64_at(m, 16)?,
        pgid: u64_at(m, 40)?,
        txid: u64_at(m, 48)?,
    })
}

/// Called with (key, value, is a nested bucket) for every element of a bucket.
type Visit<'f> = dyn FnMut(&[u8], &[u8], bool) -> Result<(), String> + 'f;

struct Reader<'a> {
    file: &'a File,
    len: u64,
    page_size: u64,
}

impl Reader<'_> {
    fn read(&self, off: u64, len: usize) -> Result<Vec<u8>, String> {
        if off.checked_add(len as u64).is_none_or(|end| end > self.len) {
            return Err(format!(
                "page at offset {off} (+{len} bytes) lies beyond the database's end {}",
                self.len
            ));
        }
        let mut buf = vec![0u8; len];
        self.file
            .read_exact_at(&mut buf, off)
            .map_err(|e| format!("read at offset {off}: {e}"))?;
        Ok(buf)
    }

    fn page(&self, pgid: u64) -> Result<Vec<u8>, String> {
        let off = pgid
            .checked_mul(self.page_size)
            .ok_or_else(|| format!("page id {pgid} out of range"))?;
        let head = self.read(off, PAGE_HEADER)?;
        if u64_at(&head, 0)? != pgid {
            return Err(format!(
                "page {pgid} has id {} in its header",
                u64_at(&head, 0)?
            ));
        }
        let overflow = u64::from(u32_at(&head, 12)?);
        let len = (overflow + 1)
            .checked_mul(self.page_size)
            .ok_or("overflow count out of range")?;
        self.read(off, usize::try_from(len).map_err(|_| "page too large")?)
    }

    /// Calls `f(key, value, is_bucket)` for every element of the tree rooted in `page`, in key
    /// order.
    fn walk(&self, page: &[u8], depth: usize, f: &mut Visit<'_>) -> Result<(), String> {
        if depth > MAX_DEPTH {
            return Err("tree deeper than 64 levels: the file is corrupt".into());
        }
        let flags = u16_at(page, 8)?;
        let count = usize::from(u16_at(page, 10)?);
        for i in 0..count {
            let e = PAGE_HEADER + i * 16;
            if flags & LEAF != 0 {
                let eflags = u32_at(page, e)?;
                let pos = u32_at(page, e + 4)? as usize;
                let ksize = u32_at(page, e + 8)? as usize;
                let vsize = u32_at(page, e + 12)? as usize;
                let k0 = e + pos;
                let k = page.get(k0..k0 + ksize).ok_or("leaf key out of page")?;
                let v = page
                    .get(k0 + ksize..k0 + ksize + vsize)
                    .ok_or("leaf value out of page")?;
                f(k, v, eflags & BUCKET_LEAF != 0)?;
            } else if flags & BRANCH != 0 {
                let child = u64_at(page, e + 8)?;
                let p = self.page(child)?;
                self.walk(&p, depth + 1, f)?;
            } else {
                return Err(format!("unexpected page flags {flags:#x} in a bucket tree"));
            }
        }
        Ok(())
    }

    /// Walks a bucket given its header value (root page id, or an inline page).
    fn walk_bucket(&self, header: &[u8], f: &mut Visit<'_>) -> Result<(), String> {
        let root = u64_at(header, 0)?;
        if root == 0 {
            let inline = header.get(16..).ok_or("truncated inline bucket")?;
            self.walk(inline, 0, f)
        } else {
            let p = self.page(root)?;
            self.walk(&p, 0, f)
        }
    }
}

/// Reads the database in the first `len` bytes of `file` (a snapshot without its sha256 trailer).
pub fn db_status(file: &File, len: u64) -> Result<DbStatus, String> {
    let probe = Reader {
        file,
        len,
        page_size: 4096,
    };
    let first = probe.read(0, PAGE_HEADER + 64)?;
    let m0 = parse_meta(&first);
    let ps = match &m0 {
        Ok(m) => m.page_size,
        // Meta 0 is damaged: bbolt then trusts meta 1; find it at the usual page size.
        Err(_) => 4096,
    };
    if !(512..=1 << 20).contains(&ps) || !ps.is_power_of_two() {
        return Err(format!("implausible page size {ps}"));
    }
    let r = Reader {
        file,
        len,
        page_size: u64::from(ps),
    };
    let m1 = r
        .read(u64::from(ps), PAGE_HEADER + 64)
        .and_then(|b| parse_meta(&b));
    let meta = match (m0, m1) {
        (Ok(a), Ok(b)) => {
            if b.txid > a.txid {
                b
            } else {
                a
            }
        }
        (Ok(a), Err(_)) => a,
        (Err(_), Ok(b)) => b,
        (Err(a), Err(_)) => return Err(format!("no valid meta page ({a})")),
    };
    let total_size = meta.pgid.saturating_mul(u64::from(meta.page_size));
    if total_size > len {
        return Err(format!(
            "the database claims {total_size} bytes but the file holds {len}: truncated"
        ));
    }
    let mut hasher = 0u32;
    let mut total_key = 0u64;
    let mut revision = 0i64;
    let mut buckets = Vec::new();
    let root = r.page(meta.root)?;
    let mut tops: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
    r.walk(&root, 0, &mut |k, v, is_bucket| {
        if is_bucket {
            tops.push((k.to_vec(), v.to_vec()));
        }
        Ok(())
    })?;
    for (name, header) in tops {
        hasher = crc32c::crc32c_append(hasher, &name);
        let is_key = name == b"key";
        let mut n = 0u64;
        r.walk_bucket(&header, &mut |k, v, is_bucket| {
            hasher = crc32c::crc32c_append(hasher, k);
            if !is_bucket {
                hasher = crc32c::crc32c_append(hasher, v);
            }
            if is_key && k.len() >= 8 {
                let mut b = [0u8; 8];
                b.copy_from_slice(&k[..8]);
                revision = i64::from_be_bytes(b);
            }
            n += 1;
            Ok(())
        })?;
        total_key += n;
        buckets.push((String::from_utf8_lossy(&name).into_owned(), n));
    }
    Ok(DbStatus {
        hash: hasher,
        revision,
        total_key,
        total_size,
        page_size: meta.page_size,
        buckets,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fnv_matches_go() {
        // hash/fnv New64a of "" and "a".
        assert_eq!(fnv64a(b""), 0xcbf29ce484222325);
        assert_eq!(fnv64a(b"a"), 0xaf63dc4c8601ec8c);
    }

    #[test]
    fn garbage_is_rejected_not_panicking() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x");
        std::fs::write(&p, vec![7u8; 8192]).unwrap();
        let f = File::open(&p).unwrap();
        let e = db_status(&f, 8192).unwrap_err();
        assert!(e.contains("no valid meta page"), "{e}");
        std::fs::write(&p, b"short").unwrap();
        let f = File::open(&p).unwrap();
        assert!(db_status(&f, 5).is_err());
    }
}

//! Stored objects as a compact JSON tree whose parts are shared.
//!
//! A `serde_json::Value` with `preserve_order` is 72 bytes, and every map carries a hash table
//! and spare slots: a 2.5 KB pod took ~22 KB in 220 allocations, and every write copied all of
//! it. A [`Tree`] is 24 bytes; a map is one allocation of exactly its entries (40 bytes each),
//! keys are interned, and maps, lists and strings are reference counted. Converting a new
//! version against the one it replaces ([`Tree::shared_with`]) keeps every part that did not
//! change: a status write shares the metadata and spec of the version before it, and the watch
//! history holds only what changed.
//!
//! The read API follows `serde_json::Value`'s (`as_str`, `as_array`, `as_object`, `get`,
//! indexing with a static null for what is missing), plus [`Tree::field`] and [`Tree::ptr`].
//! Trees are read-only: writes build a `serde_json::Value` (patches, new objects) and the store
//! converts it.

use std::borrow::Borrow;
use std::collections::HashSet;
use std::fmt;
use std::ops::{Deref, Index};
use std::sync::{LazyLock, Mutex};

use arcstr::ArcStr;
use triomphe::ThinArc;

use serde::ser::{Serialize, SerializeMap, SerializeSeq, Serializer};
use serde_json::{Map, Number, Value};

/// A shared, immutable string.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Str(ArcStr);

impl Str {
    #[inline]
    pub fn as_str(&self) -> &str {
        &self.0
    }

    fn ptr_eq(&self, other: &Str) -> bool {
        ArcStr::ptr_eq(&self.0, &other.0)
    }
}

impl Deref for Str {
    type Target = str;
    #[inline]
    fn deref(&self) -> &str {
        &self.0
    }
}

impl Borrow<str> for Str {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl AsRef<str> for Str {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Str {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for Str {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
    }
}

impl PartialEq<str> for Str {
    fn eq(&self, other: &str) -> bool {
        &*self.0 == other
    }
}

impl PartialEq<&str> for Str {
    fn eq(&self, other: &&str) -> bool {
        &*self.0 == *other
    }
}

impl PartialEq<String> for Str {
    fn eq(&self, other: &String) -> bool {
        &*self.0 == other.as_str()
    }
}

impl From<&str> for Str {
    fn from(s: &str) -> Self {
        Str(ArcStr::from(s))
    }
}

impl From<Str> for String {
    fn from(s: Str) -> Self {
        s.0.to_string()
    }
}

/// Keys longer than this are not interned.
const INTERN_MAX_LEN: usize = 64;
/// The interner stops taking new keys past this many (keys of user data, e.g. a ConfigMap's,
/// are unbounded in principle; field names and label keys are few).
const INTERN_MAX_KEYS: usize = 1 << 16;

/// The interner. It starts with the [`WELL_KNOWN`] keys, so every map key equal to one of them
/// is the same allocation as `WELL_KNOWN_KEYS[i]`.
static KEYS: LazyLock<Mutex<HashSet<ArcStr, crate::json::FastBuild>>> = LazyLock::new(|| {
    Mutex::new(
        WELL_KNOWN_KEYS
            .iter()
            .map(|k| k.0.clone())
            .collect::<HashSet<_, _>>(),
    )
});

/// The interned copies of [`WELL_KNOWN`], in its order.
static WELL_KNOWN_KEYS: LazyLock<Vec<Str>> =
    LazyLock::new(|| WELL_KNOWN.iter().map(|k| Str(ArcStr::from(*k))).collect());

/// Map keys that components look up all the time. They are interned before any other key
/// (see [`KEYS`]), so a lookup of one of them compares entries by pointer only.
const WELL_KNOWN: [&str; 111] = [
    "metadata",
    "spec",
    "status",
    "name",
    "namespace",
    "labels",
    "annotations",
    "conditions",
    "uid",
    "replicas",
    "nodeName",
    "generation",
    "template",
    "key",
    "deletionTimestamp",
    "selector",
    "ownerReferences",
    "finalizers",
    "effect",
    "phase",
    "containers",
    "type",
    "taints",
    "resourceVersion",
    "minReadySeconds",
    "updateStrategy",
    "reason",
    "operator",
    "collisionCount",
    "value",
    "revisionHistoryLimit",
    "readyReplicas",
    "availableReplicas",
    "updatedReplicas",
    "fullyLabeledReplicas",
    "observedGeneration",
    "unavailableReplicas",
    "protocol",
    "progressDeadlineSeconds",
    "clusterIP",
    "unschedulable",
    "terminationGracePeriodSeconds",
    "strategy",
    "rollingUpdate",
    "restartPolicy",
    "resources",
    "paused",
    "image",
    "deletionGracePeriodSeconds",
    "creationTimestamp",
    "containerStatuses",
    "tolerations",
    "targetRef",
    "state",
    "startTime",
    "ports",
    "podIP",
    "kind",
    "apiVersion",
    "controller",
    "blockOwnerDeletion",
    "matchLabels",
    "matchExpressions",
    "values",
    "message",
    "lastTransitionTime",
    "lastUpdateTime",
    "lastProbeTime",
    "lastHeartbeatTime",
    "hostIP",
    "podIPs",
    "qosClass",
    "priority",
    "priorityClassName",
    "schedulerName",
    "serviceAccountName",
    "nodeSelector",
    "affinity",
    "subsets",
    "addresses",
    "notReadyAddresses",
    "ip",
    "ready",
    "started",
    "restartCount",
    "containerID",
    "imageID",
    "running",
    "terminated",
    "waiting",
    "holderIdentity",
    "leaseDurationSeconds",
    "renewTime",
    "acquireTime",
    "nodeInfo",
    "osImage",
    "kubeletVersion",
    "capacity",
    "allocatable",
    "minAvailable",
    "maxUnavailable",
    "maxSurge",
    "disruptionsAllowed",
    "currentHealthy",
    "desiredHealthy",
    "expectedPods",
    "disruptedPods",
    "unhealthyPodEvictionPolicy",
    "podTemplateHash",
    "pod-template-hash",
    "app",
];

/// The index in [`WELL_KNOWN`] of `key`: by length first, then among the few of that length.
#[inline]
fn well_known_index(key: &str) -> Option<usize> {
    match key.len() {
        2 => match key {
            "ip" => Some(81),
            _ => None,
        },
        3 => match key {
            "uid" => Some(8),
            "key" => Some(13),
            "app" => Some(110),
            _ => None,
        },
        4 => match key {
            "spec" => Some(1),
            "name" => Some(3),
            "type" => Some(21),
            "kind" => Some(57),
            _ => None,
        },
        5 => match key {
            "phase" => Some(19),
            "value" => Some(29),
            "image" => Some(47),
            "state" => Some(53),
            "ports" => Some(55),
            "podIP" => Some(56),
            "ready" => Some(82),
            _ => None,
        },
        6 => match key {
            "status" => Some(2),
            "labels" => Some(5),
            "effect" => Some(18),
            "taints" => Some(22),
            "reason" => Some(26),
            "paused" => Some(46),
            "values" => Some(63),
            "hostIP" => Some(69),
            "podIPs" => Some(70),
            _ => None,
        },
        7 => match key {
            "message" => Some(64),
            "subsets" => Some(78),
            "started" => Some(83),
            "imageID" => Some(86),
            "running" => Some(87),
            "waiting" => Some(89),
            "osImage" => Some(95),
            _ => None,
        },
        8 => match key {
            "metadata" => Some(0),
            "replicas" => Some(9),
            "nodeName" => Some(10),
            "template" => Some(12),
            "selector" => Some(15),
            "operator" => Some(27),
            "protocol" => Some(37),
            "strategy" => Some(42),
            "qosClass" => Some(71),
            "priority" => Some(72),
            "affinity" => Some(77),
            "nodeInfo" => Some(94),
            "capacity" => Some(97),
            "maxSurge" => Some(101),
            _ => None,
        },
        9 => match key {
            "namespace" => Some(4),
            "clusterIP" => Some(39),
            "resources" => Some(45),
            "targetRef" => Some(52),
            "startTime" => Some(54),
            "addresses" => Some(79),
            "renewTime" => Some(92),
            _ => None,
        },
        10 => match key {
            "conditions" => Some(7),
            "generation" => Some(11),
            "finalizers" => Some(17),
            "containers" => Some(20),
            "apiVersion" => Some(58),
            "controller" => Some(59),
            "terminated" => Some(88),
            _ => None,
        },
        11 => match key {
            "annotations" => Some(6),
            "tolerations" => Some(51),
            "matchLabels" => Some(61),
            "containerID" => Some(85),
            "acquireTime" => Some(93),
            "allocatable" => Some(98),
            _ => None,
        },
        12 => match key {
            "nodeSelector" => Some(76),
            "restartCount" => Some(84),
            "minAvailable" => Some(99),
            "expectedPods" => Some(105),
            _ => None,
        },
        13 => match key {
            "readyReplicas" => Some(31),
            "unschedulable" => Some(40),
            "rollingUpdate" => Some(43),
            "restartPolicy" => Some(44),
            "lastProbeTime" => Some(67),
            "schedulerName" => Some(74),
            "disruptedPods" => Some(106),
            _ => None,
        },
        14 => match key {
            "updateStrategy" => Some(25),
            "collisionCount" => Some(28),
            "lastUpdateTime" => Some(66),
            "holderIdentity" => Some(90),
            "kubeletVersion" => Some(96),
            "maxUnavailable" => Some(100),
            "currentHealthy" => Some(103),
            "desiredHealthy" => Some(104),
            _ => None,
        },
        15 => match key {
            "ownerReferences" => Some(16),
            "resourceVersion" => Some(23),
            "minReadySeconds" => Some(24),
            "updatedReplicas" => Some(33),
            "podTemplateHash" => Some(108),
            _ => None,
        },
        16 => match key {
            "matchExpressions" => Some(62),
            _ => None,
        },
        17 => match key {
            "deletionTimestamp" => Some(14),
            "availableReplicas" => Some(32),
            "creationTimestamp" => Some(49),
            "containerStatuses" => Some(50),
            "lastHeartbeatTime" => Some(68),
            "priorityClassName" => Some(73),
            "notReadyAddresses" => Some(80),
            "pod-template-hash" => Some(109),
            _ => None,
        },
        18 => match key {
            "observedGeneration" => Some(35),
            "blockOwnerDeletion" => Some(60),
            "lastTransitionTime" => Some(65),
            "serviceAccountName" => Some(75),
            "disruptionsAllowed" => Some(102),
            _ => None,
        },
        19 => match key {
            "unavailableReplicas" => Some(36),
            _ => None,
        },
        20 => match key {
            "revisionHistoryLimit" => Some(30),
            "fullyLabeledReplicas" => Some(34),
            "leaseDurationSeconds" => Some(91),
            _ => None,
        },
        23 => match key {
            "progressDeadlineSeconds" => Some(38),
            _ => None,
        },
        26 => match key {
            "deletionGracePeriodSeconds" => Some(48),
            "unhealthyPodEvictionPolicy" => Some(107),
            _ => None,
        },
        29 => match key {
            "terminationGracePeriodSeconds" => Some(41),
            _ => None,
        },
        _ => None,
    }
}

/// The one shared copy of a map key.
fn intern(key: &str) -> Str {
    if key.len() > INTERN_MAX_LEN {
        return Str::from(key);
    }
    let mut keys = KEYS.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(k) = keys.get(key) {
        return Str(k.clone());
    }
    let k = ArcStr::from(key);
    if keys.len() < INTERN_MAX_KEYS {
        keys.insert(k.clone());
    }
    Str(k)
}

/// A string value: shared through the interner when it looks like a word of the API (`True`,
/// `Running`, `NoExecute`, `default-scheduler`: short and without digits), which every object
/// repeats; names, uids, addresses and times (digits) are not worth a lookup.
fn text(s: &str) -> Str {
    if s.len() <= 40 && !s.bytes().any(|b| b.is_ascii_digit()) {
        intern(s)
    } else {
        Str::from(s)
    }
}

/// A JSON object: its entries in order, in one shared allocation.
#[derive(Clone)]
pub struct Obj(ThinArc<(), (Str, Tree)>);

/// The iterator over an [`Obj`]'s entries.
pub type Entries<'a> =
    std::iter::Map<std::slice::Iter<'a, (Str, Tree)>, fn(&'a (Str, Tree)) -> (&'a Str, &'a Tree)>;

fn entry(e: &(Str, Tree)) -> (&Str, &Tree) {
    (&e.0, &e.1)
}

impl Obj {
    fn new(entries: Vec<(Str, Tree)>) -> Obj {
        Obj(ThinArc::from_header_and_iter((), entries.into_iter()))
    }

    #[inline]
    fn slice(&self) -> &[(Str, Tree)] {
        &self.0.slice
    }

    fn ptr(&self) -> usize {
        self.0.ptr() as usize
    }

    /// The value under `key`: a linear scan (Kubernetes objects are small maps). For a
    /// [`WELL_KNOWN`] key the scan compares pointers: every key of that text is the interned one
    /// (the interner holds it from the start and never forgets a key).
    #[inline]
    pub fn get(&self, key: &str) -> Option<&Tree> {
        if let Some(i) = well_known_index(key) {
            let k = &WELL_KNOWN_KEYS[i];
            return self
                .slice()
                .iter()
                .find(|(e, _)| e.ptr_eq(k))
                .map(|(_, v)| v);
        }
        let kb = key.as_bytes();
        self.slice()
            .iter()
            .find(|(k, _)| {
                let b = k.as_bytes();
                b.len() == kb.len() && b.first() == kb.first() && b == kb
            })
            .map(|(_, v)| v)
    }

    /// Same as [`Obj::get`].
    #[inline]
    pub fn field(&self, key: &str) -> Option<&Tree> {
        self.get(key)
    }

    pub fn contains_key(&self, key: &str) -> bool {
        self.get(key).is_some()
    }

    pub fn len(&self) -> usize {
        self.slice().len()
    }

    pub fn is_empty(&self) -> bool {
        self.slice().is_empty()
    }

    pub fn iter(&self) -> Entries<'_> {
        self.slice()
            .iter()
            .map(entry as fn(&(Str, Tree)) -> (&Str, &Tree))
    }

    pub fn keys(&self) -> impl DoubleEndedIterator<Item = &Str> + ExactSizeIterator {
        self.slice().iter().map(|(k, _)| k)
    }

    pub fn values(&self) -> impl DoubleEndedIterator<Item = &Tree> + ExactSizeIterator {
        self.slice().iter().map(|(_, v)| v)
    }

    /// The object as a `serde_json` map (a copy).
    pub fn to_map(&self) -> Map<String, Value> {
        let mut m = Map::with_capacity(self.slice().len());
        for (k, v) in self.slice().iter() {
            m.insert(k.as_str().to_owned(), v.to_value());
        }
        m
    }
}

impl<'a> IntoIterator for &'a Obj {
    type Item = (&'a Str, &'a Tree);
    type IntoIter = Entries<'a>;
    fn into_iter(self) -> Entries<'a> {
        self.iter()
    }
}

impl PartialEq for Obj {
    fn eq(&self, other: &Obj) -> bool {
        if self.ptr() == other.ptr() {
            return true;
        }
        if self.slice().len() != other.slice().len() {
            return false;
        }
        // Versions of one object keep their keys in order: compare entry by entry, and look
        // keys up only when the orders differ (equality does not depend on order, as in
        // serde_json).
        let ordered = self
            .slice()
            .iter()
            .zip(other.slice().iter())
            .all(|((ka, _), (kb, _))| ka == kb);
        if ordered {
            self.slice()
                .iter()
                .zip(other.slice().iter())
                .all(|((_, a), (_, b))| a == b)
        } else {
            self.slice()
                .iter()
                .all(|(k, v)| other.get(k).is_some_and(|w| v == w))
        }
    }
}

/// A JSON list, in one shared allocation.
#[derive(Clone)]
pub struct Arr(ThinArc<(), Tree>);

impl Arr {
    fn new(items: Vec<Tree>) -> Arr {
        Arr(ThinArc::from_header_and_iter((), items.into_iter()))
    }

    fn ptr(&self) -> usize {
        self.0.ptr() as usize
    }
}

impl Deref for Arr {
    type Target = [Tree];
    #[inline]
    fn deref(&self) -> &[Tree] {
        &self.0.slice
    }
}

/// A JSON value, read-only and cheap to clone (see the module documentation).
#[derive(Clone, Default)]
pub enum Tree {
    #[default]
    Null,
    Bool(bool),
    /// A non-negative integer (as serde_json keeps them).
    PosInt(u64),
    /// A negative integer.
    NegInt(i64),
    Float(f64),
    String(Str),
    Array(Arr),
    Object(Obj),
}

static NULL: Tree = Tree::Null;

impl Tree {
    /// A null that lives forever (for `unwrap_or`).
    pub fn null() -> &'static Tree {
        &NULL
    }

    pub fn is_null(&self) -> bool {
        matches!(self, Tree::Null)
    }

    pub fn is_object(&self) -> bool {
        matches!(self, Tree::Object(_))
    }

    pub fn is_array(&self) -> bool {
        matches!(self, Tree::Array(_))
    }

    pub fn is_string(&self) -> bool {
        matches!(self, Tree::String(_))
    }

    pub fn is_number(&self) -> bool {
        matches!(self, Tree::PosInt(_) | Tree::NegInt(_) | Tree::Float(_))
    }

    pub fn is_boolean(&self) -> bool {
        matches!(self, Tree::Bool(_))
    }

    pub fn is_i64(&self) -> bool {
        matches!(self, Tree::NegInt(_))
            || matches!(self, Tree::PosInt(u) if i64::try_from(*u).is_ok())
    }

    pub fn is_u64(&self) -> bool {
        matches!(self, Tree::PosInt(_))
    }

    pub fn as_str(&self) -> Option<&str> {
        match self {
            Tree::String(s) => Some(s.as_str()),
            _ => None,
        }
    }

    pub fn as_bool(&self) -> Option<bool> {
        match self {
            Tree::Bool(b) => Some(*b),
            _ => None,
        }
    }

    pub fn as_i64(&self) -> Option<i64> {
        match self {
            Tree::PosInt(u) => i64::try_from(*u).ok(),
            Tree::NegInt(i) => Some(*i),
            _ => None,
        }
    }

    pub fn as_u64(&self) -> Option<u64> {
        match self {
            Tree::PosInt(u) => Some(*u),
            _ => None,
        }
    }

    pub fn as_f64(&self) -> Option<f64> {
        match self {
            Tree::PosInt(u) => Some(*u as f64),
            Tree::NegInt(i) => Some(*i as f64),
            Tree::Float(f) => Some(*f),
            _ => None,
        }
    }

    /// The number, as serde_json holds it.
    pub fn number(&self) -> Option<Number> {
        match self {
            Tree::PosInt(u) => Some(Number::from(*u)),
            Tree::NegInt(i) => Some(Number::from(*i)),
            Tree::Float(f) => Number::from_f64(*f),
            _ => None,
        }
    }

    #[inline]
    pub fn as_array(&self) -> Option<&[Tree]> {
        match self {
            Tree::Array(a) => Some(a),
            _ => None,
        }
    }

    #[inline]
    pub fn as_object(&self) -> Option<&Obj> {
        match self {
            Tree::Object(o) => Some(o),
            _ => None,
        }
    }

    /// The value under `key` of an object; `None` for anything else.
    #[inline]
    pub fn field(&self, key: &str) -> Option<&Tree> {
        match self {
            Tree::Object(o) => o.get(key),
            _ => None,
        }
    }

    /// Same as [`Tree::field`] (`Value::get` with a string key).
    #[inline]
    pub fn get(&self, key: &str) -> Option<&Tree> {
        self.field(key)
    }

    /// The value at a JSON pointer (RFC 6901), as `Value::pointer`.
    #[inline]
    pub fn ptr(&self, path: &str) -> Option<&Tree> {
        if path.is_empty() {
            return Some(self);
        }
        let rest = path.strip_prefix('/')?;
        // One pass over the bytes: a token ends at '/' (or the end); one with '~' is unescaped.
        // (Paths are short: a library call per token to find '/' or '~' costs more.)
        let bytes = rest.as_bytes();
        let (mut cur, mut start, mut tilde) = (self, 0, false);
        for i in 0..=bytes.len() {
            match bytes.get(i) {
                Some(b'/') | None => {
                    cur = cur.step(&rest[start..i], tilde)?;
                    start = i + 1;
                    tilde = false;
                }
                Some(b'~') => tilde = true,
                Some(_) => {}
            }
        }
        Some(cur)
    }

    /// One token of a JSON pointer (`escaped`: it contains `~`).
    #[inline]
    fn step(&self, token: &str, escaped: bool) -> Option<&Tree> {
        let unescaped;
        let token = if escaped {
            unescaped = token.replace("~1", "/").replace("~0", "~");
            unescaped.as_str()
        } else {
            token
        };
        match self {
            Tree::Object(m) => m.get(token),
            Tree::Array(a) => a.get(crate::json::array_index(token)?),
            _ => None,
        }
    }

    /// Same as [`Tree::ptr`].
    pub fn pointer(&self, path: &str) -> Option<&Tree> {
        self.ptr(path)
    }

    /// Bytes this tree holds on the heap (allocations rounded up to 16 bytes), counting each
    /// shared allocation once for all calls with the same `seen` (a census of many versions).
    pub fn heap_bytes(&self, seen: &mut HashSet<usize>) -> usize {
        let round = |n: usize| n.div_ceil(16) * 16;
        // A thin Arc's allocation: its count and its length, then the items.
        let header = 2 * std::mem::size_of::<usize>();
        match self {
            Tree::String(s) if seen.insert(s.as_str().as_ptr() as usize) => round(header + s.len()),
            Tree::Array(a) if seen.insert(a.ptr()) => {
                round(header + a.len() * std::mem::size_of::<Tree>())
                    + a.iter().map(|v| v.heap_bytes(seen)).sum::<usize>()
            }
            Tree::Object(o) if seen.insert(o.ptr()) => {
                round(header + o.len() * std::mem::size_of::<(Str, Tree)>())
                    + o.slice()
                        .iter()
                        .map(|(k, v)| Tree::String(k.clone()).heap_bytes(seen) + v.heap_bytes(seen))
                        .sum::<usize>()
            }
            _ => 0,
        }
    }

    /// The tree as a `serde_json::Value` (a deep copy).
    pub fn to_value(&self) -> Value {
        match self {
            Tree::Null => Value::Null,
            Tree::Bool(b) => Value::Bool(*b),
            Tree::PosInt(_) | Tree::NegInt(_) | Tree::Float(_) => {
                self.number().map_or(Value::Null, Value::Number)
            }
            Tree::String(s) => Value::String(s.as_str().to_owned()),
            Tree::Array(a) => Value::Array(a.iter().map(Tree::to_value).collect()),
            Tree::Object(o) => Value::Object(o.to_map()),
        }
    }

    /// A list of these items.
    pub fn list(items: Vec<Tree>) -> Tree {
        Tree::Array(Arr::new(items))
    }

    /// A copy with `value` at `path` (object keys; missing or non-object steps become objects),
    /// sharing everything else. Keys keep their places; a new key goes last.
    pub fn with_at(&self, path: &[&str], value: Tree) -> Tree {
        let Some((first, rest)) = path.split_first() else {
            return value;
        };
        let olds: &[(Str, Tree)] = match self {
            Tree::Object(o) => o.slice(),
            _ => &[],
        };
        let mut out: Vec<(Str, Tree)> = Vec::with_capacity(olds.len() + 1);
        let mut found = false;
        for (k, v) in olds {
            if k.as_str() == *first {
                found = true;
                out.push((k.clone(), v.with_at(rest, value.clone())));
            } else {
                out.push((k.clone(), v.clone()));
            }
        }
        if !found {
            out.push((intern(first), Tree::Null.with_at(rest, value)));
        }
        Tree::Object(Obj::new(out))
    }

    /// A copy without the object key `key` (the same tree when it has none).
    pub fn without(&self, key: &str) -> Tree {
        match self {
            Tree::Object(o) if o.contains_key(key) => Tree::Object(Obj::new(
                o.slice()
                    .iter()
                    .filter(|(k, _)| k.as_str() != key)
                    .cloned()
                    .collect(),
            )),
            _ => self.clone(),
        }
    }

    /// RFC 7386 merge patch of `patch` onto this tree, with exactly the result of
    /// [`crate::patch::merge_patched`] on the equivalent `Value`, sharing every part the patch
    /// leaves alone or sets to what it was (a kubelet's status patch repeats most of the status).
    pub fn merge_patched(&self, patch: &Value) -> Tree {
        let Value::Object(p) = patch else {
            return Tree::shared_with(patch, self);
        };
        let Tree::Object(t) = self else {
            return Tree::from(crate::patch::merge_patched(&Value::Null, patch));
        };
        let mut out: Vec<(Str, Tree)> = Vec::with_capacity(t.len() + p.len());
        let mut changed = false;
        for (k, v) in t.slice().iter() {
            match crate::json::get(p, k) {
                None => out.push((k.clone(), v.clone())),
                Some(Value::Null) => changed = true,
                Some(pv) => {
                    let merged = v.merge_patched(pv);
                    changed |= !merged.is_shared(v);
                    out.push((k.clone(), merged));
                }
            }
        }
        for (k, pv) in p {
            if !pv.is_null() && !t.contains_key(k) {
                changed = true;
                out.push((intern(k), Tree::Null.merge_patched(pv)));
            }
        }
        if changed {
            Tree::Object(Obj::new(out))
        } else {
            self.clone()
        }
    }

    /// Whether the two are the same allocation (or equal scalars): parts that
    /// [`Tree::shared_with`] kept.
    fn is_shared(&self, other: &Tree) -> bool {
        match (self, other) {
            (Tree::Object(a), Tree::Object(b)) => a.ptr() == b.ptr(),
            (Tree::Array(a), Tree::Array(b)) => a.ptr() == b.ptr(),
            (Tree::String(a), Tree::String(b)) => a.ptr_eq(b),
            (Tree::Null, Tree::Null) => true,
            (Tree::Bool(a), Tree::Bool(b)) => a == b,
            (Tree::PosInt(a), Tree::PosInt(b)) => a == b,
            (Tree::NegInt(a), Tree::NegInt(b)) => a == b,
            (Tree::Float(a), Tree::Float(b)) => a == b,
            _ => false,
        }
    }

    /// `v` as a tree that shares with `old` every part that is equal in both (at the same key
    /// or index), `old` itself when nothing differs. This is how a new version of an object
    /// shares what it did not change with the version before it.
    pub fn shared_with(v: &Value, old: &Tree) -> Tree {
        match (v, old) {
            (Value::Object(m), Tree::Object(o)) => {
                let olds = o.slice();
                // Built only from the first difference on.
                let mut out: Option<Vec<(Str, Tree)>> = None;
                if m.len() != olds.len() {
                    out = Some(Vec::with_capacity(m.len()));
                }
                for (i, (k, cv)) in m.iter().enumerate() {
                    let positional = olds.get(i).filter(|e| e.0.as_str() == k);
                    let at = positional.or_else(|| olds.iter().find(|e| e.0.as_str() == k));
                    let (key, child, kept) = match at {
                        Some((ok, ot)) => {
                            let c = Tree::shared_with(cv, ot);
                            let kept = positional.is_some() && c.is_shared(ot);
                            (ok.clone(), c, kept)
                        }
                        None => (intern(k), Tree::from(cv), false),
                    };
                    match &mut out {
                        Some(out) => out.push((key, child)),
                        None if kept => {}
                        None => {
                            let mut v = Vec::with_capacity(m.len());
                            v.extend(olds[..i].iter().cloned());
                            v.push((key, child));
                            out = Some(v);
                        }
                    }
                }
                match out {
                    Some(v) => Tree::Object(Obj::new(v)),
                    None => old.clone(),
                }
            }
            (Value::Array(a), Tree::Array(olds)) => {
                let mut out: Option<Vec<Tree>> = None;
                if a.len() != olds.len() {
                    out = Some(Vec::with_capacity(a.len()));
                }
                for (i, cv) in a.iter().enumerate() {
                    let (child, kept) = match olds.get(i) {
                        Some(ot) => {
                            let c = Tree::shared_with(cv, ot);
                            let kept = c.is_shared(ot);
                            (c, kept)
                        }
                        None => (Tree::from(cv), false),
                    };
                    match &mut out {
                        Some(out) => out.push(child),
                        None if kept => {}
                        None => {
                            let mut v = Vec::with_capacity(a.len());
                            v.extend(olds[..i].iter().cloned());
                            v.push(child);
                            out = Some(v);
                        }
                    }
                }
                match out {
                    Some(v) => Tree::Array(Arr::new(v)),
                    None => old.clone(),
                }
            }
            (Value::String(s), Tree::String(o)) if s.as_str() == o.as_str() => old.clone(),
            (Value::Number(n), o) if o.number().as_ref() == Some(n) => old.clone(),
            (Value::Bool(b), Tree::Bool(o)) if b == o => old.clone(),
            (Value::Null, Tree::Null) => Tree::Null,
            _ => Tree::from(v),
        }
    }
}

impl crate::json::Ptr for Tree {
    fn ptr(&self, path: &str) -> Option<&Tree> {
        Tree::ptr(self, path)
    }
}

impl crate::json::Field for Tree {
    type Out = Tree;
    fn field(&self, key: &str) -> Option<&Tree> {
        Tree::field(self, key)
    }
}

impl crate::json::Json for Tree {
    fn as_str(&self) -> Option<&str> {
        Tree::as_str(self)
    }
    fn as_i64(&self) -> Option<i64> {
        Tree::as_i64(self)
    }
    fn as_u64(&self) -> Option<u64> {
        Tree::as_u64(self)
    }
    fn as_f64(&self) -> Option<f64> {
        Tree::as_f64(self)
    }
    fn as_bool(&self) -> Option<bool> {
        Tree::as_bool(self)
    }
    fn is_null(&self) -> bool {
        Tree::is_null(self)
    }
    fn is_object(&self) -> bool {
        Tree::is_object(self)
    }
    fn as_array(&self) -> Option<&[Tree]> {
        Tree::as_array(self)
    }
    fn number(&self) -> Option<Number> {
        Tree::number(self)
    }
    fn entries(&self) -> Option<impl Iterator<Item = (&str, &Tree)>> {
        Tree::as_object(self).map(|o| o.iter().map(|(k, v)| (k.as_str(), v)))
    }
    fn to_value(&self) -> Value {
        Tree::to_value(self)
    }
    fn same(&self, other: &Tree) -> bool {
        self == other
    }
}

impl From<&Value> for Tree {
    fn from(v: &Value) -> Tree {
        match v {
            Value::Null => Tree::Null,
            Value::Bool(b) => Tree::Bool(*b),
            Value::Number(n) => match (n.as_u64(), n.as_i64()) {
                (Some(u), _) => Tree::PosInt(u),
                (None, Some(i)) => Tree::NegInt(i),
                _ => Tree::Float(n.as_f64().unwrap_or(0.0)),
            },
            Value::String(s) => Tree::String(text(s)),
            Value::Array(a) => Tree::Array(Arr(ThinArc::from_header_and_iter(
                (),
                a.iter().map(Tree::from),
            ))),
            Value::Object(m) => Tree::Object(Obj(ThinArc::from_header_and_iter(
                (),
                m.iter().map(|(k, v)| (intern(k), Tree::from(v))),
            ))),
        }
    }
}

impl From<Value> for Tree {
    fn from(v: Value) -> Tree {
        Tree::from(&v)
    }
}

impl From<Tree> for Value {
    fn from(t: Tree) -> Value {
        t.to_value()
    }
}

impl From<&Tree> for Value {
    fn from(t: &Tree) -> Value {
        t.to_value()
    }
}

impl Index<&str> for Tree {
    type Output = Tree;
    fn index(&self, key: &str) -> &Tree {
        self.field(key).unwrap_or(&NULL)
    }
}

impl Index<usize> for Tree {
    type Output = Tree;
    fn index(&self, i: usize) -> &Tree {
        self.as_array().and_then(|a| a.get(i)).unwrap_or(&NULL)
    }
}

impl PartialEq for Tree {
    fn eq(&self, other: &Tree) -> bool {
        match (self, other) {
            (Tree::Null, Tree::Null) => true,
            (Tree::Bool(a), Tree::Bool(b)) => a == b,
            (Tree::PosInt(a), Tree::PosInt(b)) => a == b,
            (Tree::NegInt(a), Tree::NegInt(b)) => a == b,
            (Tree::Float(a), Tree::Float(b)) => a == b,
            (Tree::String(a), Tree::String(b)) => a == b,
            (Tree::Array(a), Tree::Array(b)) => a.ptr() == b.ptr() || a[..] == b[..],
            (Tree::Object(a), Tree::Object(b)) => a == b,
            _ => false,
        }
    }
}

impl PartialEq<Value> for Tree {
    fn eq(&self, other: &Value) -> bool {
        match (self, other) {
            (Tree::Null, Value::Null) => true,
            (Tree::Bool(a), Value::Bool(b)) => a == b,
            (a, Value::Number(b)) if a.is_number() => a.number().as_ref() == Some(b),
            (Tree::String(a), Value::String(b)) => a.as_str() == b.as_str(),
            (Tree::Array(a), Value::Array(b)) => {
                a.len() == b.len() && a.iter().zip(b.iter()).all(|(x, y)| x == y)
            }
            (Tree::Object(a), Value::Object(b)) => a == b,
            _ => false,
        }
    }
}

impl PartialEq<Map<String, Value>> for Obj {
    fn eq(&self, other: &Map<String, Value>) -> bool {
        self.len() == other.len()
            && self
                .iter()
                .all(|(k, v)| crate::json::get(other, k).is_some_and(|w| v == w))
    }
}

impl PartialEq<str> for Tree {
    fn eq(&self, other: &str) -> bool {
        self.as_str() == Some(other)
    }
}

impl PartialEq<&str> for Tree {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == Some(*other)
    }
}

impl PartialEq<String> for Tree {
    fn eq(&self, other: &String) -> bool {
        self.as_str() == Some(other.as_str())
    }
}

impl PartialEq<bool> for Tree {
    fn eq(&self, other: &bool) -> bool {
        self.as_bool() == Some(*other)
    }
}

macro_rules! eq_int {
    ($($t:ty),*) => {$(
        impl PartialEq<$t> for Tree {
            fn eq(&self, other: &$t) -> bool {
                self.as_i64() == Some(i64::from(*other))
            }
        }
    )*};
}
eq_int!(i32, i64, u32);

impl PartialEq<Tree> for Value {
    fn eq(&self, other: &Tree) -> bool {
        other == self
    }
}

impl Serialize for Tree {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Tree::Null => s.serialize_unit(),
            Tree::Bool(b) => s.serialize_bool(*b),
            Tree::PosInt(u) => s.serialize_u64(*u),
            Tree::NegInt(i) => s.serialize_i64(*i),
            Tree::Float(f) => s.serialize_f64(*f),
            Tree::String(v) => s.serialize_str(v),
            Tree::Array(a) => {
                let mut seq = s.serialize_seq(Some(a.len()))?;
                for v in a.iter() {
                    seq.serialize_element(v)?;
                }
                seq.end()
            }
            Tree::Object(o) => {
                let mut map = s.serialize_map(Some(o.len()))?;
                for (k, v) in o.iter() {
                    map.serialize_entry(k.as_str(), v)?;
                }
                map.end()
            }
        }
    }
}

impl fmt::Display for Tree {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = serde_json::to_string(self).map_err(|_| fmt::Error)?;
        f.write_str(&s)
    }
}

impl fmt::Debug for Tree {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn well_known_keys_are_found_by_pointer_whatever_built_the_map() {
        for (i, k) in WELL_KNOWN.iter().enumerate() {
            assert_eq!(well_known_index(k), Some(i), "{k}");
            // Built from a Value, by a merge patch, by with_at, and as a new version of an
            // object that did not have the key.
            let v = json!({ "x": 1, *k: i, "z": 2 });
            let t = Tree::from(&v);
            assert_eq!(t.get(k).and_then(Tree::as_u64), Some(i as u64), "{k}");
            let patched = Tree::from(&json!({"x": 1})).merge_patched(&json!({ *k: i }));
            assert_eq!(patched.get(k).and_then(Tree::as_u64), Some(i as u64), "{k}");
            let at = Tree::from(&json!({})).with_at(&[k], Tree::from(&json!(i)));
            assert_eq!(at.get(k).and_then(Tree::as_u64), Some(i as u64), "{k}");
            let next = Tree::shared_with(&v, &Tree::from(&json!({"x": 1, "z": 2})));
            assert_eq!(next.get(k).and_then(Tree::as_u64), Some(i as u64), "{k}");
        }
        // Near misses and other keys take the ordinary path.
        for k in ["metadat", "metadataX", "Name", "", "app.kubernetes.io/name"] {
            assert_eq!(well_known_index(k), None, "{k}");
            let t = Tree::from(&json!({ k: true }));
            assert_eq!(t.get(k), Some(&Tree::Bool(true)), "{k}");
        }
        assert_eq!(Tree::from(&json!({"name": 1})).get("namespace"), None);
    }

    fn sample() -> Value {
        json!({
            "metadata": {"name": "p", "labels": {"app": "a", "b/c": "d"}, "n": 3},
            "spec": {"containers": [{"name": "main", "image": "nginx"}], "x": null, "f": 1.5},
            "status": {"phase": "Pending", "conditions": [{"type": "Ready", "status": "False"}]},
            "list": [1, "two", [3], {"four": 4}, true, -5],
        })
    }

    #[test]
    fn round_trips_and_serializes_like_serde() {
        let v = sample();
        let t = Tree::from(&v);
        assert_eq!(t.to_value(), v);
        assert_eq!(
            serde_json::to_string(&t).unwrap(),
            serde_json::to_string(&v).unwrap()
        );
        assert_eq!(t.to_string(), v.to_string());
        assert_eq!(t, v);
        assert_eq!(v, t);
        assert!(t != json!({"metadata": null}));
    }

    #[test]
    fn reads_like_serde() {
        let v = sample();
        let t = Tree::from(&v);
        for p in [
            "",
            "/metadata/name",
            "/metadata/labels/b~1c",
            "/spec/containers/0/image",
            "/spec/containers/01",
            "/spec/containers/1",
            "/spec/x",
            "/list/2/0",
            "/list/5",
            "/missing/x",
            "metadata",
        ] {
            assert_eq!(t.ptr(p).map(Tree::to_value), v.pointer(p).cloned(), "{p:?}");
        }
        assert_eq!(t["metadata"]["name"].as_str(), Some("p"));
        assert_eq!(t["list"][5].as_i64(), Some(-5));
        assert_eq!(t["spec"]["f"].as_f64(), Some(1.5));
        assert!(t["nothing"]["here"].is_null());
        assert_eq!(t["list"].as_array().map(<[Tree]>::len), Some(6));
        let keys: Vec<&str> = t["metadata"]
            .as_object()
            .unwrap()
            .keys()
            .map(|k| k.as_str())
            .collect();
        assert_eq!(keys, ["name", "labels", "n"]);
        assert_eq!(
            t.get("status")
                .and_then(|s| s.get("phase"))
                .and_then(Tree::as_str),
            Some("Pending")
        );
    }

    #[test]
    fn equality_ignores_key_order_like_serde() {
        let a = Tree::from(json!({"a": 1, "b": {"c": [1, 2]}}));
        let b = Tree::from(json!({"b": {"c": [1, 2]}, "a": 1}));
        let c = Tree::from(json!({"a": 1, "b": {"c": [1, 3]}}));
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert_eq!(a, json!({"b": {"c": [1, 2]}, "a": 1}));
    }

    /// The allocations of `t` (maps, lists, strings), by address.
    fn parts(t: &Tree, out: &mut HashSet<usize>) {
        match t {
            Tree::String(s) => {
                out.insert(s.as_str().as_ptr() as usize);
            }
            Tree::Array(a) => {
                out.insert(a.ptr());
                a.iter().for_each(|v| parts(v, out));
            }
            Tree::Object(o) => {
                out.insert(o.ptr());
                o.values().for_each(|v| parts(v, out));
            }
            _ => {}
        }
    }

    #[test]
    fn a_new_version_shares_what_did_not_change() {
        let v1 = sample();
        let t1 = Tree::from(&v1);
        // Unchanged: the very same tree.
        assert!(Tree::shared_with(&v1, &t1).is_shared(&t1));

        let mut v2 = v1.clone();
        v2["status"]["phase"] = json!("Running");
        let t2 = Tree::shared_with(&v2, &t1);
        assert_eq!(t2, v2);
        assert!(t2["metadata"].is_shared(&t1["metadata"]));
        assert!(t2["spec"].is_shared(&t1["spec"]));
        assert!(t2["status"]["conditions"].is_shared(&t1["status"]["conditions"]));
        assert!(!t2["status"].is_shared(&t1["status"]));
        let (mut a, mut b) = (HashSet::new(), HashSet::new());
        parts(&t1, &mut a);
        parts(&t2, &mut b);
        // New: the root, the status map and the new string.
        assert_eq!(b.difference(&a).count(), 3);

        // Keys added, removed and reordered; lists grown and shrunk; types changed.
        let v3 = json!({
            "status": {"phase": "Running", "conditions": []},
            "metadata": {"labels": {"app": "a"}, "name": "p", "n": "3"},
            "list": [1, "two", [3], {"four": 4}, true, -5, 6],
            "new": {"k": "v"},
        });
        let t3 = Tree::shared_with(&v3, &t2);
        assert_eq!(t3, v3);
        assert_eq!(t3.to_value(), v3);
        assert_eq!(
            serde_json::to_string(&t3).unwrap(),
            serde_json::to_string(&v3).unwrap()
        );
        assert!(t3["list"][3].is_shared(&t2["list"][3]));
        let v4 = json!({"list": [1, "two"]});
        let t4 = Tree::shared_with(&v4, &t3);
        assert_eq!(t4.to_value(), v4);
        assert_eq!(Tree::shared_with(&json!(7), &t4), json!(7));
    }

    #[test]
    fn merge_patch_on_a_tree_is_the_merge_patch_on_values() {
        let base = sample();
        let t = Tree::from(&base);
        for patch in [
            json!({"status": {"phase": "Running", "podIP": "10.0.0.1"}}),
            json!({"status": {"conditions": [{"type": "Ready", "status": "False"}]}}),
            json!({"status": null}),
            json!({"metadata": {"labels": {"app": null, "new": "x"}}, "x": {"a": null, "b": 1}}),
            json!({"list": null, "spec": {"containers": [], "f": {"g": null}}}),
            json!({}),
            json!([1, 2]),
            json!("replaced"),
        ] {
            let want = crate::patch::merge_patched(&base, &patch);
            let got = t.merge_patched(&patch);
            assert_eq!(
                serde_json::to_string(&got).unwrap(),
                serde_json::to_string(&want).unwrap(),
                "{patch}"
            );
        }
        // What the patch leaves alone, or sets to what it was, is shared.
        let same = t.merge_patched(&json!({"status": {"phase": "Pending"}}));
        assert!(same.is_shared(&t));
        let running = t.merge_patched(&json!({"status": {"phase": "Running"}}));
        assert!(running["spec"].is_shared(&t["spec"]));
        assert!(running["status"]["conditions"].is_shared(&t["status"]["conditions"]));
        assert_eq!(
            Tree::Null.merge_patched(&json!({"a": {"b": null}})),
            json!({"a": {}})
        );
    }

    #[test]
    fn with_at_and_without() {
        let t = Tree::from(sample());
        let u = t.with_at(&["metadata", "resourceVersion"], Tree::from(json!("7")));
        let mut want = sample();
        want["metadata"]["resourceVersion"] = json!("7");
        assert_eq!(
            serde_json::to_string(&u).unwrap(),
            serde_json::to_string(&want).unwrap()
        );
        assert!(u["spec"].is_shared(&t["spec"]));
        let v = u.with_at(&["metadata", "name"], Tree::from(json!("q")));
        assert_eq!(v["metadata"]["name"].as_str(), Some("q"));
        assert_eq!(v.as_object().unwrap().len(), t.as_object().unwrap().len());
        let w = v.without("status");
        assert!(w.get("status").is_none() && w.get("spec").is_some());
        assert!(w.without("status").is_shared(&w));
        assert_eq!(
            Tree::Null.with_at(&["a", "b"], Tree::from(json!(1))),
            json!({"a": {"b": 1}})
        );
    }

    #[test]
    fn values_are_two_words_and_entries_three() {
        assert_eq!(std::mem::size_of::<Tree>(), 16);
        assert_eq!(std::mem::size_of::<(Str, Tree)>(), 24);
    }

    #[test]
    fn numbers_read_and_compare_like_serde() {
        for v in [
            json!(0),
            json!(7),
            json!(-3),
            json!(1.5),
            json!(u64::MAX),
            json!(i64::MIN),
        ] {
            let t = Tree::from(&v);
            assert_eq!(t, v);
            assert_eq!(t.to_value(), v);
            assert_eq!(t.to_string(), v.to_string());
            assert_eq!(
                (t.as_i64(), t.as_u64(), t.as_f64(), t.is_i64(), t.is_u64()),
                (v.as_i64(), v.as_u64(), v.as_f64(), v.is_i64(), v.is_u64()),
                "{v}"
            );
        }
        assert_ne!(Tree::from(json!(1)), json!(1.0));
    }

    #[test]
    fn keys_are_interned() {
        let a = Tree::from(json!({"someKey": 1}));
        let b = Tree::from(json!({"someKey": 2}));
        let (ka, kb) = (
            a.as_object().unwrap().keys().next().unwrap(),
            b.as_object().unwrap().keys().next().unwrap(),
        );
        assert!(ka.ptr_eq(kb));
        let long = "k".repeat(INTERN_MAX_LEN + 1);
        let c = Tree::from(json!({long.clone(): 1}));
        let d = Tree::from(json!({long: 1}));
        assert_eq!(c, d);
    }
}

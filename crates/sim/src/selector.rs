//! Label and field selectors, as accepted by the Kubernetes API server in `?labelSelector=` and
//! `?fieldSelector=`, plus the `metav1.LabelSelector` JSON form used inside objects.
//!
//! The grammar, validation rules and error messages follow k8s.io/apimachinery (`pkg/labels`,
//! `pkg/fields`, `pkg/util/validation`), so clients see the same behaviour as against a real cluster.

use std::collections::BTreeSet;
use std::fmt;

use crate::json::Json;

/// Errors from parsing or building a selector. Messages mirror the real apiserver.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum SelectorError {
    /// Grammar error in a label selector string; `message` is e.g. `found ',', expected: identifier`.
    #[error("{message}")]
    InvalidSyntax { input: String, message: String },
    /// An error inside one requirement of a label selector string (apimachinery wraps these).
    #[error("unable to parse requirement: {0}")]
    Requirement(Box<SelectorError>),
    /// A label key that is not a qualified name.
    #[error("key: Invalid value: {key:?}: {reason}")]
    InvalidKey { key: String, reason: String },
    /// A label value that is not valid (or not an integer for `>`/`<`).
    #[error("values[{index}]: Invalid value: {value:?}: {reason}")]
    InvalidValue {
        index: usize,
        value: String,
        reason: String,
    },
    /// A value list of the wrong size for its operator.
    #[error("values: Invalid value: {values:?}: {reason}")]
    InvalidValues { values: Vec<String>, reason: String },
    /// An unknown `matchExpressions[].operator`.
    #[error("{0:?} is not a valid label selector operator")]
    InvalidOperator(String),
    /// A field-selector term without a recognised operator.
    #[error("invalid selector: '{input}'; can't understand '{term}'")]
    InvalidFieldTerm { input: String, term: String },
    /// A field-selector value with a bad backslash escape.
    #[error("invalid field selector: invalid escape sequence: {0}")]
    InvalidEscape(String),
    /// A field-selector value containing an unescaped `,` or `=`.
    #[error("invalid field selector: unescaped character in value: {0:?}")]
    UnescapedChar(char),
    /// A `metav1.LabelSelector` JSON object of the wrong shape.
    #[error("invalid label selector: {0}")]
    Malformed(String),
}

/// A label-selector operator (`k8s.io/apimachinery/pkg/selection`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Operator {
    Equals,
    DoubleEquals,
    NotEquals,
    In,
    NotIn,
    Exists,
    DoesNotExist,
    GreaterThan,
    LessThan,
}

/// One requirement of a label selector: `key <op> values`.
#[derive(Debug, Clone, PartialEq)]
struct Requirement {
    key: String,
    op: Operator,
    values: BTreeSet<String>,
}

const NAME_FMT: &str = "must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyName', or 'my.name', or '123-abc', regex used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')";
const VALUE_FMT: &str = "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyValue', or 'my_value', or '12345', regex used for validation is '(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')";
const DNS_FMT: &str = "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')";

/// `([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]`
fn is_name_token(s: &str) -> bool {
    let b = s.as_bytes();
    match (b.first(), b.last()) {
        (Some(f), Some(l)) => {
            f.is_ascii_alphanumeric()
                && l.is_ascii_alphanumeric()
                && b.iter()
                    .all(|c| c.is_ascii_alphanumeric() || b"-_.".contains(c))
        }
        _ => false,
    }
}

fn is_dns1123_subdomain(s: &str) -> bool {
    s.split('.').all(|label| {
        let b = label.as_bytes();
        let alnum = |c: &u8| c.is_ascii_lowercase() || c.is_ascii_digit();
        b.first().is_some_and(alnum)
            && b.last().is_some_and(alnum)
            && b.iter().all(|c| alnum(c) || *c == b'-')
    })
}

/// `IsQualifiedName`: an optional DNS-subdomain prefix and '/', then a name of at most 63 characters.
fn validate_key(key: &str) -> Result<(), SelectorError> {
    let mut errs: Vec<String> = Vec::new();
    let (prefix, name) = key
        .split_once('/')
        .map_or((None, key), |(p, n)| (Some(p), n));
    if name.contains('/') {
        errs.push(format!("a qualified name {NAME_FMT} with an optional DNS subdomain prefix and '/' (e.g. 'example.com/MyName')"));
    } else {
        match prefix {
            Some("") => errs.push("prefix part must be non-empty".into()),
            Some(p) if p.len() > 253 => {
                errs.push("prefix part must be no more than 253 characters".into())
            }
            Some(p) if !is_dns1123_subdomain(p) => errs.push(format!("prefix part {DNS_FMT}")),
            _ => {}
        }
        match name.len() {
            0 => errs.push("name part must be non-empty".into()),
            64.. => errs.push("name part must be no more than 63 characters".into()),
            _ => {}
        }
        if !is_name_token(name) {
            errs.push(format!("name part {NAME_FMT}"));
        }
    }
    if errs.is_empty() {
        return Ok(());
    }
    let (key, reason) = (key.to_string(), errs.join("; "));
    Err(SelectorError::InvalidKey { key, reason })
}

/// `IsValidLabelValue`: empty, or at most 63 characters of the name charset.
fn validate_value(index: usize, value: &str) -> Result<(), SelectorError> {
    let mut errs: Vec<&str> = Vec::new();
    if value.len() > 63 {
        errs.push("must be no more than 63 characters");
    }
    if !value.is_empty() && !is_name_token(value) {
        errs.push(VALUE_FMT);
    }
    if errs.is_empty() {
        return Ok(());
    }
    let (value, reason) = (value.to_string(), errs.join("; "));
    Err(SelectorError::InvalidValue {
        index,
        value,
        reason,
    })
}

impl Requirement {
    /// Validates and builds a requirement (apimachinery `NewRequirement`).
    fn new(key: &str, op: Operator, values: Vec<String>) -> Result<Self, SelectorError> {
        use Operator::*;
        validate_key(key)?;
        let n = values.len();
        let reason = match op {
            In | NotIn if n == 0 => "for 'in', 'notin' operators, values set can't be empty",
            Equals | DoubleEquals | NotEquals if n != 1 => {
                "exact-match compatibility requires one single value"
            }
            Exists | DoesNotExist if n != 0 => {
                "values set must be empty for exists and does not exist"
            }
            GreaterThan | LessThan if n != 1 => {
                "for 'Gt', 'Lt' operators, exactly one value is required"
            }
            _ => "",
        };
        if !reason.is_empty() {
            let reason = reason.to_string();
            return Err(SelectorError::InvalidValues { values, reason });
        }
        if let (GreaterThan | LessThan, [v]) = (op, values.as_slice())
            && v.parse::<i64>().is_err()
        {
            let (index, value) = (0, v.clone());
            let reason = "for 'Gt', 'Lt' operators, the value must be an integer".into();
            return Err(SelectorError::InvalidValue {
                index,
                value,
                reason,
            });
        }
        for (index, v) in values.iter().enumerate() {
            validate_value(index, v)?;
        }
        let (key, values) = (key.to_string(), values.into_iter().collect());
        Ok(Requirement { key, op, values })
    }

    fn matches<V: Json>(&self, labels: Option<&V>) -> bool {
        use Operator::*;
        let got = labels
            .and_then(|m| m.field(&self.key))
            .and_then(Json::as_str);
        let int = |v: &str| v.parse::<i64>().ok();
        match self.op {
            Equals | DoubleEquals | In => got.is_some_and(|v| self.values.contains(v)),
            NotEquals | NotIn => got.is_none_or(|v| !self.values.contains(v)),
            Exists => got.is_some(),
            DoesNotExist => got.is_none(),
            GreaterThan | LessThan => {
                // Construction guarantees exactly one integer value.
                match (got.and_then(int), self.values.first().and_then(|v| int(v))) {
                    (Some(have), Some(want)) if self.op == GreaterThan => have > want,
                    (Some(have), Some(want)) => have < want,
                    _ => false,
                }
            }
        }
    }
}

impl fmt::Display for Requirement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use Operator::*;
        let join = || Vec::from_iter(self.values.iter().map(String::as_str)).join(",");
        match self.op {
            Exists => write!(f, "{}", self.key),
            DoesNotExist => write!(f, "!{}", self.key),
            Equals => write!(f, "{}={}", self.key, join()),
            DoubleEquals => write!(f, "{}=={}", self.key, join()),
            NotEquals => write!(f, "{}!={}", self.key, join()),
            GreaterThan => write!(f, "{}>{}", self.key, join()),
            LessThan => write!(f, "{}<{}", self.key, join()),
            In => write!(f, "{} in ({})", self.key, join()),
            NotIn => write!(f, "{} notin ({})", self.key, join()),
        }
    }
}

/// A label selector: a conjunction of requirements, kept sorted by key.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct LabelSelector {
    requirements: Vec<Requirement>,
}

/// A token: an identifier (any run of non-whitespace, non-special characters), an operator or
/// punctuation symbol, or the end of input. `in`/`notin` are identifiers except in operator position.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Tok<'a> {
    Ident(&'a str),
    Sym(&'a str),
    End,
}

fn is_ws(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\r' | '\n')
}

fn is_special(c: char) -> bool {
    matches!(c, '=' | '!' | '(' | ')' | ',' | '>' | '<')
}

fn lex(s: &str) -> Vec<Tok<'_>> {
    let mut out = Vec::new();
    let mut rest = s.trim_start_matches(is_ws);
    while let Some(c) = rest.chars().next() {
        let len = if rest.starts_with("!=") || rest.starts_with("==") {
            2
        } else if is_special(c) {
            1
        } else {
            rest.find(|c| is_ws(c) || is_special(c))
                .unwrap_or(rest.len())
        };
        let (lit, tail) = rest.split_at(len);
        out.push(if is_special(c) {
            Tok::Sym(lit)
        } else {
            Tok::Ident(lit)
        });
        rest = tail.trim_start_matches(is_ws);
    }
    out
}

/// Recursive-descent parser over the token list (apimachinery `labels.Parser`).
struct Parser<'a> {
    input: &'a str,
    toks: Vec<Tok<'a>>,
    pos: usize,
}

impl<'a> Parser<'a> {
    fn peek(&self) -> Tok<'a> {
        self.toks.get(self.pos).copied().unwrap_or(Tok::End)
    }

    fn next(&mut self) -> Tok<'a> {
        self.pos += 1;
        self.toks.get(self.pos - 1).copied().unwrap_or(Tok::End)
    }

    fn syntax<T>(&self, message: String) -> Result<T, SelectorError> {
        let input = self.input.to_string();
        Err(SelectorError::InvalidSyntax { input, message })
    }

    /// A syntax error in apimachinery's words: `found '<literal>', expected: <what>`.
    fn fail<T>(&self, tok: Tok<'_>, what: &str) -> Result<T, SelectorError> {
        let lit = match tok {
            Tok::Ident(l) | Tok::Sym(l) => l,
            Tok::End => "",
        };
        self.syntax(format!("found '{lit}', expected: {what}"))
    }

    fn parse(&mut self) -> Result<Vec<Requirement>, SelectorError> {
        let mut reqs = Vec::new();
        loop {
            match self.peek() {
                Tok::Ident(_) | Tok::Sym("!") => {
                    let wrap = |e| SelectorError::Requirement(Box::new(e));
                    reqs.push(self.requirement().map_err(wrap)?);
                    match self.next() {
                        Tok::End => return Ok(reqs),
                        Tok::Sym(",") => match self.peek() {
                            Tok::Ident(_) | Tok::Sym("!") => {}
                            t => return self.fail(t, "identifier after ','"),
                        },
                        t => return self.fail(t, "',' or 'end of string'"),
                    }
                }
                Tok::End => return Ok(reqs),
                t => return self.fail(t, "!, identifier, or 'end of string'"),
            }
        }
    }

    fn requirement(&mut self) -> Result<Requirement, SelectorError> {
        let mut tok = self.next();
        let negated = tok == Tok::Sym("!");
        if negated {
            tok = self.next();
        }
        let Tok::Ident(key) = tok else {
            return self.fail(tok, "identifier");
        };
        validate_key(key)?;
        if negated {
            return Requirement::new(key, Operator::DoesNotExist, Vec::new());
        }
        if matches!(self.peek(), Tok::End | Tok::Sym(",")) {
            return Requirement::new(key, Operator::Exists, Vec::new());
        }
        let op = match self.next() {
            Tok::Ident("in") => Operator::In,
            Tok::Ident("notin") => Operator::NotIn,
            Tok::Sym("=") => Operator::Equals,
            Tok::Sym("==") => Operator::DoubleEquals,
            Tok::Sym("!=") => Operator::NotEquals,
            Tok::Sym(">") => Operator::GreaterThan,
            Tok::Sym("<") => Operator::LessThan,
            t => return self.fail(t, "in, notin, =, ==, !=, gt, lt"),
        };
        let values = match op {
            Operator::In | Operator::NotIn => self.value_set()?,
            _ => self.exact_value()?,
        };
        Requirement::new(key, op, values.into_iter().collect())
    }

    fn exact_value(&mut self) -> Result<BTreeSet<String>, SelectorError> {
        match self.peek() {
            Tok::End | Tok::Sym(",") => Ok(BTreeSet::from([String::new()])),
            Tok::Ident(v) => {
                self.next();
                Ok(BTreeSet::from([v.to_string()]))
            }
            t => self.fail(t, "identifier"),
        }
    }

    fn value_set(&mut self) -> Result<BTreeSet<String>, SelectorError> {
        match self.next() {
            Tok::Sym("(") => {}
            Tok::Ident(l) | Tok::Sym(l) => {
                return self.syntax(format!("found '{l}' expected: '('"));
            }
            Tok::End => return self.syntax("found '' expected: '('".into()), // sic: no comma
        }
        match self.peek() {
            Tok::Sym(")") => {
                self.next();
                Ok(BTreeSet::from([String::new()]))
            }
            Tok::Ident(_) | Tok::Sym(",") => {
                let set = self.identifier_list()?;
                match self.next() {
                    Tok::Sym(")") => Ok(set),
                    t => self.fail(t, "')'"),
                }
            }
            t => self.fail(t, "',', ')' or identifier"),
        }
    }

    fn identifier_list(&mut self) -> Result<BTreeSet<String>, SelectorError> {
        let mut set = BTreeSet::new();
        loop {
            match self.next() {
                Tok::Ident(v) => {
                    set.insert(v.to_string());
                    match self.peek() {
                        Tok::Sym(",") => {}
                        Tok::Sym(")") => return Ok(set),
                        t => return self.fail(t, "',' or ')'"),
                    }
                }
                Tok::Sym(",") => {
                    // Empty values: "(," starts with one, ",," holds one, ",)" ends with one.
                    if set.is_empty() {
                        set.insert(String::new());
                    }
                    match self.peek() {
                        Tok::Sym(")") => {
                            set.insert(String::new());
                            return Ok(set);
                        }
                        Tok::Sym(",") => {
                            self.next();
                            set.insert(String::new());
                        }
                        _ => {}
                    }
                }
                t => return self.fail(t, "',', or identifier"),
            }
        }
    }
}

impl LabelSelector {
    /// Parses the `?labelSelector=` syntax (apimachinery `labels.Parse`). Empty string = everything.
    pub fn parse(s: &str) -> Result<Self, SelectorError> {
        let (input, toks, pos) = (s, lex(s), 0);
        let mut requirements = Parser { input, toks, pos }.parse()?;
        requirements.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(LabelSelector { requirements })
    }

    /// Builds from a `metav1.LabelSelector` JSON object; `null` or `{}` = everything.
    pub fn from_json<V: Json>(v: &V) -> Result<Self, SelectorError> {
        let bad = |m: &str| SelectorError::Malformed(m.to_string());
        let strings = |v: &V| -> Option<Vec<String>> {
            let a = v.as_array()?;
            a.iter().map(|s| s.as_str().map(str::to_string)).collect()
        };
        if !v.is_null() && !v.is_object() {
            return Err(bad("expected an object"));
        }
        let present = |k: &str| v.field(k).filter(|x| !x.is_null());
        let mut reqs = Vec::new();
        if let Some(labels) = present("matchLabels") {
            let entries = labels
                .entries()
                .ok_or_else(|| bad("matchLabels must be an object"))?;
            for (k, v) in entries {
                let v = v
                    .as_str()
                    .ok_or_else(|| bad("matchLabels values must be strings"));
                reqs.push(Requirement::new(k, Operator::Equals, vec![v?.to_string()])?);
            }
        }
        let no_exprs: &[V] = &[];
        let exprs = match present("matchExpressions") {
            None => no_exprs,
            Some(e) => e
                .as_array()
                .ok_or_else(|| bad("matchExpressions must be an array"))?,
        };
        for e in exprs {
            let key = e.field("key").and_then(Json::as_str);
            let key = key.ok_or_else(|| bad("matchExpressions[].key must be a string"))?;
            let op = e.field("operator").and_then(Json::as_str);
            let op = match op.unwrap_or_default() {
                "In" => Operator::In,
                "NotIn" => Operator::NotIn,
                "Exists" => Operator::Exists,
                "DoesNotExist" => Operator::DoesNotExist,
                other => return Err(SelectorError::InvalidOperator(other.to_string())),
            };
            let values = match e.field("values") {
                None => Some(Vec::new()),
                Some(v) if v.is_null() => Some(Vec::new()),
                Some(v) => strings(v),
            };
            let values = values.ok_or_else(|| bad("matchExpressions[].values must be strings"))?;
            reqs.push(Requirement::new(key, op, values)?);
        }
        reqs.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(LabelSelector { requirements: reqs })
    }

    /// Matches a labels map (`/metadata/labels`); None or a non-object = no labels.
    /// Non-string label values (invalid in Kubernetes) count as absent.
    pub fn matches<V: Json>(&self, labels: Option<&V>) -> bool {
        let map = labels.filter(|l| l.is_object());
        self.requirements.iter().all(|r| r.matches(map))
    }

    pub fn is_empty(&self) -> bool {
        self.requirements.is_empty()
    }

    /// The `key=value` pairs every matching object carries (requirements `=`, `==`, and `in`
    /// with one value): a store index can narrow a list to them (the whole selector must still
    /// be applied).
    pub fn required_pairs(&self) -> Vec<(String, String)> {
        self.requirements
            .iter()
            .filter(|r| {
                matches!(
                    r.op,
                    Operator::Equals | Operator::DoubleEquals | Operator::In
                ) && r.values.len() == 1
            })
            .filter_map(|r| Some((r.key.clone(), r.values.first()?.clone())))
            .collect()
    }
}

impl fmt::Display for LabelSelector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<String> = self.requirements.iter().map(ToString::to_string).collect();
        f.write_str(&parts.join(","))
    }
}

/// One field-selector term: `field=value` (`negated` = `!=`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct FieldTerm {
    field: String,
    negated: bool,
    value: String,
}

/// A field selector: a conjunction of `field=value` / `field!=value` terms, kept sorted.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct FieldSelector {
    terms: Vec<FieldTerm>,
}

/// Splits on commas not preceded by a backslash escape (apimachinery `splitTerms`).
fn split_terms(s: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let (mut start, mut escaped) = (0, false);
    for (i, c) in s.char_indices() {
        if escaped {
            escaped = false;
        } else if c == '\\' {
            escaped = true;
        } else if c == ',' {
            out.push(&s[start..i]);
            start = i + 1;
        }
    }
    out.push(&s[start..]);
    out
}

fn unescape_value(s: &str) -> Result<String, SelectorError> {
    let mut out = String::with_capacity(s.len());
    let mut escaped = false;
    for c in s.chars() {
        if escaped {
            if !matches!(c, '\\' | ',' | '=') {
                return Err(SelectorError::InvalidEscape(format!("\\{c}")));
            }
            out.push(c);
            escaped = false;
        } else if c == '\\' {
            escaped = true;
        } else if matches!(c, ',' | '=') {
            return Err(SelectorError::UnescapedChar(c));
        } else {
            out.push(c);
        }
    }
    if escaped {
        return Err(SelectorError::InvalidEscape("\\".into()));
    }
    Ok(out)
}

impl FieldSelector {
    /// Parses the `?fieldSelector=` syntax (apimachinery `fields.ParseSelector`). Empty = everything.
    pub fn parse(s: &str) -> Result<Self, SelectorError> {
        let mut terms = Vec::new();
        for part in split_terms(s).into_iter().filter(|p| !p.is_empty()) {
            // The first `!=`, `==` or `=` (in that preference at each position) splits the term.
            let split = part.char_indices().find_map(|(i, _)| {
                let rest = &part[i..];
                ["!=", "==", "="]
                    .into_iter()
                    .find(|op| rest.starts_with(op))
                    .map(|op| (i, op))
            });
            let Some((i, op)) = split else {
                let (input, term) = (s.to_string(), part.to_string());
                return Err(SelectorError::InvalidFieldTerm { input, term });
            };
            let (field, negated) = (part[..i].to_string(), op == "!=");
            let value = unescape_value(&part[i + op.len()..])?;
            terms.push(FieldTerm {
                field,
                negated,
                value,
            });
        }
        terms.sort();
        Ok(FieldSelector { terms })
    }

    /// Field names used (deduplicated, in order), so the caller can reject unsupported ones.
    pub fn fields(&self) -> Vec<&str> {
        let mut out: Vec<&str> = self.terms.iter().map(|t| t.field.as_str()).collect();
        out.dedup(); // terms are sorted by field
        out
    }

    /// Evaluates every term against the object using [`field_value`].
    pub fn matches<V: Json>(&self, obj: &V) -> bool {
        self.terms
            .iter()
            .all(|t| (field_value(obj, &t.field) == t.value) != t.negated)
    }

    pub fn is_empty(&self) -> bool {
        self.terms.is_empty()
    }

    /// The value a `field=value` (or `==`) term requires, if there is one: a store index can
    /// narrow a list to it (the whole selector must still be applied).
    pub fn required_value(&self, field: &str) -> Option<&str> {
        self.terms
            .iter()
            .find(|t| t.field == field && !t.negated)
            .map(|t| t.value.as_str())
    }
}

/// Boolean fields the apiserver renders with `strconv.FormatBool`, so an absent value reads "false".
const BOOL_FIELDS_DEFAULT_FALSE: &[&str] = &["spec.unschedulable", "spec.hostNetwork"];

/// Renders a dotted field path (e.g. `spec.nodeName`) of an object the way field selectors see it:
/// strings as-is, bools as `true`/`false`, numbers in decimal, and missing/null as "" (or "false"
/// for the fields in `BOOL_FIELDS_DEFAULT_FALSE`). Objects and arrays render as "".
/// A numeric segment indexes into an array.
pub fn field_value<V: Json>(obj: &V, field: &str) -> String {
    let mut cur = Some(obj);
    for seg in field.split('.') {
        cur = cur.and_then(|c| match c.as_array() {
            Some(a) => seg.parse::<usize>().ok().and_then(|i| a.get(i)),
            None => c.field(seg),
        });
    }
    match cur {
        Some(c) if c.as_str().is_some() => c.as_str().unwrap_or_default().to_string(),
        Some(c) if c.as_bool().is_some() => c.as_bool().unwrap_or_default().to_string(),
        Some(c) if c.number().is_some() => c.number().map(|n| n.to_string()).unwrap_or_default(),
        None if BOOL_FIELDS_DEFAULT_FALSE.contains(&field) => "false".into(),
        Some(c) if c.is_null() && BOOL_FIELDS_DEFAULT_FALSE.contains(&field) => "false".into(),
        _ => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    /// Rows of `left => right`, whitespace-trimmed; blank lines skipped.
    fn rows(table: &str) -> impl Iterator<Item = (&str, &str)> {
        table
            .lines()
            .filter_map(|l| l.split_once(" => "))
            .map(|(a, b)| (a.trim(), b.trim()))
    }

    /// `selector => matches?` against labels {app: web, tier: front, n: "5", e: ""}.
    const LABEL_MATCHES: &str = "
        => true
        app=web => true
        app==web => true
        app=db => false
        app!=db => true
        app!=web => false
        missing!=x => true
        app in (web,db) => true
        app in (db) => false
        missing in (x) => false
        app notin (db) => true
        app notin (web, db) => false
        missing notin (x) => true
        app => true
        missing => false
        !missing => true
        !app => false
        n>4 => true
        n>5 => false
        n<6 => true
        n<5 => false
        app>1 => false
        missing<1 => false
        e= => true
        e in () => true
        e in (,x) => true
        app = web ,  tier in ( front ) , ! missing  => true
        app=web,tier=back => false
        in=x => false
        !in => true
        notin notin (in) => true";

    #[test]
    fn label_selector_matches() {
        let l = json!({"app": "web", "tier": "front", "n": "5", "e": ""});
        for (sel, want) in rows(LABEL_MATCHES) {
            let s = LabelSelector::parse(sel).unwrap_or_else(|e| panic!("{sel}: {e}"));
            assert_eq!(s.matches(Some(&l)), want == "true", "{sel}");
        }
        let s = LabelSelector::parse("!a,b!=c").unwrap();
        assert!(s.matches(None::<&serde_json::Value>) && s.matches(Some(&json!("not-a-map"))));
        assert!(
            !LabelSelector::parse("a")
                .unwrap()
                .matches(None::<&serde_json::Value>)
        );
    }

    /// `selector => error message prefix`.
    const LABEL_ERRORS: &str = r#"
        a in (b => unable to parse requirement: found '', expected: ',' or ')'
        a in b) => unable to parse requirement: found 'b' expected: '('
        a in (b)) => found ')', expected: ',' or 'end of string'
        a in => unable to parse requirement: found '' expected: '('
        a notin x => unable to parse requirement: found 'x' expected: '('
        a in (,,) => unable to parse requirement: found ')', expected: ',', or identifier
        a in (b c) => unable to parse requirement: found 'c', expected: ',' or ')'
        a in (=) => unable to parse requirement: found '=', expected: ',', ')' or identifier
        a=b, => found '', expected: identifier after ','
        a=b,,c => found ',', expected: identifier after ','
        !!a => unable to parse requirement: found '!', expected: identifier
        ! => unable to parse requirement: found '', expected: identifier
        ,a => found ',', expected: !, identifier, or 'end of string'
        a b => unable to parse requirement: found 'b', expected: in, notin, =, ==, !=, gt, lt
        a=(b) => unable to parse requirement: found '(', expected: identifier
        !a=b => found '=', expected: ',' or 'end of string'
        -a=b => unable to parse requirement: key: Invalid value: "-a": name part must consist
        a/b/c => unable to parse requirement: key: Invalid value: "a/b/c": a qualified name must
        Ex.com/a => unable to parse requirement: key: Invalid value: "Ex.com/a": prefix part a lowercase
        /a => unable to parse requirement: key: Invalid value: "/a": prefix part must be non-empty
        a/ => unable to parse requirement: key: Invalid value: "a/": name part must be non-empty
        a=-b => unable to parse requirement: values[0]: Invalid value: "-b": a valid label must
        a in (x,b_) => unable to parse requirement: values[0]: Invalid value: "b_": a valid label
        a>x => unable to parse requirement: values[0]: Invalid value: "x": for 'Gt', 'Lt' operators
        a<-1 => unable to parse requirement: values[0]: Invalid value: "-1": a valid label must"#;

    #[test]
    fn label_selector_parse_errors() {
        for (sel, want) in rows(LABEL_ERRORS) {
            let got = LabelSelector::parse(sel).expect_err(sel).to_string();
            assert!(got.starts_with(want), "{sel}: {got}");
        }
        let (long_key, long_value) = ("k".repeat(64), "v".repeat(64));
        let err = LabelSelector::parse(&long_key).unwrap_err().to_string();
        assert!(
            err.ends_with("name part must be no more than 63 characters"),
            "{err}"
        );
        let err = LabelSelector::parse(&format!("a={long_value}")).unwrap_err();
        assert!(
            err.to_string()
                .ends_with("must be no more than 63 characters")
        );
        let SelectorError::Requirement(inner) = err else {
            panic!()
        };
        assert!(matches!(
            *inner,
            SelectorError::InvalidValue { index: 0, .. }
        ));
        let ok = format!("{}.com/{}=v", "p".repeat(60), "n".repeat(63));
        assert!(LabelSelector::parse(&ok).is_ok());
    }

    #[test]
    fn display_is_canonical() {
        let cases = [
            ("b=1, a==2", "a==2,b=1"),
            ("x notin (z,y,y), !w", "!w,x notin (y,z)"),
            ("k in (a,)", "k in (,a)"),
            ("k in ()", "k in ()"),
            ("k=,j!=v,n>3,m<2,e", "e,j!=v,k=,m<2,n>3"),
        ];
        for (sel, want) in cases {
            let s = LabelSelector::parse(sel).unwrap();
            assert_eq!(s.to_string(), want);
            assert_eq!(LabelSelector::parse(want).unwrap(), s);
        }
    }

    /// `metav1.LabelSelector JSON => matches? | error message`, against {app: web, tier: front}.
    const JSON_CASES: &str = r#"
        null => true
        {} => true
        {"matchLabels": null, "matchExpressions": null} => true
        {"matchLabels": {"app": "web"}} => true
        {"matchLabels": {"app": "db"}} => false
        {"matchExpressions": [{"key": "app", "operator": "In", "values": ["db", "web"]}]} => true
        {"matchExpressions": [{"key": "app", "operator": "NotIn", "values": ["web"]}]} => false
        {"matchExpressions": [{"key": "tier", "operator": "Exists"}]} => true
        {"matchExpressions": [{"key": "tier", "operator": "DoesNotExist", "values": []}]} => false
        {"matchLabels": {"app": "web"}, "matchExpressions": [{"key": "x", "operator": "DoesNotExist"}]} => true
        {"matchExpressions": [{"key": "a", "operator": "Gt", "values": ["1"]}]} => "Gt" is not a valid label selector operator
        {"matchExpressions": [{"key": "a", "operator": "In", "values": []}]} => values: Invalid value: []: for 'in', 'notin' operators, values set can't be empty
        {"matchExpressions": [{"key": "a", "operator": "NotIn"}]} => values: Invalid value: []: for 'in', 'notin'
        {"matchExpressions": [{"key": "a", "operator": "Exists", "values": ["x"]}]} => values: Invalid value: ["x"]: values set must be empty
        {"matchLabels": {"a b": "x"}} => key: Invalid value: "a b": name part must
        {"matchLabels": {"a": "x y"}} => values[0]: Invalid value: "x y": a valid label
        {"matchLabels": {"a": 1}} => invalid label selector: matchLabels values must be strings
        {"matchExpressions": {}} => invalid label selector: matchExpressions must be an array
        [] => invalid label selector: expected an object"#;

    #[test]
    fn label_selector_from_json() {
        let l = json!({"app": "web", "tier": "front"});
        for (src, want) in rows(JSON_CASES) {
            let v: serde_json::Value = serde_json::from_str(src).unwrap();
            match (LabelSelector::from_json(&v), want) {
                (Ok(s), "true" | "false") => {
                    assert_eq!(s.matches(Some(&l)), want == "true", "{src}")
                }
                (Err(e), _) => assert!(e.to_string().starts_with(want), "{src}: {e}"),
                (Ok(s), _) => panic!("{src}: unexpectedly parsed as {s}"),
            }
        }
        let s = LabelSelector::from_json(&json!({"matchLabels": {"b": "1", "a": "2"}})).unwrap();
        assert_eq!(s.to_string(), "a=2,b=1");
        assert!(
            LabelSelector::from_json(&serde_json::Value::Null)
                .unwrap()
                .is_empty()
        );
    }

    /// `object selector => matches? | error message`.
    const FIELD_CASES: &str = r"
        pod  => true
        pod , => true
        pod metadata.name=p1 => true
        pod metadata.name==p1 => true
        pod metadata.name!=p1 => false
        pod metadata.name=p2 => false
        pod spec.nodeName=n1,status.phase=Running => true
        pod spec.nodeName=n1,status.phase!=Running => false
        node spec.nodeName= => true
        pod spec.nodeName!= => true
        event involvedObject.kind=Pod => true
        pod spec.hostNetwork=true => true
        node spec.hostNetwork=false => true
        pod spec.priority=10 => true
        node spec.unschedulable=false => true
        node spec.unschedulable!=true => true
        node spec.unschedulable= => false
        pod metadata.annotations.x=a\,b\=c\\d => true
        pod x => invalid selector: 'x'; can't understand 'x'
        pod a=b,x => invalid selector: 'a=b,x'; can't understand 'x'
        pod a=b=c => invalid field selector: unescaped character in value: '='
        pod a=b\x => invalid field selector: invalid escape sequence: \x
        pod a=b\ => invalid field selector: invalid escape sequence: \";

    #[test]
    fn field_selectors() {
        let pod = json!({
            "metadata": {"name": "p1", "annotations": {"x": "a,b=c\\d"}},
            "spec": {"nodeName": "n1", "hostNetwork": true, "priority": 10},
            "status": {"phase": "Running"},
        });
        let node = json!({"metadata": {"name": "n1"}, "spec": {}});
        let event = json!({"involvedObject": {"kind": "Pod"}});
        for (src, want) in rows(FIELD_CASES) {
            let (obj, sel) = src.split_once(' ').unwrap_or((src, ""));
            let obj = [("pod", &pod), ("node", &node), ("event", &event)]
                .into_iter()
                .find(|o| o.0 == obj);
            match (FieldSelector::parse(sel.trim()), want) {
                (Ok(s), "true" | "false") => {
                    assert_eq!(s.matches(obj.unwrap().1), want == "true", "{sel}")
                }
                (Err(e), _) => assert_eq!(e.to_string(), want, "{sel}"),
                (Ok(s), _) => panic!("{sel}: unexpectedly parsed as {s:?}"),
            }
        }
        let s =
            FieldSelector::parse("status.phase=Running,metadata.name!=a,status.phase!=x").unwrap();
        assert_eq!(s.fields(), vec!["metadata.name", "status.phase"]);
        assert!(FieldSelector::parse("").unwrap().is_empty());
    }

    #[test]
    fn field_value_rendering() {
        let o = json!({"a": {"s": "x", "b": false, "n": 1.5, "i": -3, "z": null, "o": {}, "l": ["p", "q"]},
            "spec": {"hostNetwork": null}});
        let cases = [
            ("a.s", "x"),
            ("a.b", "false"),
            ("a.n", "1.5"),
            ("a.i", "-3"),
            ("a.z", ""),
            ("a.o", ""),
            ("a.l.1", "q"),
            ("a.missing", ""),
            ("", ""),
            ("spec.hostNetwork", "false"),
            ("spec.unschedulable", "false"),
        ];
        for (f, want) in cases {
            assert_eq!(field_value(&o, f), want, "{f}");
        }
        let node = json!({"spec": {"unschedulable": true}});
        assert_eq!(field_value(&node, "spec.unschedulable"), "true");
    }

    const NAME: &str = "[A-Za-z0-9]([A-Za-z0-9_.-]{0,8}[A-Za-z0-9])?";

    fn key() -> impl Strategy<Value = String> {
        let prefix = "([a-z0-9]([a-z0-9-]{0,6}[a-z0-9])?(\\.[a-z0-9]{1,4}){0,2}/)?";
        (prefix, NAME).prop_map(|(p, n)| format!("{p}{n}"))
    }

    fn value() -> impl Strategy<Value = String> {
        prop_oneof![Just(String::new()), NAME.prop_map(|s| s)]
    }

    /// A valid requirement in string form, with random spacing.
    fn requirement() -> impl Strategy<Value = String> {
        let eq = prop_oneof![Just("="), Just("=="), Just("!=")];
        let set_op = prop_oneof![Just("in"), Just("notin")];
        prop_oneof![
            (key(), "[ \t]{0,2}", eq, value())
                .prop_map(|(k, w, op, v)| format!("{w}{k}{w}{op}{w}{v}")),
            (key(), prop_oneof![Just(">"), Just("<")], "[0-9]{1,6}")
                .prop_map(|(k, op, v)| format!("{k}{op}{v}")),
            (key(), set_op, prop::collection::vec(NAME, 0..4))
                .prop_map(|(k, op, vs)| format!("{k} {op} ({})", vs.join(", "))),
            key(),
            key().prop_map(|k| format!("! {k}")),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig { failure_persistence: None, ..ProptestConfig::default() })]

        #[test]
        fn parse_never_panics(s in "\\PC{0,40}", soup in "[a-z!=(),<> \\\\in]{0,30}") {
            let _ = (LabelSelector::parse(&s), FieldSelector::parse(&s), FieldSelector::parse(&soup));
            if let Ok(sel) = LabelSelector::parse(&soup) {
                prop_assert_eq!(LabelSelector::parse(&sel.to_string()), Ok(sel));
            }
        }

        #[test]
        fn display_round_trips(reqs in prop::collection::vec(requirement(), 0..5)) {
            let src = reqs.join(",");
            let sel = LabelSelector::parse(&src).map_err(|e| TestCaseError::fail(format!("{src}: {e}")))?;
            prop_assert_eq!(LabelSelector::parse(&sel.to_string()), Ok(sel));
        }

        #[test]
        fn equality_selector_matches_its_labels(map in prop::collection::btree_map(key(), value(), 0..6)) {
            let labels = serde_json::Value::Object(map.iter().map(|(k, v)| (k.clone(), json!(v))).collect());
            let src = Vec::from_iter(map.iter().map(|(k, v)| format!("{k}={v}"))).join(",");
            let parse = |s: &str| LabelSelector::parse(s).map_err(|e| TestCaseError::fail(format!("{s}: {e}")));
            prop_assert!(parse(&src)?.matches(Some(&labels)));
            for k in map.keys() {
                prop_assert!(!parse(&format!("!{k}"))?.matches(Some(&labels)), "!{} matched", k);
            }
        }
    }
}

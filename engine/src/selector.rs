//! The selector grammar of API §4, parsed in one place and used by reads (and later by
//! reducers, pipes and consumers): `type=a,b` / `type=!a`, `from`/`to` index ranges,
//! `since`/`until` timestamp ranges, and `sub=('a'),(1)` substream patterns on factories.
//!
//! A selector is applied twice: as SQL conditions when reading from storage (see
//! `store::read`), and as [`Selector::matches`] on live paths.

use std::fmt::Write as _;

use crate::error::{EngineError, Result};
use crate::event::parse_timestamp;
use crate::order::Index;
use crate::path::{Arg, Args};

/// A parsed selector. The empty selector matches every event.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Selector {
    /// Only these types (empty: any).
    pub types: Vec<String>,
    /// Never these types.
    pub exclude_types: Vec<String>,
    /// Inclusive index range.
    pub from: Option<Index>,
    pub to: Option<Index>,
    /// Inclusive timestamp range, unix ms.
    pub since: Option<i64>,
    pub until: Option<i64>,
    /// Substream patterns (factories only); empty: all substreams.
    pub subs: Vec<Args>,
}

/// The selector's parameter names.
pub const SELECTOR_PARAMS: [&str; 6] = ["type", "from", "to", "since", "until", "sub"];

impl Selector {
    /// Takes the selector parameters out of `params` (query pairs, decoded) and returns
    /// the selector; the other pairs stay for the caller, which refuses the ones it
    /// does not know.
    pub fn take_from(params: &mut Vec<(String, String)>) -> Result<Self> {
        let mut sel = Selector::default();
        let mut rest = Vec::with_capacity(params.len());
        for (key, value) in params.drain(..) {
            match key.as_str() {
                "type" => sel.parse_types(&value)?,
                "from" => sel.from = Some(parse_index("from", &value)?),
                "to" => sel.to = Some(parse_index("to", &value)?),
                "since" => sel.since = Some(parse_timestamp("selector since", &value)?),
                "until" => sel.until = Some(parse_timestamp("selector until", &value)?),
                "sub" => sel.subs.extend(parse_subs(&value)?),
                _ => rest.push((key, value)),
            }
        }
        *params = rest;
        Ok(sel)
    }

    /// Parses a selector written as a query string (`type=a&from=3`), as stored with
    /// consumers. Any other parameter is an error.
    pub fn parse_query(query: &str) -> Result<Self> {
        let mut params = crate::query::pairs(query)?;
        crate::query::refuse_repeated(&params)?;
        let sel = Self::take_from(&mut params)?;
        crate::query::refuse_unknown(&params, &SELECTOR_PARAMS)?;
        Ok(sel)
    }

    fn parse_types(&mut self, value: &str) -> Result<()> {
        for item in value.split(',') {
            let item = item.trim();
            let (list, name) = match item.strip_prefix('!') {
                Some(n) => (&mut self.exclude_types, n),
                None => (&mut self.types, item),
            };
            if name.is_empty() {
                return Err(EngineError::invalid(format!(
                    "selector type=\"{value}\" has an empty type name"
                )));
            }
            crate::event::check_type(name).map_err(|e| e.context("selector type"))?;
            list.push(name.to_owned());
        }
        Ok(())
    }

    /// True when the selector puts no condition on substreams or events.
    pub fn is_empty(&self) -> bool {
        *self == Selector::default()
    }

    /// Whether an event passes the type, index and time conditions (substream
    /// patterns are checked with [`Selector::matches_args`]).
    pub fn matches(&self, event_type: &str, index: Index, timestamp: i64) -> bool {
        (self.types.is_empty() || self.types.iter().any(|t| t == event_type))
            && !self.exclude_types.iter().any(|t| t == event_type)
            && self.from.is_none_or(|f| index >= f)
            && self.to.is_none_or(|t| index <= t)
            && self.since.is_none_or(|s| timestamp >= s)
            && self.until.is_none_or(|u| timestamp <= u)
    }

    /// Whether every event with an index in `indexes` and a timestamp in `timestamps`
    /// (both inclusive) matches, as [`Selector::matches`] would say of each; `None`
    /// when that depends on the events' types.
    pub fn matches_all_within(
        &self,
        indexes: (Index, Index),
        timestamps: (i64, i64),
    ) -> Option<bool> {
        if !self.types.is_empty() || !self.exclude_types.is_empty() {
            return None;
        }
        Some(
            self.from.is_none_or(|f| indexes.0 >= f)
                && self.to.is_none_or(|t| indexes.1 <= t)
                && self.since.is_none_or(|s| timestamps.0 >= s)
                && self.until.is_none_or(|u| timestamps.1 <= u),
        )
    }

    /// Whether a substream's args match one of the `sub` patterns (or there are none).
    pub fn matches_args(&self, args: Option<&Args>) -> bool {
        if self.subs.is_empty() {
            return true;
        }
        let Some(args) = args else { return false };
        self.subs.iter().any(|p| pattern_matches(p, args))
    }

    /// The `sub` patterns that contain no glob: they name substreams exactly.
    pub fn exact_subs(&self) -> Option<Vec<&Args>> {
        self.subs
            .iter()
            .all(|p| !p.as_slice().iter().any(is_glob))
            .then(|| self.subs.iter().collect())
    }

    /// The selector as a canonical query string (no leading `?`), for storing.
    pub fn to_query(&self) -> String {
        let mut q = String::new();
        let sep = |q: &mut String| {
            if !q.is_empty() {
                q.push('&');
            }
        };
        if !self.types.is_empty() || !self.exclude_types.is_empty() {
            sep(&mut q);
            let items: Vec<String> = self
                .types
                .iter()
                .cloned()
                .chain(self.exclude_types.iter().map(|t| format!("!{t}")))
                .collect();
            let _ = write!(q, "type={}", crate::query::encode(&items.join(",")));
        }
        for (k, v) in [("from", self.from), ("to", self.to)] {
            if let Some(v) = v {
                sep(&mut q);
                let _ = write!(q, "{k}={v}");
            }
        }
        for (k, v) in [("since", self.since), ("until", self.until)] {
            if let Some(v) = v {
                sep(&mut q);
                let _ = write!(q, "{k}={v}");
            }
        }
        if !self.subs.is_empty() {
            sep(&mut q);
            let subs: Vec<String> = self.subs.iter().map(|a| format!("({a})")).collect();
            let _ = write!(q, "sub={}", crate::query::encode(&subs.join(",")));
        }
        q
    }
}

fn parse_index(field: &str, value: &str) -> Result<Index> {
    crate::query::whole_number(value).map(Index).ok_or_else(|| {
        EngineError::invalid(format!(
            "selector {field}=\"{value}\" is not an event index (0 to {})",
            i64::MAX
        ))
    })
}

fn is_glob(a: &Arg) -> bool {
    matches!(a, Arg::Str(s) if s.contains('*'))
}

fn pattern_matches(pattern: &Args, args: &Args) -> bool {
    let (p, a) = (pattern.as_slice(), args.as_slice());
    p.len() == a.len()
        && p.iter().zip(a).all(|(p, a)| match (p, a) {
            (Arg::Str(p), Arg::Str(a)) if p.contains('*') => glob(p, a),
            _ => p == a,
        })
}

/// `*` matches any run of characters (also none); everything else is literal.
pub(crate) fn glob(pattern: &str, text: &str) -> bool {
    let mut parts = pattern.split('*');
    let first = parts.next().unwrap_or("");
    let Some(mut rest) = text.strip_prefix(first) else {
        return false;
    };
    let parts: Vec<&str> = parts.collect();
    let Some((last, middle)) = parts.split_last() else {
        return rest.is_empty();
    };
    for part in middle {
        match rest.find(part) {
            Some(i) => rest = &rest[i + part.len()..],
            None => return false,
        }
    }
    rest.len() >= last.len() && rest.ends_with(last)
}

/// Splits `('a'),(1,'b')` into the argument lists, respecting quotes.
fn parse_subs(value: &str) -> Result<Vec<Args>> {
    let bad = |why: &str| EngineError::invalid(format!("selector sub=\"{value}\" {why}"));
    let mut out = Vec::new();
    let mut chars = value.char_indices().peekable();
    loop {
        while chars.next_if(|(_, c)| c.is_whitespace()).is_some() {}
        match chars.next() {
            Some((_, '(')) => {}
            _ => return Err(bad("must be a list of argument lists like ('a'),(1)")),
        }
        let start = chars.peek().map_or(value.len(), |(i, _)| *i);
        let mut quote: Option<char> = None;
        let mut end = None;
        while let Some((i, c)) = chars.next() {
            match (quote, c) {
                (Some(_), '\\') => {
                    chars.next();
                }
                (Some(q), c) if c == q => quote = None,
                (None, '\'' | '"') => quote = Some(c),
                (None, ')') => {
                    end = Some(i);
                    break;
                }
                _ => {}
            }
        }
        let end = end.ok_or_else(|| bad("has an argument list without its closing ')'"))?;
        let args = Args::parse(&value[start..end])
            .map_err(|e| bad(&format!("is not valid: {}", e.message)))?;
        out.push(args);
        while chars.next_if(|(_, c)| c.is_whitespace()).is_some() {}
        match chars.next() {
            None => return Ok(out),
            Some((_, ',')) => {}
            Some(_) => return Err(bad("must separate argument lists with commas")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(q: &str) -> Vec<(String, String)> {
        crate::query::pairs(q).unwrap()
    }

    #[test]
    fn parses_every_parameter() {
        let mut p = pairs("type=a,b,!c&from=2&to=9&since=5&until=2026-01-01T00:00:00Z&limit=3");
        let s = Selector::take_from(&mut p).unwrap();
        assert_eq!(s.types, ["a", "b"]);
        assert_eq!(s.exclude_types, ["c"]);
        assert_eq!(
            (s.from, s.to, s.since),
            (Some(Index(2)), Some(Index(9)), Some(5))
        );
        assert_eq!(s.until, Some(1_767_225_600_000));
        assert_eq!(p, vec![("limit".to_owned(), "3".to_owned())]);
        assert!(s.matches("a", Index(2), 5));
        assert!(!s.matches("c", Index(2), 5));
        assert!(!s.matches("a", Index(10), 5));
        assert!(!s.matches("a", Index(3), 4));
    }

    #[test]
    fn ranges_answer_for_every_event_within_them() {
        let s = Selector::parse_query("from=2&to=9&since=5&until=20").unwrap();
        assert_eq!(
            s.matches_all_within((Index(2), Index(9)), (5, 20)),
            Some(true)
        );
        assert_eq!(
            s.matches_all_within((Index(3), Index(4)), (6, 7)),
            Some(true)
        );
        // one end outside is enough for some event not to match
        assert_eq!(
            s.matches_all_within((Index(1), Index(9)), (5, 20)),
            Some(false)
        );
        assert_eq!(
            s.matches_all_within((Index(2), Index(10)), (5, 20)),
            Some(false)
        );
        assert_eq!(
            s.matches_all_within((Index(2), Index(9)), (4, 20)),
            Some(false)
        );
        assert_eq!(
            s.matches_all_within((Index(2), Index(9)), (5, 21)),
            Some(false)
        );
        assert_eq!(
            Selector::default()
                .matches_all_within((Index(0), Index(u64::MAX)), (i64::MIN, i64::MAX)),
            Some(true)
        );
        // types are not ranges: the events themselves decide
        for q in ["type=a", "type=!a"] {
            let s = Selector::parse_query(q).unwrap();
            assert_eq!(
                s.matches_all_within((Index(0), Index(0)), (0, 0)),
                None,
                "{q}"
            );
        }
    }

    #[test]
    fn refuses_malformed_values() {
        for q in [
            "from=18446744073709551615",
            "from=x",
            "to=-1",
            "since=soon",
            "type=",
            "type=a,,b",
            "sub=a",
            "sub=('a'",
            "sub=('a')x",
        ] {
            let e = Selector::take_from(&mut pairs(q)).unwrap_err();
            assert!(e.message.contains("selector"), "{q}: {}", e.message);
        }
        assert!(Selector::parse_query("type=a&limit=2").is_err());
    }

    #[test]
    fn sub_patterns_and_globs() {
        let s = Selector::parse_query("sub=('cust-*'),('x,)y', 2)").unwrap();
        assert_eq!(s.subs.len(), 2);
        let a = |t: &str| Args::parse(t).unwrap();
        assert!(s.matches_args(Some(&a("'cust-42'"))));
        assert!(s.matches_args(Some(&a("'x,)y',2"))));
        assert!(!s.matches_args(Some(&a("'other'"))));
        assert!(!s.matches_args(Some(&a("'cust-42',1"))));
        assert!(!s.matches_args(None));
        assert!(s.exact_subs().is_none());
        assert!(glob("a*b*c", "aXXbYYc"));
        assert!(glob("*", ""));
        assert!(!glob("a*b", "ab_"));
        assert!(glob("a*a", "aa"));
        assert!(!glob("a*a", "a"));
    }

    #[test]
    fn round_trips_through_query() {
        let s =
            Selector::parse_query("type=a,!b&from=1&to=4&since=3&until=9&sub=('x*'),(1)").unwrap();
        assert_eq!(Selector::parse_query(&s.to_query()).unwrap(), s);
        assert_eq!(Selector::default().to_query(), "");
    }
}

//! The two numbers that order events: an event's [`Position`] among all the events of
//! the database, and its [`Index`] within its (sub)stream. They have types of their own
//! so that one is never passed, compared or stored where the other belongs; SQL rows
//! and URL parameters turn into them where they are read.

use std::fmt;

use serde::{Deserialize, Serialize};

/// An event's place in the order of all appends, gapless from 1 across every stream
/// of the database; `Position(0)` is the place before the first event.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize,
)]
#[serde(transparent)]
pub struct Position(pub i64);

impl Position {
    /// Before the first event.
    pub const START: Position = Position(0);

    pub fn get(self) -> i64 {
        self.0
    }

    /// The position after this one.
    pub fn next(self) -> Position {
        Position(self.0 + 1)
    }
}

impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl From<Position> for i64 {
    fn from(p: Position) -> i64 {
        p.0
    }
}

/// An event's place within its (sub)stream, gapless from 0.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize,
)]
#[serde(transparent)]
pub struct Index(pub u64);

impl Index {
    pub fn get(self) -> u64 {
        self.0
    }

    /// The index after this one.
    pub fn next(self) -> Index {
        Index(self.0 + 1)
    }

    /// As SQL stores it (a signed integer; past its range, the largest).
    pub fn sql(self) -> i64 {
        i64::try_from(self.0).unwrap_or(i64::MAX)
    }
}

impl fmt::Display for Index {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl From<Index> for u64 {
    fn from(i: Index) -> u64 {
        i.0
    }
}

impl PartialEq<u64> for Index {
    fn eq(&self, other: &u64) -> bool {
        self.0 == *other
    }
}

impl PartialEq<i64> for Position {
    fn eq(&self, other: &i64) -> bool {
        self.0 == *other
    }
}

impl From<Index> for serde_json::Value {
    fn from(i: Index) -> Self {
        i.0.into()
    }
}

impl From<Position> for serde_json::Value {
    fn from(p: Position) -> Self {
        p.0.into()
    }
}

#[cfg(test)]
mod tests {
    use super::{Index, Position};

    #[test]
    fn they_serialize_as_plain_numbers_and_step_by_one() {
        assert_eq!(serde_json::to_string(&Index(7)).unwrap(), "7");
        assert_eq!(serde_json::to_string(&Position(42)).unwrap(), "42");
        assert_eq!(Index(7).next(), Index(8));
        assert_eq!(Position::START.next(), Position(1));
        assert_eq!(format!("{} {}", Index(3), Position(9)), "3 9");
    }
}

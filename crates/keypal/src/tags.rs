//! Tags of a verification: what the request was for (an endpoint, a region, a customer
//! plan), counted with it by usage analytics.
//!
//! A [`Tags`] is checked when it is made, so a manager never sees an invalid one:
//! a list of at most [`Tags::MAX_COUNT`] tags, each 1 to [`Tags::MAX_LENGTH`]
//! characters (Unicode scalar values) without control characters (`char::is_control`:
//! no newlines, tabs or NUL). Then duplicates are dropped and the tags sorted, so
//! `["b", "a", "a"]` counts once under `a` and once under `b`.
//!
//! No tags cost nothing (no allocation); tags are shared, so handing them to an
//! [`crate::Event`] copies a pointer.
//!
//! ```
//! use keypal::Tags;
//! let tags = Tags::new(["GET /v1/orders", "eu-west", "GET /v1/orders"])?;
//! assert_eq!(tags.as_slice(), ["GET /v1/orders", "eu-west"]);
//! assert!(Tags::new(["line\nbreak"]).is_err());
//! assert!(Tags::default().is_empty());
//! # Ok::<(), keypal::InvalidTags>(())
//! ```

use std::fmt;
use std::ops::Deref;
use std::sync::Arc;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Checked, deduplicated, sorted verification tags (see the [module](self)).
#[derive(Clone, Default, PartialEq, Eq, Hash)]
pub struct Tags(Option<Arc<[String]>>);

/// Why tags were refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum InvalidTags {
    /// More than [`Tags::MAX_COUNT`] tags.
    #[error("at most {max} tags are allowed, got {count}", max = Tags::MAX_COUNT)]
    TooMany {
        /// How many tags were given.
        count: usize,
    },
    /// A tag is empty, longer than [`Tags::MAX_LENGTH`] characters, or has a control character.
    #[error("tags[{index}] must be 1 to {max} characters without control characters", max = Tags::MAX_LENGTH)]
    Invalid {
        /// Its position in the list given.
        index: usize,
    },
}

impl Tags {
    /// The most tags one verification may carry.
    pub const MAX_COUNT: usize = 10;
    /// The most characters one tag may have.
    pub const MAX_LENGTH: usize = 64;

    /// No tags (no allocation).
    pub const fn none() -> Self {
        Tags(None)
    }

    /// Checks `tags` (see the [module](self)), dropping duplicates and sorting them.
    ///
    /// ```
    /// use keypal::{InvalidTags, Tags};
    /// assert_eq!(Tags::new((0..11).map(|i| i.to_string())), Err(InvalidTags::TooMany { count: 11 }));
    /// assert_eq!(Tags::new(["ok", ""]), Err(InvalidTags::Invalid { index: 1 }));
    /// assert_eq!(Tags::new(["x".repeat(64)]).map(|t| t.len()), Ok(1));
    /// ```
    pub fn new<I, S>(tags: I) -> Result<Self, InvalidTags>
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        // From a `Vec<String>` (a request's tags), this reuses its allocation.
        let mut list: Vec<String> = tags.into_iter().map(Into::into).collect();
        if let Some(index) = list.iter().position(|tag| !Self::is_valid(tag)) {
            return Err(InvalidTags::Invalid { index });
        }
        if list.len() > Self::MAX_COUNT {
            return Err(InvalidTags::TooMany { count: list.len() });
        }
        list.sort_unstable();
        list.dedup();
        Ok(if list.is_empty() { Tags(None) } else { Tags(Some(list.into())) })
    }

    /// Whether `tag` is a valid tag: 1 to [`Tags::MAX_LENGTH`] characters, none a control character.
    ///
    /// ```
    /// assert!(keypal::Tags::is_valid("plan:pro"));
    /// assert!(!keypal::Tags::is_valid("tab\there"));
    /// ```
    pub fn is_valid(tag: &str) -> bool {
        if tag.is_ascii() {
            // One byte a character; the ASCII control characters are below 0x20 and 0x7f.
            return (1..=Self::MAX_LENGTH).contains(&tag.len()) && !tag.bytes().any(|b| b.is_ascii_control());
        }
        let count = tag.chars().count();
        (1..=Self::MAX_LENGTH).contains(&count) && !tag.chars().any(char::is_control)
    }

    /// The tags, sorted.
    pub fn as_slice(&self) -> &[String] {
        self.0.as_deref().unwrap_or(&[])
    }
}

impl Deref for Tags {
    type Target = [String];

    fn deref(&self) -> &[String] {
        self.as_slice()
    }
}

impl fmt::Debug for Tags {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.as_slice()).finish()
    }
}

impl Serialize for Tags {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.as_slice().serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for Tags {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let list = Vec::<String>::deserialize(deserializer)?;
        Tags::new(list).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_are_inclusive() {
        assert!(Tags::new((0..10).map(|i| format!("t{i}"))).is_ok());
        assert_eq!(Tags::new((0..11).map(|i| format!("t{i}"))), Err(InvalidTags::TooMany { count: 11 }));
        // The list as given counts, duplicates included.
        assert_eq!(Tags::new((0..11).map(|_| "t")), Err(InvalidTags::TooMany { count: 11 }));
        assert_eq!(Tags::new(["t", "t"]).map(|t| t.len()), Ok(1));
        assert!(Tags::new(["é".repeat(64)]).is_ok());
        assert_eq!(Tags::new(["é".repeat(65)]), Err(InvalidTags::Invalid { index: 0 }));
        assert_eq!(Tags::new(["a", "b\u{7f}"]), Err(InvalidTags::Invalid { index: 1 }));
    }

    #[test]
    fn none_is_empty_and_serializes_as_a_list() {
        assert!(Tags::none().0.is_none());
        assert!(Tags::new(Vec::<String>::new()).is_ok_and(|t| t.0.is_none()));
        let tags = Tags::new(["b", "a"]).unwrap_or_default();
        assert_eq!(serde_json::to_string(&tags).ok().as_deref(), Some(r#"["a","b"]"#));
        assert!(serde_json::from_str::<Tags>(r#"["", "a"]"#).is_err());
    }
}

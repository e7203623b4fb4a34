//! Tags of a verification: what the request was for (an endpoint, a region, a customer
//! plan), counted with it by usage analytics.
//!
//! A [`Tags`] is checked when it is made, so a manager never sees an invalid one:
//! a list of at most [`Tags::MAX_COUNT`] tags, each 1 to [`Tags::MAX_LENGTH`]
//! characters (Unicode scalar values) without control characters (`char::is_control`:
//! no newlines, tabs or NUL). Then duplicates are dropped and the tags sorted, so
//! `["b", "a", "a"]` counts once under `a` and once under `b`.
//!
//! No tags cost nothing (no allocation); a list costs one allocation, its tags side by
//! side in one shared string, so handing them to an [`crate::Event`] copies a pointer.
//! Read from JSON, tags without escapes are checked where they lie in the input and
//! copied once, into that string.
//!
//! ```
//! use keypal::Tags;
//! let tags = Tags::new(["GET /v1/orders", "eu-west", "GET /v1/orders"])?;
//! assert_eq!(tags.to_vec(), ["GET /v1/orders", "eu-west"]);
//! assert!(Tags::new(["line\nbreak"]).is_err());
//! assert!(Tags::default().is_empty());
//! # Ok::<(), keypal::InvalidTags>(())
//! ```

use std::borrow::Cow;
use std::fmt;
use std::sync::Arc;

use serde::de::{IgnoredAny, SeqAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Checked, deduplicated, sorted verification tags (see the [module](self)).
#[derive(Clone, Default, PartialEq, Eq, Hash)]
pub struct Tags(Option<Arc<str>>);

/// What separates the tags in a [`Tags`]' string: a control character, so in no tag
/// (and one byte: splitting on it is a byte search).
const SEPARATOR: u8 = b'\n';

/// How long a list of tags is joined on the stack (a longer one, in a vector first).
const JOINED_ON_STACK: usize = 256;

/// The sorted `tags` side by side in one shared string, each once, [`SEPARATOR`]
/// between them: one allocation.
fn joined(tags: &[&str]) -> Option<Arc<str>> {
    // At most this long (a repeated tag is written once).
    let most = tags.iter().map(|tag| tag.len() + 1).sum::<usize>().checked_sub(1)?;
    let mut on_stack = [0u8; JOINED_ON_STACK];
    let mut on_heap = Vec::new();
    let bytes = match on_stack.get_mut(..most) {
        Some(bytes) => bytes,
        None => {
            on_heap.resize(most, 0);
            &mut on_heap[..]
        }
    };
    let mut end = 0;
    let mut previous = None;
    for tag in tags.iter().filter(|tag| previous.replace(**tag) != Some(**tag)) {
        if end > 0 {
            bytes[end] = SEPARATOR;
            end += 1;
        }
        bytes[end..end + tag.len()].copy_from_slice(tag.as_bytes());
        end += tag.len();
    }
    // Whole tags and ASCII separators: valid UTF-8, so this never replaces anything.
    let text = &bytes[..end];
    Some(std::str::from_utf8(text).map_or_else(|_| Arc::from(&*String::from_utf8_lossy(text)), Arc::from))
}

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
        S: AsRef<str>,
    {
        // Every tag is checked (the first invalid one is reported, wherever it is), and
        // the first `MAX_COUNT` are kept, on the stack.
        let mut kept: [Option<S>; Self::MAX_COUNT] = std::array::from_fn(|_| None);
        let mut count = 0;
        for (index, tag) in tags.into_iter().enumerate() {
            if !Self::is_valid(tag.as_ref()) {
                return Err(InvalidTags::Invalid { index });
            }
            if let Some(slot) = kept.get_mut(index) {
                *slot = Some(tag);
            }
            count = index + 1;
        }
        if count > Self::MAX_COUNT {
            return Err(InvalidTags::TooMany { count });
        }
        let mut list = [""; Self::MAX_COUNT];
        for (slot, tag) in list.iter_mut().zip(kept.iter().flatten()) {
            *slot = tag.as_ref();
        }
        let list = &mut list[..count];
        list.sort_unstable();
        Ok(Tags(joined(list)))
    }

    /// Reads a JSON list of tags, telling a list that is not valid tags (the inner
    /// `Err`) from input that is not a list of strings (the outer one). Tags without
    /// escapes are checked where they lie in the input: no string is made per tag.
    ///
    /// ```
    /// use keypal::{InvalidTags, Tags};
    /// let mut json = serde_json::Deserializer::from_str(r#"["b", "a", "b"]"#);
    /// assert_eq!(Tags::deserialize_checked(&mut json)?, Tags::new(["a", "b"]));
    /// let mut json = serde_json::Deserializer::from_str(r#"["ok", ""]"#);
    /// assert_eq!(Tags::deserialize_checked(&mut json)?, Err(InvalidTags::Invalid { index: 1 }));
    /// let mut json = serde_json::Deserializer::from_str("[1]");
    /// assert!(Tags::deserialize_checked(&mut json).is_err());
    /// # Ok::<(), serde_json::Error>(())
    /// ```
    pub fn deserialize_checked<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Result<Self, InvalidTags>, D::Error> {
        deserializer.deserialize_seq(TagsVisitor)
    }

    /// Whether `tag` is a valid tag: 1 to [`Tags::MAX_LENGTH`] characters, none a control character.
    ///
    /// ```
    /// assert!(keypal::Tags::is_valid("plan:pro"));
    /// assert!(!keypal::Tags::is_valid("tab\there"));
    /// ```
    pub fn is_valid(tag: &str) -> bool {
        // Printable ASCII (0x20 to 0x7e: the ASCII control characters are below 0x20 and
        // 0x7f), one pass: one byte a character.
        if tag.bytes().all(|b| (0x20..0x7f).contains(&b)) {
            return (1..=Self::MAX_LENGTH).contains(&tag.len());
        }
        let count = tag.chars().count();
        (1..=Self::MAX_LENGTH).contains(&count) && !tag.chars().any(char::is_control)
    }

    /// The tags, sorted.
    ///
    /// ```
    /// let tags = keypal::Tags::new(["plan:pro", "GET /orders"])?;
    /// assert_eq!(tags.iter().collect::<Vec<_>>(), ["GET /orders", "plan:pro"]);
    /// # Ok::<(), keypal::InvalidTags>(())
    /// ```
    pub fn iter(&self) -> impl Iterator<Item = &str> + Clone + '_ {
        self.0.as_deref().into_iter().flat_map(|text| text.split(char::from(SEPARATOR)))
    }

    /// How many tags.
    pub fn len(&self) -> usize {
        self.0.as_deref().map_or(0, |text| text.bytes().filter(|b| *b == SEPARATOR).count() + 1)
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.0.is_none()
    }

    /// The tags, sorted, as strings of their own.
    pub fn to_vec(&self) -> Vec<String> {
        self.iter().map(str::to_owned).collect()
    }
}

impl fmt::Debug for Tags {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

impl Serialize for Tags {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_seq(self.iter())
    }
}

impl<'de> Deserialize<'de> for Tags {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Tags::deserialize_checked(deserializer)?.map_err(serde::de::Error::custom)
    }
}

/// Reads a list of tags for [`Tags::deserialize_checked`].
struct TagsVisitor;

impl<'de> Visitor<'de> for TagsVisitor {
    type Value = Result<Tags, InvalidTags>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a list of tags")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut failed = None;
        let elements = std::iter::from_fn(|| match seq.next_element::<Text<'de>>() {
            Ok(next) => next.map(|text| text.0),
            Err(e) => {
                failed = Some(e);
                None
            }
        });
        let tags = Tags::new(elements);
        if let Some(e) = failed {
            return Err(e);
        }
        // What an invalid tag left unread, so the input goes on after the list.
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(tags)
    }
}

/// One tag as read: borrowed from the input when it has no escapes.
struct Text<'de>(Cow<'de, str>);

impl<'de> Deserialize<'de> for Text<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_str(TextVisitor)
    }
}

struct TextVisitor;

impl<'de> Visitor<'de> for TextVisitor {
    type Value = Text<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a tag (a string)")
    }

    fn visit_borrowed_str<E: serde::de::Error>(self, text: &'de str) -> Result<Self::Value, E> {
        Ok(Text(Cow::Borrowed(text)))
    }

    fn visit_str<E: serde::de::Error>(self, text: &str) -> Result<Self::Value, E> {
        Ok(Text(Cow::Owned(text.to_owned())))
    }

    fn visit_string<E: serde::de::Error>(self, text: String) -> Result<Self::Value, E> {
        Ok(Text(Cow::Owned(text)))
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
        assert!(serde_json::from_str::<Tags>(r#"["a", 1]"#).is_err());
        // Escaped tags are read too, and an invalid tag in a list leaves the rest readable.
        let read: Result<(Tags, u8), _> = serde_json::from_str(r#"[["a\u00e9", "a\u00e9", "b"], 1]"#);
        assert_eq!(read.ok().map(|(t, n)| (t.to_vec(), n)), Some((vec!["aé".to_owned(), "b".to_owned()], 1)));
        let mut json_checked = serde_json::Deserializer::from_str(r#"["", "a", "b"]"#);
        assert!(matches!(Tags::deserialize_checked(&mut json_checked), Ok(Err(InvalidTags::Invalid { index: 0 }))));
        assert!(json_checked.end().is_ok(), "the list is read to its end");
    }

    #[test]
    fn the_longest_tags_fit() {
        let longest: Vec<String> = (0..Tags::MAX_COUNT).map(|i| format!("{i}{}", "😀".repeat(63))).collect();
        let tags = Tags::new(&longest).unwrap_or_default();
        assert_eq!(tags.len(), Tags::MAX_COUNT);
        assert_eq!(tags.to_vec(), longest);
        // A long list (joined off the stack) drops its duplicates too.
        let mut repeated = longest[..Tags::MAX_COUNT - 1].to_vec();
        repeated.push(longest[0].clone());
        assert_eq!(Tags::new(&repeated).map(|t| t.to_vec()), Ok(longest[..Tags::MAX_COUNT - 1].to_vec()));
    }
}

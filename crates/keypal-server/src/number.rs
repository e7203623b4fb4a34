//! Integers in JSON bodies. JSON does not tell `30` from `30.0`, and neither does JSON
//! Schema (`30.0` is an `integer`), so a number without a fraction is that integer here
//! too; `30.5`, `-1` or a number past the field's range is refused as before.

use serde::de::Error as _;
use serde::{Deserialize, Deserializer};

/// A whole number read from any JSON number without a fraction.
struct Whole<T>(T);

impl<'de, T: TryFrom<u64>> Deserialize<'de> for Whole<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let number = serde_json::Number::deserialize(deserializer)?;
        let whole = number.as_u64().or_else(|| {
            // Every f64 from 2^53 up is whole; `as` saturates, and the range check refuses those past u64.
            number.as_f64().filter(|f| f.fract() == 0.0 && (0.0..u64::MAX as f64).contains(f)).map(|f| f as u64)
        });
        let invalid = || D::Error::custom(format!("invalid value: {number}, expected a whole number in range"));
        let whole = whole.ok_or_else(invalid)?;
        T::try_from(whole).map(Whole).map_err(|_| invalid())
    }
}

/// An optional whole number (`#[serde(default, deserialize_with = "crate::number::option")]`).
pub fn option<'de, D: Deserializer<'de>, T: TryFrom<u64>>(deserializer: D) -> Result<Option<T>, D::Error> {
    Ok(Option::<Whole<T>>::deserialize(deserializer)?.map(|Whole(n)| n))
}

/// A required whole number (`#[serde(deserialize_with = "crate::number::required")]`).
pub fn required<'de, D: Deserializer<'de>, T: TryFrom<u64>>(deserializer: D) -> Result<T, D::Error> {
    Whole::<T>::deserialize(deserializer).map(|Whole(n)| n)
}

/// A PATCH field of a whole number: absent stays `None`, `null` is `Some(None)` (see
/// [`crate::patch::double_option`]).
pub fn double_option<'de, D: Deserializer<'de>, T: TryFrom<u64>>(
    deserializer: D,
) -> Result<Option<Option<T>>, D::Error> {
    option(deserializer).map(Some)
}

#[cfg(test)]
mod tests {
    use serde::Deserialize;

    #[derive(Debug, Default, Deserialize)]
    struct Body {
        #[serde(default, deserialize_with = "super::option")]
        n: Option<u32>,
    }

    fn read(json: &str) -> Option<Option<u32>> {
        serde_json::from_str::<Body>(json).ok().map(|b| b.n)
    }

    #[test]
    fn a_number_without_a_fraction_is_an_integer() {
        assert_eq!(read(r#"{"n": 30}"#), Some(Some(30)));
        assert_eq!(read(r#"{"n": 30.0}"#), Some(Some(30)));
        assert_eq!(read(r#"{"n": 3e1}"#), Some(Some(30)));
        assert_eq!(read(r#"{"n": null}"#), Some(None));
        assert_eq!(read(r#"{}"#), Some(None));
    }

    #[test]
    fn fractions_negatives_and_numbers_out_of_range_are_refused() {
        for bad in [
            r#"{"n": 30.5}"#,
            r#"{"n": -1}"#,
            r#"{"n": -1.0}"#,
            r#"{"n": 4294967296}"#,
            r#"{"n": 1e300}"#,
            r#"{"n": "30"}"#,
        ] {
            assert_eq!(read(bad), None, "{bad}");
        }
    }
}

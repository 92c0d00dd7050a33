//! Phone numbers as the telephone system writes them (`+1 415-555-2671`,
//! `(415) 555-2671`, `tel:+14155552671`), validated against libphonenumber's metadata
//! (the `phonenumber` crate) and normalized to E.164 (`+14155552671`), the one form
//! stored and compared.

use std::panic::{AssertUnwindSafe, catch_unwind};

use phonenumber::Mode;
use phonenumber::country::Id;

/// Longest number text accepted; real ones, formatted, are under 30 characters.
const MAX_LEN: usize = 48;

/// Normalizes numbers, reading those without a country code as numbers of the
/// default region (PHONE_DEFAULT_REGION) when there is one.
#[derive(Debug, Clone, Copy, Default)]
pub struct Numbers {
    default_region: Option<Id>,
}

impl Numbers {
    pub fn new(default_region: Option<Id>) -> Self {
        Self { default_region }
    }

    /// `raw` in E.164, or why it is not a phone number (a message for the client).
    pub fn normalize(&self, raw: &str) -> Result<String, String> {
        let text = raw.trim();
        if text.is_empty() {
            return Err("must not be empty".into());
        }
        let digits = text.strip_prefix("tel:").unwrap_or(text);
        // Only what numbers are written with reaches the parser: a smaller surface
        // for a library that has panicked on garbage before (caught below all the same).
        if text.len() > MAX_LEN
            || !digits
                .chars()
                .all(|c| c.is_ascii_digit() || matches!(c, '+' | ' ' | '-' | '.' | '(' | ')' | '/'))
        {
            return Err(format!(
                "is not a phone number: up to {MAX_LEN} characters of digits, spaces and + - . ( ) /"
            ));
        }
        if self.default_region.is_none() && !digits.trim_start().starts_with('+') {
            return Err(
                "has no country code: write it as +<country code><number> (E.164), or set \
                 PHONE_DEFAULT_REGION"
                    .into(),
            );
        }
        let region = self.default_region;
        let parsed = catch_unwind(AssertUnwindSafe(|| {
            let number = phonenumber::parse(region, digits).ok()?;
            let valid = phonenumber::is_valid(&number) && number.extension().is_none();
            valid.then(|| number.format().mode(Mode::E164).to_string())
        }));
        match parsed {
            Ok(Some(e164)) => Ok(e164),
            Ok(None) => Err("is not a valid phone number".into()),
            Err(_) => {
                tracing::warn!(number = %text, "the phone number parser panicked");
                Err("is not a valid phone number".into())
            }
        }
    }
}

/// A region code (`US`, `GB`, `DE`: ISO 3166-1 alpha-2, as libphonenumber has them),
/// for PHONE_DEFAULT_REGION.
pub fn parse_region(value: &str) -> Result<Id, String> {
    value
        .trim()
        .to_ascii_uppercase()
        .parse::<Id>()
        .map_err(|_| "must be a two-letter region code such as US, GB or DE".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn common_formats_of_one_number_give_one_e164() {
        let numbers = Numbers::new(None);
        for raw in [
            "+14155552671",
            "+1 415-555-2671",
            "+1 (415) 555 2671",
            " +1.415.555.2671 ",
            "tel:+1-415-555-2671",
        ] {
            assert_eq!(
                numbers.normalize(raw).as_deref(),
                Ok("+14155552671"),
                "{raw}"
            );
        }
        assert_eq!(
            numbers.normalize("+44 20 7183 8750").as_deref(),
            Ok("+442071838750")
        );
    }

    #[test]
    fn national_numbers_need_the_default_region() {
        let err = Numbers::new(None).normalize("(415) 555-2671").unwrap_err();
        assert!(err.contains("PHONE_DEFAULT_REGION"), "{err}");
        let us = Numbers::new(Some(parse_region("us").unwrap()));
        assert_eq!(
            us.normalize("(415) 555-2671").as_deref(),
            Ok("+14155552671")
        );
        assert_eq!(
            us.normalize("+44 20 7183 8750").as_deref(),
            Ok("+442071838750"),
            "a number with its country code keeps it"
        );
        let gb = Numbers::new(Some(parse_region("GB").unwrap()));
        assert_eq!(
            gb.normalize("020 7183 8750").as_deref(),
            Ok("+442071838750")
        );
    }

    #[test]
    fn invalid_numbers_and_garbage_are_refused_without_panicking() {
        let numbers = Numbers::new(Some(Id::US));
        for bad in [
            "",
            "   ",
            "+1",
            "+1234",
            "+999 123 456",
            "hello",
            "+1 415 555 2671 ext. 3",
            "  2 22#:",
            "003-836-4618x3001",
            "+14155552671\0",
            &"1".repeat(100),
        ] {
            assert!(numbers.normalize(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn region_codes_are_two_letters_libphonenumber_knows() {
        assert_eq!(parse_region("de"), Ok(Id::DE));
        assert!(parse_region("XX").is_err());
        assert!(parse_region("USA").is_err());
        assert!(parse_region("").is_err());
    }
}

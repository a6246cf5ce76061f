//! The query string of the listing routes, decoded once, so `?size=` and `?offset=` are read the
//! same way (and fail with the same errors) on every listing.

use super::error::ApiError;

/// Bounds of `?size=`, as Kong's.
const MAX_PAGE_SIZE: usize = 1000;

/// The decoded `name=value` pairs of a query string, in order.
pub(super) struct Query {
    pairs: Vec<(String, String)>,
}

impl Query {
    /// Decodes the raw query string (none is an empty query).
    pub(super) fn parse(raw: Option<String>) -> Query {
        Query {
            pairs: form_urlencoded::parse(raw.unwrap_or_default().as_bytes())
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .collect(),
        }
    }

    /// The first value of `name`.
    pub(super) fn get(&self, name: &str) -> Option<&str> {
        self.pairs
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// Every pair, for building the `next` link of a page.
    pub(super) fn pairs(&self) -> &[(String, String)] {
        &self.pairs
    }

    /// `?size=`, or `default` when absent.
    pub(super) fn size(&self, default: usize) -> Result<usize, ApiError> {
        self.get("size").map_or(Ok(default), parse_size)
    }

    /// `?offset=` decoded by the listing's page token `decode`, or `None` when absent.
    pub(super) fn offset<T>(
        &self,
        decode: impl FnOnce(&str) -> Result<T, &'static str>,
    ) -> Result<Option<T>, ApiError> {
        self.get("offset")
            .map(|raw| {
                decode(raw).map_err(|reason| ApiError::InvalidOffset {
                    offset: raw.to_string(),
                    reason,
                })
            })
            .transpose()
    }
}

fn parse_size(raw: &str) -> Result<usize, ApiError> {
    let number: f64 = raw
        .trim()
        .parse()
        .map_err(|_| ApiError::InvalidSize("size must be a number"))?;
    if !number.is_finite()
        || number.fract() != 0.0
        || !(1.0..=MAX_PAGE_SIZE as f64).contains(&number)
    {
        return Err(ApiError::InvalidSize(
            "size must be an integer between 1 and 1000",
        ));
    }
    Ok(number as usize)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn size_rules() {
        assert_eq!(parse_size("10").unwrap(), 10);
        assert!(matches!(
            parse_size("abc"),
            Err(ApiError::InvalidSize("size must be a number"))
        ));
        for bad in ["0", "1001", "1.5", "-3"] {
            assert!(matches!(
                parse_size(bad),
                Err(ApiError::InvalidSize(
                    "size must be an integer between 1 and 1000"
                ))
            ));
        }
    }

    #[test]
    fn first_value_wins_and_offsets_are_decoded_or_refused() {
        let query = Query::parse(Some("size=5&size=7&offset=x%20y".into()));
        assert_eq!(query.get("size"), Some("5"));
        assert_eq!(query.size(20).unwrap(), 5);
        assert_eq!(Query::parse(None).size(20).unwrap(), 20);
        assert_eq!(
            query.offset(|raw| Ok::<_, &str>(raw.len())).unwrap(),
            Some(3)
        );
        assert!(matches!(
            query.offset(|_| Err::<(), _>("bad")),
            Err(ApiError::InvalidOffset { offset, reason: "bad" }) if offset == "x y"
        ));
        assert_eq!(Query::parse(None).offset(|_| Ok(())).unwrap(), None);
    }
}
